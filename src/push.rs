//! Publishing a release from a local packed store to a remote one: an S3 prefix
//! (`s3://BUCKET/PREFIX`, the store's layout) or a registry repository
//! (`oci://HOST/REPO[:TAG]`, one manifest, see [`crate::oci`]). The packs its pack map
//! names go first, then the map, then its signature, then the index (on a registry then
//! the manifest, under the `bcidx-` tag of the index and then under TAG), each step done
//! before the next, so a reader never finds an index whose map or packs are not there
//! yet. What the destination already holds is not sent again: a pack there is skipped (a
//! pack's name is its digest, and an upload is whole or absent; on S3 its size must
//! match too), so a push cut short is finished by running it again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::oci::registry::Registry;
use crate::oci::{self, Blob, Reference, ReleaseManifest};
use crate::pack::{self, PackMap};
use crate::progress::Progress;
use crate::sign;
use crate::store::http::{Client, HttpOptions};
use crate::store::s3::{self, Method, S3Location};
use crate::store::LocalStore;

/// Packs uploaded at once, at most.
const PACKS_AT_ONCE: u64 = 4;
/// Bytes of packs held in memory to be sent, at most (one pack alone when larger).
const PACK_MEMORY: u64 = 256 << 20;

#[derive(Debug, Default, Serialize)]
pub struct PushReport {
    /// Where the release went.
    pub destination: String,
    /// Packs sent, and packs the destination held already.
    pub packs_uploaded: u64,
    pub packs_present: u64,
    /// Bytes sent: packs, the pack map, the signature and the index.
    pub bytes_uploaded: u64,
    /// Whether a signature went with the index.
    pub signed: bool,
    /// On a registry: the manifest's digest, and the tags it was put under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A release as the local store holds it, ready to be sent.
struct Release {
    index_name: String,
    index_bytes: Vec<u8>,
    index_digest: [u8; 32],
    map_name: String,
    map_bytes: Vec<u8>,
    /// The packs the map names, with their sizes.
    packs: Vec<([u8; 32], u64)>,
    signature: Option<Vec<u8>>,
}

impl Release {
    fn read(index: &Path, store: &LocalStore) -> Result<Release> {
        let index_bytes = Index::read_bytes(index)?;
        let release = Index::from_bytes(index, index_bytes.clone())?;
        let index_name = index
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Invalid(format!("{}: no file name", index.display())))?
            .to_string();
        let map_name = pack::map_name(&release.digest());
        let map_bytes = store
            .read_object(&map_name, PackMap::max_file_len(&release))?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} has no pack map for {} ({map_name}): make the release with --pack, or run blockcast pack",
                    store.dir().display(),
                    index.display()
                ))
            })?;
        let map = PackMap::read(&map_name, &map_bytes, &release)?;
        let signature_path = sign::signature_path(index);
        let signature = match sign::read_small(&signature_path) {
            Ok(text) => Some(text.into_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Io {
                    path: signature_path,
                    err: e,
                })
            }
        };
        let packs = map
            .packs()
            .into_iter()
            .map(|p| {
                let size = store
                    .object_len(&pack::pack_name(&p))?
                    .ok_or_else(|| missing(store, &p))?;
                Ok((p, size))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Release {
            index_name,
            index_digest: release.digest(),
            index_bytes,
            map_name,
            map_bytes,
            packs,
            signature,
        })
    }
}

/// Where a release goes.
trait Destination: Sync {
    fn describe(&self) -> String;
    /// Whether the destination holds the pack `digest` of `size` bytes.
    fn has_pack<'a>(&'a self, digest: &'a [u8; 32], size: u64) -> BoxFuture<'a, Result<bool>>;
    fn put_pack<'a>(
        &'a self,
        digest: &'a [u8; 32],
        body: bytes::Bytes,
    ) -> BoxFuture<'a, Result<()>>;
    /// Once every pack is there: what names them, the index last. Returns the bytes sent.
    fn finish<'a>(&'a self, release: &'a Release) -> BoxFuture<'a, Result<u64>>;
}

