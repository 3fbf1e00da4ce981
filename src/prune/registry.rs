//! Prune of a registry repository: the manifests of releases not kept are deleted, then
//! the blobs that only they referenced. A registry deletes a manifest by digest (with
//! every tag on it; distribution refuses to delete a tag alone), so a digest a kept tag
//! names is never deleted; a blob DELETE unlinks the blob from this repository only, and
//! the registry's own garbage collection frees the storage afterwards. Packs are never
//! repacked here: a kept release's blobs stay as they are.
//!
//! A push that runs meanwhile is safe: blobs are unlinked only after the tags were listed
//! again, and a manifest PUT naming a blob unlinked since the push asked for it fails
//! (`MANIFEST_BLOB_UNKNOWN`), upon which `push` sends its blobs again. The prune then lists
//! the tags a last time and names any release that lost a blob between the two.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use tokio::runtime::Handle;

use super::{KeptRelease, PruneOptions};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::oci::registry::Registry;
use crate::oci::{self, Blob, Reference, ReleaseManifest};
use crate::store::http::{Client, HttpOptions};

/// What a prune of a repository did, or would do.
#[derive(Debug, Default, Serialize)]
pub struct RegistryPruneReport {
    pub repository: String,
    pub dry_run: bool,
    pub kept_releases: Vec<KeptRelease>,
    /// Release manifests deleted (with their tags), and the tags they carried.
    pub deleted_manifests: u64,
    pub deleted_tags: Vec<String>,
    /// Blobs unlinked from the repository, and their bytes.
    pub deleted_blobs: u64,
    pub deleted_bytes: u64,
    /// What the registry must still do to free the storage.
    pub note: String,
}

/// A manifest tagged in the repository.
struct Tagged {
    tags: Vec<String>,
    /// Every blob it references (config and layers), with sizes.
    blobs: Vec<Blob>,
    /// The release it holds, when it is one, with its index.
    release: Option<(ReleaseManifest, Index)>,
}

