//! Prune: remove from a store what no kept release needs (loose chunk files, deltas,
//! packs, pack maps, the records of releases not kept), repack packs mostly dead, and
//! leave every kept release whole, while publishers and readers use the store (see
//! `docs/FORMAT.md`, Changing a store while others read and write it).
//!
//! The order of a run makes it safe to kill at any point: the store is held against
//! publishers ([`crate::store::lease`]); what the kept releases need is marked; new packs
//! are written, then markers of the packs they replace, then the kept releases' pack maps
//! are rewritten; only then is anything deleted, the records of releases not kept first
//! (so no reader finds a release whose pack map or packs are gone), their maps next, then
//! objects. A run killed before its deletions leaves new packs nothing names (removed by
//! the next run); one killed during them leaves fewer to delete.

pub mod registry;
pub mod releases;
mod repack;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::pack::{self, Object, PackMap, Place};
use crate::progress::Progress;
use crate::store::lease::{self, Hold};
use crate::store::{Listed, PruneStore, Warn};
use releases::{Kind, Release};

/// A pack is repacked when more than this share (in percent) of its objects' bytes is
/// dead: no kept release's pack map names them.
pub const REPACK_DEAD_PERCENT: u64 = 25;

/// What to keep.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Releases kept, by their index files (found in the store or not).
    pub keep: Vec<PathBuf>,
    /// Also keep the releases of the store with the N highest release numbers. Without
    /// it and without `keep`, every release the store records is kept.
    pub keep_last: Option<usize>,
    /// Keep the deltas devices on the N releases before the oldest kept one need.
    pub keep_bases: usize,
    /// Nothing written more recently than this is deleted, and a pack replaced by a
    /// repack stays this long after the maps naming it were rewritten.
    pub grace: Duration,
    /// Report what would be done, and do nothing.
    pub dry_run: bool,
    /// How long to wait for publishers to finish.
    pub wait: Duration,
}

/// A release kept.
#[derive(Debug, Serialize)]
pub struct KeptRelease {
    pub name: String,
    pub release: u64,
    pub digest: String,
}

/// What a prune did, or (in a dry run) would do.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub store: String,
    pub dry_run: bool,
    pub kept_releases: Vec<KeptRelease>,
    /// Releases not kept whose records stay: their chunks are bases of deltas kept.
    pub base_releases: u64,
    /// Releases whose records were deleted.
    pub removed_releases: u64,
    /// Objects deleted (records, pack maps, chunk files, deltas, packs, markers, leases)
    /// and their bytes.
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
    /// Objects that no kept release needs, left because they are younger than the grace
    /// period, and their bytes.
    pub young_objects: u64,
    pub young_bytes: u64,
    /// Packs repacked, the packs written in their place and their bytes.
    pub repacked_packs: u64,
    pub written_packs: u64,
    pub written_bytes: u64,
    /// Kept releases' pack maps rewritten, and the deltas dropped from them (their base
    /// is in no release kept or kept as a base).
    pub rewritten_maps: u64,
    pub dropped_deltas: u64,
    /// Packs a repack replaced that stay for the grace period.
    pub retired_packs: u64,
}

