//! Check and repair a store: read every chunk file, delta and pack the releases need,
//! verify each against its id and name what is missing or corrupt; then mend it from
//! other stores. A loose object is written again; the objects of a damaged pack go into
//! new packs and every pack map that placed them there is written again, under the same
//! hold as any publisher ([`Hold::publish`]). The signed index is never touched.
//!
//! A pack is read whole, front to back in spans of at most [`SPAN`] bytes, so its name (the
//! SHA-256 of its bytes) is checked too; a chunk file is decompressed and hashed against its
//! id; a delta is rebuilt against its base when the store holds that chunk file (checked
//! first), else only found present.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::error::{Error, Result};
use crate::index::format::MAX_INDEX_SIZE;
use crate::index::{stored_size_bound, BasePiece, ChunkRecord, Index};
use crate::pack::format::{DEFAULT_PACK_SIZE, PACK_HEADER_SIZE};
use crate::pack::{self, Object, PackMap, PackWriter, Place};
use crate::progress::Progress;
use crate::prune::releases::{self, Kind, Release};
use crate::store::lease::Hold;
use crate::store::{
    self, codec, http, HttpOptions, Listed, PruneStore, ReadOptions, ReadStore, Warn,
};

/// The most bytes of a pack read at once (more only for a single larger object).
pub const SPAN: u64 = 8 << 20;

/// What a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Chunk,
    Delta,
    Pack,
    PackMap,
    Record,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Chunk => "chunk",
            ProblemKind::Delta => "delta",
            ProblemKind::Pack => "pack",
            ProblemKind::PackMap => "pack map",
            ProblemKind::Record => "record",
        }
    }
}

/// Something a release needs that is missing or corrupt.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Its name in the store: a loose name (`abcd/<id>.cacnk`, `abcd/<id>.<base>.cadelta`)
    /// for a chunk file or delta, wherever it lies; else the pack's, pack map's or
    /// record's name.
    pub object: String,
    pub kind: ProblemKind,
    /// The releases that need it.
    pub releases: Vec<String>,
    /// For a packed object, the pack its release's map places it in, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    pub reason: String,
}

impl Problem {
    /// One line for people.
    pub fn describe(&self) -> String {
        let mut line = format!("{} ({})", self.object, self.kind.as_str());
        if let Some(pack) = &self.pack {
            line.push_str(&format!(" in {pack}"));
            if let Some(offset) = self.offset {
                line.push_str(&format!(" at {offset}"));
            }
        }
        if !self.releases.is_empty() {
            line.push_str(&format!(", needed by {}", self.releases.join(", ")));
        }
        format!("{line}: {}", self.reason)
    }
}

/// A release checked.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedRelease {
    pub name: String,
    pub release: u64,
    pub digest: String,
    /// Whether it has a pack map in the store (its objects are read from packs).
    pub packed: bool,
}

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub store: String,
    pub releases: Vec<CheckedRelease>,
    /// Copies of objects read and checked (an object placed in two places counts twice).
    pub objects_checked: u64,
    /// Packs read whole.
    pub packs_checked: u64,
    pub bytes_read: u64,
    /// Deltas found present but not rebuilt: the store holds no good copy of their base.
    pub deltas_unverified: u64,
    pub missing: Vec<Problem>,
    pub corrupt: Vec<Problem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{}: {} releases, {} objects checked ({} packs read whole, {} bytes read): {} missing, {} corrupt",
            self.store,
            self.releases.len(),
            self.objects_checked,
            self.packs_checked,
            self.bytes_read,
            self.missing.len(),
            self.corrupt.len()
        );
        if self.deltas_unverified > 0 {
            line.push_str(&format!(
                "; {} deltas present but not rebuilt (no good copy of their base in the store)",
                self.deltas_unverified
            ));
        }
        line
    }
}

/// An object mended.
#[derive(Clone, Debug, Serialize)]
pub struct Mended {
    pub object: String,
    pub kind: ProblemKind,
    /// Where the good copy came from: a store to repair from, or this store (the intact
    /// objects of a damaged pack).
    pub from: String,
    /// Where it went: its loose name, a new pack or the object's own name.
    pub to: String,
}

/// What a repair did.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// What the check before the repair found.
    pub found: CheckReport,
    pub mended: Vec<Mended>,
    /// Problems left as they were, each with the reason.
    pub not_repaired: Vec<Problem>,
    pub packs_written: u64,
    pub loose_written: u64,
    pub bytes_written: u64,
    pub maps_rewritten: u64,
    /// The check after the repair.
    pub after: CheckReport,
}

/// Checks the releases at `named` (index files), or, when none is named, every release
/// the store records.
pub fn check(
    store: &dyn PruneStore,
    named: &[PathBuf],
    progress: &dyn Progress,
) -> Result<CheckReport> {
    Ok(Survey::take(store, named, progress)?.report())
}

/// The stores good copies are fetched from.
pub struct Sources {
    list: Vec<Box<dyn ReadStore>>,
    runtime: Handle,
}

impl Sources {
    /// Opens each location: a directory, an `http://` or `https://` URL, `s3://BUCKET/PREFIX`
    /// or `oci://HOST/REPO`. Fetches run on `runtime`; the calls that use them block.
    pub fn open(
        locations: &[String],
        http: &HttpOptions,
        runtime: Handle,
        warn: Warn,
    ) -> Result<Sources> {
        let client = match locations.iter().any(|l| store::is_remote(l)) {
            true => Some(http::Client::new(http, Arc::default())?),
            false => None,
        };
        let list = locations
            .iter()
            .map(|l| store::open_read_store(l, client.as_ref(), http, warn.clone()))
            .collect::<Result<_>>()?;
        Ok(Sources { list, runtime })
    }
}

