//! Random-access reads of an image that is not there: each read fetches the chunks it
//! touches (from the cache image, the seeds or the stores), starts fetching the chunks
//! that follow, and checks every 4 KiB block it returns against the dm-verity tree whose
//! root the index holds. Wrong bytes are never returned: a block that fails is fetched
//! again from the next source, and only when none yields it does the read fail.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::Serialize;

use crate::chunk::VerifiedChunk;
use crate::chunk::{BlockCheck, Checked};
use crate::error::{Error, Result};
use crate::index::{ChunkRecord, Index};
use crate::mount::cache_image::CacheImage;
use crate::mount::StoredTree;
use crate::seed::{Seed, SeedBases};
use crate::store::{Stores, TrafficReport, Warn};
use crate::trust::TrustedIndex;
use crate::verity::{TreeCheck, BLOCK};

/// From a remote store's packs, chunks are fetched this many bytes of the image at a
/// time: a read that misses fetches the chunks after it too, in the same requests (a range
/// costs its round trip whatever its length, and a reader of small files or metadata next
/// to each other wants them soon), and a sequential read runs up to twice this far ahead,
/// fetching a span's worth at a time. Over a link of 20 ms a request, 4 MiB keeps a reader
/// at 200 MiB/s busy.
const PACKED_SPAN: u64 = 4 << 20;

/// From a local store's packs, a sequential read runs this many `readahead` windows
/// ahead, a window's worth of chunk files at a time.
const LOCAL_PACKED_WINDOWS: usize = 4;

pub struct ReaderOptions {
    /// Chunks fetched ahead of the last one read.
    pub readahead: usize,
    /// Bytes of recently used chunks kept in memory.
    pub memory: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            // Chunks are 40 KiB on average (the median file-aware chunk is smaller):
            // 32 keeps about a megabyte in flight ahead of a sequential reader.
            readahead: 32,
            memory: 64 << 20,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ReaderStats {
    pub reads: u64,
    pub chunks_fetched: u64,
    pub chunks_from_seeds: u64,
    /// Of the chunks fetched, those whose chunk files were rebuilt from deltas.
    pub chunk_files_from_deltas: u64,
    pub blocks_refetched: u64,
    pub failed_reads: u64,
    /// What fetching cost over HTTP: requests, bytes, gaps and part headers.
    pub traffic: TrafficReport,
}

pub struct LazyImage {
    state: Arc<State>,
    blocks: Arc<TreeCheck>,
    stores: Stores,
    seeds: Arc<[Seed]>,
    readahead: usize,
}

/// What background fetches update. It holds no [`Stores`], so a fetch finishing on a
/// runtime thread never owns the runtime it runs on.
struct State {
    index: TrustedIndex,
    cache: Option<CacheImage>,
    recent: Mutex<Recent>,
    pending: Mutex<HashMap<usize, Arc<Pending>>>,
    memory: u64,
    warn: Warn,
    reads: AtomicU64,
    fetched: AtomicU64,
    from_seeds: AtomicU64,
    refetched: AtomicU64,
    failed: AtomicU64,
    /// Whether a read of the cache image failed (and was logged).
    cache_failed: AtomicBool,
    /// Run by each fetch of a chunk before it settles.
    #[cfg(test)]
    fetch_hook: Mutex<Option<FetchHook>>,
}

#[cfg(test)]
type FetchHook = Arc<dyn Fn(usize, &Arc<Pending>) + Send + Sync>;

/// A fetch in flight that other readers of the same chunk wait for.
#[derive(Default)]
struct Pending {
    done: Mutex<Option<Result<Arc<VerifiedChunk>, String>>>,
    ready: Condvar,
}

/// What [`LazyImage::fill`] put in a buffer.
struct Filled {
    /// Records whose bytes came from the cache image.
    from_cache: Vec<usize>,
    /// For each block of the buffer, whether it lies wholly in a chunk whose blocks were
    /// checked against the tree when it was fetched.
    checked: Vec<bool>,
}

/// Recently used chunks, first in first out, up to a byte budget.
#[derive(Default)]
struct Recent {
    chunks: HashMap<usize, Arc<VerifiedChunk>>,
    order: VecDeque<usize>,
    bytes: u64,
}

impl Recent {
    /// Keeps `chunk` as record `record`'s, replacing the copy of a reader that fetched it
    /// at the same time, then forgets the oldest until the rest fit `budget`.
    fn insert(&mut self, record: usize, chunk: Arc<VerifiedChunk>, budget: u64) {
        self.bytes += chunk.data().len() as u64;
        match self.chunks.insert(record, chunk) {
            Some(old) => self.bytes -= old.data().len() as u64,
            None => self.order.push_back(record),
        }
        while self.bytes > budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(c) = self.chunks.remove(&old) {
                self.bytes -= c.data().len() as u64;
            }
        }
    }
}