/// Prunes `store` (a local directory or an S3 prefix).
pub fn prune(
    store: Arc<dyn PruneStore>,
    opts: &PruneOptions,
    progress: &dyn Progress,
    warn: &Warn,
) -> Result<PruneReport> {
    if opts.keep_last == Some(0) {
        return Err(Error::Invalid(
            "--keep-last 0 would keep nothing; name what to keep".into(),
        ));
    }
    let hold = match opts.dry_run {
        true => None,
        false => Some(Hold::prune(store.clone(), opts.wait, warn)?),
    };
    let started = SystemTime::now();
    let cutoff = started
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let listed = store.list()?;
    let all = releases::find(store.as_ref(), &listed, &opts.keep)?;
    let (mut kept, bases) = choose(&all, opts);
    // A release recorded within the grace period is kept whole, as its record is.
    let when: HashMap<&str, SystemTime> = listed
        .iter()
        .map(|l| (l.name.as_str(), l.modified))
        .collect();
    for r in &all {
        let young = !r.records.is_empty()
            && r.records
                .iter()
                .all(|n| when.get(n.as_str()).is_some_and(|t| *t > cutoff));
        if young && !kept.iter().any(|k| k.index.digest() == r.index.digest()) {
            kept.push(r);
        }
    }
    if kept.is_empty()
        && listed
            .iter()
            .any(|l| matches!(releases::kind(&l.name), Kind::Loose(_) | Kind::Pack(_)))
    {
        return Err(Error::Invalid(format!(
            "{}: no release to keep (the store records none): name them with --keep",
            store.describe()
        )));
    }
    let mut report = PruneReport {
        store: store.describe(),
        dry_run: opts.dry_run,
        kept_releases: kept
            .iter()
            .map(|r| KeptRelease {
                name: r.describe(),
                release: r.number(),
                digest: pack::hex(&r.index.digest()),
            })
            .collect(),
        base_releases: bases.len() as u64,
        ..PruneReport::default()
    };
    let marked = mark(store.as_ref(), &kept, &bases, &mut report)?;
    let sizes: HashMap<String, &Listed> = listed.iter().map(|l| (l.name.clone(), l)).collect();
    let plan = repack::plan(store.as_ref(), &marked, &sizes)?;
    let mut maps = marked.maps;
    if !opts.dry_run {
        progress.start("repacking", plan.bytes());
        let moved = repack::run(store.as_ref(), &plan, &marked.sizes, &mut report, progress)?;
        progress.finish();
        // Markers of the packs replaced, before any map stops naming them.
        for digest in plan.packs() {
            store.write(&releases::retired_name(digest), b"")?;
        }
        store.sync()?;
        rewrite_maps(
            store.as_ref(),
            &kept,
            &marked.live,
            &moved,
            &mut maps,
            &mut report,
        )?;
        store.sync()?;
    } else {
        report.repacked_packs = plan.packs().len() as u64;
        report.written_bytes = plan.bytes();
    }
    report.retired_packs = plan.packs().len() as u64;
    let retiring: HashSet<[u8; 32]> = plan.packs().iter().copied().collect();
    let doomed = doomed(
        store.as_ref(),
        &listed,
        &all,
        (&kept, &bases),
        &marked.live,
        &maps,
        (&retiring, cutoff, opts.grace.is_zero()),
        &mut report,
    )?;
    if !opts.dry_run {
        progress.start("deleting", doomed.len() as u64);
        for name in &doomed {
            store.delete(name)?;
            progress.advance(1);
        }
        store.sync()?;
        progress.finish();
    }
    if let Some(hold) = hold {
        hold.release()?;
    }
    Ok(report)
}

/// The releases kept and those kept as bases of deltas, out of `all` (in release-number
/// order).
fn choose<'a>(all: &'a [Release], opts: &PruneOptions) -> (Vec<&'a Release>, Vec<&'a Release>) {
    let mut numbers: Vec<u64> = all
        .iter()
        .filter(|r| !r.records.is_empty())
        .map(Release::number)
        .collect();
    numbers.dedup();
    let last: HashSet<u64> = match opts.keep_last {
        Some(n) => numbers.iter().rev().take(n).copied().collect(),
        None if opts.keep.is_empty() => numbers.iter().copied().collect(),
        None => HashSet::new(),
    };
    let kept: Vec<&Release> = all
        .iter()
        .filter(|r| r.named || (!r.records.is_empty() && last.contains(&r.number())))
        .collect();
    let oldest = kept.iter().map(|r| r.number()).min();
    let kept_digests: HashSet<[u8; 32]> = kept.iter().map(|r| r.index.digest()).collect();
    let mut below: Vec<u64> = all
        .iter()
        .map(Release::number)
        .filter(|n| oldest.is_some_and(|o| *n < o))
        .collect();
    below.dedup();
    let base_numbers: HashSet<u64> = below.iter().rev().take(opts.keep_bases).copied().collect();
    let bases = all
        .iter()
        .filter(|r| !kept_digests.contains(&r.index.digest()) && base_numbers.contains(&r.number()))
        .collect();
    (kept, bases)
}

