//! The releases a store holds and what each needs from it: read by prune (which keeps
//! some) and by check (which reads what they need).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::index::format::MAX_INDEX_SIZE;
use crate::index::Index;
use crate::pack::{self, Object, PackMap};
use crate::store::{codec, Listed, LocalStore, PruneStore};

/// The directory of a store that holds a copy of each release's index made into it.
pub const INDEXES: &str = "indexes";

/// The name, in a store, of the copy of the index whose digest is `digest`.
pub fn record_name(digest: &[u8; 32]) -> String {
    format!("{INDEXES}/{}.bcidx", pack::hex(digest))
}

/// Records a release made into a local store: a copy of its index under `indexes/`,
/// durable, with everything it names made durable first.
pub fn record(store: &LocalStore, index: &[u8]) -> Result<()> {
    let digest = Index::intact_digest(index)
        .ok_or_else(|| Error::Internal("recording an index that is not whole".into()))?;
    store.sync()?;
    let path = store.dir().join(record_name(&digest));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| Error::Io {
            path: dir.to_path_buf(),
            err,
        })?;
    }
    crate::durable::write_file(&path, index)
}

/// What a store's object is, from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A release's index: a copy under `indexes/`, or a top-level `NAME.bcidx` (pushed).
    Record,
    /// A file beside a top-level index (its signature): `NAME.bcidx.<suffix>`; the
    /// index's name.
    Beside(String),
    Map([u8; 32]),
    Pack([u8; 32]),
    /// A pack a repack replaced, marked when (see `docs/FORMAT.md`).
    Retired([u8; 32]),
    Lease,
    Loose(Object),
    /// Anything else: left alone.
    Other,
}

/// The directory of markers of packs a repack replaced.
pub const RETIRED: &str = "retired";

pub fn retired_name(pack: &[u8; 32]) -> String {
    format!("{RETIRED}/{}", pack::hex(pack))
}

fn digest_of(hex: &str) -> Option<[u8; 32]> {
    ChunkId::from_hex(hex).map(|id| id.0)
}

pub fn kind(name: &str) -> Kind {
    let Some((dir, file)) = name.split_once('/') else {
        if name.ends_with(".bcidx") {
            return Kind::Record;
        }
        return match name.split_once(".bcidx.") {
            Some((stem, _)) => Kind::Beside(format!("{stem}.bcidx")),
            None => Kind::Other,
        };
    };
    let stem = |suffix: &str| file.strip_suffix(suffix).and_then(digest_of);
    match dir {
        INDEXES if file.ends_with(".bcidx") && !file.contains('/') => Kind::Record,
        "packmaps" => stem(".bcpmap").map_or(Kind::Other, Kind::Map),
        "packs" => stem(".bcpack").map_or(Kind::Other, Kind::Pack),
        RETIRED => digest_of(file).map_or(Kind::Other, Kind::Retired),
        crate::store::lease::LEASES => Kind::Lease,
        _ if dir.len() == 4 && !file.contains('/') => loose(dir, file),
        _ => Kind::Other,
    }
}

fn loose(dir: &str, file: &str) -> Kind {
    let object = if let Some(hex) = file.strip_suffix(".cacnk") {
        ChunkId::from_hex(hex).map(Object::Chunk)
    } else if let Some(ids) = file.strip_suffix(".cadelta") {
        ids.split_once('.').and_then(|(id, base)| {
            Some(Object::Delta {
                id: ChunkId::from_hex(id)?,
                base: ChunkId::from_hex(base)?,
            })
        })
    } else {
        None
    };
    match object {
        Some(o) if o.loose_name().starts_with(&format!("{dir}/")) => Kind::Loose(o),
        _ => Kind::Other,
    }
}

/// A release known to a run: its index, and where it was found.
pub struct Release {
    pub index: Index,
    /// Its names in the store (a copy under `indexes/`, a top-level index), if any.
    pub records: Vec<String>,
    /// Named by the caller (`--keep`, `--index`).
    pub named: bool,
}

impl Release {
    pub fn number(&self) -> u64 {
        self.index.header().release
    }

    /// How the release is named in messages.
    pub fn describe(&self) -> String {
        match self.records.first() {
            Some(r) if !self.named => r.clone(),
            _ => self.index.path().display().to_string(),
        }
    }
}

