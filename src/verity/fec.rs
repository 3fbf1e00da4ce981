//! Forward error correction for dm-verity, byte for byte what `veritysetup format
//! --fec-device` writes, and the repair of an image with it.
//!
//! The code covers one stream of 4096-byte blocks: the data blocks, then the blocks of the
//! hash area (the tree, without the superblock). A codeword of RS(255, 255 − roots) holds
//! `rsn = 255 − roots` data symbols, so the stream is dealt into
//! `rounds = ⌈blocks / rsn⌉` interleaved groups: round `n` takes blocks
//! `n, n + rounds, n + 2·rounds, …` (rsn of them; those past the stream's end read as
//! zeros), and byte `b` of each of those blocks, in that order, makes codeword `b` of the
//! round. The FEC file holds each round's 4096 codewords' parity, `roots` bytes each, round
//! after round: `rounds × 4096 × roots` bytes.
//!
//! A damaged block spoils one symbol of each of its round's codewords, and the tree says
//! which blocks are damaged: each codeword corrects `roots` such erasures, fewer when the
//! FEC file is damaged too (an unknown error costs two). The blocks of a round are
//! `rounds` blocks apart, so a run of damage up to `roots × rounds` blocks long is
//! corrected whole.

mod rs;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::{entry, salted, Geometry, HashArea, BLOCK, PER_BLOCK_BITS};
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, WINDOW};
use crate::progress::Progress;
use rs::{Encoder, Erasures};

/// The field's polynomial, x^8 + x^4 + x^3 + x^2 + 1.
pub const FIELD_POLY: u16 = 0x11d;
/// Symbols in a codeword.
pub const CODEWORD: usize = rs::N;
/// The fewest and most parity symbols per codeword veritysetup accepts.
pub const MIN_ROOTS: u8 = 2;
pub const MAX_ROOTS: u8 = 24;
/// veritysetup's default.
pub const DEFAULT_ROOTS: u8 = 2;

const _: () = assert!(MAX_ROOTS as usize == rs::MAX_ROOTS);

const B: usize = BLOCK as usize;

/// Rounds one encoding task takes: their data (`rsn` blocks each) is read, row by row,
/// as runs of consecutive blocks.
const TASK_ROUNDS: u64 = 4;
/// Blocks a list in a report names.
const LISTED: usize = 64;

/// Parity symbols per codeword.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Roots(u8);

