//! Seeds: local files (typically the installed previous image) whose chunks can stand in
//! for chunks of the target. Every chunk read from a seed is verified before use.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::chunk::{is_zero, ChunkId, VerifiedChunk};
use crate::chunker::{self, ChunkParams};
use crate::error::Result;
use crate::image::Image;
use crate::index::{BasePiece, Delta, Index, Unit};
use crate::layout::Cutting;
use crate::progress::Progress;
use crate::store;

pub struct Seed {
    image: Image,
    chunks: HashMap<ChunkId, (u64, u32)>,
    /// Places before this offset lend bases to deltas only, not chunks to copy.
    bases_only_before: u64,
}

impl Seed {
    /// Chunks the file as the target was chunked (same parameters, filesystem-aware or
    /// not), so content shared with the target yields the same chunk ids; keeps only the
    /// ids in `wanted`.
    pub fn scan(
        path: &Path,
        params: ChunkParams,
        cutting: Cutting,
        wanted: &HashSet<ChunkId>,
        progress: &dyn Progress,
    ) -> Result<Seed> {
        let image = Image::open(path)?;
        progress.start(
            &format!("scanning seed {}", path.display()),
            image.size() * 2,
        );
        let ends = chunker::cut_image(&image, params, cutting, progress)?.ends;
        let found = image.par_map_chunks(&ends, progress, |offset, data| {
            if is_zero(data) {
                return Ok(None);
            }
            let id = ChunkId::of(data);
            Ok(wanted
                .contains(&id)
                .then_some((id, (offset, data.len() as u32))))
        })?;
        progress.finish();
        let mut chunks = HashMap::new();
        for (id, at) in found.into_iter().flatten() {
            chunks.entry(id).or_insert(at);
        }
        Ok(Seed {
            image,
            chunks,
            bases_only_before: 0,
        })
    }

    /// Takes the chunk list from the index the seed was built from; nothing is read now,
    /// and each chunk is verified when it is used.
    pub fn from_index(path: &Path, index: &Index, wanted: &HashSet<ChunkId>) -> Result<Seed> {
        let image = Image::open(path)?;
        let mut chunks = HashMap::new();
        for r in index.records() {
            if !r.is_zero() && r.end() <= image.size() && wanted.contains(&r.id) {
                chunks.entry(r.id).or_insert((r.offset, r.size));
            }
        }
        Ok(Seed {
            image,
            chunks,
            bases_only_before: 0,
        })
    }

    /// A seed of the chunks at the given places of `image`, each verified when used.
    pub fn from_chunks(image: Image, chunks: HashMap<ChunkId, (u64, u32)>) -> Seed {
        Seed {
            image,
            chunks,
            bases_only_before: 0,
        }
    }

    /// Keeps every place that starts before `limit` for the bases of deltas alone (which
    /// are read before anything is written), not as chunks to copy.
    pub fn bases_only_before(&mut self, limit: u64) {
        self.bases_only_before = limit;
    }

    /// Records that the seed holds `id` at `offset`, in preference to any place found so far.
    pub fn prefer(&mut self, id: ChunkId, offset: u64, size: u32) {
        self.chunks.insert(id, (offset, size));
    }

    pub fn path(&self) -> &Path {
        self.image.path()
    }

    /// Where the seed holds chunk `id`: offset and size.
    pub fn locate(&self, id: &ChunkId) -> Option<(u64, u32)> {
        self.locate_base(id)
            .filter(|&(offset, _)| offset >= self.bases_only_before)
    }

    /// Where the seed holds chunk `id` to lend to a delta's base run.
    pub fn locate_base(&self, id: &ChunkId) -> Option<(u64, u32)> {
        self.chunks.get(id).copied()
    }

