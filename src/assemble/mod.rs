//! `extract`: rebuild the image from what is in place, seeds, the output's own earlier
//! content and the stores, verifying every chunk before it is written.
//!
//! An existing output is updated in place: the guard (first 4 KiB) is zeroed first and
//! written last, copies within the output run in an order that never overwrites a
//! source before it is read, and a rerun after an interruption finishes the job.

pub mod order;
pub mod target;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Serialize;

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::durable::{self, NewFile};
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::index::{BasePiece, ChunkRecord, Delta, Index};
use crate::plan::{self, PlanSummary, Source};
use crate::progress::Progress;
use crate::seed::{self, Seed, SeedBases};
use crate::sign::Kind;
use crate::store::{Stores, TrafficReport};
use crate::trust::TrustedIndex;
use crate::verity::fec::{self, Roots, Stream};
use crate::verity::{self, FileArea, Geometry};
use order::{Copy, Step};
use target::{Target, GUARD};

pub struct ExtractOptions {
    /// Most bytes saved aside when the output is updated in place: the base runs of deltas
    /// only the output holds, then sources of copies within it (to break cycles).
    pub spill_limit: u64,
    /// Append the dm-verity hash device (superblock and tree) to the output, right after
    /// the padded image, for `veritysetup --hash-offset`.
    pub verity_append: bool,
    /// Also write the dm-verity hash device to this file, once the root is checked.
    pub verity: Option<PathBuf>,
    /// Once the image is complete, write the index's root-hash signature (checked as its
    /// certificate signer's when it was opened) to `BASE.roothash.p7s` and systemd's
    /// JSON to `BASE.verity-sig.json`; when the index carries none, remove such files
    /// left by an earlier release, which would not match this image.
    pub kernel_signature: Option<PathBuf>,
    /// Also write the forward error correction of the image and its tree to this file,
    /// with so many parity bytes per codeword, once the image is complete.
    pub fec: Option<(PathBuf, Roots)>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            spill_limit: 256 << 20,
            verity_append: false,
            verity: None,
            kernel_signature: None,
            fec: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ExtractReport {
    pub plan: PlanSummary,
    /// The output existed (or a partial one from an earlier run) and was updated in place.
    pub updated_in_place: bool,
    pub spilled_bytes: u64,
    /// Chunks fetched from the store because a local copy failed verification or could not
    /// be ordered within the spill limit.
    pub refetched_chunks: u64,
    /// Chunk files rebuilt from deltas against the seeds.
    pub chunk_files_from_deltas: u64,
    /// What fetching cost over HTTP since the stores were opened: requests, bytes, gaps
    /// and part headers.
    pub traffic: TrafficReport,
    /// Checked against what was written before the image was completed.
    pub verity_root: String,
    /// The root-hash signature written beside the image, if any (see
    /// [`ExtractOptions::kernel_signature`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_hash_signature: Option<PathBuf>,
}

struct Run<'a> {
    index: &'a Index,
    stores: &'a Stores,
    seeds: &'a [Seed],
    target: Target,
    warn: &'a (dyn Fn(&str) + Sync),
    refetched: AtomicU64,
    /// Chunks under the guard fetched with the rest, held until the end.
    fetched_head: Mutex<Vec<(ChunkRecord, VerifiedChunk)>>,
}

