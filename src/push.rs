//! Publishing a release from a local packed store to a remote one: an S3 prefix
//! (`s3://BUCKET/PREFIX`, the store's layout) or a registry repository
//! (`oci://HOST/REPO[:TAG]`, one manifest, see [`crate::oci`]). The packs its pack map
//! names go first, then the map, then its signatures, then the index (on a registry then
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
use crate::store::http::{Client, HttpOptions, Reply};
use crate::store::lease::Hold;
use crate::store::s3::{self, Method, S3Location};
use crate::store::{LocalStore, Warn};

/// Packs uploaded at once, at most.
const PACKS_AT_ONCE: u64 = 4;
/// Bytes of packs held in memory to be sent, at most (one pack alone when larger).
const PACK_MEMORY: u64 = 256 << 20;
/// The size of the parts a pack larger than one is sent to S3 in, by default.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// S3 takes parts of at least 5 MiB (but the last) and at most 10,000 of them.
pub const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;
/// Pushes to a registry begun again when a blob went missing meanwhile.
const PUSH_AGAIN: u32 = 3;

/// How a release is pushed.
#[derive(Clone, Debug)]
pub struct PushOptions {
    pub http: HttpOptions,
    /// On S3, a pack larger than this goes in parts of this size (a multipart upload
    /// that a later push resumes from the parts already there).
    pub part_size: u64,
    /// On a registry, repositories of the same registry whose blobs a pack the
    /// destination lacks is mounted from before it is sent.
    pub mount_from: Vec<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            http: HttpOptions::default(),
            part_size: DEFAULT_PART_SIZE,
            mount_from: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PushReport {
    /// Where the release went.
    pub destination: String,
    /// Packs sent, packs the destination held already, and packs a registry mounted
    /// from another repository.
    pub packs_uploaded: u64,
    pub packs_present: u64,
    pub packs_mounted: u64,
    /// Bytes sent: packs, the pack map, the signatures and the index.
    pub bytes_uploaded: u64,
    /// Whether signatures went with the index.
    pub signed: bool,
    /// Parts of packs sent to S3 in parts, and parts an earlier push had sent already.
    pub parts_uploaded: u64,
    pub parts_present: u64,
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
    /// The signature files beside the index.
    signatures: Vec<(sign::Kind, Vec<u8>)>,
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
        let mut signatures = Vec::new();
        for kind in sign::Kind::ALL {
            let path = kind.path(index);
            match kind.read(&path) {
                Ok(bytes) => signatures.push((kind, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::Io { path, err }),
            }
        }
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
            signatures,
        })
    }
}

/// Where a release goes.
trait Destination: Sync {
    fn describe(&self) -> String;
    /// Whether the destination holds the pack `digest` of `size` bytes.
    fn has_pack<'a>(&'a self, digest: &'a [u8; 32], size: u64) -> BoxFuture<'a, Result<bool>>;
    /// Puts the pack `digest` of `size` bytes from `store` there: true when its bytes
    /// were sent, false when the destination had another way (a registry's mount).
    fn put_pack<'a>(
        &'a self,
        store: &'a LocalStore,
        digest: &'a [u8; 32],
        size: u64,
    ) -> BoxFuture<'a, Result<bool>>;
    /// The most bytes of a pack of `size` bytes held in memory while it is sent.
    fn held(&self, size: u64) -> u64 {
        size
    }
    /// Once every pack is there: what names them, the index last. Returns the bytes sent.
    fn finish<'a>(&'a self, release: &'a Release) -> BoxFuture<'a, Result<u64>>;
}

type WarnRef<'a> = &'a (dyn Fn(&str) + Send + Sync);

struct S3<'a> {
    location: S3Location,
    client: Client,
    warn: WarnRef<'a>,
    part_size: u64,
    parts_uploaded: AtomicU64,
    parts_present: AtomicU64,
}

