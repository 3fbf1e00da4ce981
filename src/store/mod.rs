//! Chunk stores: where chunk files live, addressed by chunk id. A store is a local
//! directory or an HTTP(S) URL with the same layout; [`Stores`] tries several in order,
//! many chunks at once, and keeps what it fetched in an optional local cache.

mod bucket;
mod byteranges;
pub mod codec;
pub mod http;
pub mod lease;
pub mod local;
mod redirects;
pub mod s3;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::runtime::Handle;

use crate::chunk::{BlockCheck, ChunkId, VerifiedChunk};
use crate::error::{Error, Result};
use crate::index::format::MAX_INDEX_SIZE;
use crate::index::{stored_size_bound, ChunkRecord, Delta, Index, Unit};
use crate::oci;
use crate::pack::{self, Object, PackMap, Place};

pub use bucket::{open_prunable, S3Store};
pub use http::HttpOptions;
pub use local::LocalStore;

/// Receives warnings: a bad copy skipped, a request retried.
pub type Warn = Arc<dyn Fn(&str) + Send + Sync>;

/// The bases of deltas at hand (chunks of an earlier release that a seed holds), which
/// let a fetch take a delta instead of a whole chunk file.
pub trait Bases: Send + Sync {
    /// A delta that rebuilds `unit` and the bytes of its base run, each chunk of it
    /// verified; `None` when no base is at hand, an error when the copy at hand is bad.
    fn for_unit(&self, unit: &Unit) -> Option<Result<(Delta, Vec<u8>)>>;
    /// The delta [`Bases::for_unit`] would offer for `unit`, found without reading its
    /// base.
    fn delta_for(&self, unit: &Unit) -> Option<Delta>;
}

pub struct StoreOptions {
    pub http: HttpOptions,
    /// Chunks in flight at once.
    pub concurrency: usize,
    /// A local store tried first and filled with every chunk fetched elsewhere.
    pub cache: Option<PathBuf>,
    /// Pieces of a pack at most this many bytes apart are fetched as one range, the gap
    /// included (see [`COALESCE_GAP`]).
    pub coalesce_gap: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            http: HttpOptions::default(),
            concurrency: 16,
            cache: None,
            coalesce_gap: COALESCE_GAP,
        }
    }
}

/// How one object is read: the most bytes it may have, and whether the read is a lazy
/// mount's (see [`Stores::read_locally_for_mount`]).
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    pub max_len: u64,
    pub for_mount: bool,
}

/// Checks an object's stored bytes and turns them into a chunk (decompressed, or rebuilt
/// from a delta) as they arrive: a remote store asks again when it refuses them.
pub type Check = Arc<dyn Fn(&[u8]) -> Result<VerifiedChunk> + Send + Sync>;

/// An object read and checked: the chunk, and the stored bytes it came from.
pub type Checked = (VerifiedChunk, Vec<u8>);

/// A store that can be read: objects named by their place in it (see [`local::place`]).
/// One implementation per backend; [`Stores`] tries several in order.
pub trait ReadStore: Send + Sync {
    /// Names the store in messages.
    fn describe(&self) -> String;

    /// Whether a request to the store costs a round trip over a network.
    fn remote(&self) -> bool {
        false
    }

    /// The object `name`, handed to `check`; `None` when the store lacks it. Never reads
    /// more than `opts.max_len` bytes.
    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: ReadOptions,
        check: Check,
    ) -> BoxFuture<'a, Result<Option<Checked>>>;

    /// Byte ranges of the object `name`, each handed to `part` (with its place in
    /// `ranges`) as it arrives; false when the store lacks the object, or (over HTTP,
    /// answered 416) holds one shorter than a range asks. A local file shorter than that
    /// is an error.
    fn get_ranges<'a>(
        &'a self,
        name: &'a str,
        ranges: &'a [std::ops::Range<u64>],
        part: &'a mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
    ) -> BoxFuture<'a, Result<bool>>;

    /// Whether the store has the object `name`.
    fn has<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// A whole file of at most `max_len` bytes that is no chunk (a pack map); `None` when
    /// the store lacks it.
    fn get_file<'a>(
        &'a self,
        name: &'a str,
        max_len: u64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
}

/// A store that can be written: each object appears whole or not at all.
pub trait WriteStore: ReadStore {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Makes every object put so far durable.
    fn sync(&self) -> Result<()>;
}

/// An object of a store as listed: its name in the store's layout, its size, and when it
/// was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A store whose objects can be listed, read, written and removed: what prune and check
/// work on (a local directory or an S3 prefix). Its calls block; they must come from
/// threads outside the runtime.
pub trait PruneStore: Send + Sync {
    /// Names the store in messages.
    fn describe(&self) -> String;
    /// Every object: the files in the store's subdirectories, and its top-level index
    /// files (see `docs/FORMAT.md`, A store's releases); never writers' temporary files.
    fn list(&self) -> Result<Vec<Listed>>;
    /// The objects in the store's subdirectory `dir` (as [`PruneStore::list`] names them).
    fn list_dir(&self, dir: &str) -> Result<Vec<Listed>> {
        let prefix = format!("{dir}/");
        Ok(self
            .list()?
            .into_iter()
            .filter(|l| l.name.starts_with(&prefix))
            .collect())
    }
    /// The object `name`, at most `max_len` bytes of it (more is an error); `None` when
    /// the store lacks it.
    fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>>;
    /// Bytes `range` of the object `name`; `None` when the store lacks it or it is
    /// shorter.
    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Vec<u8>>>;
    /// Writes the object `name` whole (it appears whole or not at all).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Makes every object written so far durable.
    fn sync(&self) -> Result<()>;
    /// Removes the object `name`; removing one that is not there is no error.
    fn delete(&self, name: &str) -> Result<()>;
    /// The store as a local directory, when it is one.
    fn local(&self) -> Option<&LocalStore> {
        None
    }
}

/// The stores of a run, tried in order for each chunk, with the runtime that drives
/// remote fetches.
pub struct Stores {
    shared: Arc<Shared>,
    concurrency: usize,
    runtime: Handle,
}

struct Shared {
    list: Vec<Box<dyn ReadStore>>,
    /// Each store's pack map for the index being read, when it has one (see
    /// [`Stores::use_pack_maps`]).
    maps: RwLock<Vec<Option<Arc<PackMap>>>>,
    /// The index the maps are for, to read them again.
    mapped: RwLock<Option<Arc<Index>>>,
    /// Per store, when its pack map was last read again (see [`Shared::map_again`]).
    reread: tokio::sync::Mutex<Vec<Option<std::time::Instant>>>,
    cache: Option<LocalStore>,
    warn: Warn,
    /// Gathered chunks asked for last, fetched or still in flight, so that reading their
    /// parts one by one or several at once (as a lazy mount does) fetches each once.
    gathered: Mutex<VecDeque<(Unit, GatheredSlot)>>,
    bases: RwLock<Option<Arc<dyn Bases>>>,
    /// When set, a record's own chunk file is checked against this tree where its bytes
    /// are whole blocks (see [`VerifiedChunk::verify_blocks`]).
    blocks: RwLock<Option<Arc<dyn BlockCheck + Send + Sync>>>,
    /// Whether local chunk files are read as a lazy mount reads them (see
    /// [`Stores::read_locally_for_mount`]).
    for_mount: AtomicBool,
    /// Chunk files rebuilt from deltas.
    rebuilt: AtomicU64,
    traffic: Arc<Traffic>,
    /// See [`StoreOptions::coalesce_gap`].
    gap: u64,
}