/// Writes the image `index` describes to `output`, after checking that the dm-verity root of
/// what it wrote is the index's; writes the hash device where `opts` asks for it.
pub fn extract(
    index: &TrustedIndex,
    stores: &Stores,
    seeds: Vec<Seed>,
    output: &Path,
    opts: &ExtractOptions,
    progress: &dyn Progress,
    warn: &(dyn Fn(&str) + Sync),
) -> Result<ExtractReport> {
    let size = index.header().image_size;
    let verity = &index.header().verity;
    let padded = verity.padded_size();
    let final_len = if opts.verity_append {
        padded + verity::BLOCK + verity.tree_size
    } else {
        padded
    };
    let target = Target::open(output, final_len)?;
    let seeds: Arc<[Seed]> = seeds
        .into_iter()
        .filter(|s| !target.is_same_file(s.path()))
        .collect();
    let rebuilt_before = stores.rebuilt_from_deltas();
    let in_place = target.in_place(index, progress)?;
    let wanted = plan::wanted(index, &in_place);
    let from_output = if target.old_len() > 0 {
        let missing = wanted
            .iter()
            .filter(|id| seeds.iter().all(|s| s.locate(id).is_none()))
            .copied()
            .collect();
        let h = index.header();
        let cutting = h.layout.cutting;
        let lendable = seed::lendable(index, &missing);
        let mut own = Seed::scan(target.path(), h.params, cutting, &lendable, progress)?;
        own.bases_only_before(GUARD);
        for (r, &here) in index.records().zip(&in_place) {
            if here && r.offset >= GUARD && missing.contains(&r.id) {
                own.prefer(r.id, r.offset, r.size);
            }
        }
        Some(own)
    } else {
        None
    };
    let deltas = stores.offered_deltas(index);
    let plan = plan::plan(
        index,
        &deltas,
        &seeds,
        &in_place,
        from_output.as_ref(),
        opts.spill_limit,
    );
    let (aside, aside_bytes) = match &from_output {
        Some(own) => set_bases_aside(&plan.aside, own)?,
        None => (None, 0),
    };
    // Each chunk file is rebuilt from the delta the plan chose for it, if any.
    let chosen = plan
        .by_delta
        .iter()
        .map(|(unit, d)| (*unit, vec![d.clone()]))
        .collect();
    let _bases = UsingBases::new(stores, index, chosen, &seeds, aside);
    let run = Run {
        index,
        stores,
        seeds: &seeds,
        target,
        warn,
        refetched: AtomicU64::new(0),
        fetched_head: Mutex::new(Vec::new()),
    };

    let (mut head, head_to_fetch) = run.head(&plan.sources)?;
    run.target.invalidate(size)?;
    progress.start("writing", size);
    // The bases set aside and the copies' spill share the spill limit.
    let spill_limit = opts.spill_limit.saturating_sub(aside_bytes);
    let (spilled_bytes, mut to_fetch) = run.copy_within(&plan.sources, spill_limit, progress)?;
    run.write_from_seeds(&plan.sources, &mut to_fetch, progress)?;
    to_fetch.extend(head_to_fetch);
    run.fetch(&to_fetch, progress)?;
    head.extend(
        run.fetched_head
            .lock()
            .map_err(poisoned)?
            .drain(..)
            .map(|(r, chunk)| (r, Some(chunk))),
    );
    let guard = run.write_head(&head)?;
    run.target.zero(size, padded)?;
    progress.finish();
    let mut device = opts.verity.as_deref().map(NewFile::create).transpose()?;
    // The FEC covers the tree too: with no hash device to write, it is kept aside.
    let fec_tree = match (&opts.fec, opts.verity_append, &opts.verity) {
        (None, _, _) => None,
        (Some(_), true, _) => Some(TreeFile::Appended),
        (Some(_), false, Some(device)) => Some(TreeFile::Device(device.clone())),
        (Some(_), false, None) => {
            let path = std::env::temp_dir().join("blockcast hash tree");
            let file = tempfile::tempfile().at(&path)?;
            Some(TreeFile::Scratch(Image::from_file(&path, file)?))
        }
    };
    let scratch = match &fec_tree {
        Some(TreeFile::Scratch(image)) => Some((image.file(), image.path())),
        _ => None,
    };
    run.check_root(
        &guard,
        opts.verity_append,
        device.as_mut(),
        scratch,
        progress,
    )?;
    if let Some(device) = device {
        device.commit()?;
    }
    let updated_in_place = !run.target.is_new() || run.target.old_len() > 0;
    let refetched_chunks = run.refetched.load(Ordering::Relaxed);
    run.target.complete(final_len, &guard)?;
    let root_hash_signature = match &opts.kernel_signature {
        Some(base) => write_kernel_signature(index, base)?,
        None => None,
    };
    if let (Some((path, roots)), Some(tree)) = (&opts.fec, &fec_tree) {
        write_fec(index, output, tree, path, *roots, progress)?;
    }
    Ok(ExtractReport {
        plan: plan.summary,
        updated_in_place,
        spilled_bytes,
        refetched_chunks,
        chunk_files_from_deltas: stores.rebuilt_from_deltas() - rebuilt_before,
        traffic: stores.traffic(),
        verity_root: verity.root_hex(),
        root_hash_signature,
    })
}

