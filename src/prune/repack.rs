//! Repacking: the live objects of packs mostly dead move to new packs, written like
//! `make --pack` writes them (chunk files first, deltas in packs of their own).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Marked, PruneReport, REPACK_DEAD_PERCENT};
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::pack::format::{DEFAULT_PACK_SIZE, PACK_HEADER_SIZE};
use crate::pack::{self, Object, PackWriter, Place};
use crate::progress::Progress;
use crate::store::{Listed, LocalStore, PruneStore};

/// The packs to repack and the live objects they hold, in the order they go into new
/// packs: the kept releases' chunk files, then their deltas.
pub struct Plan {
    packs: Vec<[u8; 32]>,
    objects: Vec<(Object, Place)>,
    bytes: u64,
}

impl Plan {
    pub fn packs(&self) -> &[[u8; 32]] {
        &self.packs
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

pub fn plan(store: &dyn PruneStore, marked: &Marked, listed: &HashMap<String, &Listed>) -> Result<Plan> {
    // Each pack's live bytes: the distinct places kept maps name for live objects.
    let mut places: BTreeMap<[u8; 32], HashSet<(u64, u32)>> = BTreeMap::new();
    for map in marked.maps.values() {
        for object in &marked.live {
            if let Some(place) = map.find(object) {
                places.entry(place.pack).or_default().insert((place.offset, place.size));
            }
        }
    }
    let mut order = marked.order.clone();
    let mut packs = Vec::new();
    for (digest, live) in &places {
        let name = pack::pack_name(digest);
        let Some(l) = listed.get(&name) else {
            continue;
        };
        let header = store
            .read_range(&name, 0..PACK_HEADER_SIZE as u64)?
            .ok_or_else(|| Error::Integrity(format!("{}: {name} is shorter than a pack header", store.describe())))?;
        let (_, toc) = pack::parse_header(&name, &header, l.size)?;
        let data = toc.saturating_sub(PACK_HEADER_SIZE as u64);
        let live: u64 = live.iter().map(|(_, size)| u64::from(*size)).sum();
        let dead = data.saturating_sub(live);
        if dead * 100 > data * REPACK_DEAD_PERCENT {
            packs.push(*digest);
        }
    }
    let chosen: HashSet<[u8; 32]> = packs.iter().copied().collect();
    order.retain(|(_, p)| chosen.contains(&p.pack));
    order.sort_by_key(|(o, _)| matches!(o, Object::Delta { .. }));
    let bytes = order.iter().map(|(_, p)| u64::from(p.size)).sum();
    Ok(Plan {
        packs,
        objects: order,
        bytes,
    })
}

/// Writes the plan's new packs; returns where each object moved.
pub fn run(
    store: &dyn PruneStore,
    plan: &Plan,
    sizes: &HashMap<ChunkId, u32>,
    report: &mut PruneReport,
    progress: &dyn Progress,
) -> Result<HashMap<Object, Place>> {
    if plan.objects.is_empty() {
        return Ok(HashMap::new());
    }
    // Packs are written in place in a directory, else in a temporary one and sent.
    let (_scratch, scratch_store);
    let target = match store.local() {
        Some(local) => local,
        None => {
            let dir = tempfile::tempdir().map_err(|e| Error::Io {
                path: std::env::temp_dir(),
                err: e,
            })?;
            scratch_store = LocalStore::open(dir.path(), true)?;
            _scratch = dir;
            &scratch_store
        }
    };
    // How far into each old pack the objects taken from it reach.
    let mut reach: HashMap<[u8; 32], u64> = HashMap::new();
    for (_, place) in &plan.objects {
        let end = reach.entry(place.pack).or_default();
        *end = (*end).max(place.range().end);
    }
    let mut writer = PackWriter::new(target, DEFAULT_PACK_SIZE);
    let mut deltas_started = false;
    // One old pack's bytes at a time: objects are taken in plan order, read by pack.
    let mut held: Option<([u8; 32], Vec<u8>)> = None;
    for (object, place) in &plan.objects {
        if matches!(object, Object::Delta { .. }) && !deltas_started {
            writer.close()?;
            deltas_started = true;
        }
        if held.as_ref().is_none_or(|(d, _)| *d != place.pack) {
            let name = pack::pack_name(&place.pack);
            drop(held.take());
            let bytes = store
                .read_range(&name, 0..reach[&place.pack])?
                .ok_or_else(|| Error::Integrity(format!("{}: {name} is shorter than its pack map says", store.describe())))?;
            held = Some((place.pack, bytes));
        }
        let Some((_, bytes)) = &held else {
            continue;
        };
        let range = place.offset as usize..place.range().end as usize;
        let stored = bytes.get(range).ok_or_else(|| {
            Error::Integrity(format!("{}: {} is shorter than its pack map says", store.describe(), pack::pack_name(&place.pack)))
        })?;
        let size = match object {
            Object::Chunk(id) => sizes.get(id).copied(),
            Object::Delta { .. } => None,
        };
        super::releases::check_object(object, stored, size).map_err(|e| {
            Error::Integrity(format!(
                "{e} (in {} of {}): not repacked; run blockcast check --repair",
                pack::pack_name(&place.pack),
                store.describe()
            ))
        })?;
        writer.add(*object, stored)?;
        report.written_bytes += stored.len() as u64;
        progress.advance(stored.len() as u64);
    }
    let (placed, written) = writer.finish()?;
    report.written_packs = written;
    report.repacked_packs = plan.packs.len() as u64;
    let new: std::collections::BTreeSet<[u8; 32]> = placed.iter().map(|(_, p)| p.pack).collect();
    if store.local().is_none() {
        for digest in &new {
            let name = pack::pack_name(digest);
            let bytes = target
                .read_object(&name, u64::MAX)?
                .ok_or_else(|| Error::Internal(format!("{name} written, then gone")))?;
            store.write(&name, &bytes)?;
        }
    }
    Ok(placed.into_iter().collect())
}