/// Checks the store as [`check`] does, holding it as a publisher, mends what it can from
/// `sources`, and checks it again.
pub fn repair(
    store: Arc<dyn PruneStore>,
    named: &[PathBuf],
    sources: &Sources,
    progress: &dyn Progress,
    warn: &Warn,
) -> Result<RepairReport> {
    let hold = Hold::publish(store.clone(), warn)?;
    let store = store.as_ref();
    let mut survey = Survey::take(store, named, progress)?;
    let found = survey.report();
    let mut fix = Fix {
        store,
        sources,
        maps: HashMap::new(),
        report: RepairReport {
            found: found.clone(),
            mended: Vec::new(),
            not_repaired: Vec::new(),
            packs_written: 0,
            loose_written: 0,
            bytes_written: 0,
            maps_rewritten: 0,
            after: CheckReport::default(),
        },
    };
    if !found.is_clean() {
        // Records and pack maps first: what they say decides what else is needed.
        if fix.records_and_maps(&survey)? {
            survey = Survey::take(store, named, progress)?;
        }
        fix.objects(&survey, progress)?;
        survey = Survey::take(store, named, progress)?;
    }
    fix.report.after = survey.report();
    hold.release()?;
    Ok(fix.report)
}

/// Whether a failure to read one object is that object's problem (a bad file, an I/O
/// error on it) rather than the run's (a store that cannot be reached).
fn is_objects_fault(e: &Error) -> bool {
    !matches!(
        e,
        Error::Remote { .. } | Error::Internal(_) | Error::Busy(_) | Error::Invalid(_)
    )
}

/// What the releases need of an object, from their indexes.
#[derive(Clone, Debug)]
struct Sizes {
    /// The chunk file's bytes decompressed (for a delta: of the chunk file it rebuilds).
    size: u32,
    /// Its stored bytes, as a pack map must give them.
    stored: u32,
    /// A delta's base run.
    run: Arc<[BasePiece]>,
}

fn sizes_of(index: &Index) -> HashMap<Object, Sizes> {
    let mut sizes = HashMap::new();
    for r in index.records().filter(|r| !r.is_zero()) {
        let u = r.unit();
        let s = Sizes {
            size: u.size,
            stored: u.stored_size,
            run: Arc::from([]),
        };
        sizes.insert(Object::Chunk(u.id), s);
    }
    for r in index.tree_records() {
        let s = Sizes {
            size: r.size,
            stored: r.stored_size,
            run: Arc::from([]),
        };
        sizes.insert(Object::Chunk(r.id), s);
    }
    for (id, deltas) in index.deltas_by_unit() {
        let Some(unit) = sizes.get(&Object::Chunk(id)).cloned() else {
            continue;
        };
        for d in deltas {
            let s = Sizes {
                size: unit.size,
                stored: d.stored_size,
                run: d.run.clone(),
            };
            sizes.insert(Object::Delta { id, base: d.base }, s);
        }
    }
    sizes
}

fn kind_of(object: &Object) -> ProblemKind {
    match object {
        Object::Chunk(_) => ProblemKind::Chunk,
        Object::Delta { .. } => ProblemKind::Delta,
    }
}

/// A place by pack and offset.
type PlaceKey = ([u8; 32], u64);

/// A record that cannot be read, by name, and why.
type BadRecord = (String, String);

/// One copy of an object the releases need: where a release takes it from.
struct Item {
    object: Object,
    /// Its place in a pack, or `None`: its loose file.
    at: Option<Place>,
    sizes: Sizes,
    /// Indexes into [`Survey::releases`].
    releases: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Good,
    /// A delta present whose base the store holds no good copy of.
    Unverified,
    Missing(String),
    Corrupt(String),
}

/// A pack some release's map names.
struct PackCheck {
    digest: [u8; 32],
    /// The releases whose maps name it.
    releases: BTreeSet<usize>,
    /// Its problem as a whole: missing, or bytes that do not hash to its name.
    fault: Option<Outcome>,
}

/// Everything a check read, kept for a repair.
struct Survey {
    store: String,
    releases: Vec<Release>,
    maps: Vec<Option<PackMap>>,
    items: Vec<Item>,
    outcomes: Vec<Outcome>,
    packs: Vec<PackCheck>,
    /// Pack maps that could not be read, by release, and records, by name.
    bad_maps: Vec<(usize, String)>,
    bad_records: Vec<BadRecord>,
    bytes_read: u64,
    /// The store's packs and their lengths, as listed.
    lengths: HashMap<String, u64>,
    /// Every chunk file the store's packs hold, from their tables of contents: read
    /// when a delta's base is wanted that the releases do not place.
    catalogue: OnceCell<HashMap<ChunkId, Place>>,
}