impl LazyImage {
    /// Reads and checks the hash tree's top levels from the stores at once: an index
    /// whose tree does not hash to its root is refused here, not at the first read.
    pub fn new(
        index: TrustedIndex,
        stores: Stores,
        seeds: Vec<Seed>,
        cache: Option<CacheImage>,
        opts: ReaderOptions,
        warn: Warn,
    ) -> Result<LazyImage> {
        let verity = &index.header().verity;
        let blocks = Arc::new(TreeCheck::new(
            verity.data_blocks,
            verity.salt.clone(),
            verity.root,
        ));
        let tree = StoredTree {
            index: &index,
            stores: &stores,
        };
        blocks.load(&tree, 0, 1)?;
        stores.check_blocks(blocks.clone());
        stores.read_locally_for_mount();
        let seeds: Arc<[Seed]> = seeds.into();
        if index.deltas_len() > 0 && !seeds.is_empty() {
            stores.use_bases(Some(Arc::new(SeedBases::new(
                stores.offered_deltas(&index),
                seeds.clone(),
                None,
            ))));
        }
        Ok(LazyImage {
            state: Arc::new(State {
                index,
                cache,
                recent: Mutex::new(Recent::default()),
                pending: Mutex::new(HashMap::new()),
                memory: opts.memory,
                warn,
                reads: AtomicU64::new(0),
                fetched: AtomicU64::new(0),
                from_seeds: AtomicU64::new(0),
                refetched: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cache_failed: AtomicBool::new(false),
                #[cfg(test)]
                fetch_hook: Mutex::new(None),
            }),
            blocks,
            stores,
            seeds,
            readahead: opts.readahead,
        })
    }

    /// The image's size as exposed: padded to whole blocks, as extract writes it.
    pub fn size(&self) -> u64 {
        self.state.index.header().verity.padded_size()
    }

    pub fn index(&self) -> &Index {
        &self.state.index
    }

    pub fn cache(&self) -> Option<&CacheImage> {
        self.state.cache.as_ref()
    }

    pub fn stats(&self) -> ReaderStats {
        let s = &self.state;
        ReaderStats {
            reads: s.reads.load(Ordering::Relaxed),
            chunks_fetched: s.fetched.load(Ordering::Relaxed),
            chunks_from_seeds: s.from_seeds.load(Ordering::Relaxed),
            chunk_files_from_deltas: self.stores.rebuilt_from_deltas(),
            blocks_refetched: s.refetched.load(Ordering::Relaxed),
            failed_reads: s.failed.load(Ordering::Relaxed),
            traffic: self.stores.traffic(),
        }
    }