/// Prunes the repository `location` (`oci://HOST/REPO`).
pub fn prune(
    location: &str,
    opts: &PruneOptions,
    http: &HttpOptions,
    runtime: &Handle,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<RegistryPruneReport> {
    let reference = Reference::parse(location)?;
    if reference.tag.is_some() || reference.digest.is_some() {
        return Err(Error::Invalid(format!(
            "{location}: prune takes a repository, without a tag or digest"
        )));
    }
    let client = Client::new(http, std::sync::Arc::default())?;
    let registry = Registry::new(&reference, &client, http);
    let keep: HashSet<[u8; 32]> = opts
        .keep
        .iter()
        .map(|p: &PathBuf| Index::open(p).map(|i| i.digest()))
        .collect::<Result<_>>()?;
    runtime.block_on(async {
        let tagged = listing(&registry, true, warn).await?;
        let mut numbers: Vec<u64> = tagged
            .values()
            .filter_map(|t| t.release.as_ref().map(|(_, i)| i.header().release))
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        let last: HashSet<u64> = match opts.keep_last {
            Some(n) => numbers.iter().rev().take(n).copied().collect(),
            None if keep.is_empty() => numbers.iter().copied().collect(),
            None => HashSet::new(),
        };
        let mut report = RegistryPruneReport {
            repository: reference.repository_location(),
            dry_run: opts.dry_run,
            note: "blobs are unlinked from the repository; the registry frees their storage when its garbage collection runs (`registry garbage-collect CONFIG` with the registry stopped or read-only; with --delete-untagged it also removes manifests whose tags were moved)".into(),
            ..RegistryPruneReport::default()
        };
        let mut doomed = BTreeSet::new();
        for (digest, t) in &tagged {
            let Some((_, index)) = &t.release else {
                continue;
            };
            let kept = keep.contains(&index.digest()) || last.contains(&index.header().release);
            if kept {
                report.kept_releases.push(KeptRelease {
                    name: t.tags.iter().find(|t| !t.starts_with("bcidx-")).unwrap_or(&t.tags[0]).clone(),
                    release: index.header().release,
                    digest: crate::pack::hex(&index.digest()),
                });
            } else {
                doomed.insert(digest.clone());
            }
        }
        if report.kept_releases.is_empty() && !doomed.is_empty() {
            return Err(Error::Invalid(format!(
                "{location}: no release would be kept; name them with --keep or --keep-last"
            )));
        }
        for digest in &doomed {
            report.deleted_manifests += 1;
            report.deleted_tags.extend(tagged[digest].tags.iter().cloned());
            if !opts.dry_run {
                registry.delete_manifest(digest, warn).await?;
            }
        }
        // The blobs that only deleted manifests referenced, against the tags as they are
        // now (a release pushed since the first listing keeps its blobs).
        let now = match opts.dry_run {
            true => tagged.iter().filter(|(d, _)| !doomed.contains(*d)).map(|(d, t)| (d.clone(), t.blobs.clone())).collect(),
            false => listing(&registry, false, warn).await?.into_iter().map(|(d, t)| (d, t.blobs)).collect::<BTreeMap<_, _>>(),
        };
        let referenced: HashSet<&str> = now.values().flatten().map(|b| b.digest.as_str()).collect();
        let mut unlinked = BTreeMap::new();
        for digest in &doomed {
            for blob in &tagged[digest].blobs {
                if !referenced.contains(blob.digest.as_str()) {
                    unlinked.insert(blob.digest.clone(), blob.size);
                }
            }
        }
        for (digest, size) in &unlinked {
            if opts.dry_run || registry.delete_blob(digest, warn).await? {
                report.deleted_blobs += 1;
                report.deleted_bytes += size;
            }
        }
        if !opts.dry_run && !unlinked.is_empty() {
            for (digest, t) in listing(&registry, false, warn).await? {
                if let Some(lost) = t.blobs.iter().find(|b| unlinked.contains_key(&b.digest)) {
                    return Err(Error::Integrity(format!(
                        "{location}: manifest {digest} (tags {}), pushed while this prune ran, names blob {} that it unlinked: push that release again",
                        t.tags.join(", "),
                        lost.digest
                    )));
                }
            }
        }
        Ok(report)
    })
}

/// Every tagged manifest of the repository by digest, with its tags and blobs; with
/// `releases`, each release's index read too.
async fn listing(
    registry: &Registry,
    releases: bool,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<BTreeMap<String, Tagged>> {
    let mut out: BTreeMap<String, Tagged> = BTreeMap::new();
    for tag in registry.tags(warn).await? {
        // A tag deleted since the listing is no longer there to keep or delete.
        let Some(json) = registry.manifest(&tag, warn).await? else {
            continue;
        };
        let digest = oci::digest_of(&json);
        if let Some(t) = out.get_mut(&digest) {
            t.tags.push(tag);
            continue;
        }
        let blobs = referenced_blobs(&json);
        let release = match ReleaseManifest::parse(&format!("manifest {tag}"), &json) {
            Ok(release) if releases => {
                let bytes = registry.blob(&release.index, warn).await?.ok_or_else(|| {
                    Error::Integrity(format!(
                        "{}: release {tag} lacks its index blob {}",
                        registry.reference().repository_location(),
                        release.index.digest
                    ))
                })?;
                let index = Index::from_bytes(&PathBuf::from(format!("{tag} index")), bytes)?;
                Some((release, index))
            }
            _ => None,
        };
        out.insert(
            digest,
            Tagged {
                tags: vec![tag],
                blobs,
                release,
            },
        );
    }
    Ok(out)
}

/// The blobs an image manifest references: its config and layers, whatever it holds.
fn referenced_blobs(json: &[u8]) -> Vec<Blob> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let blob = |v: &serde_json::Value| {
        Some(Blob {
            digest: v.get("digest")?.as_str()?.to_string(),
            size: v.get("size")?.as_u64()?,
        })
    };
    let mut blobs: Vec<Blob> = value.get("config").and_then(blob).into_iter().collect();
    if let Some(layers) = value.get("layers").and_then(|l| l.as_array()) {
        blobs.extend(layers.iter().filter_map(blob));
    }
    blobs
}
