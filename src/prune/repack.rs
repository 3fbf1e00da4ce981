//! Repacking: the live objects of packs mostly dead move to new packs, written like
//! `make --pack` writes them (chunk files first, deltas in packs of their own).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::releases::Kind;
use super::{Marked, PruneReport, REPACK_DEAD_PERCENT};
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::pack::format::{DEFAULT_PACK_SIZE, PACK_HEADER_SIZE};
use crate::pack::{self, Object, PackWriter, Place, Staging};
use crate::progress::Progress;
use crate::store::{Listed, LocalStore, PruneStore};

/// The packs to repack, the live objects they hold that no other pack holds (in the
/// order they go into new packs: the kept releases' chunk files, then their deltas), and
/// those another pack holds already (a pack written by an earlier run cut short), which
/// maps point at instead.
pub struct Plan {
    packs: Vec<[u8; 32]>,
    /// The packs to repack with their sizes.
    sized: Vec<([u8; 32], u64)>,
    objects: Vec<(Object, Place)>,
    elsewhere: Vec<(Object, Place)>,
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

/// A pack's header, read and checked against its listed size: its entry count and where
/// its table of contents starts.
fn header(store: &dyn PruneStore, name: &str, size: u64) -> Result<(usize, u64)> {
    let header = store
        .read_range(name, 0..PACK_HEADER_SIZE as u64)?
        .ok_or_else(|| {
            Error::Integrity(format!(
                "{}: {name} is shorter than a pack header",
                store.describe()
            ))
        })?;
    pack::parse_header(name, &header, size)
}

pub fn plan(
    store: &dyn PruneStore,
    marked: &Marked,
    listed: &HashMap<String, &Listed>,
) -> Result<Plan> {
    // Each pack's live bytes: the distinct places kept maps name for live objects.
    let mut places: BTreeMap<[u8; 32], HashSet<(u64, u32)>> = BTreeMap::new();
    for map in marked.maps.values() {
        for object in &marked.live {
            if let Some(place) = map.find(object) {
                places
                    .entry(place.pack)
                    .or_default()
                    .insert((place.offset, place.size));
            }
        }
    }
    let mut sized = Vec::new();
    for (digest, live) in &places {
        let name = pack::pack_name(digest);
        let Some(l) = listed.get(&name) else {
            continue;
        };
        let (_, toc) = header(store, &name, l.size)?;
        let data = toc.saturating_sub(PACK_HEADER_SIZE as u64);
        let live: u64 = live.iter().map(|(_, size)| u64::from(*size)).sum();
        let dead = data.saturating_sub(live);
        if dead * 100 > data * REPACK_DEAD_PERCENT {
            sized.push((*digest, l.size));
        }
    }
    let packs: Vec<[u8; 32]> = sized.iter().map(|(d, _)| *d).collect();
    let chosen: HashSet<[u8; 32]> = packs.iter().copied().collect();
    let mut plan = Plan {
        packs,
        sized,
        objects: Vec::new(),
        elsewhere: Vec::new(),
        bytes: 0,
    };
    if chosen.is_empty() {
        return Ok(plan);
    }
    // Every other pack's contents, from its table of contents.
    let mut held: HashMap<Object, Place> = HashMap::new();
    let mut others: Vec<(&String, [u8; 32], u64)> = listed
        .iter()
        .filter_map(|(name, l)| match super::releases::kind(name) {
            Kind::Pack(digest) if !chosen.contains(&digest) => Some((name, digest, l.size)),
            _ => None,
        })
        .collect();
    others.sort();
    for (name, digest, size) in others {
        let (count, toc_at) = header(store, name, size)?;
        let toc = store.read_range(name, toc_at..size)?.unwrap_or_default();
        for (object, place) in pack::parse_toc(name, &digest, &toc, count, toc_at)? {
            held.entry(object).or_insert(place);
        }
    }
    for object in &marked.order {
        let in_chosen = marked
            .maps
            .values()
            .find_map(|m| m.find(object).filter(|p| chosen.contains(&p.pack)));
        let Some(place) = in_chosen else {
            continue;
        };
        match held.get(object) {
            Some(there) => plan.elsewhere.push((*object, *there)),
            None => {
                plan.bytes += u64::from(place.size);
                plan.objects.push((*object, place));
            }
        }
    }
    plan.objects
        .sort_by_key(|(o, _)| matches!(o, Object::Delta { .. }));
    Ok(plan)
}

/// Copies the packs `packs` (with their sizes) of a remote store into the local
/// directory `to`, a piece at a time.
fn fetch_packs(store: &dyn PruneStore, to: &LocalStore, packs: &[([u8; 32], u64)]) -> Result<()> {
    use std::io::Write;
    const PIECE: u64 = 8 << 20;
    let dir = to.dir().join("packs");
    std::fs::create_dir_all(&dir).map_err(|err| Error::Io {
        path: dir.clone(),
        err,
    })?;
    for (digest, size) in packs {
        let name = pack::pack_name(digest);
        let path = to.dir().join(&name);
        let io = |err| Error::Io {
            path: path.clone(),
            err,
        };
        let mut file = std::fs::File::create(&path).map_err(io)?;
        for at in (0..*size).step_by(PIECE as usize) {
            let piece = store
                .read_range(&name, at..(at + PIECE).min(*size))?
                .ok_or_else(|| {
                    Error::Integrity(format!(
                        "{}: {name} is shorter than listed",
                        store.describe()
                    ))
                })?;
            file.write_all(&piece).map_err(io)?;
        }
    }
    Ok(())
}

/// Checks the stored bytes of `object` read from `place` (its chunk file against its
/// id), naming the pack when they are bad.
fn checked(
    store: &dyn PruneStore,
    object: &Object,
    place: &Place,
    stored: &[u8],
    sizes: &HashMap<ChunkId, u32>,
) -> Result<()> {
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
    report.repacked_packs = plan.packs.len() as u64;
    let mut moved = HashMap::new();
    for (object, place) in &plan.elsewhere {
        let name = pack::pack_name(&place.pack);
        let stored = store.read_range(&name, place.range())?.ok_or_else(|| {
            Error::Integrity(format!(
                "{}: {name} is shorter than its table of contents says",
                store.describe()
            ))
        })?;
        checked(store, object, place, &stored, sizes)?;
        moved.insert(*object, *place);
    }
    if plan.objects.is_empty() {
        return Ok(moved);
    }
    let staging = Staging::for_store(store)?;
    let target = staging.dir();
    // Objects are read one by one where they lie: in the store's own packs, or (a
    // remote store) in copies of the packs being repacked, fetched once each.
    let source: &dyn PruneStore = match store.local() {
        Some(local) => local,
        None => {
            fetch_packs(store, target, &plan.sized)?;
            target
        }
    };
    let mut writer = PackWriter::new(target, DEFAULT_PACK_SIZE);
    let mut deltas_started = false;
    for (object, place) in &plan.objects {
        if matches!(object, Object::Delta { .. }) && !deltas_started {
            writer.close()?;
            deltas_started = true;
        }
        let name = pack::pack_name(&place.pack);
        let stored = source.read_range(&name, place.range())?.ok_or_else(|| {
            Error::Integrity(format!(
                "{}: {name} is shorter than its pack map says",
                store.describe()
            ))
        })?;
        let stored = &stored[..];
        checked(store, object, place, stored, sizes)?;
        writer.add(*object, stored)?;
        report.written_bytes += stored.len() as u64;
        progress.advance(stored.len() as u64);
    }
    let (placed, written) = writer.finish()?;
    report.written_packs = written;
    staging.send(store, &placed)?;
    moved.extend(placed);
    Ok(moved)
}