impl Roots {
    pub fn new(roots: u8) -> Result<Roots> {
        if (MIN_ROOTS..=MAX_ROOTS).contains(&roots) {
            Ok(Roots(roots))
        } else {
            Err(Error::Invalid(format!(
                "{roots} FEC roots: veritysetup takes {MIN_ROOTS} to {MAX_ROOTS}"
            )))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    fn count(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for Roots {
    fn default() -> Self {
        Roots(DEFAULT_ROOTS)
    }
}

/// How the code lays a stream of `blocks` blocks out in rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub roots: Roots,
    pub blocks: u64,
    pub rounds: u64,
}

impl Layout {
    pub fn new(blocks: u64, roots: Roots) -> Layout {
        let rsn = (CODEWORD - roots.count()) as u64;
        Layout {
            roots,
            blocks,
            rounds: blocks.div_ceil(rsn),
        }
    }

    /// Data symbols per codeword: blocks per round.
    pub fn rsn(&self) -> usize {
        CODEWORD - self.roots.count()
    }

    /// Bytes of the FEC file.
    pub fn size(&self) -> u64 {
        self.rounds * BLOCK * u64::from(self.roots.get())
    }

    /// The stream block at `row` of `round` (at or past `blocks`: a zero block).
    pub fn block(&self, round: u64, row: usize) -> u64 {
        row as u64 * self.rounds + round
    }

    /// The round and row of stream block `block`.
    pub fn place(&self, block: u64) -> (u64, usize) {
        (block % self.rounds, (block / self.rounds) as usize)
    }
}

/// The blocks the code covers: the image's data blocks (zeros past the image file's end,
/// as the tree pads it), then the hash area's.
pub struct Stream<'a> {
    data: &'a Image,
    hash: &'a (dyn HashArea + Sync),
    data_blocks: u64,
    hash_blocks: u64,
}

impl<'a> Stream<'a> {
    /// The stream of the tree `geometry` describes: the data blocks of `data`, then the
    /// hash blocks of `hash`.
    pub fn new(data: &'a Image, hash: &'a (dyn HashArea + Sync), geometry: &Geometry) -> Self {
        Stream {
            data,
            hash,
            data_blocks: geometry.data_blocks,
            hash_blocks: geometry.hash_blocks,
        }
    }

    pub fn blocks(&self) -> u64 {
        self.data_blocks + self.hash_blocks
    }

    /// Fills `buf` (whole blocks) with the stream's blocks from `first` on; past the
    /// stream's end, zeros.
    fn read(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        let end = first + (buf.len() / B) as u64;
        buf.fill(0);
        if first < self.data_blocks {
            let from = first * BLOCK;
            let to = (end.min(self.data_blocks) * BLOCK).min(self.data.size().max(from));
            self.data
                .read_into(from, &mut buf[..(to - from) as usize])?;
        }
        let (lo, hi) = (first.max(self.data_blocks), end.min(self.blocks()));
        if lo < hi {
            let len = ((hi - lo) * BLOCK) as usize;
            let bytes = self.hash.read((lo - self.data_blocks) * BLOCK, len)?;
            if bytes.len() != len {
                return Err(Error::Integrity(format!(
                    "{}: hash blocks {}..{} read short",
                    self.hash.describe(),
                    lo - self.data_blocks,
                    hi - self.data_blocks
                )));
            }
            let at = ((lo - first) * BLOCK) as usize;
            buf[at..at + len].copy_from_slice(&bytes);
        }
        Ok(())
    }

    /// Names stream block `k`.
    fn name(&self, k: u64) -> Block {
        if k < self.data_blocks {
            Block::Data(k)
        } else {
            Block::Hash(k - self.data_blocks)
        }
    }
}

/// Writes the FEC of `stream` with `roots` parity symbols per codeword to `out` (whose
/// name in messages is `path`), as `veritysetup format --fec-device` does.
pub fn encode(
    stream: &Stream,
    roots: Roots,
    out: &File,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Layout> {
    let layout = Layout::new(stream.blocks(), roots);
    let bytes_per_round = BLOCK * u64::from(roots.get());
    progress.start("error correction", stream.blocks() * BLOCK);
    let overlay = Overlay::new();
    let source = Source {
        stream,
        overlay: &overlay,
    };
    parity_by_rounds(&source, &layout, progress, &|first, parity| {
        out.write_all_at(parity, first * bytes_per_round).at(path)
    })?;
    out.set_len(layout.size()).at(path)?;
    progress.finish();
    Ok(layout)
}

/// Computes the parity of every round of `source`, handing `sink(first round, parity)`
/// a few consecutive rounds' at a time, from parallel tasks in no particular order.
fn parity_by_rounds(
    source: &Source,
    layout: &Layout,
    progress: &dyn Progress,
    sink: &(dyn Fn(u64, &[u8]) -> Result<()> + Sync),
) -> Result<()> {
    let roots = layout.roots.count();
    let rsn = layout.rsn();
    let encoder = Encoder::new(roots);
    let tasks = layout.rounds.div_ceil(TASK_ROUNDS);
    (0..tasks).into_par_iter().try_for_each(|task| {
        let first = task * TASK_ROUNDS;
        let count = TASK_ROUNDS.min(layout.rounds - first) as usize;
        // Row `row` of the task's rounds is a run of `count` consecutive blocks.
        let mut data = vec![0u8; rsn * count * B];
        let mut read = 0;
        for (row, run) in data.chunks_exact_mut(count * B).enumerate() {
            let at = layout.block(first, row);
            source.read(at, run)?;
            read += (at + count as u64).min(layout.blocks).saturating_sub(at);
        }
        let mut parity = vec![0u8; count * B * roots];
        for (round, parity) in parity.chunks_exact_mut(B * roots).enumerate() {
            encoder.encode(&data, count * B, round * B, parity);
        }
        progress.advance(read * BLOCK);
        sink(first, &parity)
    })
}

/// A block of the stream: a data block or a hash block (numbered in the hash area).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    Data(u64),
    Hash(u64),
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Block::Data(n) => write!(f, "{n}"),
            Block::Hash(n) => write!(f, "hash block {n}"),
        }
    }
}

