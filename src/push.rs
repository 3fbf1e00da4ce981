//! Publishing a release from a local packed store to a remote one (`s3://BUCKET/PREFIX`):
//! the packs its pack map names, then the map, then its signature, then the index, each
//! step done before the next, so a reader never finds an index whose map or packs are not
//! there yet. What the destination already holds is not sent again: a pack there with its
//! size is skipped (a pack's name is its digest, and an upload is whole or absent), so a
//! push cut short is finished by running it again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::index::Index;
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
}

/// Publishes the release `index` (its signature beside it, if any) from `store` to
/// `destination`. The index's name there is its file name, under the destination's
/// prefix, beside the store's layout.
pub fn push(
    index: &Path,
    store: &LocalStore,
    destination: &str,
    http: &HttpOptions,
    runtime: &Handle,
    progress: &dyn Progress,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<PushReport> {
    if !s3::is_s3(destination) {
        return Err(Error::Unsupported(format!(
            "{destination}: releases are pushed to s3:// locations"
        )));
    }
    let dest = S3Location::parse(destination)?;
    let bytes = Index::read_bytes(index)?;
    let release = Index::from_bytes(index, bytes.clone())?;
    let index_name = index
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no file name", index.display())))?;
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

    let client = Client::new(http, Arc::default())?;
    let packs = map.packs();
    let sizes = packs
        .iter()
        .map(|p| {
            store
                .object_len(&pack::pack_name(p))?
                .ok_or_else(|| missing(store, p))
        })
        .collect::<Result<Vec<u64>>>()?;
    let biggest = sizes.iter().copied().max().unwrap_or(0).max(1);
    let at_once = (PACK_MEMORY / biggest).clamp(1, PACKS_AT_ONCE) as usize;
    progress.start("pushing", sizes.iter().sum());
    let uploaded = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    runtime.block_on(async {
        let mut results = stream::iter(packs.iter().zip(&sizes))
            .map(|(digest, &size)| {
                let (client, dest, uploaded, sent) = (&client, &dest, &uploaded, &sent);
                async move {
                    let name = pack::pack_name(digest);
                    let there = client.length(&dest.url(Method::Head, &name), warn).await?;
                    if there != Some(size) {
                        let body = read_pack(store, digest, size)?;
                        client
                            .put(&dest.url(Method::Put, &name), body.into(), warn)
                            .await?;
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        sent.fetch_add(size, Ordering::Relaxed);
                    }
                    progress.advance(size);
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(at_once);
        while let Some(done) = results.next().await {
            done?;
        }
        // Then what names the packs, the index last.
        let put = |name: String, body: Vec<u8>| {
            let (client, dest, sent) = (&client, &dest, &sent);
            async move {
                sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                client
                    .put(&dest.url(Method::Put, &name), body.into(), warn)
                    .await
            }
        };
        put(map_name.clone(), map_bytes).await?;
        if let Some(signature) = &signature {
            put(format!("{index_name}.minisig"), signature.clone()).await?;
        }
        put(index_name.to_string(), bytes).await
    })?;
    progress.finish();
    let packs_uploaded = uploaded.into_inner();
    Ok(PushReport {
        destination: dest.describe(),
        packs_uploaded,
        packs_present: packs.len() as u64 - packs_uploaded,
        bytes_uploaded: sent.into_inner(),
        signed: signature.is_some(),
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