/// What the kept releases need.
struct Marked {
    /// Objects (chunk files and deltas) kept.
    live: HashSet<Object>,
    /// Each chunk file's decompressed size.
    sizes: HashMap<ChunkId, u32>,
    /// The pack maps of kept releases, by index digest.
    maps: HashMap<[u8; 32], PackMap>,
    /// Each live object the maps place, once, in the order the first release (by
    /// release number) naming it wants it.
    order: Vec<Object>,
}

fn mark(
    store: &dyn PruneStore,
    kept: &[&Release],
    bases: &[&Release],
    report: &mut PruneReport,
) -> Result<Marked> {
    let mut on_devices: HashSet<ChunkId> = HashSet::new();
    for r in kept.iter().chain(bases) {
        on_devices.extend(releases::chunk_ids(&r.index));
    }
    let mut live = HashSet::new();
    let mut sizes = HashMap::new();
    let mut dropped = HashSet::new();
    let mut maps = HashMap::new();
    let mut order = Vec::new();
    let mut ordered = HashSet::new();
    for r in kept {
        let (chunks, deltas, tree) = pack::objects(&r.index);
        live.extend(chunks);
        live.extend(tree);
        // A delta is kept when devices hold every chunk of its base run.
        let held: HashSet<ChunkId> = r
            .index
            .deltas()
            .filter(|d| d.run.iter().all(|p| on_devices.contains(&p.id)))
            .map(|d| d.base)
            .collect();
        for d in deltas {
            match d {
                Object::Delta { base, .. } if !held.contains(&base) => {
                    dropped.insert(d);
                }
                d => {
                    live.insert(d);
                }
            }
        }
        releases::chunk_sizes(&r.index, &mut sizes);
        if let Some(map) = releases::read_map(store, &r.index)? {
            let (chunks, deltas, tree) = pack::objects(&r.index);
            for object in chunks.into_iter().chain(tree).chain(deltas) {
                if map.find(&object).is_some() && live.contains(&object) && ordered.insert(object) {
                    order.push(object);
                }
            }
            maps.insert(r.index.digest(), map);
        }
    }
    dropped.retain(|d| !live.contains(d));
    report.dropped_deltas = dropped.len() as u64;
    Ok(Marked {
        live,
        sizes,
        maps,
        order,
    })
}

/// Writes again each kept release's pack map that names a dropped delta or a place a
/// repack moved.
fn rewrite_maps(
    store: &dyn PruneStore,
    kept: &[&Release],
    live: &HashSet<Object>,
    moved: &HashMap<Object, Place>,
    maps: &mut HashMap<[u8; 32], PackMap>,
    report: &mut PruneReport,
) -> Result<()> {
    for r in kept {
        let digest = r.index.digest();
        let Some(map) = maps.get(&digest) else {
            continue;
        };
        let (chunks, deltas, tree) = pack::objects(&r.index);
        let mut placed = Vec::with_capacity(map.len());
        let mut changed = false;
        for object in chunks.into_iter().chain(tree).chain(deltas) {
            let Some(place) = map.find(&object) else {
                continue;
            };
            if !live.contains(&object) {
                changed = true;
                continue;
            }
            let place = match moved.get(&object) {
                Some(new) if *new != place => {
                    changed = true;
                    *new
                }
                _ => place,
            };
            placed.push((object, place));
        }
        if !changed {
            continue;
        }
        let bytes = PackMap::encode(&digest, &placed);
        store.write(&pack::map_name(&digest), &PackMap::seal(&bytes)?)?;
        maps.insert(
            digest,
            PackMap::parse("a rewritten pack map", &bytes, &r.index)?,
        );
        report.rewritten_maps += 1;
    }
    Ok(())
}