/// Some blocks: how many, and the first of them in stream order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Blocks {
    pub count: u64,
    pub first: Vec<Block>,
}

impl Blocks {
    fn add(&mut self, block: Block) {
        self.count += 1;
        if self.first.len() < LISTED {
            self.first.push(block);
        }
    }
}

impl std::fmt::Display for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.first.iter().map(Block::to_string).collect();
        write!(f, "{}", names.join(", "))?;
        if self.count > self.first.len() as u64 {
            write!(f, " and {} more", self.count - self.first.len() as u64)?;
        }
        Ok(())
    }
}

/// What checking a stream with its FEC found, and what correction did.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub roots: u8,
    /// Interleaved groups of codewords; each corrects `roots` damaged blocks.
    pub rounds: u64,
    /// Blocks that failed their check against the tree, before correction.
    pub bad: Blocks,
    /// Blocks under a hash block that failed its check, so not checked, before correction.
    pub unchecked: Blocks,
    /// Blocks whose correct content the code restored (checked against the tree):
    /// written back by a repair, correctable by one after a check.
    pub corrected: Blocks,
    /// Blocks still damaged: in rounds with more damaged blocks than `roots`, or whose
    /// correction failed its check.
    pub uncorrectable: Blocks,
    /// Of the rounds left without damage, how many have other parity in the FEC file
    /// than their blocks give (a damaged or stale FEC file); a check counts them, a
    /// repair does not.
    pub mismatched_rounds: Option<u64>,
}

/// The tree a stream's blocks are checked against.
pub struct Tree<'a> {
    pub geometry: &'a Geometry,
    pub salt: &'a [u8],
    pub root: [u8; 32],
}

/// Where a repair writes corrected blocks: data blocks into `data` at their place, hash
/// blocks into `hash` at `base` plus their place in the area.
pub struct Target<'a> {
    pub data: (&'a File, &'a Path),
    pub hash: Option<(&'a File, &'a Path, u64)>,
}

/// Checks every block of `stream` against `tree` and works out which damaged ones the FEC
/// in `fec` restores; writes nothing.
pub fn check(
    stream: &Stream,
    tree: &Tree,
    fec: &Image,
    roots: Roots,
    progress: &dyn Progress,
) -> Result<Outcome> {
    correct(stream, tree, fec, roots, None, progress)
}

/// As [`check`], then writes the restored blocks to `target` and checks the stream again.
pub fn repair(
    stream: &Stream,
    tree: &Tree,
    fec: &Image,
    roots: Roots,
    target: &Target,
    progress: &dyn Progress,
) -> Result<Outcome> {
    correct(stream, tree, fec, roots, Some(target), progress)
}

/// A block the code restored: its content, and whether that differs from what was read.
struct Fixed {
    bytes: Vec<u8>,
    changed: bool,
}

/// Restored blocks by stream number, read in place of the stream's own.
type Overlay = BTreeMap<u64, Fixed>;

/// The stream as corrected so far.
struct Source<'a> {
    stream: &'a Stream<'a>,
    overlay: &'a Overlay,
}

impl Source<'_> {
    fn read(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        self.stream.read(first, buf)?;
        let end = first + (buf.len() / B) as u64;
        for (&k, fixed) in self.overlay.range(first..end) {
            let at = ((k - first) * BLOCK) as usize;
            buf[at..at + B].copy_from_slice(&fixed.bytes);
        }
        Ok(())
    }

    fn block(&self, k: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; B];
        self.read(k, &mut buf)?;
        Ok(buf)
    }
}

/// How many hash blocks a [`Spans`] reads at once.
const SPAN_BLOCKS: u64 = 16;

/// Hash blocks of a [`Source`] read front to back, a span at a time.
struct Spans<'a> {
    source: &'a Source<'a>,
    span: (u64, Vec<u8>),
}

impl<'a> Spans<'a> {
    fn new(source: &'a Source<'a>) -> Self {
        Spans {
            source,
            span: (u64::MAX, Vec::new()),
        }
    }