    /// Up to `len` bytes at `offset`, every one verified; fewer only at the end.
    pub fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.state.reads.fetch_add(1, Ordering::Relaxed);
        let result = self.read_verified(offset, len);
        if result.is_err() {
            self.state.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn read_verified(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let s = &*self.state;
        let size = s.index.header().verity.padded_size();
        let end = offset.saturating_add(u64::from(len)).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let start = offset / BLOCK * BLOCK;
        let stop = end.div_ceil(BLOCK) * BLOCK;
        self.blocks.load(&self.tree(), start, stop - start)?;
        let mut buf = vec![0u8; (stop - start) as usize];
        let filled = self.fill(&mut buf, start, true)?;
        for block in start / BLOCK..stop / BLOCK {
            let at = ((block * BLOCK - start) as usize)..((block * BLOCK - start + BLOCK) as usize);
            if filled.checked[(block - start / BLOCK) as usize]
                || self.blocks.check(block * BLOCK, &buf[at.clone()]) == Checked::Good
            {
                continue;
            }
            let culprits = self.records_of(block * BLOCK, block * BLOCK + BLOCK);
            if culprits.iter().any(|i| filled.from_cache.contains(i)) {
                (s.warn)(&format!(
                    "block {block} of the cache image {} failed verification; fetching it again",
                    s.cache
                        .as_ref()
                        .map_or(String::new(), |c| c.path().display().to_string())
                ));
                s.refetched.fetch_add(1, Ordering::Relaxed);
                for &i in &culprits {
                    if let Some(c) = &s.cache {
                        c.forget(i);
                    }
                }
                self.fill(&mut buf[at.clone()], block * BLOCK, false)?;
                if self.blocks.check(block * BLOCK, &buf[at]) == Checked::Good {
                    continue;
                }
            }
            let r = s.index.record(culprits[0]);
            return Err(Error::BadChunk {
                id: r.id,
                offset: r.offset,
                reason: format!("data block {block} does not match the dm-verity tree"),
            });
        }
        self.read_ahead(start, end);
        let skip = (offset - start) as usize;
        buf.truncate(skip + (end - offset) as usize);
        buf.drain(..skip);
        Ok(buf)
    }

    /// The hash tree as the stores hold it.
    fn tree(&self) -> StoredTree<'_> {
        StoredTree {
            index: &self.state.index,
            stores: &self.stores,
        }
    }

    /// Indexes of the records overlapping `[start, end)` of the image.
    fn records_of(&self, start: u64, end: u64) -> Vec<usize> {
        let index = &self.state.index;
        let size = index.header().image_size;
        let Some(first) = index.find(start.min(size.saturating_sub(1))) else {
            return Vec::new();
        };
        (first..index.len())
            .take_while(|&i| index.record(i).offset < end)
            .collect()
    }

    /// Fills `buf`, whole blocks, with the image's bytes from `start` (zeros past its
    /// end), from the cache image where it holds them and `use_cache` allows, else from
    /// chunks.
    fn fill(&self, buf: &mut [u8], start: u64, use_cache: bool) -> Result<Filled> {
        let s = &*self.state;
        let end = start + buf.len() as u64;
        let mut filled = Filled {
            from_cache: Vec::new(),
            checked: vec![false; buf.len() / BLOCK as usize],
        };
        // Every byte is written once: from a record, or zeros for zero runs, gaps and
        // what lies past the image's end.
        let mut covered = start;
        for i in self.records_of(start, end) {
            let r = s.index.record(i);
            let (a, b) = (r.offset.max(start), r.end().min(end));
            buf[(covered.min(a) - start) as usize..(a - start) as usize].fill(0);
            covered = covered.max(b);
            let into = &mut buf[(a - start) as usize..(b - start) as usize];
            if r.is_zero() {
                into.fill(0);
                continue;
            }
            let recent = s.recent.lock().map_err(poisoned)?.chunks.get(&i).cloned();
            let chunk = match recent {
                Some(chunk) => chunk,
                None => {
                    if let Some(cache) = s.cache.as_ref().filter(|c| use_cache && c.holds(i)) {
                        match cache.read(a, into) {
                            Ok(()) => {
                                filled.from_cache.push(i);
                                continue;
                            }
                            // Shortened or unreadable since: a miss, like a block that
                            // fails the tree.
                            Err(e) => {
                                cache.forget(i);
                                if !s.cache_failed.swap(true, Ordering::Relaxed) {
                                    (s.warn)(&format!(
                                        "{e}; fetching the chunks the cache image should hold again (further failures are not logged)"
                                    ));
                                }
                            }
                        }
                    }
                    self.chunk(i)?
                }
            };
            into.copy_from_slice(&chunk.data()[(a - r.offset) as usize..(b - r.offset) as usize]);
            if chunk.blocks_checked_at(r.offset) {
                let first = (a - start).div_ceil(BLOCK) as usize;
                let last = ((b - start) / BLOCK) as usize;
                filled.checked[first.min(last)..last].fill(true);
            }
        }
        buf[(covered - start) as usize..].fill(0);
        Ok(filled)
    }