impl S3<'_> {
    /// Sends a pack in parts of `part_size`: into the multipart upload of its key already
    /// in progress (a part it lists is not sent again when it holds the very bytes of that
    /// part), or a new one; then completes it.
    async fn put_in_parts(&self, store: &LocalStore, digest: &[u8; 32], size: u64) -> Result<()> {
        use reqwest::Method as M;
        let name = pack::pack_name(digest);
        let listed = self
            .ask(
                &name,
                "listing uploads in progress",
                M::GET,
                self.location.list_uploads_url(&name),
                None,
            )
            .await?;
        let upload = match s3::upload_of(&text(&listed), &self.location.key(&name)) {
            Some(upload) => upload,
            None => {
                let url = self.location.create_upload_url(&name);
                let created = self
                    .ask(
                        &name,
                        "starting a multipart upload",
                        M::POST,
                        url,
                        Some(bytes::Bytes::new()),
                    )
                    .await?;
                s3::created_upload(&text(&created)).map_err(|e| self.location.failure(&name, e))?
            }
        };
        let mut there = std::collections::HashMap::new();
        let mut after = 0;
        loop {
            let url = self.location.list_parts_url(&name, &upload, after);
            let reply = self
                .ask(&name, "listing the upload's parts", M::GET, url, None)
                .await?;
            let (parts, next) =
                s3::parts_of(&text(&reply)).map_err(|e| self.location.failure(&name, e))?;
            there.extend(parts.into_iter().map(|p| (p.number, (p.etag, p.size))));
            match next.filter(|n| *n > after) {
                Some(n) => after = n,
                None => break,
            }
        }
        let mut etags = Vec::new();
        for (i, start) in (0..size).step_by(self.part_size as usize).enumerate() {
            let number = u16::try_from(i + 1)
                .map_err(|_| Error::Invalid(format!("{name}: more than {MAX_PARTS} parts")))?;
            let range = start..(start + self.part_size).min(size);
            let bytes = store
                .read_ranges(&name, std::slice::from_ref(&range))?
                .and_then(|mut parts| parts.pop())
                .ok_or_else(|| missing(store, digest))?;
            // A part there is kept only if it holds these very bytes (its ETag is their
            // MD5): an upload begun with another part size holds other ranges.
            if let Some((etag, _)) = there
                .get(&number)
                .filter(|(etag, len)| *len == range.end - range.start && holds(etag, &bytes))
            {
                etags.push(etag.clone());
                self.parts_present.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let what = format!("sending part {number}");
            let url = self.location.upload_part_url(&name, number, &upload);
            let reply = self
                .ask(&name, &what, M::PUT, url, Some(bytes.into()))
                .await?;
            let etag = reply
                .headers
                .get(reqwest::header::ETAG)
                .and_then(|e| e.to_str().ok())
                .ok_or_else(|| self.refusal(&name, &what, &reply))?;
            etags.push(etag.to_string());
            self.parts_uploaded.fetch_add(1, Ordering::Relaxed);
        }
        let what = "completing the multipart upload";
        let (url, body) = self.location.complete_upload(&name, &upload, &etags);
        let done = self
            .ask(&name, what, M::POST, url, Some(body.into()))
            .await?;
        // S3 may answer 200 and tell of an error in the body.
        if text(&done).contains("<Error>") {
            return Err(self.refusal(&name, what, &done));
        }
        Ok(())
    }

    /// A request of the multipart protocol about the pack `name`, `what` it does naming
    /// it in messages: its answer, refused unless its status is a success.
    async fn ask(
        &self,
        name: &str,
        what: &str,
        method: reqwest::Method,
        url: String,
        body: Option<bytes::Bytes>,
    ) -> Result<Reply> {
        let reply = self
            .client
            .send(method, &url, &[], body, 1 << 20, self.warn)
            .await?;
        match reply.status.is_success() {
            true => Ok(reply),
            false => Err(self.refusal(name, what, &reply)),
        }
    }

    /// The answer `reply` to `what` about the pack `name` refused, with its status and
    /// the start of its body.
    fn refusal(&self, name: &str, what: &str, reply: &Reply) -> Error {
        let start: String = text(reply).chars().take(200).collect();
        self.location.failure(
            name,
            format!("{what}: the server answered {} ({start})", reply.status),
        )
    }
}