    /// Hash block `n`.
    fn block(&mut self, n: u64) -> Result<&[u8]> {
        let first = n / SPAN_BLOCKS * SPAN_BLOCKS;
        if self.span.0 != first {
            let count = SPAN_BLOCKS.min(self.source.stream.hash_blocks - first);
            let mut buf = vec![0u8; count as usize * B];
            self.source
                .read(self.source.stream.data_blocks + first, &mut buf)?;
            self.span = (first, buf);
        }
        let at = ((n - first) * BLOCK) as usize;
        Ok(&self.span.1[at..at + B])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Good,
    Bad,
    /// Under a hash block that is not good: nothing to check it against.
    Unchecked,
}

/// Some blocks of a round (stream numbers): how many, and the first `roots + 1`.
#[derive(Default)]
struct Few {
    count: u64,
    first: Vec<u64>,
}

/// The damaged blocks of a round.
#[derive(Default)]
struct Damage {
    bad: Few,
    unchecked: Few,
}

impl Damage {
    /// The blocks to decode the round with as erasures: the bad and the unchecked ones
    /// while the code can take them all, else the bad ones alone (the unchecked presumed
    /// right; the decoder may still correct a few of them as errors). `None` when there
    /// are more bad blocks than `roots`.
    fn erasures(&self, roots: u64) -> Option<Vec<u64>> {
        if self.bad.count + self.unchecked.count <= roots {
            Some([&self.bad.first[..], &self.unchecked.first[..]].concat())
        } else if self.bad.count <= roots {
            Some(self.bad.first.clone())
        } else {
            None
        }
    }
}

/// Where a stream stands against its tree.
struct Survey {
    /// The state of each hash block.
    hash: Vec<State>,
    /// Rounds holding damaged blocks.
    rounds: BTreeMap<u64, Damage>,
    bad: Blocks,
    unchecked: Blocks,
    /// Bad and unchecked blocks.
    damaged: Blocks,
}

impl Survey {
    fn note(&mut self, k: u64, state: State, stream: &Stream, layout: &Layout) {
        self.damaged.add(stream.name(k));
        let damage = self.rounds.entry(layout.place(k).0).or_default();
        let some = match state {
            State::Unchecked => {
                self.unchecked.add(stream.name(k));
                &mut damage.unchecked
            }
            State::Good | State::Bad => {
                self.bad.add(stream.name(k));
                &mut damage.bad
            }
        };
        some.count += 1;
        if some.first.len() <= layout.roots.count() {
            some.first.push(k);
        }
    }