type WarnRef<'a> = &'a (dyn Fn(&str) + Send + Sync);

struct S3<'a> {
    location: S3Location,
    client: Client,
    warn: WarnRef<'a>,
}

impl Destination for S3<'_> {
    fn describe(&self) -> String {
        self.location.describe()
    }

    fn has_pack<'a>(&'a self, digest: &'a [u8; 32], size: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let url = self.location.url(Method::Head, &pack::pack_name(digest));
            Ok(self.client.length(&url, self.warn).await? == Some(size))
        })
    }

    fn put_pack<'a>(
        &'a self,
        digest: &'a [u8; 32],
        body: bytes::Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let url = self.location.url(Method::Put, &pack::pack_name(digest));
            self.client.put(&url, body, self.warn).await
        })
    }

    fn finish<'a>(&'a self, release: &'a Release) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut files = vec![(release.map_name.clone(), &release.map_bytes)];
            if let Some(signature) = &release.signature {
                files.push((format!("{}.minisig", release.index_name), signature));
            }
            files.push((release.index_name.clone(), &release.index_bytes));
            let mut sent = 0;
            for (name, body) in files {
                let url = self.location.url(Method::Put, &name);
                self.client
                    .put(&url, body.clone().into(), self.warn)
                    .await?;
                sent += body.len() as u64;
            }
            Ok(sent)
        })
    }
}

struct Oci<'a> {
    registry: Registry,
    warn: WarnRef<'a>,
    /// Filled by `finish`.
    pushed: std::sync::Mutex<(String, Vec<String>)>,
}

impl Destination for Oci<'_> {
    fn describe(&self) -> String {
        self.registry.reference().to_string()
    }

    fn has_pack<'a>(&'a self, digest: &'a [u8; 32], size: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let blob = Blob::pack(digest, size);
            self.registry.has_blob(&blob.digest, self.warn).await
        })
    }

    fn put_pack<'a>(
        &'a self,
        digest: &'a [u8; 32],
        body: bytes::Bytes,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let blob = Blob::pack(digest, body.len() as u64);
            self.registry.upload(&blob, body, self.warn).await
        })
    }

    fn finish<'a>(&'a self, release: &'a Release) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let sent = AtomicU64::new(0);
            let put = |bytes: &'a [u8]| {
                let blob = Blob::of(bytes);
                let (registry, warn, sent) = (&self.registry, self.warn, &sent);
                async move {
                    if !registry.has_blob(&blob.digest, warn).await? {
                        registry
                            .upload(&blob, bytes::Bytes::copy_from_slice(bytes), warn)
                            .await?;
                        sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Ok::<Blob, Error>(blob)
                }
            };
            put(oci::EMPTY_DATA).await?;
            let map = put(&release.map_bytes).await?;
            let mut signatures = Vec::new();
            if let Some(signature) = &release.signature {
                signatures.push((oci::MINISIGN.to_string(), put(signature).await?));
            }
            let index = put(&release.index_bytes).await?;
            let manifest = ReleaseManifest {
                index_digest: release.index_digest,
                index,
                pack_map: Some(map),
                packs: release
                    .packs
                    .iter()
                    .map(|(digest, size)| Blob::pack(digest, *size))
                    .collect(),
                signatures,
            }
            .to_json()?;
            // The tag that finds the pack map first, then the one readers ask for.
            let mut tags = vec![oci::index_tag(&release.index_digest)];
            tags.extend(self.registry.reference().tag.clone());
            let mut digest = String::new();
            for tag in &tags {
                digest = self
                    .registry
                    .put_manifest(tag, &manifest, self.warn)
                    .await?;
            }
            sent.fetch_add(manifest.len() as u64 * tags.len() as u64, Ordering::Relaxed);
            *self.pushed.lock().unwrap_or_else(|e| e.into_inner()) = (digest, tags);
            Ok(sent.into_inner())
        })
    }
}

