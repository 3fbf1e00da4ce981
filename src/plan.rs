//! Where each chunk of the target comes from, decided before anything is fetched.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::chunk::ChunkId;
use crate::error::Result;
use crate::index::{BasePiece, Delta, Index};
use crate::seed::{usable_delta, Seed};
use crate::store::{FetchCost, Stores};
use crate::trust::TrustedIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The output already holds the chunk where it belongs.
    InPlace,
    /// All zero bytes: written, never fetched.
    Zero,
    Seed {
        seed: usize,
        offset: u64,
    },
    /// Elsewhere in the output that is being updated in place.
    Output {
        offset: u64,
    },
    Store,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub chunks: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.chunks += 1;
        self.bytes += bytes;
    }
}

/// What must be fetched, counted once per distinct chunk file (a gathered chunk once,
/// however many of its parts are wanted).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StoreTally {
    pub chunks: u64,
    /// Uncompressed bytes of those chunk files.
    pub bytes: u64,
    /// Bytes of their chunk files, or of the deltas fetched instead: what the transfer
    /// costs.
    pub stored_bytes: u64,
    /// Chunk files rebuilt from a delta against a base that a seed holds.
    pub deltas: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PlanSummary {
    pub image_size: u64,
    pub chunks: u64,
    pub in_place: Tally,
    pub zero: Tally,
    pub seed: Tally,
    pub output: Tally,
    pub store: StoreTally,
    /// The hash tree's chunks: never fetched by extract (it hashes what it writes), but
    /// what a lazy mount fetches to verify every block.
    pub tree: StoreTally,
}

pub struct Plan {
    /// One source per index record.
    pub sources: Vec<Source>,
    pub summary: PlanSummary,
    /// The chunk files fetched as deltas, and those deltas.
    pub by_delta: HashMap<ChunkId, Delta>,
    /// The chunks of those deltas' base runs that only the output holds, each once: what
    /// an update in place sets aside before overwriting anything.
    pub aside: Vec<BasePiece>,
}

/// The chunks of base runs an update in place sets aside, each once, within a limit.
#[derive(Default)]
struct Aside {
    limit: u64,
    used: u64,
    ids: HashSet<ChunkId>,
    /// The chunks, in the order they were admitted.
    chunks: Vec<BasePiece>,
}

impl Aside {
    /// Whether every chunk of `delta`'s run is set aside: already, or now within the limit.
    fn admit(&mut self, delta: &Delta) -> bool {
        let mut new = HashSet::new();
        let mut size = 0u64;
        for p in delta.run.iter() {
            if !self.ids.contains(&p.id) && new.insert(p.id) {
                size += u64::from(p.size);
            }
        }
        if self.used + size > self.limit {
            return false;
        }
        self.used += size;
        for p in delta.run.iter() {
            if self.ids.insert(p.id) {
                self.chunks.push(*p);
            }
        }
        true
    }
}

/// The ids of the chunks that are neither all zero nor already in place.
pub fn wanted(index: &Index, in_place: &[bool]) -> HashSet<ChunkId> {
    index
        .records()
        .enumerate()
        .filter(|(i, r)| !r.is_zero() && !in_place.get(*i).copied().unwrap_or(false))
        .map(|(_, r)| r.id)
        .collect()
}

/// Chooses a source per chunk: in place, zero, a seed, the output itself, else the store
/// (a delta where one has a base in a seed or the output).
/// `in_place` is empty when there is no existing output.
/// `deltas`: the index's deltas the stores offer (see [`Stores::offered_deltas`]).
/// `aside_limit`: most bytes of base runs that only `output` holds (which an update in
/// place sets aside before overwriting them); past it, chunk files are fetched whole.
pub fn plan(
    index: &TrustedIndex,
    deltas: &HashMap<ChunkId, Vec<Delta>>,
    seeds: &[Seed],
    in_place: &[bool],
    output: Option<&Seed>,
    aside_limit: u64,
) -> Plan {
    let mut aside = Aside {
        limit: aside_limit,
        ..Aside::default()
    };
    let mut summary = PlanSummary {
        image_size: index.header().image_size,
        chunks: index.len() as u64,
        ..PlanSummary::default()
    };
    for r in index.tree_records() {
        summary.tree.chunks += 1;
        summary.tree.bytes += u64::from(r.size);
        summary.tree.stored_bytes += u64::from(r.stored_size);
    }
    let mut fetched = HashSet::new();
    let mut by_delta = HashMap::new();
    let sources = index
        .records()
        .enumerate()
        .map(|(i, r)| {
            let size = u64::from(r.size);
            if in_place.get(i).copied().unwrap_or(false) {
                summary.in_place.add(size);
                return Source::InPlace;
            }
            if r.is_zero() {
                summary.zero.add(size);
                return Source::Zero;
            }
            let in_seed = seeds
                .iter()
                .enumerate()
                .find_map(|(s, seed)| seed.locate(&r.id).map(|(offset, _)| (s, offset)));
            if let Some((seed, offset)) = in_seed {
                summary.seed.add(size);
                return Source::Seed { seed, offset };
            }
            if let Some((offset, _)) = output.and_then(|o| o.locate(&r.id)) {
                summary.output.add(size);
                return Source::Output { offset };
            }
            let unit = r.unit();
            if fetched.insert(unit.id) {
                summary.store.chunks += 1;
                summary.store.bytes += u64::from(unit.size);
                let usable = deltas
                    .get(&unit.id)
                    .and_then(|d| usable_delta(d, seeds, output))
                    .filter(|(d, holder, _)| {
                        !output.is_some_and(|o| std::ptr::eq(*holder, o)) || aside.admit(d)
                    });
                match usable {
                    Some((delta, _, _)) => {
                        summary.store.deltas += 1;
                        summary.store.stored_bytes += u64::from(delta.stored_size);
                        by_delta.insert(unit.id, delta);
                    }
                    None => summary.store.stored_bytes += u64::from(unit.stored_size),
                }
            }
            Source::Store
        })
        .collect();
    Plan {
        sources,
        summary,
        by_delta,
        aside: aside.chunks,
    }
}

/// What extract sends to fetch what the plan takes from the stores: every chunk file
/// once (see [`Stores::fetch_cost`]).
pub fn fetch_cost(index: &Index, plan: &Plan, stores: &Stores) -> FetchCost {
    let mut seen = HashSet::new();
    let records = index
        .records()
        .zip(&plan.sources)
        .filter(|(r, source)| **source == Source::Store && seen.insert(r.unit().id))
        .map(|(r, _)| r)
        .collect();
    stores.fetch_cost(records, &plan.by_delta)
}

/// How many of the chunks the plan fetches no store has.
pub fn count_missing(index: &Index, plan: &Plan, stores: &Stores) -> Result<u64> {
    let mut seen = HashSet::new();
    let ids = index
        .records()
        .zip(&plan.sources)
        .filter(|(_, source)| **source == Source::Store)
        .map(|(r, _)| r.unit().id)
        .filter(|id| seen.insert(*id))
        .collect();
    stores.count_missing(ids)
}