impl Survey {
    fn take(store: &dyn PruneStore, named: &[PathBuf], progress: &dyn Progress) -> Result<Survey> {
        let listed = store.list()?;
        let (releases, bad_records) = find_releases(store, &listed, named)?;
        if releases.is_empty() && bad_records.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the store records no release; name the releases to check with --index",
                store.describe()
            )));
        }
        let mut maps = Vec::with_capacity(releases.len());
        let mut bad_maps = Vec::new();
        for (i, r) in releases.iter().enumerate() {
            match releases::read_map(store, &r.index) {
                Ok(map) => maps.push(map),
                Err(e @ (Error::Integrity(_) | Error::BadChunk { .. })) => {
                    bad_maps.push((i, format!("{e}; its objects were checked loose")));
                    maps.push(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut survey = Survey {
            store: store.describe(),
            releases,
            maps,
            items: Vec::new(),
            outcomes: Vec::new(),
            packs: Vec::new(),
            bad_maps,
            bad_records,
            bytes_read: 0,
            lengths: listed
                .iter()
                .filter(|l| matches!(releases::kind(&l.name), Kind::Pack(_)))
                .map(|l| (l.name.clone(), l.size))
                .collect(),
            catalogue: OnceCell::new(),
        };
        survey.list_items();
        survey.outcomes = vec![Outcome::Good; survey.items.len()];
        let lengths = &survey.lengths;
        let total = survey.packs.iter().fold(0u64, |sum, p| {
            sum + lengths
                .get(&pack::pack_name(&p.digest))
                .copied()
                .unwrap_or(0)
        }) + survey
            .items
            .iter()
            .filter(|i| i.at.is_none())
            .map(|i| u64::from(i.sizes.stored))
            .sum::<u64>();
        progress.start("checking", total);
        let bases = survey.bases();
        let mut reader = Reader {
            store,
            bases: &bases,
            packs: lengths,
            catalogue: &survey.catalogue,
            items: &survey.items,
            bytes: 0,
            progress,
        };
        for (i, item) in survey.items.iter().enumerate() {
            if item.at.is_none() {
                survey.outcomes[i] = reader.loose(item)?;
            }
        }
        let mut by_pack: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        for (i, item) in survey.items.iter().enumerate() {
            if let Some(place) = item.at {
                by_pack.entry(place.pack).or_default().push(i);
            }
        }
        for p in &mut survey.packs {
            let name = pack::pack_name(&p.digest);
            let members = by_pack.remove(&p.digest).unwrap_or_default();
            p.fault = match lengths.get(&name) {
                None => {
                    for &i in &members {
                        survey.outcomes[i] = Outcome::Missing(format!("the store lacks {name}"));
                    }
                    Some(Outcome::Missing(
                        "the store lacks it; pack maps name it".into(),
                    ))
                }
                Some(&len) => reader.pack(&name, &p.digest, len, &members, &mut survey.outcomes)?,
            };
        }
        survey.bytes_read = reader.bytes;
        progress.finish();
        Ok(survey)
    }

    /// Each object each release needs, once per place (its map's, or loose), in release
    /// order and, within one, in the order a reader wants them; and the packs the maps
    /// name, in the order of first use.
    fn list_items(&mut self) {
        let mut seen: HashMap<(Object, Option<PlaceKey>), usize> = HashMap::new();
        let mut packs: HashMap<[u8; 32], usize> = HashMap::new();
        // A delta is needed where a device may hold its base: on a release checked. One
        // whose base no such release has, or that the release's pack map leaves out, is
        // one a prune dropped.
        let on_devices: HashSet<ChunkId> = self
            .releases
            .iter()
            .flat_map(|r| crate::prune::releases::chunk_ids(&r.index))
            .collect();
        for (ri, r) in self.releases.iter().enumerate() {
            let sizes = sizes_of(&r.index);
            let (chunks, deltas, tree) = pack::objects(&r.index);
            for object in chunks.into_iter().chain(tree).chain(deltas) {
                let Some(s) = sizes.get(&object).cloned() else {
                    continue;
                };
                let at = self.maps[ri].as_ref().and_then(|m| m.find(&object));
                if let Object::Delta { .. } = object {
                    let held = s.run.iter().all(|p| on_devices.contains(&p.id));
                    if !held || (self.maps[ri].is_some() && at.is_none()) {
                        continue;
                    }
                }
                if let Some(place) = at {
                    let p = *packs.entry(place.pack).or_insert_with(|| {
                        self.packs.push(PackCheck {
                            digest: place.pack,
                            releases: BTreeSet::new(),
                            fault: None,
                        });
                        self.packs.len() - 1
                    });
                    self.packs[p].releases.insert(ri);
                }
                let key = (object, at.map(|p| (p.pack, p.offset)));
                match seen.get(&key) {
                    Some(&i) => self.items[i].releases.push(ri),
                    None => {
                        seen.insert(key, self.items.len());
                        self.items.push(Item {
                            object,
                            at,
                            sizes: s,
                            releases: vec![ri],
                        });
                    }
                }
            }
        }
    }

    /// Where the store holds what the releases name: the bases of their deltas are
    /// looked up there.
    fn bases(&self) -> BaseIndex {
        let mut bases = BaseIndex {
            records: HashMap::new(),
            units: HashMap::new(),
        };
        for r in &self.releases {
            for record in r.index.records().filter(|r| !r.is_zero()) {
                bases.records.entry(record.id).or_insert(record);
            }
        }
        for item in &self.items {
            if let Object::Chunk(id) = item.object {
                bases.units.entry(id).or_default().push(item.at);
            }
        }
        bases
    }

    /// A reader of `store` for a repair.
    fn reader<'a>(&'a self, store: &'a dyn PruneStore, bases: &'a BaseIndex) -> Reader<'a> {
        Reader {
            store,
            bases,
            packs: &self.lengths,
            catalogue: &self.catalogue,
            items: &self.items,
            bytes: 0,
            progress: &crate::progress::Silent,
        }
    }

    fn names(&self, releases: impl IntoIterator<Item = usize>) -> Vec<String> {
        releases
            .into_iter()
            .map(|i| self.releases[i].describe())
            .collect()
    }

    fn item_problem(&self, i: usize, reason: &str) -> Problem {
        let item = &self.items[i];
        Problem {
            object: item.object.loose_name(),
            kind: kind_of(&item.object),
            releases: self.names(item.releases.iter().copied()),
            pack: item.at.map(|p| pack::pack_name(&p.pack)),
            offset: item.at.map(|p| p.offset),
            reason: reason.to_string(),
        }
    }

    fn pack_problem(&self, p: &PackCheck, reason: &str) -> Problem {
        Problem {
            object: pack::pack_name(&p.digest),
            kind: ProblemKind::Pack,
            releases: self.names(p.releases.iter().copied()),
            pack: None,
            offset: None,
            reason: reason.to_string(),
        }
    }

    fn map_problem(&self, release: usize, reason: &str) -> Problem {
        Problem {
            object: pack::map_name(&self.releases[release].index.digest()),
            kind: ProblemKind::PackMap,
            releases: self.names([release]),
            pack: None,
            offset: None,
            reason: reason.to_string(),
        }
    }

    fn record_problem(name: &str, reason: &str) -> Problem {
        Problem {
            object: name.to_string(),
            kind: ProblemKind::Record,
            releases: Vec::new(),
            pack: None,
            offset: None,
            reason: reason.to_string(),
        }
    }

    fn report(&self) -> CheckReport {
        let mut report = CheckReport {
            store: self.store.clone(),
            releases: self
                .releases
                .iter()
                .zip(&self.maps)
                .map(|(r, map)| CheckedRelease {
                    name: r.describe(),
                    release: r.number(),
                    digest: pack::hex(&r.index.digest()),
                    packed: map.is_some(),
                })
                .collect(),
            objects_checked: self.items.len() as u64,
            packs_checked: self
                .packs
                .iter()
                .filter(|p| !matches!(p.fault, Some(Outcome::Missing(_))))
                .count() as u64,
            bytes_read: self.bytes_read,
            ..CheckReport::default()
        };
        for (name, reason) in &self.bad_records {
            report.corrupt.push(Self::record_problem(name, reason));
        }
        for (release, reason) in &self.bad_maps {
            report.corrupt.push(self.map_problem(*release, reason));
        }
        for p in &self.packs {
            match &p.fault {
                Some(Outcome::Missing(reason)) => report.missing.push(self.pack_problem(p, reason)),
                Some(Outcome::Corrupt(reason)) => report.corrupt.push(self.pack_problem(p, reason)),
                _ => {}
            }
        }
        for (i, outcome) in self.outcomes.iter().enumerate() {
            match outcome {
                Outcome::Good => {}
                Outcome::Unverified => report.deltas_unverified += 1,
                Outcome::Missing(reason) => report.missing.push(self.item_problem(i, reason)),
                Outcome::Corrupt(reason) => report.corrupt.push(self.item_problem(i, reason)),
            }
        }
        report
    }
}