/// What the fetches of a run cost, counted as they go: requests and bytes over HTTP, and
/// the gap bytes read from packs of any store.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    bytes: AtomicU64,
    gap_bytes: AtomicU64,
    part_header_bytes: AtomicU64,
}

/// [`Traffic`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficReport {
    /// HTTP requests made (HEAD and GET, retries and refused answers included).
    pub requests: u64,
    /// Body bytes received: chunk files, the gaps read with them, multipart part headers,
    /// answers refused or cut off.
    pub bytes: u64,
    /// Bytes of packs between the chunk files wanted, read to save requests.
    pub gap_bytes: u64,
    /// Delimiters and headers of `multipart/byteranges` parts.
    pub part_header_bytes: u64,
}

impl Traffic {
    fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn body(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn headers(&self, n: u64) {
        self.part_header_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn gap(&self, n: u64) {
        self.gap_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(&self) -> TrafficReport {
        TrafficReport {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            gap_bytes: self.gap_bytes.load(Ordering::Relaxed),
            part_header_bytes: self.part_header_bytes.load(Ordering::Relaxed),
        }
    }
}

/// A gathered chunk once fetched; whoever asks while it is in flight waits for it.
type GatheredSlot = Arc<tokio::sync::OnceCell<Arc<VerifiedChunk>>>;

/// A store's pack map is read again on a missing pack at most this often: once in a
/// short run, and again after each prune in a mount that runs for weeks.
const MAP_READ_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes of gathered chunks kept by [`Shared::fetch_gathered`]: the parts of one
/// gathered chunk lie scattered through the image, and a mount reading files in turn
/// asks for many gathered chunks before it comes back to the same one.
const GATHERED_KEPT: u64 = 16 << 20;

impl Stores {
    /// Opens each location: a directory, or an `http://` or `https://` URL. Fetches run on
    /// `runtime`, the caller's (see [`runtime`] for one made for them); the blocking calls
    /// below must come from threads outside it.
    pub fn open(
        locations: &[String],
        opts: &StoreOptions,
        warn: Warn,
        runtime: Handle,
    ) -> Result<Stores> {
        let traffic = Arc::new(Traffic::default());
        let mut client: Option<http::Client> = None;
        let mut list: Vec<Box<dyn ReadStore>> = Vec::with_capacity(locations.len());
        for location in locations {
            if is_remote(location) && client.is_none() {
                client = Some(http::Client::new(&opts.http, traffic.clone())?);
            }
            list.push(open_read_store(
                location,
                client.as_ref(),
                &opts.http,
                warn.clone(),
            )?);
        }
        let cache = match &opts.cache {
            Some(dir) => Some(LocalStore::open(dir, true)?),
            None => None,
        };
        Ok(Stores {
            shared: Arc::new(Shared {
                maps: RwLock::new(list.iter().map(|_| None).collect()),
                mapped: RwLock::new(None),
                reread: tokio::sync::Mutex::new(vec![None; list.len()]),
                list,
                cache,
                warn,
                gathered: Mutex::new(VecDeque::new()),
                bases: RwLock::new(None),
                blocks: RwLock::new(None),
                for_mount: AtomicBool::new(false),
                rebuilt: AtomicU64::new(0),
                traffic,
                gap: opts.coalesce_gap,
            }),
            concurrency: opts.concurrency.max(1),
            runtime,
        })
    }

    /// From now on, a chunk file that has a delta whose base `bases` holds is rebuilt from
    /// that delta (the whole file is fetched when the delta cannot be had); `None` stops
    /// that.
    pub fn use_bases(&self, bases: Option<Arc<dyn Bases>>) {
        *self
            .shared
            .bases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bases;
    }

    /// From now on, a record's own chunk file whose bytes are whole blocks is checked
    /// against `check`'s tree instead of its id.
    pub fn check_blocks(&self, check: Arc<dyn BlockCheck + Send + Sync>) {
        *self
            .shared
            .blocks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(check);
    }

    /// From now on, local chunk files are read as a lazy mount wants them, whose fetches
    /// are each a reader's or a readahead's own:
    /// - on the thread that fetches them, the reader's own for [`Stores::fetch`] and a
    ///   runtime worker for [`Stores::spawn_fetch`]: it spares each chunk two hand-offs
    ///   between threads, and the workers bound how many chunks are decompressed and
    ///   checked at once;
    /// - past the page cache ([`LocalStore::get_uncached`]): the mount keeps the bytes it
    ///   serves itself, and a copy of each chunk file in the page cache is not worth its
    ///   cost.
    pub fn read_locally_for_mount(&self) {
        self.shared.for_mount.store(true, Ordering::Relaxed);
    }

    /// Reads each store's pack map for `index` (`packmaps/<index digest>.bcpmap`), so that
    /// chunk files and deltas it places in packs are read from there by byte ranges; a
    /// store without one is read loose. A map that fails its checks is reported and not
    /// used, and so is one a store fails to answer for. Returns how many stores have one.
    pub fn use_pack_maps(&self, index: &Index) -> usize {
        let shared = &self.shared;
        let maps = self.runtime.block_on(async {
            let mut maps = Vec::with_capacity(shared.list.len());
            for store in &shared.list {
                maps.push(shared.read_map(store.as_ref(), index).await);
            }
            maps
        });
        let found = maps.iter().flatten().count();
        *write(&shared.maps) = maps;
        *write(&shared.mapped) = Some(Arc::new(index.clone()));
        found
    }

    /// `index`'s deltas (by the chunk file each rebuilds) that the stores may hold: all of
    /// them, unless every store has a pack map for it (see [`Stores::use_pack_maps`]),
    /// when only those a map places. A prune drops from a map the deltas whose base run
    /// no kept release holds whole, so a fetch never asks for them.
    pub fn offered_deltas(&self, index: &Index) -> HashMap<ChunkId, Vec<Delta>> {
        let mut deltas = index.deltas_by_unit();
        let maps = read(&self.shared.maps);
        let mapped: Option<Vec<&PackMap>> = match maps.is_empty() {
            true => None,
            false => maps.iter().map(|m| m.as_deref()).collect(),
        };
        if let Some(mapped) = mapped {
            for (id, list) in deltas.iter_mut() {
                list.retain(|d| {
                    let object = Object::Delta {
                        id: *id,
                        base: d.base,
                    };
                    mapped.iter().any(|m| m.find(&object).is_some())
                });
            }
            deltas.retain(|_, list| !list.is_empty());
        }
        deltas
    }

    /// What fetches over HTTP have cost so far, since the stores were opened (their pack
    /// maps included).
    pub fn traffic(&self) -> TrafficReport {
        self.shared.traffic.report()
    }

    /// How many chunk files were rebuilt from deltas so far.
    pub fn rebuilt_from_deltas(&self) -> u64 {
        self.shared.rebuilt.load(Ordering::Relaxed)
    }

    /// Fetches one record's bytes, verified. Blocks; not to be called from async code.
    pub fn fetch(&self, record: &ChunkRecord) -> Result<VerifiedChunk> {
        self.runtime.block_on(self.shared.fetch_record(*record))
    }

    /// Fetches the bytes of `records` with up to `concurrency` chunk files in flight, each
    /// file once however many of the records it holds, and hands each record's bytes to
    /// `sink` as they arrive (not in order), on the calling thread. Stops at the first
    /// error.
    pub fn fetch_many(
        &self,
        records: Vec<ChunkRecord>,
        mut sink: impl FnMut(&ChunkRecord, VerifiedChunk) -> Result<()>,
    ) -> Result<()> {
        let (firsts, mut by_unit) = by_unit(records, |r| *r);
        let shared = &self.shared;
        let jobs = shared.plan_jobs(firsts, &shared.deltas_at_hand());
        self.runtime.block_on(async {
            let mut arrivals = stream::iter(jobs)
                .map(|job| {
                    let shared = shared.clone();
                    Task(tokio::spawn(
                        async move { shared.run_job(job, false).await },
                    ))
                })
                .buffer_unordered(self.concurrency);
            while let Some(joined) = arrivals.next().await {
                for (id, unit) in joined.map_err(|_| worker_failed())? {
                    let unit = unit?;
                    sink_unit(&mut by_unit, id, unit, &mut sink)?;
                }
            }
            Ok(())
        })
    }

    /// What [`Stores::fetch_many`] would send for `records` (the first record of each
    /// chunk file to fetch), when the chunk files `by_delta` names are rebuilt from those
    /// deltas: requests (one for each request's worth of pack ranges, as a server that
    /// answers several ranges at once is asked) and the bytes they ask for (the gaps a
    /// coalesced range spans included, headers not).
    pub fn fetch_cost(
        &self,
        records: Vec<ChunkRecord>,
        by_delta: &HashMap<ChunkId, Delta>,
    ) -> FetchCost {
        let delta_for = |u: &Unit| by_delta.get(&u.id).cloned();
        let mut cost = FetchCost::default();
        for job in self.shared.plan_jobs(records, &delta_for) {
            let (ranges, bytes) = match job {
                Job::Ranges { ranges, .. } => (
                    ranges.len() as u64,
                    ranges.iter().map(|r| r.end - r.start).sum(),
                ),
                Job::One(r) => {
                    let unit = r.unit();
                    let stored = by_delta
                        .get(&unit.id)
                        .map_or(unit.stored_size, |d| d.stored_size);
                    (1, u64::from(stored))
                }
            };
            cost.requests += 1;
            cost.ranges += ranges;
            cost.bytes += bytes;
        }
        cost
    }

    /// How many of `ids` no store holds, asked `concurrency` at a time: a chunk file a
    /// store's pack map places counts as held when that pack is there (each pack asked
    /// for once).
    pub fn count_missing(&self, ids: Vec<ChunkId>) -> Result<u64> {
        let shared = &self.shared;
        let mut packs: Vec<(usize, [u8; 32])> = ids
            .iter()
            .flat_map(|id| {
                (0..shared.list.len())
                    .filter_map(move |i| Some((i, shared.packed(i, &Object::Chunk(*id))?.pack)))
            })
            .collect();
        packs.sort_unstable();
        packs.dedup();
        self.runtime.block_on(async {
            let mut present = HashSet::new();
            let mut answers = stream::iter(packs)
                .map(|(i, pack)| {
                    let shared = shared.clone();
                    Task(tokio::spawn(async move {
                        let has = shared.list[i].has(&pack::pack_name(&pack)).await;
                        has.map(|has| has.then_some((i, pack)))
                    }))
                })
                .buffer_unordered(self.concurrency);
            while let Some(joined) = answers.next().await {
                present.extend(joined.map_err(|_| worker_failed())??);
            }
            let present = Arc::new(present);
            let mut answers = stream::iter(ids)
                .map(|id| {
                    let (shared, present) = (shared.clone(), present.clone());
                    Task(tokio::spawn(async move { shared.has(&id, &present).await }))
                })
                .buffer_unordered(self.concurrency);
            let mut missing = 0;
            while let Some(joined) = answers.next().await {
                missing += u64::from(!joined.map_err(|_| worker_failed())??);
            }
            Ok(missing)
        })
    }

    /// Starts fetching a chunk in the background and hands the result to `done`, on a
    /// runtime thread: for readahead.
    pub fn spawn_fetch(
        &self,
        record: ChunkRecord,
        done: impl FnOnce(Result<VerifiedChunk>) + Send + 'static,
    ) {
        let shared = self.shared.clone();
        self.runtime
            .spawn(async move { done(shared.fetch_record(record).await) });
    }

    /// Whether some store's pack map is in use: its chunk files are best fetched many at
    /// a time, with [`Stores::spawn_fetch_many`].
    pub fn reads_packs(&self) -> bool {
        read(&self.shared.maps).iter().any(Option::is_some)
    }

    /// Whether a store with a pack map is remote: neighbours in its packs then cost no
    /// more round trips than the chunk asked for.
    pub fn reads_packs_remotely(&self) -> bool {
        let maps = read(&self.shared.maps);
        self.shared
            .list
            .iter()
            .zip(maps.iter())
            .any(|(store, map)| map.is_some() && store.remote())
    }

    /// Starts fetching the chunks of `items` in the background, neighbours in a pack in
    /// one request as [`Stores::fetch_many`] fetches them, and hands each item's result to
    /// `done` on a runtime thread as its request ends: for readahead. An item whose fetch
    /// panics is dropped unanswered.
    pub fn spawn_fetch_many<T: Send + 'static>(
        &self,
        items: Vec<(ChunkRecord, T)>,
        done: impl Fn(T, Result<VerifiedChunk>) + Send + Sync + 'static,
    ) {
        let done = Arc::new(done);
        let (firsts, mut by_unit) = by_unit(items, |(r, _)| *r);
        let jobs = self.shared.plan_jobs(firsts, &self.shared.deltas_at_hand());
        // From a local pack, a request's chunk files are split into a few jobs that run
        // at once: reading costs little there, checking them is the work.
        let jobs = jobs.into_iter().flat_map(|job| match job {
            Job::Ranges {
                store,
                pack,
                entries,
                ..
            } if !self.shared.list[store].remote() => entries
                .chunks(LOCAL_JOB_ENTRIES)
                .flat_map(|part| self.shared.range_jobs(store, pack, part.to_vec()))
                .collect(),
            job => vec![job],
        });
        for job in jobs {
            let units: Vec<ChunkId> = match &job {
                // One at a time, as [`Stores::spawn_fetch`] fetches: checked against the
                // tree where it is loaded, which then need not check them again.
                Job::One(r) => {
                    for (r, item) in by_unit.remove(&r.unit().id).unwrap_or_default() {
                        let shared = self.shared.clone();
                        let done = done.clone();
                        self.runtime
                            .spawn(async move { done(item, shared.fetch_record(r).await) });
                    }
                    continue;
                }
                Job::Ranges { entries, .. } => {
                    entries.iter().map(|(r, _, _)| r.unit().id).collect()
                }
            };
            let mut held: HashMap<ChunkId, Vec<(ChunkRecord, T)>> = units
                .into_iter()
                .filter_map(|id| Some((id, by_unit.remove(&id)?)))
                .collect();
            let shared = self.shared.clone();
            let done = done.clone();
            self.runtime.spawn(async move {
                for (id, unit) in shared.run_job(job, false).await {
                    for (r, item) in held.remove(&id).unwrap_or_default() {
                        let got = match &unit {
                            Ok(chunk) if r.part.is_none() => Ok((**chunk).clone()),
                            Ok(chunk) => r.take_from(chunk),
                            Err(e) => Err(Error::Unavailable {
                                id: r.id,
                                offset: r.offset,
                                reason: e.to_string(),
                            }),
                        };
                        done(item, got);
                    }
                }
            });
        }
    }
}

impl Shared {
    /// `store`'s pack map for `index`, checked; `None` (reported) when it has none, fails
    /// to answer for it, or has one that fails its checks.
    async fn read_map(&self, store: &dyn ReadStore, index: &Index) -> Option<Arc<PackMap>> {
        let name = pack::map_name(&index.digest());
        match store.get_file(&name, PackMap::max_file_len(index)).await {
            Ok(Some(bytes)) => match PackMap::read(&name, &bytes, index) {
                Ok(map) => Some(Arc::new(map)),
                Err(e) => {
                    (self.warn)(&format!(
                        "{e} (in store {}); reading it loose",
                        store.describe()
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                (self.warn)(&format!("{e}; reading store {} loose", store.describe()));
                None
            }
        }
    }

    /// Store `i` lacks pack `pack` as its pack map places it (a 404, or a 416 for a pack
    /// shorter than mapped): a repack or prune may have replaced the map since it was
    /// read, so it is read again, at most once a minute. True when a map read again is in place (by
    /// this call or an earlier one); the caller then looks its objects up again, once.
    async fn map_again(&self, i: usize, pack: &[u8; 32]) -> bool {
        let Some(index) = read(&self.mapped).clone() else {
            return false;
        };
        let mut reread = self.reread.lock().await;
        if reread[i].is_none_or(|at| at.elapsed() >= MAP_READ_AGAIN_AFTER) {
            reread[i] = Some(std::time::Instant::now());
            let store = self.list[i].as_ref();
            (self.warn)(&format!(
                "store {} lacks {}, which its pack map names; reading the map again",
                store.describe(),
                pack::pack_name(pack)
            ));
            let map = self.read_map(store, &index).await;
            write(&self.maps)[i] = map;
        }
        true
    }

    /// A record's bytes: its own chunk, or its part of a gathered chunk.
    async fn fetch_record(&self, r: ChunkRecord) -> Result<VerifiedChunk> {
        match r.part {
            None => self.fetch(r.unit(), true).await,
            Some(_) => r.take_from(&*self.fetch_unit(&r).await?),
        }
    }

    /// The chunk file holding a record's bytes: its own, or its gathered chunk (kept
    /// among those fetched last). Checked against its id: this serves
    /// [`Stores::fetch_many`], whose records may be the hash tree's, not the image's.
    async fn fetch_unit(&self, r: &ChunkRecord) -> Result<Arc<VerifiedChunk>> {
        match r.part {
            None => self.fetch(r.unit(), false).await.map(Arc::new),
            Some(part) => self.fetch_gathered(part.gathered).await,
        }
    }

    /// A gathered chunk: from those asked for last when it is one of them, waiting for
    /// the fetch already under way if there is one. A failed fetch leaves the slot empty,
    /// and the next to ask fetches again.
    async fn fetch_gathered(&self, unit: Unit) -> Result<Arc<VerifiedChunk>> {
        let slot = {
            let mut kept = self
                .gathered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match kept.iter().find(|(u, _)| u.id == unit.id) {
                Some((_, slot)) => slot.clone(),
                None => {
                    let slot = GatheredSlot::default();
                    kept.push_back((unit, slot.clone()));
                    while kept.iter().map(|(u, _)| u64::from(u.size)).sum::<u64>() > GATHERED_KEPT {
                        kept.pop_front();
                    }
                    slot
                }
            }
        };
        slot.get_or_try_init(|| async { self.fetch(unit, false).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The first good copy of a chunk file: the cache, then each store in order. A bad
    /// copy is reported and the next source tried; the last failure is returned when none
    /// has it. `in_place`: the file's bytes are the image's at `r.offset` (it is neither
    /// a gathered chunk nor a piece of the hash tree), so they may be checked against the
    /// tree.
    async fn fetch(&self, r: Unit, in_place: bool) -> Result<VerifiedChunk> {
        let max_len = stored_size_bound(r.size);
        let blocks = match in_place {
            true => self
                .blocks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            false => None,
        };
        let opts = self.read_options(max_len);
        let name = local::place(&r.id, None);
        if let Some(cache) = &self.cache {
            match cache.get(&name, opts, opener(r, blocks.clone())).await {
                Ok(Some((chunk, _))) => return Ok(chunk),
                Ok(None) => {}
                Err(e) => (self.warn)(&format!("{e} (in the cache); fetching it again")),
            }
        }
        match self.fetch_by_delta(r).await {
            Some(Ok(chunk)) => return Ok(chunk),
            Some(Err(e)) => (self.warn)(&format!("{e}; fetching the whole chunk file instead")),
            None => {}
        }
        let mut failure = Error::MissingChunk {
            id: r.id,
            offset: r.offset,
        };
        for (i, store) in self.list.iter().enumerate() {
            let check = opener(r, blocks.clone());
            match self
                .get_object(i, &r, &Object::Chunk(r.id), &name, opts, check)
                .await
            {
                Ok(Some((chunk, stored))) => {
                    // The cache files bytes under their id: only bytes hashed to it.
                    let cache = self
                        .cache
                        .as_ref()
                        .filter(|_| chunk.id_checked() || ChunkId::of(chunk.data()) == r.id);
                    if let Some(cache) = cache {
                        if let Err(e) = cache.put_chunk(&r.id, &stored) {
                            (self.warn)(&format!("{e}; the chunk is not cached"));
                        }
                    }
                    return Ok(chunk);
                }
                Ok(None) => {}
                Err(e) => {
                    let e = in_store(unavailable_unless_bad(&r, e), store.as_ref());
                    (self.warn)(&format!("{e}; trying the next store"));
                    failure = e;
                }
            }
        }
        Err(failure)
    }

    /// A chunk file rebuilt from a delta against a base at hand; `None` when the index
    /// has no such delta.
    async fn fetch_by_delta(&self, r: Unit) -> Option<Result<VerifiedChunk>> {
        let bases = self.bases()?;
        let found = tokio::task::spawn_blocking(move || bases.for_unit(&r))
            .await
            .map_err(|_| worker_failed());
        let (delta, base) = match found {
            Ok(Some(Ok(found))) => found,
            Ok(None) => return None,
            Ok(Some(Err(e))) | Err(e) => return Some(Err(e)),
        };
        let base = Arc::new(base);
        let opts = self.read_options(u64::from(delta.stored_size));
        let rebuild: Check = Arc::new(move |stored: &[u8]| {
            codec::decompress_against(stored, &base, r.size, r.id, r.offset)
        });
        let name = local::place(&r.id, Some(&delta.base));
        let mut failure = None;
        let object = Object::Delta {
            id: r.id,
            base: delta.base,
        };
        for (i, store) in self.list.iter().enumerate() {
            match self
                .get_object(i, &r, &object, &name, opts, rebuild.clone())
                .await
            {
                Ok(Some((chunk, _))) => {
                    self.rebuilt.fetch_add(1, Ordering::Relaxed);
                    return Some(Ok(chunk));
                }
                Ok(None) => {}
                Err(e) => failure = Some(in_store(unavailable_unless_bad(&r, e), store.as_ref())),
            }
        }
        Some(Err(failure.unwrap_or_else(|| Error::Unavailable {
            id: r.id,
            offset: r.offset,
            reason: format!("no store has its delta against {}", delta.base_name()),
        })))
    }

    /// Splits the chunk files to fetch into jobs: those the first store holding them (or
    /// the delta that rebuilds them from a base at hand) has in packs, a request's worth
    /// at a time (see [`pack_requests`]); the rest one by one. With a cache, every chunk
    /// file goes its own way, the cache first.
    /// `delta_for(unit)`: the delta that rebuilds that chunk file from a base at hand.
    fn plan_jobs(
        &self,
        firsts: Vec<ChunkRecord>,
        delta_for: &dyn Fn(&Unit) -> Option<Delta>,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut packed: HashMap<(usize, [u8; 32]), Vec<Entry>> = HashMap::new();
        for r in firsts {
            let unit = r.unit();
            let delta = delta_for(&unit);
            let object = match &delta {
                Some(d) => Object::Delta {
                    id: unit.id,
                    base: d.base,
                },
                None => Object::Chunk(unit.id),
            };
            let place = match self.cache {
                Some(_) => None,
                None => (0..self.list.len()).find_map(|i| Some((i, self.packed(i, &object)?))),
            };
            match place {
                Some((i, place)) => packed
                    .entry((i, place.pack))
                    .or_default()
                    .push((r, place, delta)),
                None => jobs.push(Job::One(r)),
            }
        }
        let mut requests: Vec<Job> = packed
            .into_iter()
            .flat_map(|((store, pack), entries)| self.range_jobs(store, pack, entries))
            .collect();
        // Requests in pack and offset order, ahead of the single files.
        requests.sort_by_key(|j| match j {
            Job::Ranges { pack, ranges, .. } => (*pack, ranges.first().map_or(0, |r| r.start)),
            Job::One(_) => ([0; 32], 0),
        });
        requests.extend(jobs);
        requests
    }

    /// The requests for `entries` of one pack of store `store` (see [`pack_requests`]).
    fn range_jobs(&self, store: usize, pack: [u8; 32], entries: Vec<Entry>) -> Vec<Job> {
        pack_requests(entries, self.gap)
            .into_iter()
            .map(|(ranges, entries)| Job::Ranges {
                store,
                pack,
                ranges,
                entries,
            })
            .collect()
    }

    /// Runs a job: the chunk files it holds, by unit id, each checked as its range
    /// arrives (a delta is kept, then applied to its base once the request has ended); a
    /// range that cannot be read, or whose piece fails its check, leaves those files to
    /// the store chain. When the store lacks the pack, the files are fetched where its
    /// pack map read again places them (`again`: this job was planned so already).
    async fn run_job(&self, job: Job, again: bool) -> Vec<(ChunkId, Result<Arc<VerifiedChunk>>)> {
        let (store, pack, ranges, entries) = match job {
            Job::One(r) => return vec![(r.unit().id, self.fetch_unit(&r).await)],
            Job::Ranges {
                store,
                pack,
                ranges,
                entries,
            } => (store, pack, ranges, entries),
        };
        let mut checked: Vec<Option<Result<VerifiedChunk>>> =
            entries.iter().map(|_| None).collect();
        let mut delta_bytes: Vec<Option<Vec<u8>>> = entries.iter().map(|_| None).collect();
        let read = self.list[store]
            .get_ranges(&pack::pack_name(&pack), &ranges, &mut |i, bytes| {
                let range = &ranges[i];
                let first = entries.partition_point(|(_, p, _)| p.offset < range.start);
                let mut wanted = 0;
                for (k, (r, place, delta)) in entries.iter().enumerate().skip(first) {
                    if place.range().end > range.end {
                        break;
                    }
                    let at = (place.offset - range.start) as usize;
                    let piece = bytes.get(at..at + place.size as usize);
                    match delta {
                        Some(_) => delta_bytes[k] = piece.map(<[u8]>::to_vec),
                        None => checked[k] = piece.map(|p| opener(r.unit(), None)(p)),
                    }
                    wanted += u64::from(place.size);
                }
                self.traffic
                    .gap((range.end - range.start).saturating_sub(wanted));
                Ok(())
            })
            .await;
        let lacking = matches!(read, Ok(false)) && !again && self.map_again(store, &pack).await;
        let mut out = Vec::with_capacity(entries.len());
        let mut replan = Vec::new();
        for (((r, place, delta), mut checked), stored) in
            entries.into_iter().zip(checked).zip(delta_bytes)
        {
            let unit = r.unit();
            if lacking && checked.is_none() && stored.is_none() {
                replan.push(r);
                continue;
            }
            if let (Some(d), Some(stored)) = (delta, stored) {
                checked = Some(self.apply_delta(unit, d, stored).await);
            }
            // What arrived and passed its check is kept, however the read ended.
            let chunk = match checked {
                Some(Ok(chunk)) => Ok(Arc::new(chunk)),
                failed => {
                    if let Some(Err(e)) = failed {
                        (self.warn)(&format!(
                            "{e} (at {} in pack {} of store {}); fetching it again",
                            place.offset,
                            pack::pack_name(&pack),
                            self.list[store].describe()
                        ));
                    }
                    self.fetch_unit(&r).await
                }
            };
            out.push((unit.id, chunk));
        }
        for job in self.plan_jobs(replan, &self.deltas_at_hand()) {
            out.extend(self.run_job_again(job).await);
        }
        if let Err(e) = read {
            (self.warn)(&format!(
                "{e} (reading {} of store {}); fetching its chunk files one by one",
                pack::pack_name(&pack),
                self.list[store].describe()
            ));
        }
        out
    }

    /// [`Shared::run_job`] of a job planned after the pack map was read again.
    fn run_job_again(&self, job: Job) -> BoxFuture<'_, Vec<(ChunkId, Result<Arc<VerifiedChunk>>)>> {
        Box::pin(self.run_job(job, true))
    }

    /// The bases of deltas at hand, if any.
    fn bases(&self) -> Option<Arc<dyn Bases>> {
        self.bases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The deltas the bases at hand offer, for [`Shared::plan_jobs`].
    fn deltas_at_hand(&self) -> impl Fn(&Unit) -> Option<Delta> {
        let bases = self.bases();
        move |u: &Unit| bases.as_ref().and_then(|b| b.delta_for(u))
    }

    /// Rebuilds chunk file `r` from the `stored` bytes of its delta `d` and the base at
    /// hand.
    async fn apply_delta(&self, r: Unit, d: Delta, stored: Vec<u8>) -> Result<VerifiedChunk> {
        let bases = self.bases();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let gone = || Error::Unavailable {
                id: r.id,
                offset: r.offset,
                reason: format!(
                    "the base of its delta, {}, is no longer at hand",
                    d.base_name()
                ),
            };
            let (found, base) = bases.and_then(|b| b.for_unit(&r)).ok_or_else(gone)??;
            if found.base != d.base {
                return Err(gone());
            }
            codec::decompress_against(&stored, &base, r.size, r.id, r.offset)
        })
        .await
        .map_err(|_| worker_failed())?;
        if rebuilt.is_ok() {
            self.rebuilt.fetch_add(1, Ordering::Relaxed);
        }
        rebuilt
    }

    /// Object `object` (loose file `name`) from store `i`: from the pack its map places it
    /// in, and when that pack lacks it or its copy there is bad, from its loose file. The
    /// pack's failure is returned when there is no loose file either.
    async fn get_object(
        &self,
        i: usize,
        r: &Unit,
        object: &Object,
        name: &str,
        opts: ReadOptions,
        check: Check,
    ) -> Result<Option<Checked>> {
        let store = self.list[i].as_ref();
        let Some(mut place) = self.packed(i, object) else {
            return store.get(name, opts, check).await;
        };
        let mut again = false;
        let failure = loop {
            match get_packed(store, &place, check.clone()).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {
                    // The pack map read again may place it elsewhere.
                    if !again && self.map_again(i, &place.pack).await {
                        again = true;
                        if let Some(moved) = self.packed(i, object).filter(|p| *p != place) {
                            place = moved;
                            continue;
                        }
                    }
                    break None;
                }
                Err(e) => {
                    // A pack that cannot be read makes the chunk unavailable from this store.
                    let e = match e {
                        e @ Error::BadChunk { .. } => e,
                        e => unavailable(r, e),
                    };
                    (self.warn)(&format!(
                        "{e} (bytes {}..{} of {} in store {}); trying its loose file",
                        place.offset,
                        place.range().end,
                        pack::pack_name(&place.pack),
                        store.describe()
                    ));
                    break Some(e);
                }
            }
        };
        match (store.get(name, opts, check).await, failure) {
            (Ok(None), Some(e)) => Err(e),
            (found, _) => found,
        }
    }

    /// Where store `i`'s pack map places `object`, if it has one.
    fn packed(&self, i: usize, object: &Object) -> Option<Place> {
        read(&self.maps).get(i)?.as_ref()?.find(object)
    }

    fn read_options(&self, max_len: u64) -> ReadOptions {
        ReadOptions {
            max_len,
            for_mount: self.for_mount.load(Ordering::Relaxed),
        }
    }

    /// Whether the cache or a store holds chunk file `id`, loose or in a pack of
    /// `present` (the packs found in each store).
    async fn has(&self, id: &ChunkId, present: &HashSet<(usize, [u8; 32])>) -> Result<bool> {
        if let Some(cache) = &self.cache {
            if cache.has_chunk(id)? {
                return Ok(true);
            }
        }
        let name = local::place(id, None);
        for (i, store) in self.list.iter().enumerate() {
            let packed = self.packed(i, &Object::Chunk(*id));
            if packed.is_some_and(|p| present.contains(&(i, p.pack))) || store.has(&name).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A chunk file of a local store, decompressed and checked against its id; `None` when
/// the store lacks it.
pub fn read_local(store: &LocalStore, unit: &Unit) -> Result<Option<VerifiedChunk>> {
    let stored = store
        .get_chunk(&unit.id, stored_size_bound(unit.size))
        .map_err(|e| unavailable_unless_bad(unit, e))?;
    stored.map(|s| opener(*unit, None)(&s)).transpose()
}

/// `items` by the chunk file holding their record (`record`), and the first record of each
/// chunk file, in the order they come: each file is fetched once.
fn by_unit<T>(
    items: impl IntoIterator<Item = T>,
    record: impl Fn(&T) -> ChunkRecord,
) -> (Vec<ChunkRecord>, HashMap<ChunkId, Vec<T>>) {
    let mut holders: HashMap<ChunkId, Vec<T>> = HashMap::new();
    let mut firsts = Vec::new();
    for item in items {
        let r = record(&item);
        let held = holders.entry(r.unit().id).or_default();
        if held.is_empty() {
            firsts.push(r);
        }
        held.push(item);
    }
    (firsts, holders)
}

/// Hands a chunk file that arrived to `sink`, once for each record it holds.
fn sink_unit(
    by_unit: &mut HashMap<ChunkId, Vec<ChunkRecord>>,
    id: ChunkId,
    unit: Arc<VerifiedChunk>,
    sink: &mut impl FnMut(&ChunkRecord, VerifiedChunk) -> Result<()>,
) -> Result<()> {
    match by_unit.remove(&id).unwrap_or_default().as_slice() {
        [r] if r.part.is_none() => sink(r, Arc::try_unwrap(unit).unwrap_or_else(|u| (*u).clone())),
        holders => {
            for r in holders {
                sink(r, r.take_from(&unit)?)?;
            }
            Ok(())
        }
    }
}

/// What a fetch sends: see [`Stores::fetch_cost`].
#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct FetchCost {
    pub requests: u64,
    /// Byte ranges asked for, several to a request where a pack's neighbours coalesce.
    pub ranges: u64,
    /// Bytes of those ranges (multipart answers add some 100 bytes of headers a range).
    pub bytes: u64,
}

/// Bytes between two chunk files of a pack read with them rather than cut into two
/// ranges: a range costs some 100 bytes of part headers from a server that answers
/// several at once, and a request (a round trip) from one that answers one at a time.
/// Kept small, since the servers meant for packs take several ranges, and since what a
/// gap holds is mostly chunk files the run does not want (those an update rebuilds from
/// deltas, or has already); at 64 KiB an update's gaps were 12% of its bytes.
pub const COALESCE_GAP: u64 = 8 << 10;
/// Chunk files a job of [`Stores::spawn_fetch_many`] takes from a local pack.
const LOCAL_JOB_ENTRIES: usize = 4;

/// The most bytes one request for ranges of a pack asks for.
pub const COALESCE_MAX: u64 = 8 << 20;

/// A chunk file to fetch from a pack: its record, and the place of what the pack holds
/// for it: the chunk file itself, or (when the delta is given) the delta that rebuilds it
/// from a base at hand.
type Entry = (ChunkRecord, Place, Option<Delta>);

/// A unit of work of [`Stores::fetch_many`]: one chunk file through the store chain, or
/// ranges of a pack holding several, in one request where the server takes several.
enum Job {
    One(ChunkRecord),
    Ranges {
        store: usize,
        pack: [u8; 32],
        /// In offset order, neither overlapping nor touching.
        ranges: Vec<std::ops::Range<u64>>,
        /// In offset order, each inside one of `ranges`.
        entries: Vec<Entry>,
    },
}

/// Cuts the chunk files to fetch from one pack into requests of ranges: neighbours at most
/// `gap` bytes apart share a range, a request asks for at most
/// [`COALESCE_MAX`] bytes in at most [`http::MAX_RANGES`] ranges, with a `Range` header
/// of at most [`http::MAX_RANGE_HEADER`].
fn pack_requests(
    mut entries: Vec<Entry>,
    gap: u64,
) -> Vec<(Vec<std::ops::Range<u64>>, Vec<Entry>)> {
    entries.sort_by_key(|(_, p, _)| p.offset);
    let mut requests = Vec::new();
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    let mut held: Vec<Entry> = Vec::new();
    for (r, p, d) in entries {
        let at = p.range();
        let mut grown = ranges.clone();
        match grown.last_mut() {
            Some(last) if at.start >= last.end && at.start <= last.end.saturating_add(gap) => {
                last.end = at.end;
            }
            _ => grown.push(at.clone()),
        }
        let fits = held
            .last()
            .is_none_or(|(_, l, _)| at.start >= l.range().end)
            && grown.iter().map(|g| g.end - g.start).sum::<u64>() <= COALESCE_MAX
            && grown.len() <= http::MAX_RANGES
            && http::range_header(&grown).len() <= http::MAX_RANGE_HEADER;
        if fits {
            ranges = grown;
        } else {
            if !held.is_empty() {
                requests.push((std::mem::take(&mut ranges), std::mem::take(&mut held)));
            }
            ranges = vec![at];
        }
        held.push((r, p, d));
    }
    if !held.is_empty() {
        requests.push((ranges, held));
    }
    requests
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An object's stored bytes from its pack in `store`, checked; `None` when the store
/// lacks the pack.
async fn get_packed(store: &dyn ReadStore, place: &Place, check: Check) -> Result<Option<Checked>> {
    let mut bytes = None;
    let found = store
        .get_ranges(
            &pack::pack_name(&place.pack),
            std::slice::from_ref(&place.range()),
            &mut |_, part| {
                bytes = Some(part);
                Ok(())
            },
        )
        .await?;
    match bytes.filter(|_| found) {
        Some(stored) => Ok(Some((check(&stored)?, stored))),
        None => Ok(None),
    }
}

/// Checks a chunk file's bytes for record `r`: decompressed, then against the tree when
/// `blocks` is given, else against the id.
fn opener(r: Unit, blocks: Option<Arc<dyn BlockCheck + Send + Sync>>) -> Check {
    Arc::new(move |stored: &[u8]| {
        let data = codec::decompress(stored, r.size, r.id, r.offset)?;
        match &blocks {
            Some(check) => VerifiedChunk::verify_blocks(r.id, r.offset, data, check.as_ref()),
            None => VerifiedChunk::verify(r.id, r.offset, data),
        }
    })
}

/// A store's error about unit `r`'s file, said of `r`: a bad copy names the chunk and its
/// place in the image, a remote failure makes the chunk unavailable from that store.
fn unavailable_unless_bad(r: &Unit, e: Error) -> Error {
    match e {
        Error::BadChunk { reason, .. } => Error::BadChunk {
            id: r.id,
            offset: r.offset,
            reason,
        },
        e @ Error::Remote { .. } => unavailable(r, e),
        other => other,
    }
}

fn unavailable(r: &Unit, e: Error) -> Error {
    Error::Unavailable {
        id: r.id,
        offset: r.offset,
        reason: e.to_string(),
    }
}

fn in_store(e: Error, store: &dyn ReadStore) -> Error {
    match e {
        Error::BadChunk { id, offset, reason } => Error::BadChunk {
            id,
            offset,
            reason: format!("{reason} (in store {})", store.describe()),
        },
        other => other,
    }
}

pub(crate) fn worker_failed() -> Error {
    Error::Internal("a fetch task failed".into())
}

/// A spawned fetch that is aborted when dropped: when a run stops at its first error,
/// the fetches still in flight stop too, rather than run on into the runtime's shutdown.
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for Task<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// A runtime for [`Stores`] with a worker per core, and at least six: fetches wait on the network
/// there, and chunks fetched over HTTP are decompressed and hashed there as they arrive.
/// Local chunk files are read and checked on its blocking pool, or, for a lazy mount, on
/// the workers themselves (see [`Stores::read_locally_for_mount`]), where more workers
/// than cores keep the cores busy while some wait on the disk (on two cores, six read a
/// cold store 8% faster than four did).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(6))
        .thread_name("blockcast-fetch")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("starting the fetch runtime: {e}")))
}

/// Opens one location as a store to read: a directory, or an `http://`, `https://`,
/// `s3://` or `oci://` location reached over `client` (which a remote location needs).
pub fn open_read_store(
    location: &str,
    client: Option<&http::Client>,
    http: &HttpOptions,
    warn: Warn,
) -> Result<Box<dyn ReadStore>> {
    if !is_remote(location) {
        if location.contains("://") {
            return Err(Error::Invalid(format!(
                "store {location}: only http://, https://, s3:// and oci:// locations and local directories are stores"
            )));
        }
        return Ok(Box::new(LocalStore::open(location.as_ref(), false)?));
    }
    let client = client
        .ok_or_else(|| Error::Internal(format!("no HTTP client for store {location}")))?
        .clone();
    Ok(if s3::is_s3(location) {
        Box::new(http::HttpStore::s3(
            s3::S3Location::parse(location)?,
            client,
            warn,
        ))
    } else if oci::is_oci(location) {
        Box::new(oci::registry::RegistryStore::new(
            &oci::Reference::parse(location)?,
            &client,
            http,
            warn,
        ))
    } else {
        Box::new(http::HttpStore::new(location, client, warn))
    })
}

/// Whether `location` is fetched over the network: an `http://`, `https://`, `s3://` or
/// `oci://` location, not a local path.
pub fn is_remote(location: &str) -> bool {
    http::is_url(location) || s3::is_s3(location) || oci::is_oci(location)
}

/// Whole files fetched before any store is opened: an index and its signature, over one
/// client.
pub struct RemoteFiles {
    client: http::Client,
    opts: HttpOptions,
    runtime: Handle,
    /// The release each `oci://` location named when first read: its index and its
    /// signatures come from that one manifest, even if the tag moves meanwhile.
    releases: Mutex<HashMap<String, (oci::registry::Registry, oci::ReleaseManifest)>>,
}

impl RemoteFiles {
    /// Fetches run on `runtime`; the calls block, so they come from threads outside it.
    pub fn new(opts: &HttpOptions, runtime: Handle) -> Result<RemoteFiles> {
        Ok(RemoteFiles {
            client: http::Client::new(opts, Arc::default())?,
            opts: opts.clone(),
            runtime,
            releases: Mutex::default(),
        })
    }

    /// The release `location` (`oci://HOST/REPO:TAG` or `@sha256:…`) names, read once.
    fn release(
        &self,
        location: &str,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(oci::registry::Registry, oci::ReleaseManifest)> {
        if let Some(known) = self
            .releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(location)
        {
            return Ok(known.clone());
        }
        let reference = oci::Reference::parse(location)?;
        let manifest = reference.manifest().ok_or_else(|| {
            Error::Invalid(format!(
                "{location}: names no release (add :TAG or @sha256:DIGEST)"
            ))
        })?;
        let registry = oci::registry::Registry::new(&reference, &self.client, &self.opts);
        let release = self
            .runtime
            .block_on(registry.release(manifest, warn))?
            .ok_or_else(|| Error::Remote {
                url: location.to_string(),
                reason: "the registry has no such manifest".into(),
            })?;
        let known = (registry, release);
        self.releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(location.to_string(), known.clone());
        Ok(known)
    }

    /// The signature of `kind` of the index at `location`: for a registry, the release's
    /// layer of that kind; elsewhere the file beside it (`<location>.minisig`, …). `None`
    /// when there is none.
    pub fn signature(
        &self,
        location: &str,
        kind: crate::sign::Kind,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<Vec<u8>>> {
        let max_len = kind.max_len();
        if !oci::is_oci(location) {
            return self.file(&format!("{location}{}", kind.suffix()), max_len, warn);
        }
        let (registry, release) = self.release(location, warn)?;
        match release.signature(oci::signature_kind(kind)) {
            Some(blob) if blob.size <= max_len => self.runtime.block_on(registry.blob(blob, warn)),
            Some(blob) => Err(Error::Remote {
                url: location.to_string(),
                reason: format!(
                    "its signature layer has {} bytes, more than {max_len}",
                    blob.size
                ),
            }),
            None => Ok(None),
        }
    }

    /// GETs an index, retried until it arrives intact (its length and digest as it
    /// declares them): these are the bytes a signature is then checked over. The body is
    /// held to the length the index's header claims. `None` when the server does not have
    /// it.
    pub fn index(
        &self,
        location: &str,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<Vec<u8>>> {
        if oci::is_oci(location) {
            let (registry, release) = self.release(location, warn)?;
            if release.index.size > MAX_INDEX_SIZE {
                return Err(Error::Remote {
                    url: location.to_string(),
                    reason: format!(
                        "its index layer has {} bytes, more than an index may",
                        release.index.size
                    ),
                });
            }
            let bytes = self.runtime.block_on(registry.blob(&release.index, warn))?;
            return match bytes {
                Some(bytes) if Index::intact_digest(&bytes) == Some(release.index_digest) => {
                    Ok(Some(bytes))
                }
                Some(_) => Err(Error::Remote {
                    url: location.to_string(),
                    reason: "the index layer is not the intact index the manifest names".into(),
                }),
                None => Ok(None),
            };
        }
        let url = &s3::fetchable(location)?;
        let sized = |header: &[u8]| crate::index::Index::declared_len(header);
        let sniff: http::Sniff = (crate::index::format::HEADER_SIZE, &sized);
        let intact = |bytes: Vec<u8>| {
            if crate::index::Index::is_intact(&bytes) {
                Ok(bytes)
            } else {
                Err(Error::Remote {
                    url: url.to_string(),
                    reason: "the index arrived corrupt or truncated".into(),
                })
            }
        };
        self.runtime.block_on(
            self.client
                .get_sized(url, MAX_INDEX_SIZE, Some(sniff), intact, warn),
        )
    }

    /// GETs a whole file of at most `max_len` bytes (a signature), with the usual
    /// retries. `None` when the server does not have it.
    pub fn file(
        &self,
        location: &str,
        max_len: u64,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<Vec<u8>>> {
        let url = s3::fetchable(location)?;
        self.runtime
            .block_on(self.client.get(&url, max_len, Ok, warn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::make::{make, MakeOptions};
    use crate::progress::Silent;

    /// Entries of one pack at these offsets and sizes.
    fn entries(places: &[(u64, u32)]) -> Vec<Entry> {
        places
            .iter()
            .map(|&(offset, size)| {
                let record = ChunkRecord {
                    offset,
                    size,
                    stored_size: size,
                    flags: 0,
                    id: ChunkId::of(&offset.to_le_bytes()),
                    part: None,
                };
                let place = Place {
                    pack: [7; 32],
                    offset,
                    size,
                };
                (record, place, None)
            })
            .collect()
    }

    fn ranges_of(
        requests: &[(Vec<std::ops::Range<u64>>, Vec<Entry>)],
    ) -> Vec<Vec<std::ops::Range<u64>>> {
        requests.iter().map(|(r, _)| r.clone()).collect()
    }

    #[test]
    fn neighbours_share_a_range_and_the_rest_a_request() {
        let gap = COALESCE_GAP;
        let requests = pack_requests(
            entries(&[(1000 + 2 * gap, 10), (0, 100), (100, 50), (150 + gap, 10)]),
            COALESCE_GAP,
        );
        assert_eq!(
            ranges_of(&requests),
            [vec![0..160 + gap, 1000 + 2 * gap..1010 + 2 * gap]]
        );
        let held: Vec<u64> = requests[0].1.iter().map(|(_, p, _)| p.offset).collect();
        assert_eq!(held, [0, 100, 150 + gap, 1000 + 2 * gap], "in offset order");
    }

    #[test]
    fn a_request_asks_for_no_more_ranges_than_serve_answers_in_parts() {
        // Tiny chunk files just over the gap apart, at small offsets: short range specs,
        // so the header alone would let more than MAX_RANGES through.
        let step = COALESCE_GAP + 2;
        let tiny: Vec<(u64, u32)> = (0..1000).map(|i| (32 + i * step, 1)).collect();
        let requests = pack_requests(entries(&tiny), COALESCE_GAP);
        assert!(requests.len() > 1);
        for (ranges, held) in &requests {
            assert!(ranges.len() <= http::MAX_RANGES, "{}", ranges.len());
            assert_eq!(ranges.len(), held.len());
        }
        assert_eq!(requests[0].0.len(), http::MAX_RANGES);
        // Places at the end of the offsets a map may hold do not overflow.
        let far = pack_requests(
            entries(&[(u64::MAX - 10, 1), (u64::MAX - 5, 1)]),
            COALESCE_GAP,
        );
        assert_eq!(far.len(), 1);
    }

    #[test]
    fn a_request_keeps_to_its_bytes_and_header() {
        // Chunk files of a MiB, each far from the next: 8 MiB a request.
        let big: Vec<(u64, u32)> = (0..20).map(|i| (i * (2 << 20), 1 << 20)).collect();
        let requests = pack_requests(entries(&big), COALESCE_GAP);
        assert_eq!(requests.len(), 3);
        for (ranges, held) in &requests {
            let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            assert!(bytes <= COALESCE_MAX);
            assert_eq!(ranges.len(), held.len());
        }
        // Small ones far apart at large offsets: the header's 4 KiB bound the request.
        let far: Vec<(u64, u32)> = (0..1000)
            .map(|i| (10_000_000_000 + i * (1 << 20), 1))
            .collect();
        let requests = pack_requests(entries(&far), COALESCE_GAP);
        assert!(requests.len() > 1);
        for (i, (ranges, _)) in requests.iter().enumerate() {
            let header = http::range_header(ranges).len();
            assert!(header <= http::MAX_RANGE_HEADER);
            if i + 1 < requests.len() {
                assert!(header > http::MAX_RANGE_HEADER - 64, "full: {header}");
            }
        }
        let held: usize = requests.iter().map(|(_, h)| h.len()).sum();
        assert_eq!(held, 1000);
    }

    /// One MiB of noise made into a store at `dir` packed in packs of at most `cap` bytes:
    /// the image and its index.
    fn packed_store(dir: &std::path::Path, cap: u64) -> (Vec<u8>, Index) {
        let data: Vec<u8> = crate::testutil::noise(0x2545_f491_4f6c_dd1d, 1 << 20);
        let image = dir.with_extension("img");
        std::fs::write(&image, &data).unwrap();
        let mut opts = MakeOptions::new(ChunkParams::from_avg(16 << 10).unwrap());
        opts.filesystem_aware = false;
        opts.pack = Some(cap);
        let store = LocalStore::open(dir, true).unwrap();
        let (bytes, _) = make(
            &image,
            &store,
            &opts,
            &Silent,
            &crate::testutil::no_warnings(),
        )
        .unwrap();
        (data, Index::from_bytes(&image, bytes).unwrap())
    }

    #[test]
    fn a_pack_gone_since_the_map_was_read_makes_the_map_read_again_once() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let (data, index) = packed_store(&old, 64 << 20);
        let (_, repacked) = packed_store(&new, 256 << 10);
        assert_eq!(
            index.digest(),
            repacked.digest(),
            "packing leaves the index as it is"
        );
        let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
        let said = warnings.clone();
        let warn: Warn = Arc::new(move |m: &str| said.lock().unwrap().push(m.to_string()));
        let runtime = runtime().unwrap();
        let stores = Stores::open(
            &[old.to_string_lossy().into_owned()],
            &StoreOptions::default(),
            warn,
            runtime.handle().clone(),
        )
        .unwrap();
        assert_eq!(stores.use_pack_maps(&index), 1);
        // A repack replaces the store's packs and its map while the map is held.
        for sub in ["packs", "packmaps"] {
            std::fs::remove_dir_all(old.join(sub)).unwrap();
            std::fs::rename(new.join(sub), old.join(sub)).unwrap();
        }
        let records: Vec<ChunkRecord> = (0..index.len()).map(|i| index.record(i)).collect();
        let mut image = vec![0u8; data.len()];
        stores
            .fetch_many(records, |r, chunk| {
                let at = r.offset as usize;
                image[at..at + chunk.data().len()].copy_from_slice(chunk.data());
                Ok(())
            })
            .unwrap();
        assert!(image == data);
        let warnings = warnings.lock().unwrap();
        let again = warnings
            .iter()
            .filter(|w| w.contains("reading the map again"));
        assert_eq!(again.count(), 1, "{warnings:#?}");
        // What the map read again names is read by ranges, not loose (there is no loose file).
        assert!(
            warnings.iter().all(|w| !w.contains("one by one")),
            "{warnings:#?}"
        );
    }
}
