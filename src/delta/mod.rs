//! Deltas: a chunk file of a new release encoded against a run of chunks of earlier
//! releases, which a device's seed holds (see `docs/FORMAT.md`, Deltas). A rebuilt binary
//! or a rewritten inode block differs from its earlier version in scattered bytes, so it
//! is a new chunk, yet a delta against the earlier bytes costs a fraction of its chunk
//! file.
//!
//! `make --delta-from` takes, for each chunk file the earlier releases lack, each 4 KiB
//! stretch of it (each part of a gathered chunk apart) and finds the earlier chunk it most
//! resembles (see [`resemble`]). The earlier release whose chunks most of it resembles is
//! the one the run is drawn from; a stretch that resembles none of that release's chunks
//! takes the release's bytes of the same file at the same place in it (same path), or for
//! anything but file data the release's chunk at the same place in the image. Those
//! chunks, most used first, up to a cap, in the order of the earlier image, are the
//! delta's base run.

mod earlier;
mod resemble;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::index::format::MAX_BASE_RUN;
use crate::index::{BasePiece, ChunkRecord, Delta, Index, Unit};
use crate::layout::FileMap;
use crate::progress::Progress;
use crate::store::codec;
use crate::store::LocalStore;
use earlier::{image_offset, placed_files, Earlier, Placed};
use resemble::{features, Features};

/// The stretch of a new chunk file matched on its own.
const STRETCH: usize = 4096;
/// A base run holds at most this many times the bytes of the chunk file it rebuilds, so
/// that a device reads little more than it rebuilds.
const RUN_PER_CHUNK: u64 = 8;
/// An earlier chunk joins a run only when the stretches it was found for cover at least
/// this fraction (1/n) of it.
const MIN_COVER: u64 = 16;

/// Most earlier releases one `make` takes deltas from: each chunk records which of them
/// hold it in a 64-bit mask.
pub const MAX_DELTA_FROM: usize = 64;

/// The earlier chunks a base run draws on, numbered.
struct Bases {
    /// Each: the first earlier release holding it and its record there.
    chunks: Vec<(usize, ChunkRecord)>,
    /// Each: the earlier releases holding it, bit `e` for release `e`.
    held: Vec<u64>,
    by_id: HashMap<ChunkId, u32>,
    features: Features,
    /// Every id the earlier releases have, of records and of chunk files.
    known: HashSet<ChunkId>,
}