    /// Reads the chunk at `seed_offset` and checks it is `id`; `target_offset` names the
    /// place in the target image for errors.
    pub fn read(
        &self,
        id: ChunkId,
        seed_offset: u64,
        size: u32,
        target_offset: u64,
    ) -> Result<VerifiedChunk> {
        let data = self.image.read_at(seed_offset, size as usize)?;
        VerifiedChunk::verify(id, target_offset, data)
    }
}

/// Where `seed` holds each chunk of `run`, when it holds every one at its size.
fn run_places(seed: &Seed, run: &[BasePiece]) -> Option<Vec<u64>> {
    run.iter()
        .map(|p| {
            seed.locate_base(&p.id)
                .filter(|&(_, size)| size == p.size)
                .map(|(at, _)| at)
        })
        .collect()
}

/// Of `deltas` (those of one chunk file, in index order), the first whose whole base run
/// one of `seeds` holds, else the first whose run `then` holds: the delta, the seed holding
/// its run and the place of each of the run's chunks in it.
pub fn usable_delta<'a>(
    deltas: &[Delta],
    seeds: &'a [Seed],
    then: Option<&'a Seed>,
) -> Option<(Delta, &'a Seed, Vec<u64>)> {
    let held = |d: &Delta, seed: &'a Seed| run_places(seed, &d.run).map(|at| (d.clone(), seed, at));
    deltas
        .iter()
        .find_map(|d| seeds.iter().find_map(|seed| held(d, seed)))
        .or_else(|| then.and_then(|seed| deltas.iter().find_map(|d| held(d, seed))))
}

/// The bytes of `delta`'s base run, read from `seed` at `places` (see [`usable_delta`]),
/// each chunk checked against its id; `target_offset` names the place in the target image
/// for errors.
pub fn read_run(seed: &Seed, delta: &Delta, places: &[u64], target_offset: u64) -> Result<Vec<u8>> {
    let mut base = Vec::with_capacity(delta.base_size as usize);
    for (p, &at) in delta.run.iter().zip(places) {
        let chunk = seed.read(p.id, at, p.size, target_offset)?;
        base.extend_from_slice(chunk.data());
    }
    Ok(base)
}

/// The ids a seed can lend to an index: the chunks in `wanted`, and the chunks of its
/// deltas' base runs.
pub fn lendable(index: &Index, wanted: &HashSet<ChunkId>) -> HashSet<ChunkId> {
    let mut ids = wanted.clone();
    for d in index.deltas() {
        ids.extend(d.run.iter().map(|p| p.id));
    }
    ids
}

/// The bases of an index's deltas, read from seeds (see [`store::Bases`]).
pub struct SeedBases {
    /// The deltas of each chunk file, by its id.
    deltas: HashMap<ChunkId, Vec<Delta>>,
    seeds: Arc<[Seed]>,
    /// Bases set aside from an output updated in place, tried after the seeds.
    aside: Option<Seed>,
}

impl SeedBases {
    /// `deltas`: those each chunk file may be rebuilt from: the ones the stores offer (see
    /// [`store::Stores::offered_deltas`]), or the one a plan chose.
    pub fn new(
        deltas: HashMap<ChunkId, Vec<Delta>>,
        seeds: Arc<[Seed]>,
        aside: Option<Seed>,
    ) -> SeedBases {
        SeedBases {
            deltas,
            seeds,
            aside,
        }
    }
}

impl store::Bases for SeedBases {
    fn delta_for(&self, unit: &Unit) -> Option<Delta> {
        let deltas = self.deltas.get(&unit.id)?;
        usable_delta(deltas, &self.seeds, self.aside.as_ref()).map(|(delta, _, _)| delta)
    }

    fn for_unit(&self, unit: &Unit) -> Option<Result<(Delta, Vec<u8>)>> {
        let deltas = self.deltas.get(&unit.id)?;
        let (delta, seed, places) = usable_delta(deltas, &self.seeds, self.aside.as_ref())?;
        Some(read_run(seed, &delta, &places, unit.offset).map(|base| (delta, base)))
    }
}