/// An answer's body as text.
fn text(reply: &Reply) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&reply.body)
}

impl Destination for S3<'_> {
    fn describe(&self) -> String {
        self.location.describe()
    }

    fn has_pack<'a>(&'a self, digest: &'a [u8; 32], size: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let url = self.location.url(Method::Head, &pack::pack_name(digest));
            let there = self.client.length(&url, self.warn).await;
            Ok(there.map_err(s3::explain_refusal)? == Some(size))
        })
    }

    fn put_pack<'a>(
        &'a self,
        store: &'a LocalStore,
        digest: &'a [u8; 32],
        size: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            if size > self.part_size {
                self.put_in_parts(store, digest, size).await?;
                return Ok(true);
            }
            let body = read_pack(store, digest, size)?;
            let url = self.location.url(Method::Put, &pack::pack_name(digest));
            self.client.put(&url, body.into(), self.warn).await?;
            Ok(true)
        })
    }

    fn held(&self, size: u64) -> u64 {
        size.min(self.part_size)
    }

    fn finish<'a>(&'a self, release: &'a Release) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut files = vec![(release.map_name.clone(), &release.map_bytes)];
            for (kind, signature) in &release.signatures {
                files.push((
                    format!("{}{}", release.index_name, kind.suffix()),
                    signature,
                ));
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
    mount_from: Vec<String>,
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
        store: &'a LocalStore,
        digest: &'a [u8; 32],
        size: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let blob = Blob::pack(digest, size);
            for from in &self.mount_from {
                // A mount refused (no pull access to `from`, say) costs only the upload.
                match self.registry.mount(&blob.digest, from, self.warn).await {
                    Ok(true) => return Ok(false),
                    Ok(false) => {}
                    Err(e) => (self.warn)(&format!("{e}; uploading it instead")),
                }
            }
            let body = read_pack(store, digest, size)?;
            self.registry.upload(&blob, body.into(), self.warn).await?;
            Ok(true)
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
            for (kind, signature) in &release.signatures {
                signatures.push((
                    oci::signature_kind(*kind).to_string(),
                    put(signature).await?,
                ));
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

/// Publishes the release `index` (the signatures beside it, if any) from `store` to
/// `destination`: `s3://BUCKET/PREFIX`, where the index's name is its file name under
/// the prefix, beside the store's layout; or `oci://HOST/REPO[:TAG]`.
pub fn push(
    index: &Path,
    store: &LocalStore,
    destination: &str,
    opts: &PushOptions,
    runtime: &Handle,
    progress: &dyn Progress,
    warner: &Warn,
) -> Result<PushReport> {
    let warn: WarnRef<'_> = &**warner;
    let release = Release::read(index, store)?;
    let http = &opts.http;
    let client = Client::new(http, Arc::default())?;
    if s3::is_s3(destination) {
        // Held as a publisher's from before it looks at what is there until its index is.
        let hold = Hold::publish(
            crate::store::open_prunable(destination, http, runtime.clone(), warner.clone())?,
            warner,
        )?;
        let biggest = release.packs.iter().map(|p| p.1).max().unwrap_or(0);
        if opts.part_size < MIN_PART_SIZE || biggest.div_ceil(opts.part_size) > MAX_PARTS {
            return Err(Error::Invalid(format!(
                "a part size of {} bytes: S3 takes parts of at least {MIN_PART_SIZE} bytes, and at most {MAX_PARTS} of them (the largest pack has {biggest} bytes)",
                opts.part_size
            )));
        }
        let dest = S3 {
            location: S3Location::parse(destination)?,
            client,
            warn,
            part_size: opts.part_size,
            parts_uploaded: AtomicU64::new(0),
            parts_present: AtomicU64::new(0),
        };
        let mut report = send(&release, store, &dest, runtime, progress)?;
        report.parts_uploaded = dest.parts_uploaded.into_inner();
        report.parts_present = dest.parts_present.into_inner();
        hold.release()?;
        return Ok(report);
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
        mount_from: opts.mount_from.clone(),
        pushed: Default::default(),
    };
    // A blob unlinked since it was found there (a prune) fails the manifest: send again.
    let mut attempts = 0;
    let mut report = loop {
        match send(&release, store, &dest, runtime, progress) {
            Err(Error::Remote { reason, .. })
                if reason.contains("BLOB_UNKNOWN") && attempts < PUSH_AGAIN =>
            {
                attempts += 1;
                warn(&format!(
                    "{destination}: a blob the release names went missing while it was pushed (a prune?): pushing it again"
                ));
            }
            other => break other?,
        }
    };
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
    let biggest = release
        .packs
        .iter()
        .map(|p| dest.held(p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let at_once = (PACK_MEMORY / biggest).clamp(1, PACKS_AT_ONCE) as usize;
    progress.start("pushing", release.packs.iter().map(|p| p.1).sum());
    let uploaded = AtomicU64::new(0);
    let mounted = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    runtime.block_on(async {
        // The packs the destination lacks, each checked against its name before any is
        // sent: nothing of a release damaged on the publisher's disk is published.
        let mut lacking = Vec::new();
        let mut asked = stream::iter(&release.packs)
            .map(|(digest, size)| async move {
                let has = dest.has_pack(digest, *size).await?;
                Ok::<_, Error>((digest, *size, has))
            })
            .buffer_unordered(at_once);
        while let Some(answer) = asked.next().await {
            match answer? {
                (_, size, true) => progress.advance(size),
                (digest, size, false) => lacking.push((digest, size)),
            }
        }
        for (digest, size) in &lacking {
            check_pack(store, digest, *size)?;
        }
        let mut results = stream::iter(lacking)
            .map(|(digest, size)| {
                let (uploaded, mounted, sent) = (&uploaded, &mounted, &sent);
                async move {
                    if dest.put_pack(store, digest, size).await? {
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        sent.fetch_add(size, Ordering::Relaxed);
                    } else {
                        mounted.fetch_add(1, Ordering::Relaxed);
                    }
                    progress.advance(size);
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
    let packs_mounted = mounted.into_inner();
    Ok(PushReport {
        destination: dest.describe(),
        packs_uploaded,
        packs_present: release.packs.len() as u64 - packs_uploaded - packs_mounted,
        packs_mounted,
        bytes_uploaded: sent.into_inner(),
        signed: !release.signatures.is_empty(),
        parts_uploaded: 0,
        parts_present: 0,
        manifest: None,
        tags: Vec::new(),
    })
}

/// A pack's bytes (at most `size`, its length when listed), checked against its name
/// again as they are sent: a pack changed since it was checked is not published.
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

/// Whether a part whose ETag is `etag` holds `bytes`: S3 gives a part (not encrypted
/// with a customer or KMS key) the MD5 of its bytes as ETag. A part that does not say so
/// is sent again.
fn holds(etag: &str, bytes: &[u8]) -> bool {
    use md5::Digest as _;
    let md5: String = md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    etag.trim().trim_matches('"').eq_ignore_ascii_case(&md5)
}

/// Checks the pack `digest` of `size` bytes against its name, reading it a piece at a
/// time.
fn check_pack(store: &LocalStore, digest: &[u8; 32], size: u64) -> Result<()> {
    const PIECE: u64 = 8 << 20;
    let name = pack::pack_name(digest);
    let mut hash = Sha256::new();
    for start in (0..size).step_by(PIECE as usize) {
        let range = start..(start + PIECE).min(size);
        let piece = store
            .read_ranges(&name, std::slice::from_ref(&range))?
            .and_then(|mut parts| parts.pop())
            .ok_or_else(|| missing(store, digest))?;
        hash.update(&piece);
    }
    if hash.finalize()[..] != digest[..] {
        return Err(Error::Integrity(format!(
            "{}: the pack's bytes do not hash to its name",
            store.dir().join(&name).display()
        )));
    }
    Ok(())
}

/// A pack the release's map names that the store does not hold.
fn missing(store: &LocalStore, digest: &[u8; 32]) -> Error {
    Error::Integrity(format!(
        "{}: {}, which the release's pack map names, is missing",
        store.dir().display(),
        pack::pack_name(digest)
    ))
}