/// The objects to delete, in the order to delete them: the records of releases neither
/// kept nor kept as bases (a top-level index before its signature), then pack maps no
/// kept release owns, loose chunk files and deltas not kept, packs no kept map names
/// (those a repack replaced once their marker is older than the grace period), markers
/// whose pack is gone, and expired leases. Nothing written after `cutoff` goes, but a
/// replaced pack (`retiring`: by this run) when `now` (no grace period).
#[allow(clippy::too_many_arguments)]
fn doomed(
    store: &dyn PruneStore,
    listed: &[Listed],
    all: &[Release],
    (kept, bases): (&[&Release], &[&Release]),
    live: &HashSet<Object>,
    maps: &HashMap<[u8; 32], PackMap>,
    (retiring, cutoff, now): (&HashSet<[u8; 32]>, SystemTime, bool),
    report: &mut PruneReport,
) -> Result<Vec<String>> {
    let staying: HashSet<[u8; 32]> = kept.iter().chain(bases).map(|r| r.index.digest()).collect();
    let kept_digests: HashSet<[u8; 32]> = kept.iter().map(|r| r.index.digest()).collect();
    let mut record_stays: HashSet<&str> = HashSet::new();
    for r in all.iter().filter(|r| staying.contains(&r.index.digest())) {
        record_stays.extend(r.records.iter().map(String::as_str));
    }
    // The packs kept maps place live objects in, but those a repack replaces (a dry
    // run's maps still name them, and the deltas it would drop).
    let live_packs: HashSet<[u8; 32]> = maps
        .values()
        .flat_map(|m| live.iter().filter_map(|o| m.find(o)))
        .map(|p| p.pack)
        .filter(|p| !retiring.contains(p))
        .collect();
    let retired: HashMap<[u8; 32], &Listed> = listed
        .iter()
        .filter_map(|l| match releases::kind(&l.name) {
            Kind::Retired(d) => Some((d, l)),
            _ => None,
        })
        .collect();
    let packs: HashSet<[u8; 32]> = listed
        .iter()
        .filter_map(|l| match releases::kind(&l.name) {
            Kind::Pack(d) => Some(d),
            _ => None,
        })
        .collect();
    let mut out: [Vec<String>; 5] = Default::default();
    let mut removed_records = HashSet::new();
    let mut gone_packs = HashSet::new();
    for l in listed {
        let young = l.modified > cutoff;
        let (stage, dead) = match releases::kind(&l.name) {
            Kind::Record => {
                let dead = !record_stays.contains(l.name.as_str());
                if dead && !young {
                    removed_records.insert(l.name.clone());
                }
                (0, dead)
            }
            Kind::Beside(index) => (1, !record_stays.contains(index.as_str())),
            Kind::Map(d) => (1, !kept_digests.contains(&d)),
            Kind::Loose(o) => (2, !live.contains(&o)),
            Kind::Pack(d) => {
                if live_packs.contains(&d) {
                    continue;
                }
                // A pack a repack replaced: its marker's time counts.
                let young = match retired.get(&d) {
                    _ if retiring.contains(&d) => !now,
                    Some(marker) => marker.modified > cutoff,
                    None => young,
                };
                if young {
                    report.young_objects += 1;
                    report.young_bytes += l.size;
                    continue;
                }
                gone_packs.insert(d);
                if retiring.contains(&d) {
                    // Its marker, written by this run, goes with it.
                    out[4].push(releases::retired_name(&d));
                }
                out[3].push(l.name.clone());
                report.deleted_objects += 1;
                report.deleted_bytes += l.size;
                continue;
            }
            Kind::Retired(_) | Kind::Lease | Kind::Other => continue,
        };
        if !dead {
            continue;
        }
        if young {
            report.young_objects += 1;
            report.young_bytes += l.size;
            continue;
        }
        out[stage].push(l.name.clone());
        report.deleted_objects += 1;
        report.deleted_bytes += l.size;
    }
    for l in listed {
        match releases::kind(&l.name) {
            Kind::Retired(d) if gone_packs.contains(&d) || !packs.contains(&d) => {}
            Kind::Lease if lease::is_dead_lease(store, l)? => {}
            _ => continue,
        }
        out[4].push(l.name.clone());
        report.deleted_objects += 1;
        report.deleted_bytes += l.size;
    }
    report.removed_releases = all
        .iter()
        .filter(|r| !r.records.is_empty() && r.records.iter().all(|n| removed_records.contains(n)))
        .count() as u64;
    Ok(out.into_iter().flatten().collect())
}
