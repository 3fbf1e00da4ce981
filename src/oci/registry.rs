//! The OCI distribution protocol, as much as releases need: manifests by tag or digest,
//! blobs whole or by byte ranges, blob uploads (one `POST`, then one `PUT` of the whole
//! blob) and manifest uploads, over the HTTP client every remote store uses (its
//! retries, bounds, timeouts and multi-range learning), logged in by [`super::auth`].
//!
//! Written here rather than taken from a crate: the Rust OCI clients read a blob whole or
//! by one range, while a release is read by many ranges per request, from whichever host
//! a registry on object storage redirects to.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use futures_util::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::auth::Auth;
use super::{digest_of, Blob, Reference, ReleaseManifest, MANIFEST_TYPE, MAX_MANIFEST};
use crate::error::{Error, Result};
use crate::store::http::{Client, HttpOptions, Reply};
use crate::store::{Check, Checked, ReadOptions, ReadStore, Warn};

/// The most of an error answer read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Content-Type of a blob upload.
const OCTET_STREAM: &str = "application/octet-stream";

/// A repository on a registry.
#[derive(Clone)]
pub struct Registry {
    reference: Reference,
    /// `scheme://host[:port]`.
    base: String,
    client: Client,
}

type WarnRef<'a> = &'a (dyn Fn(&str) + Send + Sync);