/// Writes the index's kernel signature files at `base` (see
/// [`ExtractOptions::kernel_signature`]), or removes stale ones; returns the
/// `.roothash.p7s` written.
fn write_kernel_signature(index: &TrustedIndex, base: &Path) -> Result<Option<PathBuf>> {
    let (p7s, json) = (Kind::RootHash.path(base), Kind::VeritySig.path(base));
    match index.kernel_signature() {
        Some(signature) => {
            durable::write_file(&json, &signature.verity_sig)?;
            durable::write_file(&p7s, &signature.p7s)?;
            Ok(Some(p7s))
        }
        None => {
            for stale in [p7s, json] {
                match std::fs::remove_file(&stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::Io {
                            path: stale,
                            err: e,
                        })
                    }
                    _ => {}
                }
            }
            Ok(None)
        }
    }
}

/// Where the hash device of a completed image is: appended to it, in the hash device file
/// extract wrote, or in a temporary file.
enum TreeFile {
    Appended,
    Device(PathBuf),
    Scratch(Image),
}

/// Writes the FEC of the completed image at `output` and of its tree to `path`.
fn write_fec(
    index: &Index,
    output: &Path,
    tree: &TreeFile,
    path: &Path,
    roots: Roots,
    progress: &dyn Progress,
) -> Result<()> {
    let verity = &index.header().verity;
    let image = Image::open(output)?;
    let device;
    let area = match tree {
        TreeFile::Appended => FileArea {
            image: &image,
            base: verity.padded_size() + verity::BLOCK,
        },
        TreeFile::Device(path) => {
            device = Image::open(path)?;
            FileArea {
                image: &device,
                base: verity::BLOCK,
            }
        }
        TreeFile::Scratch(scratch) => FileArea {
            image: scratch,
            base: verity::BLOCK,
        },
    };
    let stream = Stream::new(&image, &area, &Geometry::new(verity.data_blocks));
    let file = NewFile::create(path)?;
    fec::encode(&stream, roots, file.file(), file.temp(), progress)?;
    file.commit()
}

/// Lets the stores rebuild chunk files from deltas against the seeds for as long as it
/// lives.
struct UsingBases<'a>(&'a Stores);

impl<'a> UsingBases<'a> {
    fn new(
        stores: &'a Stores,
        index: &Index,
        deltas: HashMap<ChunkId, Vec<Delta>>,
        seeds: &Arc<[Seed]>,
        aside: Option<Seed>,
    ) -> UsingBases<'a> {
        if index.deltas_len() > 0 {
            let bases = SeedBases::new(deltas, seeds.clone(), aside);
            stores.use_bases(Some(Arc::new(bases)));
        }
        UsingBases(stores)
    }
}

/// When the output is updated in place, the base runs of the deltas to be fetched may be
/// found only in the output itself, where the update will overwrite them. Copies each
/// such chunk (`chunks`, which the plan admitted within the spill limit: see
/// [`plan::plan`]), checked, into an anonymous temporary file before anything is written,
/// and returns that file as a seed, with the bytes it holds.
fn set_bases_aside(chunks: &[BasePiece], own: &Seed) -> Result<(Option<Seed>, u64)> {
    let path = std::env::temp_dir().join("blockcast delta bases");
    let mut file: Option<File> = None;
    let mut places = HashMap::new();
    let mut end = 0u64;
    for p in chunks {
        // A chunk that no longer reads as it did when the output was scanned is left
        // out: the chunk file whose run needs it is fetched whole.
        let Some(Ok(chunk)) = own
            .locate_base(&p.id)
            .map(|(at, _)| own.read(p.id, at, p.size, at))
        else {
            continue;
        };
        let f = match &mut file {
            Some(f) => f,
            None => file.insert(tempfile::tempfile().at(&path)?),
        };
        f.write_all_at(chunk.data(), end).at(&path)?;
        places.insert(p.id, (end, p.size));
        end += u64::from(p.size);
    }
    match file {
        Some(f) => Ok((
            Some(Seed::from_chunks(Image::from_file(&path, f)?, places)),
            end,
        )),
        None => Ok((None, 0)),
    }
}