    /// Record `i`'s chunk, verified: from memory, a fetch already under way, a seed or the
    /// stores (from packs, with the chunks that follow it).
    fn chunk(&self, i: usize) -> Result<Arc<VerifiedChunk>> {
        let s = &*self.state;
        if let Some(c) = s.recent.lock().map_err(poisoned)?.chunks.get(&i) {
            return Ok(c.clone());
        }
        let r = s.index.record(i);
        let from_seed = self.seeds.iter().any(|seed| seed.locate(&r.id).is_some());
        let along = match self.stores.reads_packs_remotely() && !from_seed {
            true => self.unheld(i + 1..self.within(i + 1, PACKED_SPAN))?,
            false => Vec::new(),
        };
        let pending = {
            let mut map = s.pending.lock().map_err(poisoned)?;
            match map.get(&i) {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(Pending::default());
                    map.insert(i, p.clone());
                    let settle = Settle::new(&self.state, i, r, p.clone());
                    let along = self.claim(&mut map, along);
                    drop(map);
                    if along.is_empty() {
                        #[cfg(test)]
                        s.run_fetch_hook(i, &settle.pending);
                        let got = self.obtain(&r).map(Arc::new);
                        settle.finish(got.as_ref().map(Arc::clone).map_err(|e| e.to_string()));
                        return got;
                    }
                    let mut batch = vec![(r, settle)];
                    batch.extend(along);
                    self.spawn(batch);
                    p
                }
            }
        };
        let mut done = pending.done.lock().map_err(poisoned)?;
        while done.is_none() {
            done = pending.ready.wait(done).map_err(poisoned)?;
        }
        match done.as_ref() {
            Some(Ok(c)) => Ok(c.clone()),
            Some(Err(reason)) => Err(Error::Unavailable {
                id: r.id,
                offset: r.offset,
                reason: reason.clone(),
            }),
            None => Err(poisoned(())),
        }
    }

    /// The end of the records from `i` on that start within `bytes` of record `i`'s start.
    fn within(&self, i: usize, bytes: u64) -> usize {
        let index = &self.state.index;
        if i >= index.len() {
            return i;
        }
        let until = index.record(i).offset.saturating_add(bytes);
        (i..index.len())
            .find(|&j| index.record(j).offset >= until)
            .unwrap_or(index.len())
    }

    /// Of the records in `range`, those nothing holds: not zero, not in the cache image,
    /// a seed or memory.
    fn unheld(&self, range: std::ops::Range<usize>) -> Result<Vec<usize>> {
        let s = &*self.state;
        let recent = s.recent.lock().map_err(poisoned)?;
        Ok(range
            .filter(|&i| {
                let r = s.index.record(i);
                !(r.is_zero()
                    || s.cache.as_ref().is_some_and(|c| c.holds(i))
                    || self.seeds.iter().any(|seed| seed.locate(&r.id).is_some())
                    || recent.chunks.contains_key(&i))
            })
            .collect())
    }

    /// Marks the records of `wanted` that no fetch is under way for as fetched now, for
    /// [`LazyImage::spawn`].
    fn claim(
        &self,
        pending: &mut HashMap<usize, Arc<Pending>>,
        wanted: Vec<usize>,
    ) -> Vec<(ChunkRecord, Settle)> {
        let mut claimed = Vec::with_capacity(wanted.len());
        for i in wanted {
            if pending.contains_key(&i) {
                continue;
            }
            let r = self.state.index.record(i);
            let p = Arc::new(Pending::default());
            pending.insert(i, p.clone());
            claimed.push((r, Settle::new(&self.state, i, r, p)));
        }
        claimed
    }

    /// Fetches `batch` in the background, neighbours in a pack in one request; each
    /// settles as its request ends (and a settle dropped unrun, when a fetch panics,
    /// settles with an error).
    fn spawn(&self, batch: Vec<(ChunkRecord, Settle)>) {
        self.stores.spawn_fetch_many(batch, |settle: Settle, got| {
            #[cfg(test)]
            settle.state.run_fetch_hook(settle.i, &settle.pending);
            if got.is_ok() {
                settle.state.fetched.fetch_add(1, Ordering::Relaxed);
            }
            settle.finish(got.map(Arc::new).map_err(|e| e.to_string()));
        });
    }

    /// Seeds first (local and cheap), then the stores.
    fn obtain(&self, r: &ChunkRecord) -> Result<VerifiedChunk> {
        for seed in self.seeds.iter() {
            if let Some((at, size)) = seed.locate(&r.id) {
                match seed.read(r.id, at, size, r.offset) {
                    Ok(c) => {
                        self.state.from_seeds.fetch_add(1, Ordering::Relaxed);
                        return Ok(c);
                    }
                    Err(e) => {
                        (self.state.warn)(&format!("{e}; fetching it from the store instead"))
                    }
                }
            }
        }
        let chunk = self.stores.fetch(r);
        if chunk.is_ok() {
            self.state.fetched.fetch_add(1, Ordering::Relaxed);
        }
        chunk
    }

    /// After a read of `[start, end)` that continues a sequential run (the chunk before
    /// it is at hand), starts fetching the chunks after `end` that nothing holds yet. A
    /// lone read (metadata, a small file) fetches nothing ahead: that would only queue
    /// unwanted chunks before the next wanted one.
    fn read_ahead(&self, start: u64, end: u64) {
        let s = &self.state;
        let index = &s.index;
        let last = index.header().image_size.saturating_sub(1);
        let (Some(here), Some(first)) = (index.find(start.min(last)), index.find(end.min(last)))
        else {
            return;
        };
        let before = here.saturating_sub(1);
        let sequential = here == 0
            || s.cache.as_ref().is_some_and(|c| c.holds(before))
            || s.recent
                .lock()
                .is_ok_and(|m| m.chunks.contains_key(&before));
        if !sequential {
            return;
        }
        // From packs, read ahead further and in batches: a request for many neighbouring
        // chunk files costs what one costs, over a network (a span of bytes at a time)
        // and locally (a few windows of chunk files at a time).
        let (packs, remote) = (
            self.stores.reads_packs(),
            self.stores.reads_packs_remotely(),
        );
        let ahead = match (packs, remote) {
            (_, true) => first..self.within(first, 2 * PACKED_SPAN),
            (true, false) => {
                first..(first + self.readahead * LOCAL_PACKED_WINDOWS).min(index.len())
            }
            (false, false) => first..(first + self.readahead).min(index.len()),
        };
        if let Some(last) = ahead.clone().last() {
            // The fetches check whole blocks against the tree when it is loaded for them
            // (and their ids otherwise); a tree that fails here fails the read that wants it.
            let from = index.record(first).offset;
            let _ = self
                .blocks
                .load(&self.tree(), from, index.record(last).end() - from);
        }
        let Ok(unheld) = self.unheld(ahead) else {
            return;
        };
        let batch = {
            let Ok(mut pending) = s.pending.lock() else {
                return;
            };
            let wanted: Vec<usize> = unheld
                .into_iter()
                .filter(|i| !pending.contains_key(i))
                .collect();
            // A batch waits until it is worth a request, unless the read is catching up
            // on it (it wants a chunk of the next window).
            let near = wanted.first().is_some_and(|&i| i < first + self.readahead);
            let bytes: u64 = wanted
                .iter()
                .map(|&i| u64::from(index.record(i).size))
                .sum();
            let small = match remote {
                true => bytes < PACKED_SPAN,
                false => wanted.len() < self.readahead,
            };
            if wanted.is_empty() || (packs && small && !near) {
                return;
            }
            self.claim(&mut pending, wanted)
        };
        self.spawn(batch);
    }
}