impl Registry {
    /// The repository `reference` names, reached by `client` over HTTPS, or plain HTTP on
    /// loopback and for the registries `opts` calls insecure.
    pub fn new(reference: &Reference, client: &Client, opts: &HttpOptions) -> Registry {
        let plain = reference.is_loopback()
            || opts
                .insecure_registries
                .iter()
                .any(|r| r == &reference.registry);
        let base = format!(
            "{}://{}",
            if plain { "http" } else { "https" },
            reference.registry
        );
        let origin = reqwest::Url::parse(&base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base.clone());
        let auth = Auth::of(&origin, &reference.registry, &reference.repository);
        Registry {
            reference: reference.clone(),
            base,
            client: client.with_auth(auth),
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn url(&self, kind: &str, rest: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{rest}",
            self.base, self.reference.repository
        )
    }

    pub fn blob_url(&self, digest: &str) -> String {
        self.url("blobs", digest)
    }

    /// Names `what` (a manifest or blob) of this repository in messages.
    fn describe(&self, what: &str) -> String {
        format!("{}: {what}", self.reference.repository_location())
    }

    /// A failure of the registry's answer about `what`.
    fn refused(&self, what: &str, reply: &Reply) -> Error {
        Error::Remote {
            url: self.describe(what),
            reason: format!("the registry answered {}{}", reply.status, reason_of(reply)),
        }
    }

    /// The manifest `reference` (a tag or `sha256:` digest), checked against the digest
    /// when it is one; `None` when the repository has no such manifest.
    pub async fn manifest(&self, reference: &str, warn: WarnRef<'_>) -> Result<Option<Vec<u8>>> {
        let what = format!("manifest {reference}");
        let reply = self
            .client
            .send(
                Method::GET,
                &self.url("manifests", reference),
                &[(ACCEPT, MANIFEST_TYPE)],
                None,
                MAX_MANIFEST,
                warn,
            )
            .await?;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.refused(&what, &reply)),
        }
        if reference.starts_with("sha256:") && digest_of(&reply.body) != reference {
            return Err(Error::Integrity(format!(
                "{}: the manifest's bytes do not hash to its digest",
                self.describe(&what)
            )));
        }
        Ok(Some(reply.body))
    }

    /// The release the manifest `reference` holds; `None` when there is no such manifest.
    /// The process remembers it, so that a store on this repository finds the release's
    /// pack map in it even where the `bcidx-` tag was not copied.
    pub async fn release(
        &self,
        reference: &str,
        warn: WarnRef<'_>,
    ) -> Result<Option<ReleaseManifest>> {
        let Some(json) = self.manifest(reference, warn).await? else {
            return Ok(None);
        };
        let release =
            ReleaseManifest::parse(&self.describe(&format!("manifest {reference}")), &json)?;
        read_releases().insert(
            (self.reference.repository_location(), release.index_digest),
            release.clone(),
        );
        Ok(Some(release))
    }

    /// The release of the index `digest` this process has read from this repository.
    fn remembered(&self, digest: &[u8; 32]) -> Option<ReleaseManifest> {
        read_releases()
            .get(&(self.reference.repository_location(), *digest))
            .cloned()
    }

    /// The bytes of `blob`, checked against its size and digest; `None` when the
    /// repository lacks it.
    pub async fn blob(&self, blob: &Blob, warn: WarnRef<'_>) -> Result<Option<Vec<u8>>> {
        let what = self.describe(&format!("blob {}", blob.digest));
        let check = |bytes: Vec<u8>| {
            if bytes.len() as u64 == blob.size && digest_of(&bytes) == blob.digest {
                Ok(bytes)
            } else {
                Err(Error::Integrity(format!(
                    "{what}: {} bytes arrived that do not hash to the digest the manifest gives",
                    bytes.len()
                )))
            }
        };
        self.client
            .get(&self.blob_url(&blob.digest), blob.size, check, warn)
            .await
    }

    /// Whether the repository has the blob `digest` (a redirect to object storage says it
    /// has).
    pub async fn has_blob(&self, digest: &str, warn: WarnRef<'_>) -> Result<bool> {
        let reply = self
            .client
            .send(Method::HEAD, &self.blob_url(digest), &[], None, 0, warn)
            .await?;
        match reply.status {
            s if s.is_success() || s.is_redirection() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(&format!("blob {digest}"), &reply)),
        }
    }

    /// Uploads `bytes` as the blob `blob`: a `POST` that opens an upload, then one `PUT`
    /// of the whole blob with its digest. The registry checks the digest and keeps the
    /// blob whole or not at all.
    pub async fn upload(&self, blob: &Blob, bytes: bytes::Bytes, warn: WarnRef<'_>) -> Result<()> {
        let what = format!("blob {}", blob.digest);
        let opened = self
            .client
            .send(
                Method::POST,
                &format!("{}/", self.url("blobs", "uploads")),
                &[],
                Some(bytes::Bytes::new()),
                MAX_ERROR_BODY,
                warn,
            )
            .await?;
        if opened.status != StatusCode::ACCEPTED {
            return Err(self.refused(&format!("{what}, opening its upload"), &opened));
        }
        let location = opened
            .headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| Error::Remote {
                url: self.describe(&what),
                reason: "the registry opened an upload without a Location".into(),
            })?;
        let mut url = reqwest::Url::parse(&self.base)
            .and_then(|base| base.join(location))
            .map_err(|e| Error::Remote {
                url: self.describe(&what),
                reason: format!("the upload's Location {location}: {e}"),
            })?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let put = self
            .client
            .send(
                Method::PUT,
                url.as_str(),
                &[(CONTENT_TYPE, OCTET_STREAM)],
                Some(bytes),
                MAX_ERROR_BODY,
                warn,
            )
            .await?;
        if put.status != StatusCode::CREATED {
            return Err(self.refused(&format!("{what}, uploading it"), &put));
        }
        Ok(())
    }

    /// Asks the registry to mount the blob `digest` from its repository `from` into this
    /// one, without sending it: true when it did (`201`). A registry that cannot (the
    /// blob is not there, or no pull access to `from`) opens an upload instead (`202`),
    /// which is left to expire.
    pub async fn mount(&self, digest: &str, from: &str, warn: WarnRef<'_>) -> Result<bool> {
        let mut url = reqwest::Url::parse(&format!("{}/", self.url("blobs", "uploads")))
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.describe("uploads"))))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        let reply = self
            .client
            .send(
                Method::POST,
                url.as_str(),
                &[],
                Some(bytes::Bytes::new()),
                MAX_ERROR_BODY,
                warn,
            )
            .await?;
        match reply.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            _ => Err(self.refused(&format!("blob {digest}, mounting it from {from}"), &reply)),
        }
    }

    /// Puts the manifest `json` under `reference` (a tag); returns its digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        json: &[u8],
        warn: WarnRef<'_>,
    ) -> Result<String> {
        let reply = self
            .client
            .send(
                Method::PUT,
                &self.url("manifests", reference),
                &[(CONTENT_TYPE, MANIFEST_TYPE)],
                Some(bytes::Bytes::copy_from_slice(json)),
                MAX_ERROR_BODY,
                warn,
            )
            .await?;
        if reply.status != StatusCode::CREATED {
            return Err(self.refused(&format!("manifest {reference}, putting it"), &reply));
        }
        Ok(digest_of(json))
    }

    /// Every tag of the repository, a page at a time (`Link: <…>; rel="next"`).
    pub async fn tags(&self, warn: WarnRef<'_>) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        let mut url = format!(
            "{}/v2/{}/tags/list?n=1000",
            self.base, self.reference.repository
        );
        for _ in 0..MAX_TAG_PAGES {
            let reply = self
                .client
                .send(Method::GET, &url, &[], None, MAX_MANIFEST, warn)
                .await?;
            match reply.status {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(tags),
                _ => return Err(self.refused("tags", &reply)),
            }
            let list: TagList = serde_json::from_slice(&reply.body).map_err(|e| Error::Remote {
                url: self.describe("tags"),
                reason: format!("a tag list that does not parse: {e}"),
            })?;
            tags.extend(list.tags.unwrap_or_default());
            let next = reply
                .headers
                .get(reqwest::header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(link, _)| link.to_string());
            match next {
                Some(link) if link.starts_with('/') => url = format!("{}{link}", self.base),
                Some(link) if link.starts_with(&self.base) => url = link,
                _ => return Ok(tags),
            }
        }
        Err(Error::Remote {
            url: self.describe("tags"),
            reason: format!("more than {MAX_TAG_PAGES} pages of tags"),
        })
    }

    /// Deletes the manifest `digest` (and with it every tag on it); false when the
    /// repository had none.
    pub async fn delete_manifest(&self, digest: &str, warn: WarnRef<'_>) -> Result<bool> {
        self.delete("manifests", digest, warn).await
    }

    /// Unlinks the blob `digest` from the repository; false when it had none.
    pub async fn delete_blob(&self, digest: &str, warn: WarnRef<'_>) -> Result<bool> {
        self.delete("blobs", digest, warn).await
    }

    async fn delete(&self, kind: &str, digest: &str, warn: WarnRef<'_>) -> Result<bool> {
        let reply = self
            .client
            .send(
                Method::DELETE,
                &self.url(kind, digest),
                &[],
                None,
                MAX_ERROR_BODY,
                warn,
            )
            .await?;
        match reply.status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::METHOD_NOT_ALLOWED => Err(Error::Unsupported(format!(
                "{}: the registry does not allow deletes (distribution: storage.delete.enabled, REGISTRY_STORAGE_DELETE_ENABLED=true)",
                self.describe(&format!("{kind} {digest}"))
            ))),
            _ => Err(self.refused(&format!("{kind} {digest}, deleting it"), &reply)),
        }
    }
}