/// The releases to check: those at `named`, else every release the store records (a
/// record that cannot be read is a problem of its own, by name).
fn find_releases(
    store: &dyn PruneStore,
    listed: &[Listed],
    named: &[PathBuf],
) -> Result<(Vec<Release>, Vec<BadRecord>)> {
    if !named.is_empty() {
        return Ok((releases::find(store, &[], named)?, Vec::new()));
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for l in listed
        .iter()
        .filter(|l| releases::kind(&l.name) == Kind::Record)
    {
        match releases::read_record(store, &l.name) {
            Ok(Some(index)) => match misnamed(&l.name, &index) {
                None => good.push((l.name.clone(), index)),
                Some(reason) => bad.push((l.name.clone(), reason)),
            },
            // Gone since the listing.
            Ok(None) => {}
            Err(e) if is_objects_fault(&e) => bad.push((l.name.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok((releases::gather(&[], good)?, bad))
}

/// Why the record `name` (an index) is bad, if it is: it cannot be read as an index, or
/// it is not the one its name gives (see [`misnamed`]).
fn record_fault(store: &str, name: &str, bytes: Vec<u8>) -> Option<String> {
    let label = PathBuf::from(format!("{store}/{name}"));
    match Index::from_bytes(&label, bytes) {
        Ok(index) => misnamed(name, &index),
        Err(e) => Some(e.to_string()),
    }
}

/// Under `indexes/`, why the record `name` is not the index its name gives, if it is not.
fn misnamed(name: &str, index: &Index) -> Option<String> {
    let digest = pack::hex(&index.digest());
    match recorded_digest(name) {
        Some(named) if named != digest => Some(format!(
            "it holds the index whose digest is {digest}, not the one its name gives"
        )),
        _ => None,
    }
}

/// The digest a record's name gives (`indexes/<digest>.bcidx`), if it gives one.
fn recorded_digest(name: &str) -> Option<&str> {
    name.strip_prefix(releases::INDEXES)?
        .strip_prefix('/')?
        .strip_suffix(".bcidx")
}

/// Where a delta's base may be found: it is any record of an earlier release (its own
/// chunk file, or a part of a gathered one).
struct BaseIndex {
    /// The surveyed releases' records, by id.
    records: HashMap<ChunkId, ChunkRecord>,
    /// Where the releases place each chunk file (`None`: loose).
    units: HashMap<ChunkId, Vec<Option<Place>>>,
}

impl BaseIndex {
    /// The chunk file holding chunk `id` (`size` bytes) and the record that takes it out
    /// of it: a record of the surveyed releases, else a chunk file of that id.
    fn unit_of(&self, id: &ChunkId, size: u32) -> (ChunkId, u32, Option<ChunkRecord>) {
        match self.records.get(id) {
            Some(r) => {
                let u = r.unit();
                (u.id, u.size, Some(*r))
            }
            None => (*id, size, None),
        }
    }
}

/// Chunk `record`'s bytes out of its chunk file `unit` (the whole file when there is no
/// record to say otherwise).
fn base_bytes(unit: VerifiedChunk, record: Option<ChunkRecord>) -> Option<Vec<u8>> {
    match record {
        Some(r) => r.take_from(&unit).ok().map(|c| c.data().to_vec()),
        None => Some(unit.data().to_vec()),
    }
}

/// Reads and checks a store's objects.
struct Reader<'a> {
    store: &'a dyn PruneStore,
    bases: &'a BaseIndex,
    /// The store's packs and their lengths, as listed.
    packs: &'a HashMap<String, u64>,
    /// See [`Survey::catalogue`].
    catalogue: &'a OnceCell<HashMap<ChunkId, Place>>,
    items: &'a [Item],
    bytes: u64,
    progress: &'a dyn Progress,
}

impl<'a> Reader<'a> {
    fn read(&mut self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        let got = self.store.read(name, max_len)?;
        let n = got.as_ref().map_or(0, |b| b.len() as u64);
        self.bytes += n;
        Ok(got)
    }

    fn read_range(&mut self, name: &str, range: Range<u64>) -> Result<Option<Vec<u8>>> {
        let got = self.store.read_range(name, range)?;
        let n = got.as_ref().map_or(0, |b| b.len() as u64);
        self.bytes += n;
        Ok(got)
    }

    /// An object's loose file, checked.
    fn loose(&mut self, item: &Item) -> Result<Outcome> {
        let name = item.object.loose_name();
        let got = self.read(&name, stored_size_bound(item.sizes.size));
        self.progress.advance(u64::from(item.sizes.stored));
        match got {
            Ok(Some(bytes)) => Ok(self.verify(item, &bytes)),
            Ok(None) => Ok(Outcome::Missing("the store lacks its loose file".into())),
            Err(e) if is_objects_fault(&e) => Ok(Outcome::Corrupt(e.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Reads the pack `name` (`len` bytes) whole, checking the objects `members` (indexes
    /// into the items) as their bytes pass and the pack against its name; returns the
    /// pack's own problem.
    fn pack(
        &mut self,
        name: &str,
        digest: &[u8; 32],
        len: u64,
        members: &[usize],
        outcomes: &mut [Outcome],
    ) -> Result<Option<Outcome>> {
        let mut order: Vec<usize> = members.to_vec();
        order.sort_by_key(|&i| self.place(i).offset);
        let mut reach = 0u64;
        for &i in &order {
            let r = self.place(i).range();
            reach = reach.max(r.end);
            if r.end > len {
                outcomes[i] = Outcome::Missing(format!(
                    "{name} has {len} bytes, and the object lies at {}..{}",
                    r.start, r.end
                ));
            }
        }
        let within: Vec<Range<u64>> = order
            .iter()
            .map(|&i| self.place(i).range())
            .filter(|r| r.end <= len)
            .collect();
        let mut hasher = Sha256::new();
        let mut whole = true;
        let mut next = 0;
        for span in spans(&within, len) {
            let got = match self.read_range(name, span.clone()) {
                Ok(got) => got,
                Err(e) if is_objects_fault(&e) => {
                    for &i in members_in(&order, next, &span, self) {
                        outcomes[i] = Outcome::Corrupt(e.to_string());
                    }
                    None
                }
                Err(e) => return Err(e),
            };
            self.progress.advance(span.end - span.start);
            let Some(bytes) = got else {
                whole = false;
                for &i in members_in(&order, next, &span, self) {
                    if outcomes[i] == Outcome::Good {
                        outcomes[i] = Outcome::Missing(format!(
                            "{name} could not be read at {}..{}",
                            span.start, span.end
                        ));
                    }
                }
                next = skip_past(&order, next, &span, self);
                continue;
            };
            hasher.update(&bytes);
            let items = self.items;
            for &i in members_in(&order, next, &span, self) {
                let r = self.place(i).range();
                if r.end > len || outcomes[i] != Outcome::Good {
                    continue;
                }
                let at = (r.start - span.start) as usize..(r.end - span.start) as usize;
                outcomes[i] = self.verify(&items[i], &bytes[at]);
            }
            next = skip_past(&order, next, &span, self);
        }
        if !whole {
            return Ok(Some(Outcome::Corrupt("it could not be read whole".into())));
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual == *digest {
            return Ok(None);
        }
        Ok(Some(Outcome::Corrupt(if reach > len {
            format!("truncated: it has {len} bytes, its objects reach to {reach}")
        } else {
            format!(
                "its {len} bytes hash to {}, not to its name",
                pack::hex(&actual)
            )
        })))
    }

    /// See [`Survey::catalogue`]. A pack whose table of contents cannot be read is left
    /// out: what it holds is another problem.
    fn catalogue(&mut self) -> &'a HashMap<ChunkId, Place> {
        let cell = self.catalogue;
        if cell.get().is_none() {
            let mut all = HashMap::new();
            let mut names: Vec<(&String, &u64)> = self.packs.iter().collect();
            names.sort();
            for (name, &len) in names {
                if let Ok(found) = self.table_of_contents(name, len) {
                    for (object, place) in found {
                        if let Object::Chunk(id) = object {
                            all.entry(id).or_insert(place);
                        }
                    }
                }
            }
            let _ = cell.set(all);
        }
        cell.get_or_init(HashMap::new)
    }

    fn table_of_contents(&mut self, name: &str, len: u64) -> Result<Vec<(Object, Place)>> {
        let bad = || Error::Integrity(format!("{name}: cut short"));
        let Some(Kind::Pack(digest)) = Some(releases::kind(name)) else {
            return Err(bad());
        };
        let header = self
            .read_range(name, 0..PACK_HEADER_SIZE as u64)?
            .ok_or_else(bad)?;
        let (count, toc) = pack::parse_header(name, &header, len)?;
        let table = self.read_range(name, toc..len)?.ok_or_else(bad)?;
        pack::parse_toc(name, &digest, &table, count, toc)
    }

    fn place(&self, i: usize) -> Place {
        self.items[i].at.unwrap_or(Place {
            pack: [0; 32],
            offset: 0,
            size: 0,
        })
    }

    /// An object's stored bytes checked against its id: a chunk file decompressed and
    /// hashed, a delta rebuilt against its base when the store holds a good copy of it.
    fn verify(&mut self, item: &Item, bytes: &[u8]) -> Outcome {
        let s = &item.sizes;
        match item.object {
            Object::Chunk(id) => match chunk_from(bytes, id, s.size) {
                Ok(_) => Outcome::Good,
                Err(e) => Outcome::Corrupt(reason(e)),
            },
            Object::Delta { id, .. } => match self.run(&s.run) {
                Some(base) => match codec::decompress_against(bytes, &base, s.size, id, 0) {
                    Ok(_) => Outcome::Good,
                    Err(e) => Outcome::Corrupt(reason(e)),
                },
                None => Outcome::Unverified,
            },
        }
    }

    /// The bytes of a base run, each chunk from a good copy in the store.
    fn run(&mut self, run: &[BasePiece]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for p in run {
            out.extend_from_slice(&self.base(&p.id, p.size)?);
        }
        Some(out)
    }

    /// The bytes of chunk `id` (`size` bytes) from a good copy in the store: of its chunk
    /// file where the releases place it, else loose.
    fn base(&mut self, id: &ChunkId, size: u32) -> Option<Vec<u8>> {
        let (unit, unit_size, record) = self.bases.unit_of(id, size);
        let mut places: Vec<Option<Place>> = self
            .bases
            .units
            .get(&unit)
            .into_iter()
            .flatten()
            .copied()
            .filter(Option::is_some)
            .collect();
        if places.is_empty() {
            places.push(self.catalogue().get(&unit).copied());
        }
        places.push(None);
        for at in places {
            let got = match at {
                Some(place) => self.read_range(&pack::pack_name(&place.pack), place.range()),
                None => self.read(
                    &Object::Chunk(unit).loose_name(),
                    stored_size_bound(unit_size),
                ),
            };
            if let Ok(Some(bytes)) = got {
                if let Ok(chunk) = chunk_from(&bytes, unit, unit_size) {
                    return base_bytes(chunk, record);
                }
            }
        }
        None
    }
}

/// The members (in offset order, from `from`) whose range starts inside `span`.
fn members_in<'o>(order: &'o [usize], from: usize, span: &Range<u64>, r: &Reader) -> &'o [usize] {
    let end = skip_past(order, from, span, r);
    &order[from.min(end)..end]
}

/// The first member at or after `from` whose range starts past `span`.
fn skip_past(order: &[usize], from: usize, span: &Range<u64>, r: &Reader) -> usize {
    let mut i = from;
    while i < order.len() && r.place(order[i]).offset < span.end {
        i += 1;
    }
    i
}

/// Spans that read `0..len` in turn, each holding whole every range of `objects` (sorted
/// by start, each inside `0..len`) that starts in it, at most [`SPAN`] bytes unless one
/// object is larger.
fn spans(objects: &[Range<u64>], len: u64) -> Vec<Range<u64>> {
    fn close(out: &mut Vec<Range<u64>>, start: u64, reach: u64, stop: u64) {
        // The objects' part whole, then the gap after them in pieces.
        let mut at = start;
        if reach > start {
            out.push(start..reach);
            at = reach;
        }
        while at < stop {
            let end = stop.min(at + SPAN);
            out.push(at..end);
            at = end;
        }
    }
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut reach = 0u64;
    for r in objects {
        // Cut before this object when it would make the span too long and nothing before
        // it reaches into it.
        if r.start > start && reach <= r.start && r.end - start > SPAN {
            close(&mut out, start, reach, r.start);
            start = r.start;
        }
        reach = reach.max(r.end);
    }
    close(&mut out, start, reach.min(len), len);
    out
}

/// A chunk file's stored bytes decompressed and checked against `id`.
fn chunk_from(stored: &[u8], id: ChunkId, size: u32) -> Result<VerifiedChunk> {
    VerifiedChunk::verify(id, 0, codec::decompress(stored, size, id, 0)?)
}

/// What a failed check says, without the chunk's name (the problem names it).
fn reason(e: Error) -> String {
    match e {
        Error::BadChunk { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// A repair under way.
struct Fix<'a> {
    store: &'a dyn PruneStore,
    sources: &'a Sources,
    /// Each source's pack map for a release (by source and index digest), once read.
    maps: HashMap<(usize, [u8; 32]), Option<Arc<PackMap>>>,
    report: RepairReport,
}

impl Fix<'_> {
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.sources.runtime.block_on(f)
    }

    /// Mends the records and pack maps the survey found bad: from a source's copy that is
    /// the index its name gives, or a map whose packs this store holds. True when
    /// anything was written.
    fn records_and_maps(&mut self, survey: &Survey) -> Result<bool> {
        let mut wrote = false;
        for (name, why) in &survey.bad_records {
            let problem = Survey::record_problem(name, why);
            if recorded_digest(name).is_none() {
                self.not_repaired(
                    problem,
                    "a pushed index is not named by its digest: push it again",
                );
                continue;
            }
            let mut found = None;
            for (s, source) in self.sources.list.iter().enumerate() {
                let got = self.block_on(source.get_file(name, MAX_INDEX_SIZE));
                if let Ok(Some(bytes)) = got {
                    // The index its name gives, or no record of it.
                    if record_fault(&source.describe(), name, bytes.clone()).is_none() {
                        found = Some((s, bytes));
                        break;
                    }
                }
            }
            match found {
                Some((s, bytes)) => {
                    self.store.write(name, &bytes)?;
                    self.mended(name, ProblemKind::Record, s, name);
                    wrote = true;
                }
                None => self.not_repaired(problem, "no store to repair from has this index"),
            }
        }
        if survey.bad_maps.is_empty() {
            return Ok(wrote);
        }
        let packs: HashSet<String> = self
            .store
            .list()?
            .into_iter()
            .filter(|l| matches!(releases::kind(&l.name), Kind::Pack(_)))
            .map(|l| l.name)
            .collect();
        for (release, why) in &survey.bad_maps {
            let index = &survey.releases[*release].index;
            let name = pack::map_name(&index.digest());
            let mut found = None;
            for s in 0..self.sources.list.len() {
                let Some(map) = self.source_map(s, index) else {
                    continue;
                };
                if map
                    .packs()
                    .iter()
                    .all(|d| packs.contains(&pack::pack_name(d)))
                {
                    found = Some((s, map));
                    break;
                }
            }
            match found {
                Some((s, map)) => {
                    let bytes = map_file(index, &map)?;
                    self.store.write(&name, &bytes)?;
                    self.mended(&name, ProblemKind::PackMap, s, &name);
                    wrote = true;
                }
                None => self.not_repaired(
                    survey.map_problem(*release, why),
                    "no store to repair from has a pack map whose packs this store holds (in a directory, `blockcast pack` writes it again from the packs' tables of contents)",
                ),
            }
        }
        if wrote {
            self.store.sync()?;
        }
        Ok(wrote)
    }

    /// Mends the objects the survey found missing or corrupt: loose files are written
    /// again; every object the maps place in a damaged pack goes into new packs (from
    /// that pack where its copy is good), and those maps are written again once the new
    /// packs are durable.
    fn objects(&mut self, survey: &Survey, progress: &dyn Progress) -> Result<()> {
        let bases = survey.bases();
        self.loose(survey, &bases)?;
        let damaged: HashSet<[u8; 32]> = survey
            .packs
            .iter()
            .filter(|p| p.fault.is_some())
            .map(|p| p.digest)
            .chain(
                survey
                    .items
                    .iter()
                    .zip(&survey.outcomes)
                    .filter(|(_, o)| is_bad(o))
                    .filter_map(|(item, _)| item.at.map(|p| p.pack)),
            )
            .collect();
        let moved = self.repack(survey, &bases, &damaged, progress)?;
        self.store.sync()?;
        self.rewrite_maps(survey, &damaged, &moved)?;
        self.store.sync()
    }

    /// Writes again each loose file found missing or corrupt.
    fn loose(&mut self, survey: &Survey, bases: &BaseIndex) -> Result<()> {
        for (i, item) in survey.items.iter().enumerate() {
            if item.at.is_some() || !is_bad(&survey.outcomes[i]) {
                continue;
            }
            let name = item.object.loose_name();
            match self.fetch(survey, bases, item, false) {
                Ok((s, bytes)) => {
                    self.store.write(&name, &bytes)?;
                    self.report.loose_written += 1;
                    self.report.bytes_written += bytes.len() as u64;
                    self.mended(&name, kind_of(&item.object), s, &name);
                }
                Err(why) => self.not_repaired(
                    survey.item_problem(i, &survey_reason(&survey.outcomes[i])),
                    &why,
                ),
            }
        }
        Ok(())
    }

    /// Puts every object the maps place in a `damaged` pack into new packs, chunk files
    /// before deltas (in packs of their own, as make writes them), each once; returns
    /// where each went.
    fn repack(
        &mut self,
        survey: &Survey,
        bases: &BaseIndex,
        damaged: &HashSet<[u8; 32]>,
        progress: &dyn Progress,
    ) -> Result<HashMap<Object, Place>> {
        let moving: Vec<usize> = (0..survey.items.len())
            .filter(|&i| {
                survey.items[i]
                    .at
                    .is_some_and(|p| damaged.contains(&p.pack))
            })
            .collect();
        if moving.is_empty() {
            return Ok(HashMap::new());
        }
        let total = moving
            .iter()
            .map(|&i| u64::from(survey.items[i].sizes.stored))
            .sum();
        progress.start("repairing", total);
        let staging = pack::Staging::for_store(self.store)?;
        let target = staging.dir();
        let mut writer = PackWriter::new(target, DEFAULT_PACK_SIZE);
        // Each object taken, and where its copy came from.
        let mut taken: HashMap<Object, String> = HashMap::new();
        // Mended objects, whose new pack is known once the packs are written.
        let first_mended = self.report.mended.len();
        for deltas in [false, true] {
            for &i in &moving {
                let item = &survey.items[i];
                if matches!(item.object, Object::Delta { .. }) != deltas {
                    continue;
                }
                let from = match taken.get(&item.object) {
                    Some(from) => from.clone(),
                    None => {
                        progress.advance(u64::from(item.sizes.stored));
                        match self.good_copy(survey, bases, i) {
                            Ok((from, bytes)) => {
                                writer.add(item.object, &bytes)?;
                                self.report.bytes_written += bytes.len() as u64;
                                taken.insert(item.object, from.clone());
                                from
                            }
                            Err(why) => {
                                let problem =
                                    survey.item_problem(i, &survey_reason(&survey.outcomes[i]));
                                self.not_repaired(problem, &why);
                                continue;
                            }
                        }
                    }
                };
                if is_bad(&survey.outcomes[i]) {
                    self.report.mended.push(Mended {
                        object: item.object.loose_name(),
                        kind: kind_of(&item.object),
                        from,
                        to: String::new(),
                    });
                }
            }
            writer.close()?;
        }
        let (placed, written) = writer.finish()?;
        self.report.packs_written += written;
        staging.send(self.store, &placed)?;
        let moved: HashMap<Object, Place> = placed.into_iter().collect();
        let by_name: HashMap<String, Place> =
            moved.iter().map(|(o, p)| (o.loose_name(), *p)).collect();
        for m in &mut self.report.mended[first_mended..] {
            if let Some(place) = by_name.get(&m.object) {
                m.to = pack::pack_name(&place.pack);
            }
        }
        progress.finish();
        Ok(moved)
    }

    /// Writes again each surveyed release's pack map that places an object in a
    /// `damaged` pack that has `moved`.
    fn rewrite_maps(
        &mut self,
        survey: &Survey,
        damaged: &HashSet<[u8; 32]>,
        moved: &HashMap<Object, Place>,
    ) -> Result<()> {
        for (ri, map) in survey.maps.iter().enumerate() {
            let Some(map) = map else {
                continue;
            };
            let index = &survey.releases[ri].index;
            let (chunks, deltas, tree) = pack::objects(index);
            let mut placed = Vec::with_capacity(map.len());
            let mut changed = false;
            for object in chunks.into_iter().chain(tree).chain(deltas) {
                let Some(place) = map.find(&object) else {
                    continue;
                };
                match moved.get(&object) {
                    Some(new) if damaged.contains(&place.pack) => {
                        changed |= *new != place;
                        placed.push((object, *new));
                    }
                    _ => placed.push((object, place)),
                }
            }
            if !changed {
                continue;
            }
            let digest = index.digest();
            let bytes = PackMap::encode(&digest, &placed);
            PackMap::parse("a rewritten pack map", &bytes, index)?;
            self.store
                .write(&pack::map_name(&digest), &PackMap::seal(&bytes)?)?;
            self.report.maps_rewritten += 1;
        }
        Ok(())
    }

    /// A good copy of item `i` for a new pack: this store's, where the survey found it
    /// good, else a source's; its stored size the index's.
    fn good_copy(
        &mut self,
        survey: &Survey,
        bases: &BaseIndex,
        i: usize,
    ) -> std::result::Result<(String, Vec<u8>), String> {
        let item = &survey.items[i];
        if matches!(survey.outcomes[i], Outcome::Good | Outcome::Unverified) {
            if let Some(place) = item.at {
                let name = pack::pack_name(&place.pack);
                if let Ok(Some(bytes)) = self.store.read_range(&name, place.range()) {
                    let mut reader = survey.reader(self.store, bases);
                    if reader.verify(item, &bytes) == survey.outcomes[i] {
                        return Ok((survey.store.clone(), bytes));
                    }
                }
            }
        }
        self.fetch(survey, bases, item, true)
            .map(|(s, bytes)| (self.sources.list[s].describe(), bytes))
    }

    /// A source's copy of `item`, checked against its id (a delta: rebuilt against a good
    /// copy of its base, from this store or a source), and when `exact`, of the stored
    /// size the index gives it; the source it came from.
    fn fetch(
        &mut self,
        survey: &Survey,
        bases: &BaseIndex,
        item: &Item,
        exact: bool,
    ) -> std::result::Result<(usize, Vec<u8>), String> {
        let s = item.sizes.clone();
        let size = s.size;
        let check: store::Check = match item.object {
            Object::Chunk(id) => Arc::new(move |b: &[u8]| chunk_from(b, id, size)),
            Object::Delta { id, base } => {
                let mut base_data = Vec::new();
                for p in s.run.iter() {
                    let Some(piece) = self.base_anywhere(survey, bases, &p.id, p.size) else {
                        return Err(format!(
                            "no good copy of chunk {} of its base {base} in this store or those to repair from, so no copy of it can be checked",
                            p.id
                        ));
                    };
                    base_data.extend_from_slice(&piece);
                }
                let base_data = Arc::new(base_data);
                Arc::new(move |b: &[u8]| codec::decompress_against(b, &base_data, size, id, 0))
            }
        };
        let mut why = Vec::new();
        for source in 0..self.sources.list.len() {
            match self.fetch_from(source, survey, &item.object, &item.releases, size, &check) {
                Some(bytes) if exact && bytes.len() != s.stored as usize => why.push(format!(
                    "{} has a copy of {} bytes, not the {} its index gives",
                    self.sources.list[source].describe(),
                    bytes.len(),
                    s.stored
                )),
                Some(bytes) => return Ok((source, bytes)),
                None => {}
            }
        }
        if why.is_empty() {
            why.push("no store to repair from has a good copy".into());
        }
        Err(why.join("; "))
    }

    /// `object`'s stored bytes from source `source` that pass `check`: where the maps of
    /// `releases` there place it, else its loose file.
    fn fetch_from(
        &mut self,
        source: usize,
        survey: &Survey,
        object: &Object,
        releases: &[usize],
        size: u32,
        check: &store::Check,
    ) -> Option<Vec<u8>> {
        let mut places = Vec::new();
        for &ri in releases {
            if let Some(place) = self
                .source_map(source, &survey.releases[ri].index)
                .and_then(|m| m.find(object))
            {
                if !places.contains(&place) {
                    places.push(place);
                }
            }
        }
        let store = self.sources.list[source].as_ref();
        for place in places {
            let range = [place.range()];
            let mut got: Option<Vec<u8>> = None;
            let mut part = |_: usize, bytes: Vec<u8>| {
                got = Some(bytes);
                Ok(())
            };
            let name = pack::pack_name(&place.pack);
            let read = self.block_on(store.get_ranges(&name, &range, &mut part));
            if let (Ok(true), Some(bytes)) = (read, got) {
                if check(&bytes).is_ok() {
                    return Some(bytes);
                }
            }
        }
        let opts = ReadOptions {
            max_len: stored_size_bound(size),
            for_mount: false,
        };
        let name = object.loose_name();
        match self.block_on(store.get(&name, opts, check.clone())) {
            Ok(Some((_, bytes))) => Some(bytes),
            _ => None,
        }
    }

    /// A good copy of chunk `id` (`size` bytes): this store's, else a source's (placed by
    /// any surveyed release's map there, or loose).
    fn base_anywhere(
        &mut self,
        survey: &Survey,
        bases: &BaseIndex,
        id: &ChunkId,
        size: u32,
    ) -> Option<Vec<u8>> {
        let mut reader = survey.reader(self.store, bases);
        if let Some(data) = reader.base(id, size) {
            return Some(data);
        }
        let (unit, unit_size, record) = bases.unit_of(id, size);
        let check: store::Check = Arc::new(move |b: &[u8]| chunk_from(b, unit, unit_size));
        let everyone: Vec<usize> = (0..survey.releases.len()).collect();
        for source in 0..self.sources.list.len() {
            let object = Object::Chunk(unit);
            if let Some(bytes) =
                self.fetch_from(source, survey, &object, &everyone, unit_size, &check)
            {
                let chunk = chunk_from(&bytes, unit, unit_size).ok()?;
                return base_bytes(chunk, record);
            }
        }
        None
    }

    /// Source `source`'s pack map for `index`, read once; `None` when it has none or one
    /// that fails its checks.
    fn source_map(&mut self, source: usize, index: &Index) -> Option<Arc<PackMap>> {
        let key = (source, index.digest());
        if let Some(map) = self.maps.get(&key) {
            return map.clone();
        }
        let name = pack::map_name(&index.digest());
        let store = self.sources.list[source].as_ref();
        let map = match self.block_on(store.get_file(&name, PackMap::max_file_len(index))) {
            Ok(Some(bytes)) => PackMap::read(&name, &bytes, index).ok().map(Arc::new),
            _ => None,
        };
        self.maps.insert(key, map.clone());
        map
    }

    fn mended(&mut self, object: &str, kind: ProblemKind, source: usize, to: &str) {
        self.report.mended.push(Mended {
            object: object.to_string(),
            kind,
            from: self.sources.list[source].describe(),
            to: to.to_string(),
        });
    }

    fn not_repaired(&mut self, mut problem: Problem, why: &str) {
        problem.reason = format!("{}; not repaired: {why}", problem.reason);
        self.report.not_repaired.push(problem);
    }
}

fn is_bad(o: &Outcome) -> bool {
    matches!(o, Outcome::Missing(_) | Outcome::Corrupt(_))
}

fn survey_reason(o: &Outcome) -> String {
    match o {
        Outcome::Missing(r) | Outcome::Corrupt(r) => r.clone(),
        Outcome::Good => "good".into(),
        Outcome::Unverified => "present, not verified".into(),
    }
}

/// A source's map as this store's file: the map's entries for `index` sealed again.
fn map_file(index: &Index, map: &PackMap) -> Result<Vec<u8>> {
    let (chunks, deltas, tree) = pack::objects(index);
    let placed: Vec<(Object, Place)> = chunks
        .into_iter()
        .chain(tree)
        .chain(deltas)
        .filter_map(|o| Some((o, map.find(&o)?)))
        .collect();
    PackMap::seal(&PackMap::encode(&index.digest(), &placed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_hold_each_object_whole_and_cover_the_pack() {
        let mb = 1u64 << 20;
        let objects = vec![
            32..100,
            100..5 * mb,
            5 * mb..9 * mb,
            9 * mb..30 * mb,
            31 * mb..31 * mb + 10,
        ];
        let len = 50 * mb;
        let cut = spans(&objects, len);
        let mut at = 0;
        for s in &cut {
            assert_eq!(s.start, at, "{cut:?}");
            at = s.end;
        }
        assert_eq!(at, len);
        for o in &objects {
            assert!(
                cut.iter().any(|s| s.start <= o.start && o.end <= s.end),
                "{o:?} in none of {cut:?}"
            );
        }
        for s in &cut {
            let big = objects
                .iter()
                .any(|o| s.start <= o.start && o.end <= s.end && o.end - o.start > SPAN);
            assert!(s.end - s.start <= SPAN || big, "{s:?}");
        }
        // A pack with nothing needed is still read whole, in spans.
        assert_eq!(spans(&[], 2 * SPAN + 1).len(), 3);
        assert!(spans(&[], 0).is_empty());
        // Overlapping objects are never cut apart.
        let overlapping = vec![0..SPAN, 10..2 * SPAN, 2 * SPAN - 1..2 * SPAN + 5];
        let s = super::spans(&overlapping, 3 * SPAN);
        assert_eq!(s[0], 0..2 * SPAN + 5, "{s:?}");
    }
}