impl State {
    /// Publishes a fetch's outcome: to memory and the cache image when it succeeded, and
    /// to whoever waits for it.
    fn settle(
        &self,
        i: usize,
        r: &ChunkRecord,
        pending: &Pending,
        got: Result<Arc<VerifiedChunk>, String>,
    ) {
        if let Ok(chunk) = &got {
            if let Some(cache) = &self.cache {
                cache.put(i, r.offset, chunk.clone());
            }
            if let Ok(mut recent) = self.recent.lock() {
                recent.insert(i, chunk.clone(), self.memory);
            }
        }
        // Settled even if a thread panicked holding these locks: waiters must never hang.
        *pending.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(got);
        pending.ready.notify_all();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&i);
    }

    #[cfg(test)]
    fn run_fetch_hook(&self, i: usize, pending: &Arc<Pending>) {
        let hook = self.fetch_hook.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(i, pending);
        }
    }
}

/// A fetch some readers may wait for, settled exactly once: with its outcome by
/// [`Settle::finish`], or with an error when dropped unfinished, as when the fetch
/// panics, so that no reader waits for ever and the next read fetches it again.
struct Settle {
    state: Arc<State>,
    i: usize,
    r: ChunkRecord,
    pending: Arc<Pending>,
    settled: bool,
}