/// The most pages of tags read.
const MAX_TAG_PAGES: usize = 1000;

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// Releases by repository location and index digest.
type Releases = HashMap<(String, [u8; 32]), ReleaseManifest>;

/// The releases read by this process.
fn read_releases() -> std::sync::MutexGuard<'static, Releases> {
    static READ: OnceLock<Mutex<Releases>> = OnceLock::new();
    READ.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The first error the registry's JSON answer gives (`{"errors":[{"code","message"}]}`).
fn reason_of(reply: &Reply) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(&reply.body).ok();
    let first = json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(|e| e.get(0));
    let field = |name: &str| {
        first
            .and_then(|f| f.get(name))
            .and_then(|v| v.as_str())
            .map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
    };
    match (field("code"), field("message")) {
        (Some(code), Some(message)) => format!(" ({code}: {message})"),
        (Some(code), None) => format!(" ({code})"),
        _ => String::new(),
    }
}

/// A repository as a chunk store: it holds packs (blobs named by their digest) and pack
/// maps (found by the tag of the index they serve), and no loose chunk files.
pub struct RegistryStore {
    registry: Registry,
    warn: Warn,
}

impl RegistryStore {
    pub fn new(
        reference: &Reference,
        client: &Client,
        opts: &HttpOptions,
        warn: Warn,
    ) -> RegistryStore {
        RegistryStore {
            registry: Registry::new(reference, client, opts),
            warn,
        }
    }