/// Hash devices being written: each receives the hash area after a superblock at its base.
struct Sinks<'a>(Vec<(&'a File, &'a Path, u64)>);

impl verity::TreeSink for Sinks<'_> {
    fn put(&mut self, at: u64, block: &[u8]) -> Result<()> {
        for (file, path, base) in &self.0 {
            file.write_all_at(block, base + verity::BLOCK + at)
                .at(path)?;
        }
        Ok(())
    }
}

impl Drop for UsingBases<'_> {
    fn drop(&mut self) {
        self.0.use_bases(None);
    }
}

impl Run<'_> {
    /// Hashes what was written (with the guard's bytes, still only in memory) and refuses
    /// to complete an image whose root differs from the index's. The hash area goes, as it
    /// is made, after the padded image when `append`, into `device`'s file and into
    /// `scratch`, each after room for a superblock.
    fn check_root(
        &self,
        guard: &[u8],
        append: bool,
        device: Option<&mut NewFile>,
        scratch: Option<(&File, &Path)>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let verity = &self.index.header().verity;
        let padded = verity.padded_size();
        let image = Image::open(self.target.path())?;
        let mut sinks = Vec::new();
        if append {
            sinks.push((self.target.file(), self.target.path(), padded));
        }
        if let Some(d) = &device {
            sinks.push((d.file(), d.temp(), 0));
        }
        if let Some((file, path)) = scratch {
            sinks.push((file, path, 0));
        }
        let mut sink = Sinks(sinks);
        progress.start("verifying", padded);
        let mut tree = verity::TreeBuilder::new(verity.data_blocks, &verity.salt, Some(&mut sink));
        if verity.data_blocks > 0 {
            let mut block = image.read_at(0, verity::BLOCK as usize)?;
            block[..guard.len()].copy_from_slice(guard);
            tree.push(verity::salted(&verity.salt, &block))?;
        }
        verity::digest_blocks(&image, 1, padded, &verity.salt, progress, |_, d| {
            tree.push(d)
        })?;
        let root = tree.finish()?;
        progress.finish();
        if root != verity.root {
            return Err(Error::Integrity(format!(
                "{}: the written image's dm-verity root hash {} differs from the index's {}",
                self.target.path().display(),
                ChunkId(root),
                verity.root_hex()
            )));
        }
        let superblock = verity::superblock(&Geometry::new(verity.data_blocks), &verity.params());
        for (file, path, base) in sink.0 {
            file.write_all_at(&superblock, base).at(path)?;
        }
        Ok(())
    }

    /// Reads a chunk from the output, a seed or the stores: whichever `source` says, and
    /// the stores when that copy fails verification.
    fn obtain(&self, r: &ChunkRecord, source: Source) -> Result<VerifiedChunk> {
        let local = match source {
            Source::InPlace => Some(self.read_output(r, r.offset)),
            Source::Output { offset } => Some(self.read_output(r, offset)),
            Source::Seed { seed, offset } => {
                Some(self.seeds[seed].read(r.id, offset, r.size, r.offset))
            }
            Source::Zero | Source::Store => None,
        };
        match local {
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(e)) => {
                (self.warn)(&format!("{e}; fetching it from the store instead"));
                self.refetched.fetch_add(1, Ordering::Relaxed);
                self.fetch_one(r)
            }
            None => self.fetch_one(r),
        }
    }

    fn read_output(&self, r: &ChunkRecord, at: u64) -> Result<VerifiedChunk> {
        VerifiedChunk::verify(r.id, r.offset, self.target.read(at, r.size)?)
    }

    fn fetch_one(&self, r: &ChunkRecord) -> Result<VerifiedChunk> {
        self.stores.fetch(r)
    }

    /// The chunks under the guard, held in memory until the end: those read from the
    /// output or seeds (before anything is written over them) and zero runs (`None`),
    /// and the records of those to fetch with the rest (see [`Run::fetch`]).
    fn head(&self, sources: &[Source]) -> Result<(Vec<HeadChunk>, Vec<usize>)> {
        let mut head = Vec::new();
        let mut to_fetch = Vec::new();
        for (i, r) in self.index.records().enumerate() {
            if r.offset >= GUARD {
                break;
            }
            let chunk = if r.is_zero() {
                None
            } else if sources[i] == Source::Store {
                to_fetch.push(i);
                continue;
            } else {
                Some(self.obtain(&r, sources[i])?)
            };
            head.push((r, chunk));
        }
        Ok((head, to_fetch))
    }

    /// Runs the copies within the output in a safe order; returns the bytes spilled and
    /// the records left for the store.
    fn copy_within(
        &self,
        sources: &[Source],
        spill_limit: u64,
        progress: &dyn Progress,
    ) -> Result<(u64, Vec<usize>)> {
        let copies: Vec<Copy> = self
            .index
            .records()
            .enumerate()
            .filter_map(|(i, r)| match sources[i] {
                Source::Output { offset } if r.offset >= GUARD => Some(Copy {
                    record: i,
                    src: offset,
                    dst: r.offset,
                    len: r.size,
                }),
                _ => None,
            })
            .collect();
        let mut to_fetch: Vec<usize> = self
            .index
            .records()
            .enumerate()
            .filter(|(i, r)| sources[*i] == Source::Store && r.offset >= GUARD)
            .map(|(i, _)| i)
            .collect();
        if copies.is_empty() {
            return Ok((0, to_fetch));
        }
        let spill = tempfile::tempfile().map_err(|e| Error::Io {
            path: std::env::temp_dir(),
            err: e,
        })?;
        let spill_path = std::env::temp_dir().join("blockcast spill file");
        let mut spilled_at: HashMap<usize, u64> = HashMap::new();
        let mut spilled = 0u64;
        let dropped = Mutex::new(Vec::new());
        for step in order::schedule(&copies, spill_limit) {
            match step {
                Step::Drop(a) => {
                    self.refetched.fetch_add(1, Ordering::Relaxed);
                    to_fetch.push(copies[a].record);
                }
                Step::Spill(a) => {
                    let c = copies[a];
                    let r = self.index.record(c.record);
                    match self.read_output(&r, c.src) {
                        Ok(chunk) => {
                            spill.write_all_at(chunk.data(), spilled).at(&spill_path)?;
                            spilled_at.insert(a, spilled);
                            spilled += u64::from(c.len);
                        }
                        Err(e) => {
                            (self.warn)(&format!("{e}; fetching it from the store instead"));
                            self.refetched.fetch_add(1, Ordering::Relaxed);
                            dropped.lock().map_err(poisoned)?.push(c.record);
                            spilled_at.insert(a, u64::MAX);
                        }
                    }
                }
                Step::Wave(wave) => {
                    wave.par_iter().try_for_each(|&a| -> Result<()> {
                        let c = copies[a];
                        let r = self.index.record(c.record);
                        let chunk = match spilled_at.get(&a) {
                            Some(&u64::MAX) => return Ok(()),
                            Some(&at) => read_spill(&spill, &spill_path, &r, at),
                            None => self.read_output(&r, c.src),
                        };
                        match chunk {
                            Ok(chunk) => {
                                self.target.write(r.offset, &chunk)?;
                                progress.advance(u64::from(r.size));
                            }
                            Err(e) => {
                                (self.warn)(&format!("{e}; fetching it from the store instead"));
                                self.refetched.fetch_add(1, Ordering::Relaxed);
                                dropped.lock().map_err(poisoned)?.push(c.record);
                            }
                        }
                        Ok(())
                    })?;
                }
            }
        }
        to_fetch.extend(dropped.into_inner().map_err(poisoned)?);
        to_fetch.sort_unstable();
        Ok((spilled, to_fetch))
    }

    /// Writes chunks from seeds and zero runs; a seed chunk that fails verification joins
    /// `to_fetch`.
    fn write_from_seeds(
        &self,
        sources: &[Source],
        to_fetch: &mut Vec<usize>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let failed = Mutex::new(Vec::new());
        (0..self.index.len())
            .into_par_iter()
            .try_for_each(|i| -> Result<()> {
                let r = self.index.record(i);
                if r.offset < GUARD {
                    return Ok(());
                }
                match sources[i] {
                    Source::Zero => self.target.zero(r.offset, r.end())?,
                    Source::Seed { seed, offset } => {
                        match self.seeds[seed].read(r.id, offset, r.size, r.offset) {
                            Ok(chunk) => self.target.write(r.offset, &chunk)?,
                            Err(e) => {
                                (self.warn)(&format!("{e}; fetching it from the store instead"));
                                self.refetched.fetch_add(1, Ordering::Relaxed);
                                failed.lock().map_err(poisoned)?.push(i);
                                return Ok(());
                            }
                        }
                    }
                    _ => return Ok(()),
                }
                progress.advance(u64::from(r.size));
                Ok(())
            })?;
        to_fetch.extend(failed.into_inner().map_err(poisoned)?);
        Ok(())
    }

    /// Fetches each distinct chunk once, many at a time, and writes it wherever the image
    /// holds it as it arrives (under the guard: keeps it for [`Run::write_head`]).
    fn fetch(&self, records: &[usize], progress: &dyn Progress) -> Result<()> {
        let mut places: HashMap<ChunkId, Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for &i in records {
            let r = self.index.record(i);
            let entry = places.entry(r.id).or_default();
            if entry.is_empty() {
                order.push(r);
            }
            entry.push(i);
        }
        self.stores.fetch_many(order, |first, chunk| {
            for &i in &places[&first.id] {
                let r = self.index.record(i);
                if r.offset < GUARD {
                    let held = (r, chunk.clone());
                    self.fetched_head.lock().map_err(poisoned)?.push(held);
                } else {
                    self.target.write(r.offset, &chunk)?;
                }
                progress.advance(u64::from(r.size));
            }
            Ok(())
        })
    }

    /// Writes the head chunks past the guard and returns the guard's bytes.
    fn write_head(&self, head: &[HeadChunk]) -> Result<Vec<u8>> {
        let size = self.index.header().image_size;
        let mut guard = vec![0u8; GUARD.min(size) as usize];
        for (r, chunk) in head {
            match chunk {
                None => self.target.zero(GUARD, r.end())?,
                Some(chunk) => {
                    let split = (GUARD.saturating_sub(r.offset) as usize).min(chunk.data().len());
                    let (inside, past) = chunk.data().split_at(split);
                    let at = r.offset as usize;
                    guard[at..at + inside.len()].copy_from_slice(inside);
                    if !past.is_empty() {
                        self.target
                            .write_tail(r.offset + split as u64, chunk, split)?;
                    }
                }
            }
        }
        Ok(guard)
    }
}

/// A chunk under the guard: its record, and its bytes (`None` for a zero run).
type HeadChunk = (ChunkRecord, Option<VerifiedChunk>);

fn read_spill(spill: &File, path: &Path, r: &ChunkRecord, at: u64) -> Result<VerifiedChunk> {
    let mut data = vec![0u8; r.size as usize];
    spill.read_exact_at(&mut data, at).at(path)?;
    VerifiedChunk::verify(r.id, r.offset, data)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Internal("a worker thread panicked".into())
}