    /// Whether stream block `k` lies under a hash block that is not good.
    fn unchecked(&self, k: u64, stream: &Stream, geometry: &Geometry) -> bool {
        let hash_block = match k.checked_sub(stream.data_blocks) {
            Some(n) => Some(n),
            None => geometry
                .levels
                .first()
                .map(|&(first, _)| first + (k >> PER_BLOCK_BITS)),
        };
        hash_block.is_some_and(|n| {
            let state = self.hash[n as usize];
            if k < stream.data_blocks {
                state != State::Good
            } else {
                state == State::Unchecked
            }
        })
    }
}

/// Checks every block of `stream`, as `overlay` corrects it, against `tree`: the hash
/// blocks top down, each against its entry in its parent (the top one against the root),
/// then the data blocks against their leaves.
fn survey(
    stream: &Stream,
    overlay: &Overlay,
    tree: &Tree,
    layout: &Layout,
    progress: &dyn Progress,
) -> Result<Survey> {
    let g = tree.geometry;
    let source = &Source { stream, overlay };
    let mut survey = Survey {
        hash: vec![State::Unchecked; g.hash_blocks as usize],
        rounds: BTreeMap::new(),
        bad: Blocks::default(),
        unchecked: Blocks::default(),
        damaged: Blocks::default(),
    };
    progress.start("checking", stream.blocks() * BLOCK);
    let mut blocks = Spans::new(source);
    let mut parents = Spans::new(source);
    if let Some(&(top, _)) = g.levels.last() {
        survey.hash[top as usize] = match salted(tree.salt, blocks.block(top)?) == tree.root {
            true => State::Good,
            false => State::Bad,
        };
        for level in (0..g.levels.len() - 1).rev() {
            let (first, count) = g.levels[level];
            let (parent_first, _) = g.levels[level + 1];
            for j in 0..count {
                let parent = parent_first + (j >> PER_BLOCK_BITS);
                survey.hash[(first + j) as usize] = if survey.hash[parent as usize] != State::Good {
                    State::Unchecked
                } else if salted(tree.salt, blocks.block(first + j)?)
                    == entry(parents.block(parent)?, j)
                {
                    State::Good
                } else {
                    State::Bad
                };
            }
        }
    }
    progress.advance(g.hash_blocks * BLOCK);
    let window = WINDOW / BLOCK;
    let mut at = 0;
    while at < g.data_blocks {
        let count = window.min(g.data_blocks - at);
        let mut buf = vec![0u8; count as usize * B];
        source.read(at, &mut buf)?;
        let digests: Vec<[u8; 32]> = buf
            .par_chunks_exact(B)
            .map(|b| salted(tree.salt, b))
            .collect();
        for (k, digest) in (at..).zip(digests) {
            let state = match g.levels.first() {
                None => match digest == tree.root {
                    true => State::Good,
                    false => State::Bad,
                },
                Some(&(first, _)) => {
                    let leaf = first + (k >> PER_BLOCK_BITS);
                    if survey.hash[leaf as usize] != State::Good {
                        State::Unchecked
                    } else if entry(blocks.block(leaf)?, k) == digest {
                        State::Good
                    } else {
                        State::Bad
                    }
                }
            };
            if state != State::Good {
                survey.note(k, state, stream, layout);
            }
        }
        progress.advance(count * BLOCK);
        at += count;
    }
    for n in 0..g.hash_blocks {
        let state = survey.hash[n as usize];
        if state != State::Good {
            survey.note(g.data_blocks + n, state, stream, layout);
        }
    }
    progress.finish();
    Ok(survey)
}

fn correct(
    stream: &Stream,
    tree: &Tree,
    fec: &Image,
    roots: Roots,
    target: Option<&Target>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let layout = Layout::new(stream.blocks(), roots);
    check_size(fec, &layout)?;
    let mut overlay = Overlay::new();
    let mut current = survey(stream, &overlay, tree, &layout, progress)?;
    let (bad, unchecked) = (current.bad.clone(), current.unchecked.clone());
    // A pass restores what it can check: blocks under damaged hash blocks are checked
    // once those are restored, by the next pass.
    while current.damaged.count > 0
        && pass(stream, &mut overlay, &current, tree, &layout, fec, progress)? > 0
    {
        current = survey(stream, &overlay, tree, &layout, progress)?;
    }
    let mut corrected = Blocks::default();
    for (&k, _) in overlay.iter().filter(|(_, f)| f.changed) {
        corrected.add(stream.name(k));
    }
    let (uncorrectable, mismatched_rounds) = match target {
        Some(target) => {
            write(stream, &overlay, target)?;
            let after = survey(stream, &Overlay::new(), tree, &layout, progress)?;
            (after.damaged, None)
        }
        None => {
            let source = Source {
                stream,
                overlay: &overlay,
            };
            let mismatched = mismatched(&source, &layout, fec, &current.rounds, progress)?;
            (current.damaged, Some(mismatched))
        }
    };
    Ok(Outcome {
        roots: roots.get(),
        rounds: layout.rounds,
        bad,
        unchecked,
        corrected,
        uncorrectable,
        mismatched_rounds,
    })
}

/// Of the rounds not in `damaged`, how many have other parity in `fec` than `source`
/// gives.
fn mismatched(
    source: &Source,
    layout: &Layout,
    fec: &Image,
    damaged: &BTreeMap<u64, Damage>,
    progress: &dyn Progress,
) -> Result<u64> {
    let per_round = B * layout.roots.count();
    let count = AtomicU64::new(0);
    progress.start("checking the FEC", layout.blocks * BLOCK);
    parity_by_rounds(source, layout, progress, &|first, parity| {
        let stored = fec.read_at(first * per_round as u64, parity.len())?;
        let rounds = parity
            .chunks_exact(per_round)
            .zip(stored.chunks_exact(per_round));
        for (round, (ours, theirs)) in (first..).zip(rounds) {
            if ours != theirs && !damaged.contains_key(&round) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    })?;
    progress.finish();
    Ok(count.into_inner())
}

/// Refuses a FEC file of another size than the code's: a file made with another
/// `--fec-roots` or for another image. A block device may be larger.
fn check_size(fec: &Image, layout: &Layout) -> Result<()> {
    let need = layout.size();
    let regular = fec.file().metadata().at(fec.path())?.is_file();
    if fec.size() < need || (regular && fec.size() != need) {
        return Err(Error::Invalid(format!(
            "{}: {} bytes, where the FEC of these {} blocks with {} roots takes {need} (made with another --fec-roots, or for another image?)",
            fec.path().display(),
            fec.size(),
            layout.blocks,
            layout.roots.get()
        )));
    }
    Ok(())
}

/// Decodes the rounds holding damaged blocks, those within the code's power, and keeps in
/// `overlay` the restored blocks that check out against the tree, parents before children.
/// Returns how many it kept.
fn pass(
    stream: &Stream,
    overlay: &mut Overlay,
    survey: &Survey,
    tree: &Tree,
    layout: &Layout,
    fec: &Image,
    progress: &dyn Progress,
) -> Result<usize> {
    let rounds: Vec<(u64, Vec<u64>)> = survey
        .rounds
        .iter()
        .filter_map(|(&n, d)| Some((n, d.erasures(u64::from(layout.roots.get()))?)))
        .collect();
    progress.start("correcting", rounds.len() as u64);
    let source = Source { stream, overlay };
    let may_change = |k| survey.unchecked(k, stream, tree.geometry);
    let encoder = Encoder::new(layout.roots.count());
    let decoded: Vec<Option<Vec<(u64, Fixed)>>> = rounds
        .par_iter()
        .map(|(round, erased)| {
            let fixed = decode_round(&source, fec, &encoder, layout, *round, erased, &may_change);
            progress.advance(1);
            fixed
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let mut candidates: Vec<(u64, Fixed)> = decoded.into_iter().flatten().flatten().collect();
    // The hash area lies top level first: hash blocks in order, then data blocks, puts
    // every parent before its children.
    candidates.sort_by_key(|&(k, _)| (k < stream.data_blocks, k));
    let mut kept = 0;
    for (k, fixed) in candidates {
        let expected = expected(stream, overlay, survey, tree, k)?;
        if expected.is_some_and(|e| e == salted(tree.salt, &fixed.bytes)) {
            overlay.insert(k, fixed);
            kept += 1;
        }
    }
    Ok(kept)
}

/// The digest stream block `k` must have, when its parent is known good (checked, or
/// restored and checked): the root for the top block, else its entry in the parent.
fn expected(
    stream: &Stream,
    overlay: &Overlay,
    survey: &Survey,
    tree: &Tree,
    k: u64,
) -> Result<Option<[u8; 32]>> {
    let g = tree.geometry;
    let (parent, j) = if k < stream.data_blocks {
        match g.levels.first() {
            None => return Ok(Some(tree.root)),
            Some(&(first, _)) => (first + (k >> PER_BLOCK_BITS), k),
        }
    } else {
        let n = k - stream.data_blocks;
        let Some((level, (first, _))) = g.level_of(n) else {
            return Err(Error::Internal(format!("hash block {n} outside the tree")));
        };
        match g.levels.get(level + 1) {
            None => return Ok(Some(tree.root)),
            Some(&(parent_first, _)) => (parent_first + ((n - first) >> PER_BLOCK_BITS), n - first),
        }
    };
    let at = stream.data_blocks + parent;
    if let Some(fixed) = overlay.get(&at) {
        return Ok(Some(entry(&fixed.bytes, j)));
    }
    if survey.hash[parent as usize] != State::Good {
        return Ok(None);
    }
    let source = Source { stream, overlay };
    Ok(Some(entry(&source.block(at)?, j)))
}

/// Corrects the 4096 codewords of `round`, the blocks `erased` erased. Returns those
/// blocks restored and any other the decoder changed, or `None` when a codeword is past
/// correction or the decoder would change a block not `may_change` (one the tree vouches
/// for).
fn decode_round(
    source: &Source,
    fec: &Image,
    encoder: &Encoder,
    layout: &Layout,
    round: u64,
    erased: &[u64],
    may_change: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Option<Vec<(u64, Fixed)>>> {
    let roots = layout.roots.count();
    let rsn = layout.rsn();
    let mut data = vec![0u8; rsn * B];
    for (row, block) in data.chunks_exact_mut(B).enumerate() {
        let k = layout.block(round, row);
        if k < layout.blocks {
            source.read(k, block)?;
        }
    }
    let stored = fec.read_at(round * BLOCK * roots as u64, B * roots)?;
    let mut rows: Vec<usize> = erased.iter().map(|&k| layout.place(k).1).collect();
    let Some(erasures) = Erasures::new(roots, &rows) else {
        return Ok(None);
    };
    // A codeword whose data gives the parity stored is whole: only the others are decoded.
    let mut remainders = vec![0u8; B * roots];
    encoder.encode(&data, B, 0, &mut remainders);
    let original = data.clone();
    let mut word = [0u8; CODEWORD];
    let codewords = remainders
        .chunks_exact_mut(roots)
        .zip(stored.chunks_exact(roots));
    for (c, (remainder, parity)) in codewords.enumerate() {
        if remainder == parity {
            continue;
        }
        for (r, &p) in remainder.iter_mut().zip(parity) {
            *r ^= p;
        }
        for (row, symbol) in word[..rsn].iter_mut().enumerate() {
            *symbol = data[row * B + c];
        }
        word[rsn..].copy_from_slice(parity);
        let Some(changed) = erasures.correct(&mut word, &rs::syndromes(remainder)) else {
            return Ok(None);
        };
        for row in changed.into_iter().filter(|&row| row < rsn) {
            if !rows.contains(&row) {
                let k = layout.block(round, row);
                if k >= layout.blocks || !may_change(k) {
                    return Ok(None);
                }
                rows.push(row);
            }
            data[row * B + c] = word[row];
        }
    }
    Ok(Some(
        rows.into_iter()
            .map(|row| {
                let bytes = data[row * B..(row + 1) * B].to_vec();
                let changed = bytes[..] != original[row * B..(row + 1) * B];
                (layout.block(round, row), Fixed { bytes, changed })
            })
            .collect(),
    ))
}

/// Writes the blocks the code changed to `target`, and makes them durable. Of a data
/// block past the end of an image file not padded to whole blocks, only the part within
/// the file is written (the rest is padding, zeros).
fn write(stream: &Stream, overlay: &Overlay, target: &Target) -> Result<()> {
    let (data, data_path) = target.data;
    let size = stream.data.size();
    for (&k, fixed) in overlay.iter().filter(|(_, f)| f.changed) {
        if k < stream.data_blocks {
            let at = k * BLOCK;
            let len = (size.saturating_sub(at)).min(BLOCK) as usize;
            data.write_all_at(&fixed.bytes[..len], at).at(data_path)?;
        } else {
            let Some((hash, hash_path, base)) = target.hash else {
                return Err(Error::Internal(format!(
                    "hash block {} restored, but the tree is not in a file",
                    k - stream.data_blocks
                )));
            };
            hash.write_all_at(&fixed.bytes, base + (k - stream.data_blocks) * BLOCK)
                .at(hash_path)?;
        }
    }
    data.sync_data().at(data_path)?;
    if let Some((hash, hash_path, _)) = target.hash {
        hash.sync_data().at(hash_path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_interleave_blocks_as_veritysetup_does() {
        // 300 blocks at 2 roots: 253 blocks a round, 2 rounds; round 1 takes 1, 3, 5, …
        let layout = Layout::new(300, Roots::new(2).unwrap());
        assert_eq!(layout.rounds, 2);
        assert_eq!(layout.size(), 2 * 4096 * 2);
        assert_eq!(layout.block(1, 2), 5);
        assert_eq!(layout.place(5), (1, 2));
        assert!(Roots::new(1).is_err() && Roots::new(25).is_err());
    }
}