impl Bases {
    /// Numbers every chunk of the earlier releases (in their order, then image order) and
    /// samples its bytes, checked.
    fn read(earlier: &[Earlier]) -> Result<Bases> {
        let mut known = HashSet::new();
        let mut chunks = Vec::new();
        let mut held: Vec<u64> = Vec::new();
        let mut by_id = HashMap::new();
        for (e, release) in earlier.iter().enumerate() {
            for r in release.index.records().filter(|r| !r.is_zero()) {
                known.insert(r.unit().id);
                known.insert(r.id);
                let n = *by_id.entry(r.id).or_insert_with(|| {
                    chunks.push((e, r));
                    held.push(0);
                    chunks.len() as u32 - 1
                });
                held[n as usize] |= 1 << e;
            }
        }
        let each = chunks
            .par_iter()
            .map(|(e, r)| Ok(features(&earlier[*e].read(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bases {
            chunks,
            held,
            by_id,
            features: Features::new(each),
            known,
        })
    }

    fn size(&self, n: u32) -> u64 {
        u64::from(self.chunks[n as usize].1.size)
    }

    /// Whether earlier release `e` holds chunk `n`.
    fn holds(&self, e: usize, n: u32) -> bool {
        self.held[n as usize] & (1 << e) != 0
    }
}

/// Where the bytes of the new image's files lie, to find a stretch's file.
struct NewFiles<'a> {
    /// (image offset, length, path, offset in the file), sorted by image offset.
    stretches: Vec<(u64, u64, &'a str, u64)>,
}

impl<'a> NewFiles<'a> {
    fn new(files: &'a [FileMap]) -> NewFiles<'a> {
        let mut stretches: Vec<_> = placed_files(files)
            .into_iter()
            .flat_map(|(path, placed)| {
                placed
                    .into_iter()
                    .map(move |(file_at, image_at, len)| (image_at, len, path, file_at))
            })
            .collect();
        stretches.sort_unstable();
        NewFiles { stretches }
    }

    /// The file whose bytes are at image offset `at`, and the offset in it.
    fn at(&self, at: u64) -> Option<(&'a str, u64)> {
        let i = self.stretches.partition_point(|&(o, _, _, _)| o <= at);
        let &(o, len, path, file_at) = self.stretches.get(i.checked_sub(1)?)?;
        (at < o + len).then_some((path, file_at + (at - o)))
    }
}

/// Chooses base runs: by resemblance, else by the same file or place.
struct Chooser<'a> {
    bases: &'a Bases,
    earlier: &'a [Earlier],
    new_files: NewFiles<'a>,
    /// Each earlier release's files, by path.
    old_files: Vec<HashMap<&'a str, Placed>>,
}

impl Chooser<'_> {
    /// The chunk of earlier release `e` standing in for the stretch at image offset `at`
    /// when none resembles it: for a file's data, the chunk holding the same file's byte
    /// at the same offset in it (none when `e` has no such file); for anything else, the
    /// chunk at the same place in `e`'s image.
    fn same_place(&self, e: usize, at: u64) -> Option<u32> {
        let old_at = match self.new_files.at(at) {
            Some((path, file_at)) => image_offset(self.old_files[e].get(path)?, file_at)?,
            None => at,
        };
        let r = self.earlier[e].record_at(old_at)?;
        self.bases.by_id.get(&r.id).copied()
    }

    /// The base run for the chunk file `data`, whose bytes come from `places` (image
    /// offset and size, in order) of the new image. Its chunks are all of one earlier
    /// release, since a device holds one.
    fn run(&self, data: &[u8], places: &[(u64, u32)]) -> Vec<BasePiece> {
        // Each stretch: its image offset, length, and the earlier chunk it most resembles.
        let mut stretches = Vec::new();
        let mut pos = 0usize;
        for &(at, size) in places {
            let size = size as usize;
            let mut o = 0;
            while o < size {
                let len = STRETCH.min(size - o);
                let best = self.bases.features.most_like(&data[pos + o..pos + o + len]);
                stretches.push((at + o as u64, len as u64, best));
                o += len;
            }
            pos += size;
        }
        // The release whose chunks the most bytes resemble; ties go to the first.
        let release = (0..self.earlier.len())
            .map(|e| {
                let covered: u64 = stretches
                    .iter()
                    .filter(|(_, _, best)| best.is_some_and(|(n, _)| self.bases.holds(e, n)))
                    .map(|(_, len, _)| len)
                    .sum();
                (covered, std::cmp::Reverse(e))
            })
            .max()
            .map_or(0, |(_, std::cmp::Reverse(e))| e);
        // Per earlier chunk: bytes of the stretches it was found for, and the samples
        // they share with it.
        let mut found: HashMap<u32, (u64, u64)> = HashMap::new();
        for &(at, len, best) in &stretches {
            let hit = match best.filter(|&(n, _)| self.bases.holds(release, n)) {
                Some((n, shared)) => Some((n, u64::from(shared))),
                None => self.same_place(release, at).map(|n| (n, 0)),
            };
            if let Some((n, shared)) = hit {
                let f = found.entry(n).or_default();
                f.0 += len;
                f.1 += shared;
            }
        }
        let mut candidates: Vec<(u32, (u64, u64))> = found.into_iter().collect();
        candidates.sort_unstable_by_key(|&(n, (covered, shared))| {
            (std::cmp::Reverse((covered, shared)), n)
        });
        let cap = (data.len() as u64 * RUN_PER_CHUNK).min(u64::from(MAX_BASE_RUN));
        let mut total = 0;
        let mut run: Vec<u32> = Vec::new();
        for &(n, (covered, _)) in &candidates {
            let size = self.bases.size(n);
            if covered * MIN_COVER >= size && total + size <= cap {
                total += size;
                run.push(n);
            }
        }
        // A small chunk file that resembles a part of one large chunk takes it whole.
        if run.is_empty() {
            run.extend(
                candidates
                    .first()
                    .map(|&(n, _)| n)
                    .filter(|&n| self.bases.size(n) <= u64::from(MAX_BASE_RUN)),
            );
        }
        run.sort_unstable_by_key(|&n| {
            let (e, r) = &self.bases.chunks[n as usize];
            (*e, r.offset)
        });
        run.into_iter()
            .map(|n| {
                let r = &self.bases.chunks[n as usize].1;
                BasePiece {
                    id: r.id,
                    size: r.size,
                }
            })
            .collect()
    }

    /// The bytes of `run`, concatenated, each chunk checked.
    fn bytes(&self, run: &[BasePiece]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for p in run {
            let (e, r) = &self.bases.chunks[self.bases.by_id[&p.id] as usize];
            out.extend_from_slice(&self.earlier[*e].read(r)?);
        }
        Ok(out)
    }
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
/// `store`, its filesystem's files `files`) that the `earlier` releases lack, stores a
/// delta against the run of earlier chunks it most resembles, when that is clearly smaller
/// than the chunk file. `images`: the images of the first earlier releases, in the same
/// order (`make --delta-from-image`); the others are rebuilt from `store`. Returns the
/// deltas, sorted as the index keeps them.
#[allow(clippy::too_many_arguments)]
pub fn make(
    image: &Image,
    records: &[ChunkRecord],
    files: &[FileMap],
    earlier: Vec<Index>,
    images: &[PathBuf],
    store: &LocalStore,
    level: i32,
    progress: &dyn Progress,
) -> Result<(Vec<Delta>, DeltaReport)> {
    if images.len() > earlier.len() {
        return Err(Error::Invalid(format!(
            "{} --delta-from-image given for {} --delta-from: each image is the release of the --delta-from in the same place",
            images.len(),
            earlier.len()
        )));
    }
    if earlier.len() > MAX_DELTA_FROM {
        return Err(Error::Invalid(format!(
            "{} --delta-from given: deltas are made from at most {MAX_DELTA_FROM} earlier releases",
            earlier.len()
        )));
    }
    if earlier.is_empty() {
        return Ok((Vec::new(), DeltaReport::default()));
    }
    progress.start("reading earlier releases", 0);
    let earlier = earlier
        .into_iter()
        .enumerate()
        .map(|(i, index)| {
            let path = index.path().to_path_buf();
            let image = images.get(i).map(PathBuf::as_path);
            // An image of the wrong size says which release it was given for; other
            // failures name their file or chunk themselves.
            Earlier::open(index, image, store).map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!(
                    "reading the earlier release {} from {}: {m}",
                    path.display(),
                    image.unwrap_or(store.dir()).display()
                )),
                other => other,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let bases = Bases::read(&earlier)?;
    progress.finish();
    let chooser = Chooser {
        bases: &bases,
        earlier: &earlier,
        new_files: NewFiles::new(files),
        old_files: earlier.iter().map(|e| placed_files(&e.files)).collect(),
    };
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
            let at = &places[&unit.id];
            let mut data = Vec::with_capacity(unit.size as usize);
            for &(o, size) in at {
                data.extend_from_slice(&image.read_at(o, size as usize)?);
            }
            progress.advance(1);
            let run = chooser.run(&data, at);
            if run.is_empty() {
                return Ok(None);
            }
            let delta = codec::compress_against(&data, &chooser.bytes(&run)?, level)?;
            let worth = delta.len() as u64 * 10 < u64::from(unit.stored_size) * 9
                && delta.len() + 512 < unit.stored_size as usize;
            if !worth {
                return Ok(None);
            }
            let d = Delta::new(offset, run, delta.len() as u32);
            store.put_delta(&unit.id, &d.base, &delta)?;
            Ok(Some(d))
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