    /// The blob digest of a pack's name in a store (`packs/<hex>.bcpack`).
    fn pack_digest(name: &str) -> Option<String> {
        let hex = name.strip_prefix("packs/")?.strip_suffix(".bcpack")?;
        crate::chunk::ChunkId::from_hex(hex).map(|id| format!("sha256:{}", id.to_hex()))
    }

    /// The pack map `name` (`packmaps/<hex index digest>.bcpmap`): the pack-map layer of
    /// the release read already for that index, else of the release tagged for it (when
    /// the tag's manifest is that index's).
    async fn pack_map(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        let Some(digest) = name
            .strip_prefix("packmaps/")
            .and_then(|n| n.strip_suffix(".bcpmap"))
            .and_then(crate::chunk::ChunkId::from_hex)
        else {
            return Ok(None);
        };
        let warn = self.warn.as_ref();
        let release = match self.registry.remembered(&digest.0) {
            Some(release) => release,
            None => match self
                .registry
                .release(&super::index_tag(&digest.0), warn)
                .await?
            {
                Some(release) => release,
                None => return Ok(None),
            },
        };
        if release.index_digest != digest.0 {
            return Ok(None);
        }
        match release.pack_map.filter(|m| m.size <= max_len) {
            Some(map) => self.registry.blob(&map, warn).await,
            None => Ok(None),
        }
    }
}

impl ReadStore for RegistryStore {
    fn describe(&self) -> String {
        self.registry.reference.repository_location()
    }

    fn remote(&self) -> bool {
        true
    }

    fn get<'a>(
        &'a self,
        _name: &'a str,
        _opts: ReadOptions,
        _check: Check,
    ) -> BoxFuture<'a, Result<Option<Checked>>> {
        Box::pin(async { Ok(None) })
    }

    fn get_ranges<'a>(
        &'a self,
        name: &'a str,
        ranges: &'a [Range<u64>],
        part: &'a mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Some(digest) = Self::pack_digest(name) else {
                return Ok(false);
            };
            self.registry
                .client
                .get_ranges(
                    &self.registry.blob_url(&digest),
                    ranges,
                    part,
                    self.warn.as_ref(),
                )
                .await
        })
    }

    fn has<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match Self::pack_digest(name) {
                Some(digest) => self.registry.has_blob(&digest, self.warn.as_ref()).await,
                None => Ok(false),
            }
        })
    }

    fn get_file<'a>(
        &'a self,
        name: &'a str,
        max_len: u64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(self.pack_map(name, max_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pack_names_are_blobs() {
        let hex = "0f".repeat(32);
        assert_eq!(
            RegistryStore::pack_digest(&format!("packs/{hex}.bcpack")),
            Some(format!("sha256:{hex}"))
        );
        for name in [
            format!("packs/{hex}.bcpmap"),
            format!("{}/{hex}.cacnk", &hex[..4]),
            "packs/../x.bcpack".to_string(),
        ] {
            assert_eq!(RegistryStore::pack_digest(&name), None, "{name}");
        }
    }

    #[test]
    fn registry_errors_are_read_from_their_json() {
        let reply = |body: &str| Reply {
            status: StatusCode::BAD_REQUEST,
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            reason_of(&reply(
                r#"{"errors":[{"code":"MANIFEST_INVALID","message":"bad\nthing"}]}"#
            )),
            " (MANIFEST_INVALID: badthing)"
        );
        assert_eq!(reason_of(&reply("<html>")), "");
    }
}