impl Settle {
    fn new(state: &Arc<State>, i: usize, r: ChunkRecord, pending: Arc<Pending>) -> Settle {
        Settle {
            state: state.clone(),
            i,
            r,
            pending,
            settled: false,
        }
    }

    fn finish(mut self, got: Result<Arc<VerifiedChunk>, String>) {
        self.settled = true;
        self.state.settle(self.i, &self.r, &self.pending, got);
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.settled {
            self.state.settle(
                self.i,
                &self.r,
                &self.pending,
                Err("the fetch panicked".into()),
            );
        }
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal("a reader thread panicked".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::panic::AssertUnwindSafe;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::chunk::ChunkId;
    use crate::chunker::ChunkParams;
    use crate::make::{make, MakeOptions};
    use crate::progress::Silent;
    use crate::store::{LocalStore, StoreOptions};

    /// How long a test waits for what must happen before it fails.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// One MiB of pseudo-random bytes made into a local store under `dir`, chunked on
    /// 4 KiB boundaries: the image's bytes, its index and the store.
    pub(crate) fn sample(dir: &Path) -> (Vec<u8>, Index, String) {
        sample_made(dir, None)
    }

    /// [`sample`], its store packed when `pack` gives a cap.
    fn sample_made(dir: &Path, pack: Option<u64>) -> (Vec<u8>, Index, String) {
        let data: Vec<u8> = crate::testutil::noise(0x9e37_79b9_7f4a_7c15, 1 << 20);
        let path = dir.join("image");
        std::fs::write(&path, &data).unwrap();
        let store = dir.join("store");
        let mut opts = MakeOptions::new(ChunkParams::from_avg(16 << 10).unwrap());
        opts.filesystem_aware = false;
        opts.pack = pack;
        let (bytes, _) = make(
            &path,
            &LocalStore::open(&store, true).unwrap(),
            &opts,
            &Silent,
            &crate::testutil::no_warnings(),
        )
        .unwrap();
        std::fs::write(dir.join("index"), &bytes).unwrap();
        let index = Index::from_bytes(&dir.join("index"), bytes).unwrap();
        assert!(index.len() > 8, "{} chunks", index.len());
        (data, index, store.to_string_lossy().into_owned())
    }

    /// The sample image, read lazily from its store.
    fn lazy(
        dir: &Path,
        cache: impl FnOnce(&Index) -> Option<CacheImage>,
        opts: ReaderOptions,
    ) -> (Vec<u8>, LazyImage) {
        lazy_made(sample(dir), cache, opts)
    }

    /// A sample, read lazily from its store (from its packs when it has them).
    fn lazy_made(
        (data, index, store): (Vec<u8>, Index, String),
        cache: impl FnOnce(&Index) -> Option<CacheImage>,
        opts: ReaderOptions,
    ) -> (Vec<u8>, LazyImage) {
        let warn: Warn = Arc::new(|_| {});
        let runtime = test_runtime();
        let stores = Stores::open(
            &[store],
            &StoreOptions::default(),
            warn.clone(),
            runtime.handle().clone(),
        )
        .unwrap();
        stores.use_pack_maps(&index);
        let cache = cache(&index);
        let index =
            TrustedIndex::unauthenticated(index.path().to_str().unwrap(), 0, None, warn.as_ref())
                .unwrap();
        let image = LazyImage::new(index, stores, Vec::new(), cache, opts, warn).unwrap();
        (data, image)
    }

    fn test_runtime() -> &'static tokio::runtime::Runtime {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RUNTIME.get_or_init(|| crate::store::runtime().unwrap())
    }

    /// `blockcast serve` of `root` on loopback, on the tests' runtime, until the sender
    /// returned is dropped: its URL and that sender.
    fn served(root: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
        let runtime = test_runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = crate::serve::ServeOptions {
            root: root.to_path_buf(),
            delay: Duration::ZERO,
            max_connections: 16,
            header_timeout: crate::serve::ServeOptions::HEADER_TIMEOUT,
            idle_timeout: crate::serve::ServeOptions::IDLE_TIMEOUT,
            drain_timeout: crate::serve::ServeOptions::DRAIN_TIMEOUT,
            verbose: false,
            stall: None,
        };
        runtime.spawn(crate::serve::serve(listener, opts, async {
            let _ = stopped.await;
        }));
        (url, stop)
    }

    fn chunk_of(len: usize) -> Arc<VerifiedChunk> {
        let data = vec![7u8; len];
        Arc::new(VerifiedChunk::verify(ChunkId::of(&data), 0, data).unwrap())
    }

    #[test]
    fn from_remote_packs_a_miss_fetches_the_chunks_after_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let (data, index, _) = sample_made(dir.path(), Some(64 << 20));
        let chunks = index.len() as u64;
        let (url, _stop) = served(dir.path());
        let sample = (data, index, format!("{url}/store"));
        let opts = ReaderOptions {
            readahead: 0,
            ..ReaderOptions::default()
        };
        let (data, image) = lazy_made(sample, |_| None, opts);
        assert!(image.stores.reads_packs_remotely());
        assert_eq!(image.read(0, 4096).unwrap(), data[..4096]);
        // The whole sample lies within the span after the first chunk: all of it comes.
        let began = Instant::now();
        while image.stats().chunks_fetched < chunks {
            assert!(began.elapsed() < DEADLINE, "{:?}", image.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        let len = data.len() as u32;
        assert_eq!(image.read(0, len).unwrap(), data);
        let stats = image.stats();
        assert_eq!(stats.chunks_fetched, chunks);
        // The pack map, the hash tree's pieces, the first read's chunk and the rest.
        assert!(stats.traffic.requests <= 4, "{stats:?}");
    }

    #[test]
    fn recent_counts_a_chunk_fetched_by_racing_readers_once() {
        let mut recent = Recent::default();
        let budget = 200;
        // Three readers fetched record 0 at once; each keeps its copy.
        for _ in 0..3 {
            recent.insert(0, chunk_of(100), budget);
        }
        assert_eq!(recent.bytes, 100);
        recent.insert(1, chunk_of(100), budget);
        assert_eq!(recent.bytes, 200);
        assert!(recent.chunks.contains_key(&0) && recent.chunks.contains_key(&1));
        recent.insert(2, chunk_of(100), budget);
        assert_eq!(recent.bytes, 200);
        assert!(!recent.chunks.contains_key(&0));
        assert!(recent.chunks.contains_key(&1) && recent.chunks.contains_key(&2));
    }

    #[test]
    fn a_panicking_fetch_fails_its_waiting_reader_and_the_next_read_fetches_again() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ReaderOptions {
            readahead: 0,
            ..ReaderOptions::default()
        };
        let (data, image) = lazy(dir.path(), |_| None, opts);
        let image = Arc::new(image);
        let fired = AtomicBool::new(false);
        *image.state.fetch_hook.lock().unwrap() = Some(Arc::new(move |i, pending| {
            if i != 0 || fired.swap(true, Ordering::SeqCst) {
                return;
            }
            // Wait until the other reader waits for this fetch: the pending map, this
            // fetch and that reader then each hold the entry.
            let began = Instant::now();
            while Arc::strong_count(pending) < 3 {
                assert!(began.elapsed() < DEADLINE, "no second reader");
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("injected: the fetch panics");
        }));
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let (image, tx) = (image.clone(), tx.clone());
            std::thread::spawn(move || {
                let got = std::panic::catch_unwind(AssertUnwindSafe(|| image.read(0, 4096)));
                tx.send(got.map(|r| r.map_err(|e| e.to_string()))).unwrap();
            });
        }
        let outcomes: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(DEADLINE).expect("a reader never returned"))
            .collect();
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1);
        let failed = outcomes
            .iter()
            .find_map(|o| o.as_ref().ok())
            .expect("the waiting reader");
        let reason = failed.as_ref().expect_err("the waiting reader got bytes");
        assert!(reason.contains("the fetch panicked"), "{reason}");
        assert!(image.state.pending.lock().unwrap().is_empty());
        assert_eq!(image.read(0, 4096).unwrap(), data[..4096]);
    }

    #[test]
    fn a_panicking_read_ahead_is_fetched_again_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let (data, image) = lazy(dir.path(), |_| None, ReaderOptions::default());
        let fired = Arc::new(AtomicBool::new(false));
        let hook_fired = fired.clone();
        *image.state.fetch_hook.lock().unwrap() = Some(Arc::new(move |i, _| {
            if i == 1 && !hook_fired.swap(true, Ordering::SeqCst) {
                panic!("injected: the read-ahead fetch panics");
            }
        }));
        // A read of the first chunk starts fetching those after it.
        image.read(0, 4096).unwrap();
        let began = Instant::now();
        while !fired.load(Ordering::SeqCst) || image.state.pending.lock().unwrap().contains_key(&1)
        {
            assert!(
                began.elapsed() < DEADLINE,
                "the read-ahead of chunk 1 never settled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = image.index().record(1);
        let got = image.read(r.offset, r.size).unwrap();
        assert_eq!(got, data[r.offset as usize..r.end() as usize]);
    }

    #[test]
    fn a_shortened_cache_image_is_a_miss_and_its_chunks_are_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.img");
        let opts = ReaderOptions {
            readahead: 0,
            // Nothing kept in memory: every read goes to the cache image or the store.
            memory: 0,
        };
        let (data, image) = lazy(
            dir.path(),
            |index| Some(CacheImage::open(&path, index, Arc::new(|_| {})).unwrap()),
            opts,
        );
        let read_all = || image.read(0, data.len() as u32);
        assert_eq!(read_all().unwrap(), data);
        let cache = image.cache().unwrap();
        cache.save().unwrap();
        assert!((0..image.index().len()).all(|i| cache.holds(i)));
        let fetched = image.stats().chunks_fetched;
        assert_eq!(read_all().unwrap(), data);
        assert_eq!(
            image.stats().chunks_fetched,
            fetched,
            "not read from the cache"
        );

        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(data.len() as u64 / 2)
            .unwrap();
        assert_eq!(read_all().unwrap(), data);
        assert!(image.stats().chunks_fetched > fetched);
        assert_eq!(image.stats().failed_reads, 0);
    }
}