/// Publishes the release `index` (its signature beside it, if any) from `store` to
/// `destination`: `s3://BUCKET/PREFIX`, where the index's name is its file name under
/// the prefix, beside the store's layout; or `oci://HOST/REPO[:TAG]`.
pub fn push(
    index: &Path,
    store: &LocalStore,
    destination: &str,
    http: &HttpOptions,
    runtime: &Handle,
    progress: &dyn Progress,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<PushReport> {
    let release = Release::read(index, store)?;
    let client = Client::new(http, Arc::default())?;
    if s3::is_s3(destination) {
        let dest = S3 {
            location: S3Location::parse(destination)?,
            client,
            warn,
        };
        return send(&release, store, &dest, runtime, progress);
    }
    if !oci::is_oci(destination) {
        return Err(Error::Unsupported(format!(
            "{destination}: releases are pushed to s3:// and oci:// locations"
        )));
    }
    let reference = Reference::parse(destination)?;
    if reference.digest.is_some() {
        return Err(Error::Invalid(format!(
            "{destination}: a release is pushed under a tag, not a digest"
        )));
    }
    let dest = Oci {
        registry: Registry::new(&reference, &client, http),
        warn,
        pushed: Default::default(),
    };
    let mut report = send(&release, store, &dest, runtime, progress)?;
    let (digest, tags) = dest.pushed.into_inner().unwrap_or_else(|e| e.into_inner());
    report.manifest = Some(digest);
    report.tags = tags;
    Ok(report)
}

/// Sends the packs `dest` lacks, then what names them.
fn send(
    release: &Release,
    store: &LocalStore,
    dest: &dyn Destination,
    runtime: &Handle,
    progress: &dyn Progress,
) -> Result<PushReport> {
    let biggest = release.packs.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let at_once = (PACK_MEMORY / biggest).clamp(1, PACKS_AT_ONCE) as usize;
    progress.start("pushing", release.packs.iter().map(|p| p.1).sum());
    let uploaded = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    runtime.block_on(async {
        let mut results = stream::iter(&release.packs)
            .map(|(digest, size)| {
                let (uploaded, sent) = (&uploaded, &sent);
                async move {
                    if !dest.has_pack(digest, *size).await? {
                        let body = read_pack(store, digest, *size)?;
                        dest.put_pack(digest, body.into()).await?;
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        sent.fetch_add(*size, Ordering::Relaxed);
                    }
                    progress.advance(*size);
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(at_once);
        while let Some(done) = results.next().await {
            done?;
        }
        sent.fetch_add(dest.finish(release).await?, Ordering::Relaxed);
        Ok::<(), Error>(())
    })?;
    progress.finish();
    let packs_uploaded = uploaded.into_inner();
    Ok(PushReport {
        destination: dest.describe(),
        packs_uploaded,
        packs_present: release.packs.len() as u64 - packs_uploaded,
        bytes_uploaded: sent.into_inner(),
        signed: release.signature.is_some(),
        manifest: None,
        tags: Vec::new(),
    })
}

/// A pack's bytes (at most `size`, its length when listed), checked against its name: a
/// pack damaged on the publisher's disk is not published.
fn read_pack(store: &LocalStore, digest: &[u8; 32], size: u64) -> Result<Vec<u8>> {
    let name = pack::pack_name(digest);
    let bytes = store
        .read_object(&name, size)?
        .ok_or_else(|| missing(store, digest))?;
    if Sha256::digest(&bytes)[..] != digest[..] {
        return Err(Error::Integrity(format!(
            "{}: the pack's bytes do not hash to its name",
            store.dir().join(&name).display()
        )));
    }
    Ok(bytes)
}

/// A pack the release's map names that the store does not hold.
fn missing(store: &LocalStore, digest: &[u8; 32]) -> Error {
    Error::Integrity(format!(
        "{}: {}, which the release's pack map names, is missing",
        store.dir().display(),
        pack::pack_name(digest)
    ))
}