/// The index of the release record `name` (see [`Kind::Record`]), read and parsed, named
/// after the store and the record in messages; `None` when the store no longer has it.
pub fn read_record(store: &dyn PruneStore, name: &str) -> Result<Option<Index>> {
    let Some(bytes) = store.read(name, MAX_INDEX_SIZE)? else {
        return Ok(None);
    };
    let label = PathBuf::from(format!("{}/{name}", store.describe()));
    Index::from_bytes(&label, bytes).map(Some)
}

/// The releases the store's records name, with those at `named`, each once (by index
/// digest), in release-number order.
pub fn find(store: &dyn PruneStore, listed: &[Listed], named: &[PathBuf]) -> Result<Vec<Release>> {
    let mut records = Vec::new();
    for l in listed.iter().filter(|l| kind(&l.name) == Kind::Record) {
        let index = read_record(store, &l.name)
            .map_err(|e| match e {
                e @ Error::BadIndex { .. } => Error::Integrity(format!(
                    "{e}: a release record that cannot be read; remove it, or mend it with check --repair, before pruning"
                )),
                e => e,
            })?
            .ok_or_else(|| {
                Error::Integrity(format!(
                    "{}: {} was listed, then could not be read",
                    store.describe(),
                    l.name
                ))
            })?;
        records.push((l.name.clone(), index));
    }
    gather(named, records)
}

/// The releases of the index files at `named` and of `records` (each a record's name and
/// index), each once (by index digest), in release-number order.
pub fn gather(named: &[PathBuf], records: Vec<(String, Index)>) -> Result<Vec<Release>> {
    let mut by_digest: HashMap<[u8; 32], Release> = HashMap::new();
    for path in named {
        let index = Index::open(path)?;
        by_digest
            .entry(index.digest())
            .or_insert(Release {
                index,
                records: Vec::new(),
                named: true,
            })
            .named = true;
    }
    for (name, index) in records {
        by_digest
            .entry(index.digest())
            .or_insert(Release {
                index,
                records: Vec::new(),
                named: false,
            })
            .records
            .push(name);
    }
    let mut releases: Vec<Release> = by_digest.into_values().collect();
    releases.sort_by_key(|r| (r.number(), r.index.digest()));
    Ok(releases)
}

/// Each chunk file's decompressed size, as `index` gives it (image, gathered and tree
/// chunks).
pub fn chunk_sizes(index: &Index, sizes: &mut HashMap<ChunkId, u32>) {
    for r in index.records().filter(|r| !r.is_zero()) {
        let u = r.unit();
        sizes.insert(u.id, u.size);
    }
    for r in index.tree_records() {
        sizes.insert(r.id, r.size);
    }
}

/// The chunk ids `index` names (what a device on that release holds).
pub fn chunk_ids(index: &Index) -> HashSet<ChunkId> {
    let mut ids: HashSet<ChunkId> = index
        .records()
        .filter(|r| !r.is_zero())
        .map(|r| r.id)
        .collect();
    ids.extend(
        index
            .records()
            .filter(|r| !r.is_zero())
            .map(|r| r.unit().id),
    );
    ids
}

/// Checks a chunk file's stored bytes against its id (`size`: its decompressed size).
/// A delta cannot be checked without its base; it passes.
pub fn check_object(object: &Object, bytes: &[u8], size: Option<u32>) -> Result<()> {
    let Object::Chunk(id) = object else {
        return Ok(());
    };
    let size = size.ok_or_else(|| Error::Internal(format!("no size for chunk {id}")))?;
    let data = codec::decompress(bytes, size, *id, 0).map_err(|e| match e {
        Error::BadChunk { reason, .. } => Error::Integrity(format!("chunk file {id}: {reason}")),
        e => e,
    })?;
    if ChunkId::of(&data) != *id {
        return Err(Error::Integrity(format!(
            "chunk file {id}: its bytes do not hash to its id"
        )));
    }
    Ok(())
}

/// A release's pack map in `store`, checked; `None` when it has none. A map that fails
/// its checks is an error: a run that went on without it could lose the packs it names.
pub fn read_map(store: &dyn PruneStore, index: &Index) -> Result<Option<PackMap>> {
    let name = pack::map_name(&index.digest());
    match store.read(&name, PackMap::max_file_len(index))? {
        Some(bytes) => PackMap::read(&name, &bytes, index).map(Some),
        None => Ok(None),
    }
}
