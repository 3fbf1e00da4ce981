//! Deltas: a chunk file of a new release encoded against a chunk of an earlier release,
//! which a device's seed holds (see `docs/FORMAT.md`, Deltas). A rebuilt binary or a
//! rewritten inode block differs from its earlier version in scattered bytes, so it is a
//! new chunk, yet a delta against the earlier chunk costs a fraction of its chunk file.
//!
//! `make --delta-from` finds, for each chunk file the earlier releases lack, the earlier
//! chunk it most resembles: both are sampled at content-defined positions (8-byte
//! windows whose hash has its low 8 bits zero), and the earlier chunk sharing the most
//! samples is the base. Resemblance found this way survives shifted and scattered edits,
//! which block hashes do not.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::index::{ChunkRecord, Delta, Index, Unit};
use crate::progress::Progress;
use crate::store::codec;
use crate::store::{self, LocalStore};

/// A sample is kept where the hash's low bits are zero: one position in 256.
const SAMPLE_MASK: u64 = 0xff;
/// Fewest samples a base must share with a chunk to be tried.
const MIN_SHARED: u32 = 2;

/// The sampled features of `data`: hashes of the 8-byte windows at content-defined
/// positions, deduplicated.
fn features(data: &[u8]) -> Vec<u64> {
    let mut out: Vec<u64> = data
        .windows(8)
        .filter_map(|w| {
            let word = u64::from_le_bytes(w.try_into().ok()?);
            let h = word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24;
            (h & SAMPLE_MASK == 0).then_some(h)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The chunks of earlier releases, by their sampled features.
struct Bases {
    /// (feature, base number), sorted.
    features: Vec<(u64, u32)>,
    /// Each base: the record of an earlier index whose bytes it is.
    records: Vec<ChunkRecord>,
    /// Every id the earlier releases have, of records and of chunk files.
    known: HashSet<ChunkId>,
}

impl Bases {
    /// Reads every chunk of `earlier` from `store` once and samples it.
    fn read(earlier: &[Index], store: &LocalStore) -> Result<Bases> {
        let mut known = HashSet::new();
        let mut seen = HashSet::new();
        // Chunk files in the order they first appear, so that the bases are numbered, and
        // ties broken, the same way in every run.
        let mut units: Vec<(Unit, Vec<ChunkRecord>)> = Vec::new();
        let mut unit_of: HashMap<ChunkId, usize> = HashMap::new();
        for index in earlier {
            for r in index.records().filter(|r| !r.is_zero()) {
                let unit = r.unit();
                known.insert(unit.id);
                known.insert(r.id);
                if seen.insert(r.id) {
                    let u = *unit_of.entry(unit.id).or_insert_with(|| {
                        units.push((unit, Vec::new()));
                        units.len() - 1
                    });
                    units[u].1.push(r);
                }
            }
        }
        let sampled = units
            .into_par_iter()
            .map(|(unit, records)| -> Result<Vec<(ChunkRecord, Vec<u64>)>> {
                let chunk = read_unit(store, &unit)?;
                records
                    .into_iter()
                    .map(|r| Ok((r, features(r.take_from(&chunk)?.data()))))
                    .collect()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut records = Vec::new();
        let mut features = Vec::new();
        for (r, fs) in sampled.into_iter().flatten() {
            let n = records.len() as u32;
            records.push(r);
            features.extend(fs.into_iter().map(|f| (f, n)));
        }
        features.par_sort_unstable();
        Ok(Bases {
            features,
            records,
            known,
        })
    }

    /// The earlier chunk sharing the most samples with `data`, if it shares enough.
    fn most_like(&self, data: &[u8]) -> Option<ChunkRecord> {
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for f in features(data) {
            let from = self.features.partition_point(|&(g, _)| g < f);
            for &(_, n) in self.features[from..].iter().take_while(|&&(g, _)| g == f) {
                *shared.entry(n).or_default() += 1;
            }
        }
        shared
            .into_iter()
            .filter(|&(_, count)| count >= MIN_SHARED)
            .max_by_key(|&(n, count)| (count, std::cmp::Reverse(n)))
            .map(|(n, _)| self.records[n as usize])
    }
}

/// A chunk file of the store, verified.
fn read_unit(store: &LocalStore, unit: &Unit) -> Result<VerifiedChunk> {
    store::read_local(store, unit)?.ok_or(Error::MissingChunk {
        id: unit.id,
        offset: unit.offset,
    })
}

/// What [`make`] did.
#[derive(Debug, Default)]
pub struct DeltaReport {
    pub deltas: u64,
    /// Bytes of the delta files, and of the chunk files they stand in for.
    pub stored_bytes: u64,
    pub replaced_bytes: u64,
}

/// For each chunk file of the new index (named by its `records`, its chunks stored in
/// `store`) that the `earlier` indexes lack, stores a delta against the earlier chunk it
/// most resembles, when that is clearly smaller than the chunk file. The earlier chunks
/// are read from `store`. Returns the deltas, sorted as the index keeps them.
pub fn make(
    image: &Image,
    records: &[ChunkRecord],
    earlier: &[Index],
    store: &LocalStore,
    level: i32,
    progress: &dyn Progress,
) -> Result<(Vec<Delta>, DeltaReport)> {
    if earlier.is_empty() {
        return Ok((Vec::new(), DeltaReport::default()));
    }
    progress.start("reading earlier releases", 0);
    let bases = Bases::read(earlier, store).map_err(|e| {
        Error::Invalid(format!(
            "reading the chunks of the earlier releases from {}: {e}",
            store.dir().display()
        ))
    })?;
    progress.finish();
    // Each new chunk file once, named by the first record it holds, with the places of
    // its bytes in the image: one record's, or the parts of a gathered chunk in order.
    let mut targets: Vec<(u64, Unit)> = Vec::new();
    let mut places: HashMap<ChunkId, Vec<(u64, u32)>> = HashMap::new();
    for r in records.iter().filter(|r| !r.is_zero()) {
        let unit = r.unit();
        if bases.known.contains(&unit.id) {
            continue;
        }
        let at = places.entry(unit.id).or_default();
        if at.is_empty() {
            targets.push((r.offset, unit));
        }
        if at.is_empty() || r.part.is_some() {
            at.push((r.offset, r.size));
        }
    }
    progress.start("deltas", targets.len() as u64);
    let made = targets
        .par_iter()
        .map(|&(offset, unit)| -> Result<Option<Delta>> {
            let mut data = Vec::with_capacity(unit.size as usize);
            for &(at, size) in &places[&unit.id] {
                data.extend_from_slice(&image.read_at(at, size as usize)?);
            }
            progress.advance(1);
            let Some(base) = bases.most_like(&data) else {
                return Ok(None);
            };
            let base_bytes = base.take_from(&read_unit(store, &base.unit())?)?;
            let delta = codec::compress_against(&data, base_bytes.data(), level)?;
            let worth = delta.len() as u64 * 10 < u64::from(unit.stored_size) * 9
                && delta.len() + 512 < unit.stored_size as usize;
            if !worth {
                return Ok(None);
            }
            store.put_delta(&unit.id, &base.id, &delta)?;
            Ok(Some(Delta {
                offset,
                base: base.id,
                base_size: base.size,
                stored_size: delta.len() as u32,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    progress.finish();
    let mut report = DeltaReport::default();
    let mut deltas = Vec::new();
    for (d, (_, unit)) in made.into_iter().zip(&targets) {
        if let Some(d) = d {
            report.deltas += 1;
            report.stored_bytes += u64::from(d.stored_size);
            report.replaced_bytes += u64::from(unit.stored_size);
            deltas.push(d);
        }
    }
    deltas.sort_by_key(|d| (d.offset, d.base));
    Ok((deltas, report))
}

#[cfg(test)]
mod tests {
    use super::features;
    use crate::testutil::noise;

    #[test]
    fn features_survive_a_shift_and_an_edit() {
        let data = noise(1, 300_000);
        let a = features(&data);
        assert!(a.len() > 500, "{} features", a.len());
        let mut b_data = b"shifted by a few bytes".to_vec();
        b_data.extend_from_slice(&data);
        b_data[150_000] ^= 0xff;
        let b = features(&b_data);
        let shared = a.iter().filter(|f| b.binary_search(f).is_ok()).count();
        assert!(shared * 100 > a.len() * 98, "{shared} of {}", a.len());
        let c = features(&noise(2, 300_000));
        let chance = a.iter().filter(|f| c.binary_search(f).is_ok()).count();
        assert!(
            chance * 100 < a.len(),
            "{chance} of {} shared by chance",
            a.len()
        );
    }
}
