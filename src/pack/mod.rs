//! Packs: a store's chunk files and deltas kept in a few large files instead of one file
//! each, so that a release is a handful of objects read by byte ranges. A pack is named
//! by the SHA-256 of its bytes and carries its own table of contents; a release's pack
//! map, named by its index's digest, says where each chunk file and delta the release may
//! need lies. The signed index never names a pack: a wrong map can cost a fetch, never
//! admit a wrong byte (every chunk is checked against the index as it arrives).

pub mod format;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::chunk::ChunkId;
use crate::error::{Error, IoContext, Result};
use crate::index::{stored_size_bound, Index};
use crate::store::local::place;
use crate::store::LocalStore;
use format::*;

/// What a pack entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    /// The chunk file of chunk (or gathered chunk, or tree piece) `id`.
    Chunk(ChunkId),
    /// The delta that rebuilds chunk file `id` from chunk `base`.
    Delta { id: ChunkId, base: ChunkId },
}

impl Object {
    fn kind(&self) -> u8 {
        match self {
            Object::Chunk(_) => KIND_CHUNK,
            Object::Delta { .. } => KIND_DELTA,
        }
    }

    fn ids(&self) -> (ChunkId, ChunkId) {
        match *self {
            Object::Chunk(id) => (id, ChunkId::default()),
            Object::Delta { id, base } => (id, base),
        }
    }

    fn decode(kind: u8, id: ChunkId, base: ChunkId) -> Option<Object> {
        match kind {
            KIND_CHUNK if base == ChunkId::default() => Some(Object::Chunk(id)),
            KIND_DELTA => Some(Object::Delta { id, base }),
            _ => None,
        }
    }

    /// The object's name among a store's loose files.
    pub fn loose_name(&self) -> String {
        match self {
            Object::Chunk(id) => place(id, None),
            Object::Delta { id, base } => place(id, Some(base)),
        }
    }
}

/// Where an object lies: in which pack, at which offset, how many stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub pack: [u8; 32],
    pub offset: u64,
    pub size: u32,
}

impl Place {
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.size)
    }
}

pub fn hex(d: &[u8; 32]) -> String {
    ChunkId(*d).to_hex()
}

/// A pack's name in a store: `packs/<64 hex digits of its SHA-256>.bcpack`.
pub fn pack_name(digest: &[u8; 32]) -> String {
    format!("packs/{}.bcpack", hex(digest))
}

/// A release's pack map in a store: `packmaps/<64 hex digits of the index digest>.bcpmap`.
pub fn map_name(index_digest: &[u8; 32]) -> String {
    format!("packmaps/{}.bcpmap", hex(index_digest))
}

fn u32_at(b: &[u8], f: &Field) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[f.offset..f.offset + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], f: &Field) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[f.offset..f.offset + 8]);
    u64::from_le_bytes(v)
}

fn id_at(b: &[u8], f: &Field) -> ChunkId {
    let mut v = [0u8; 32];
    v.copy_from_slice(&b[f.offset..f.offset + 32]);
    ChunkId(v)
}

/// Whether a reserved field is zero, as writers leave it.
fn zero(b: &[u8], f: &Field) -> bool {
    b[f.offset..f.offset + f.size].iter().all(|&x| x == 0)
}

fn put(b: &mut [u8], f: &Field, v: &[u8]) {
    b[f.offset..f.offset + f.size].copy_from_slice(v);
}

/// The largest stored size an entry may claim: that of the largest chunk file.
fn max_stored() -> u64 {
    stored_size_bound(crate::index::MAX_CHUNK)
}

/// A pack's header checked against its length: the entry count and where the table of
/// contents starts.
pub fn parse_header(name: &str, h: &[u8], len: u64) -> Result<(usize, u64)> {
    let bad = |reason: String| Error::Integrity(format!("pack {name}: {reason}"));
    if h.len() < PACK_HEADER_SIZE || h[..8] != PACK_MAGIC {
        return Err(bad("not a blockcast pack (bad magic)".into()));
    }
    let version = u32_at(h, &P_VERSION);
    if version != PACK_VERSION {
        return Err(bad(format!("pack version {version} is not supported")));
    }
    if !zero(h, &P_RESERVED) {
        return Err(bad("reserved header bytes are not zero".into()));
    }
    let count = u32_at(h, &P_ENTRY_COUNT) as usize;
    let toc = u64_at(h, &P_TOC_OFFSET);
    let toc_len = (count as u64) * TOC_ENTRY_SIZE as u64;
    if count > MAX_ENTRIES || toc < PACK_HEADER_SIZE as u64 || toc.checked_add(toc_len) != Some(len)
    {
        return Err(bad(format!(
            "{count} entries with their table at {toc} do not fit a pack of {len} bytes"
        )));
    }
    Ok((count, toc))
}

/// A pack's table of contents (`toc`, its `count` entries read from `toc_offset`): each
/// object and its place, checked to lie in the pack's data, in order, without overlap.
pub fn parse_toc(
    name: &str,
    digest: &[u8; 32],
    toc: &[u8],
    count: usize,
    toc_offset: u64,
) -> Result<Vec<(Object, Place)>> {
    let bad = |reason: String| Error::Integrity(format!("pack {name}: {reason}"));
    if toc.len() != count * TOC_ENTRY_SIZE {
        return Err(bad("table of contents cut short".into()));
    }
    let mut end = PACK_HEADER_SIZE as u64;
    let mut out = Vec::with_capacity(count);
    for (i, e) in toc.chunks_exact(TOC_ENTRY_SIZE).enumerate() {
        let offset = u64_at(e, &T_OFFSET);
        let size = u32_at(e, &T_SIZE);
        let object = Object::decode(e[T_KIND.offset], id_at(e, &T_ID), id_at(e, &T_BASE))
            .ok_or_else(|| bad(format!("entry {i}: unknown kind")))?;
        if !zero(e, &T_RESERVED) {
            return Err(bad(format!("entry {i}: reserved bytes are not zero")));
        }
        let stop = offset.checked_add(u64::from(size));
        if offset < end
            || stop.is_none_or(|s| s > toc_offset)
            || size == 0
            || u64::from(size) > max_stored()
        {
            return Err(bad(format!(
                "entry {i} ({size} bytes at {offset}) overlaps another or lies outside the data"
            )));
        }
        end = stop.unwrap_or(toc_offset);
        out.push((
            object,
            Place {
                pack: *digest,
                offset,
                size,
            },
        ));
    }
    Ok(out)
}

/// Writes packs of at most `cap` bytes into a store's `packs/` directory.
pub struct PackWriter<'a> {
    store: &'a LocalStore,
    cap: u64,
    building: Option<Building>,
    placed: Vec<(Object, Place)>,
    packs: u64,
}

struct Building {
    file: File,
    temp: std::path::PathBuf,
    len: u64,
    entries: Vec<(Object, u64, u32)>,
}

impl<'a> PackWriter<'a> {
    pub fn new(store: &'a LocalStore, cap: u64) -> PackWriter<'a> {
        PackWriter {
            store,
            cap: cap.max(1),
            building: None,
            placed: Vec::new(),
            packs: 0,
        }
    }

    /// Appends an object's stored bytes, starting a new pack when this one is full.
    pub fn add(&mut self, object: Object, bytes: &[u8]) -> Result<()> {
        let full = self.building.as_ref().is_some_and(|b| {
            b.len + bytes.len() as u64 > self.cap || b.entries.len() >= MAX_ENTRIES
        });
        if full {
            self.close()?;
        }
        let b = match &mut self.building {
            Some(b) => b,
            None => {
                let dir = self.store.dir().join("packs");
                fs::create_dir_all(&dir).at(&dir)?;
                let temp = dir.join(format!(
                    ".pack.{}-{}.tmp",
                    std::process::id(),
                    crate::store::local::next_temp()
                ));
                let mut file = File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&temp)
                    .at(&temp)?;
                let header = [0u8; PACK_HEADER_SIZE];
                file.write_all(&header).at(&temp)?;
                self.building.insert(Building {
                    file,
                    temp,
                    len: PACK_HEADER_SIZE as u64,
                    entries: Vec::new(),
                })
            }
        };
        b.file.write_all(bytes).at(&b.temp)?;
        b.entries.push((object, b.len, bytes.len() as u32));
        b.len += bytes.len() as u64;
        Ok(())
    }

    /// Ends the pack being written, if any: its table of contents, header, name.
    pub fn close(&mut self) -> Result<()> {
        let Some(mut b) = self.building.take() else {
            return Ok(());
        };
        let mut toc = vec![0u8; b.entries.len() * TOC_ENTRY_SIZE];
        for ((object, offset, size), e) in
            b.entries.iter().zip(toc.chunks_exact_mut(TOC_ENTRY_SIZE))
        {
            let (id, base) = object.ids();
            e[T_KIND.offset] = object.kind();
            put(e, &T_SIZE, &size.to_le_bytes());
            put(e, &T_OFFSET, &offset.to_le_bytes());
            put(e, &T_ID, &id.0);
            put(e, &T_BASE, &base.0);
        }
        let mut header = [0u8; PACK_HEADER_SIZE];
        put(&mut header, &P_MAGIC, &PACK_MAGIC);
        put(&mut header, &P_VERSION, &PACK_VERSION.to_le_bytes());
        put(
            &mut header,
            &P_ENTRY_COUNT,
            &(b.entries.len() as u32).to_le_bytes(),
        );
        put(&mut header, &P_TOC_OFFSET, &b.len.to_le_bytes());
        b.file.write_all(&toc).at(&b.temp)?;
        b.file.write_all_at(&header, 0).at(&b.temp)?;
        b.file.sync_all().at(&b.temp)?;
        // The name is the SHA-256 of the whole file, read back once it is complete.
        let digest = file_digest(&b.file, &b.temp)?;
        let name = self.store.dir().join(pack_name(&digest));
        fs::rename(&b.temp, &name).at(&name)?;
        for (object, offset, size) in b.entries {
            self.placed.push((
                object,
                Place {
                    pack: digest,
                    offset,
                    size,
                },
            ));
        }
        self.packs += 1;
        Ok(())
    }

    /// Closes the last pack and makes the packs' directory entries durable; returns where
    /// each object went and how many packs were written.
    pub fn finish(mut self) -> Result<(Vec<(Object, Place)>, u64)> {
        self.close()?;
        if self.packs > 0 {
            let dir = self.store.dir().join("packs");
            File::open(&dir).and_then(|d| d.sync_all()).at(&dir)?;
        }
        Ok((self.placed, self.packs))
    }
}

/// Where new packs for a store are written: in place in a directory store, else in a
/// temporary directory from which [`Staging::send`] puts them into the store.
pub enum Staging<'a> {
    InPlace(&'a LocalStore),
    Scratch(tempfile::TempDir, LocalStore),
}

impl<'a> Staging<'a> {
    pub fn for_store(store: &'a dyn crate::store::PruneStore) -> Result<Staging<'a>> {
        if let Some(local) = store.local() {
            return Ok(Staging::InPlace(local));
        }
        let dir = tempfile::tempdir().map_err(|err| Error::Io {
            path: std::env::temp_dir(),
            err,
        })?;
        let local = LocalStore::open(dir.path(), true)?;
        Ok(Staging::Scratch(dir, local))
    }

    /// The directory packs are written into.
    pub fn dir(&self) -> &LocalStore {
        match self {
            Staging::InPlace(local) => local,
            Staging::Scratch(_, local) => local,
        }
    }

    /// Puts the packs `placed` names into `store` (nothing to do in place).
    pub fn send(
        &self,
        store: &dyn crate::store::PruneStore,
        placed: &[(Object, Place)],
    ) -> Result<()> {
        let Staging::Scratch(_, local) = self else {
            return Ok(());
        };
        let new: std::collections::BTreeSet<[u8; 32]> =
            placed.iter().map(|(_, p)| p.pack).collect();
        for digest in &new {
            let name = pack_name(digest);
            let gone = || Error::Internal(format!("{name} written, then gone"));
            let len = local.object_len(&name)?.ok_or_else(gone)?;
            let bytes = local.read_object(&name, len)?.ok_or_else(gone)?;
            store.write(&name, &bytes)?;
        }
        Ok(())
    }
}

/// The SHA-256 of a whole file, read back.
fn file_digest(file: &File, path: &Path) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize().into())
}

/// Every object in a local store's packs, from their tables of contents.
pub fn catalogue(store: &LocalStore) -> Result<HashMap<Object, Place>> {
    let dir = store.dir().join("packs");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::Io { path: dir, err: e }),
    };
    let mut names = Vec::new();
    for e in entries {
        let name = e.at(&dir)?.file_name().to_string_lossy().into_owned();
        if let Some(digest) = name.strip_suffix(".bcpack").and_then(ChunkId::from_hex) {
            names.push(digest.0);
        }
    }
    names.sort();
    let mut all = HashMap::new();
    for digest in names {
        let name = pack_name(&digest);
        let path = store.dir().join(&name);
        let file = crate::image::open_readable(&path, false).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let mut header = [0u8; PACK_HEADER_SIZE];
        file.read_exact_at(&mut header, 0).at(&path)?;
        let (count, toc_offset) = parse_header(&name, &header, len)?;
        let mut toc = vec![0u8; count * TOC_ENTRY_SIZE];
        file.read_exact_at(&mut toc, toc_offset).at(&path)?;
        for (object, place) in parse_toc(&name, &digest, &toc, count, toc_offset)? {
            all.entry(object).or_insert(place);
        }
    }
    Ok(all)
}

/// The chunk files a local store's packs hold, for readers of its loose layout (see
/// [`LocalStore::with_packed`]).
pub fn packed_chunks(store: &LocalStore) -> Result<HashMap<ChunkId, (String, u64, u32)>> {
    Ok(catalogue(store)?
        .into_iter()
        .filter_map(|(object, p)| match object {
            Object::Chunk(id) => Some((id, (pack_name(&p.pack), p.offset, p.size))),
            Object::Delta { .. } => None,
        })
        .collect())
}

/// Reads an object's stored bytes from a local store's pack.
pub fn read_packed(store: &LocalStore, place: &Place) -> Result<Vec<u8>> {
    let path = store.dir().join(pack_name(&place.pack));
    let file = crate::image::open_readable(&path, false).at(&path)?;
    let mut bytes = vec![0u8; place.size as usize];
    file.read_exact_at(&mut bytes, place.offset).at(&path)?;
    Ok(bytes)
}

/// The objects a release may need, in the order a reader front to back wants them: the
/// image's chunk files in image order, then the deltas, then the hash tree's chunks.
pub fn objects(index: &Index) -> (Vec<Object>, Vec<Object>, Vec<Object>) {
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    for r in index.records().filter(|r| !r.is_zero()) {
        let id = r.unit().id;
        if seen.insert(id) {
            chunks.push(Object::Chunk(id));
        }
    }
    let by_unit = index.deltas_by_unit();
    let mut deltas = Vec::new();
    for object in &chunks {
        if let Object::Chunk(id) = object {
            for d in by_unit.get(id).into_iter().flatten() {
                deltas.push(Object::Delta {
                    id: *id,
                    base: d.base,
                });
            }
        }
    }
    let tree = index
        .tree_records()
        .filter(|r| seen.insert(r.id))
        .map(|r| Object::Chunk(r.id))
        .collect();
    (chunks, deltas, tree)
}

/// A release's pack map: where each object it may need lies.
#[derive(Debug)]
pub struct PackMap {
    entries: HashMap<Object, Place>,
}

impl PackMap {
    pub fn find(&self, object: &Object) -> Option<Place> {
        self.entries.get(object).copied()
    }

    /// The packs the map names, each once, in digest order.
    pub fn packs(&self) -> Vec<[u8; 32]> {
        let packs: std::collections::BTreeSet<[u8; 32]> =
            self.entries.values().map(|p| p.pack).collect();
        packs.into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The map's bytes for the index whose digest is `index_digest`.
    pub fn encode(index_digest: &[u8; 32], placed: &[(Object, Place)]) -> Vec<u8> {
        let mut packs: Vec<[u8; 32]> = placed.iter().map(|(_, p)| p.pack).collect();
        packs.sort();
        packs.dedup();
        let number: HashMap<[u8; 32], u32> = packs
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, i as u32))
            .collect();
        let mut out = vec![0u8; MAP_HEADER_SIZE];
        put(&mut out, &M_MAGIC, &MAP_MAGIC);
        put(&mut out, &M_VERSION, &MAP_VERSION.to_le_bytes());
        put(&mut out, &M_PACK_COUNT, &(packs.len() as u32).to_le_bytes());
        put(
            &mut out,
            &M_ENTRY_COUNT,
            &(placed.len() as u64).to_le_bytes(),
        );
        put(&mut out, &M_INDEX_DIGEST, index_digest);
        for d in &packs {
            out.extend_from_slice(d);
        }
        for (object, place) in placed {
            let mut e = [0u8; MAP_ENTRY_SIZE];
            let (id, base) = object.ids();
            e[E_KIND.offset] = object.kind();
            put(&mut e, &E_PACK, &number[&place.pack].to_le_bytes());
            put(&mut e, &E_OFFSET, &place.offset.to_le_bytes());
            put(&mut e, &E_SIZE, &place.size.to_le_bytes());
            put(&mut e, &E_ID, &id.0);
            put(&mut e, &E_BASE, &base.0);
            out.extend_from_slice(&e);
        }
        let digest: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&digest);
        out
    }

    /// The most bytes the map of `index` takes, decompressed: a header, and a pack and
    /// an entry for every object the index names.
    pub fn max_len(index: &Index) -> u64 {
        let objects = index.len() + index.tree_records().len() + index.deltas().count();
        (MAP_HEADER_SIZE + 32) as u64 + (objects as u64) * (32 + MAP_ENTRY_SIZE as u64)
    }

    /// The most bytes the file of `index`'s map takes: zstd's bound on a frame of
    /// [`PackMap::max_len`] bytes.
    pub fn max_file_len(index: &Index) -> u64 {
        let raw = Self::max_len(index);
        raw + raw / 128 + 1024
    }

    /// A map's file: its bytes as one zstd frame (its ids are random; the rest, mostly
    /// zeros and small numbers, compresses to less than half).
    pub fn seal(map: &[u8]) -> Result<Vec<u8>> {
        zstd::bulk::compress(map, MAP_ZSTD_LEVEL)
            .map_err(|e| Error::Internal(format!("compressing a pack map: {e}")))
    }

    /// Reads a map's file (see [`PackMap::seal`]) for `index`: decompressed to at most
    /// [`PackMap::max_len`] bytes, then parsed.
    pub fn read(name: &str, file: &[u8], index: &Index) -> Result<PackMap> {
        let map = zstd::bulk::decompress(file, Self::max_len(index) as usize).map_err(|e| {
            Error::Integrity(format!(
                "pack map {name}: not a zstd frame of at most {} bytes: {e}",
                Self::max_len(index)
            ))
        })?;
        Self::parse(name, &map, index)
    }

    /// Parses a map, checking its digest, that it is the map of `index`, and that every
    /// entry's size is the stored size the index gives its object.
    pub fn parse(name: &str, bytes: &[u8], index: &Index) -> Result<PackMap> {
        let bad = |reason: String| Error::Integrity(format!("pack map {name}: {reason}"));
        if bytes.len() < MAP_HEADER_SIZE + 32 || bytes[..8] != MAP_MAGIC {
            return Err(bad("not a blockcast pack map".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body)[..] != *digest {
            return Err(bad("digest mismatch: truncated or corrupt".into()));
        }
        let version = u32_at(body, &M_VERSION);
        if version != MAP_VERSION {
            return Err(bad(format!("version {version} is not supported")));
        }
        if !zero(body, &M_RESERVED) {
            return Err(bad("reserved header bytes are not zero".into()));
        }
        if body[M_INDEX_DIGEST.offset..M_INDEX_DIGEST.offset + 32] != index.digest() {
            return Err(bad(format!("not the map of {}", index.path().display())));
        }
        let packs = u32_at(body, &M_PACK_COUNT) as usize;
        let count = u64_at(body, &M_ENTRY_COUNT);
        let want = (MAP_HEADER_SIZE as u64)
            .checked_add(packs as u64 * 32)
            .and_then(|n| n.checked_add(count.checked_mul(MAP_ENTRY_SIZE as u64)?));
        if packs > MAX_PACKS || count > MAX_ENTRIES as u64 || want != Some(body.len() as u64) {
            return Err(bad("its counts do not match its length".into()));
        }
        let digests: Vec<[u8; 32]> = body[MAP_HEADER_SIZE..MAP_HEADER_SIZE + packs * 32]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let sizes = stored_sizes(index);
        let mut entries = HashMap::with_capacity(count as usize);
        for (i, e) in body[MAP_HEADER_SIZE + packs * 32..]
            .chunks_exact(MAP_ENTRY_SIZE)
            .enumerate()
        {
            let object = Object::decode(e[E_KIND.offset], id_at(e, &E_ID), id_at(e, &E_BASE))
                .ok_or_else(|| bad(format!("entry {i}: unknown kind")))?;
            if !zero(e, &E_RESERVED) || !zero(e, &E_RESERVED2) {
                return Err(bad(format!("entry {i}: reserved bytes are not zero")));
            }
            let pack = *digests
                .get(u32_at(e, &E_PACK) as usize)
                .ok_or_else(|| bad(format!("entry {i}: no such pack")))?;
            let size = u32_at(e, &E_SIZE);
            let offset = u64_at(e, &E_OFFSET);
            if sizes.get(&object) != Some(&size) {
                return Err(bad(format!(
                    "entry {i} ({object:?}): {size} bytes, not the stored size the index gives"
                )));
            }
            let inside = offset >= PACK_HEADER_SIZE as u64
                && offset
                    .checked_add(u64::from(size))
                    .is_some_and(|end| end <= MAX_PACK_BYTES);
            if !inside {
                return Err(bad(format!(
                    "entry {i} ({object:?}): {size} bytes at {offset} lie outside any pack"
                )));
            }
            entries.insert(object, Place { pack, offset, size });
        }
        Ok(PackMap { entries })
    }
}

/// The stored size the index gives each object it names.
fn stored_sizes(index: &Index) -> HashMap<Object, u32> {
    let mut sizes = HashMap::new();
    for r in index.records().filter(|r| !r.is_zero()) {
        let u = r.unit();
        sizes.insert(Object::Chunk(u.id), u.stored_size);
    }
    for r in index.tree_records() {
        sizes.insert(Object::Chunk(r.id), r.stored_size);
    }
    for (id, deltas) in index.deltas_by_unit() {
        for d in deltas {
            sizes.insert(Object::Delta { id, base: d.base }, d.stored_size);
        }
    }
    sizes
}

/// What packing a release did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PackReport {
    /// Packs written by this run, and the bytes of objects they hold.
    pub packs_written: u64,
    pub packed_bytes: u64,
    /// Objects the release needs that packs already held.
    pub reused_objects: u64,
    /// Loose files this run's packs replaced, removed.
    pub loose_removed: u64,
}

/// Puts the objects a release needs that no pack holds yet into new packs of at most
/// `cap` bytes (chunk files in image order followed by the hash tree's chunks, whose
/// place after every chunk file keeps them out of the spans a reader of the image
/// coalesces; then the deltas, in packs of their own), writes the release's pack map,
/// and removes the loose files of `written` (this run's), which packs now hold (this
/// run's, or those of another run packing into the store at the same time). Packs are
/// durable before the map, and the map before the caller writes the index.
pub fn pack_release(
    store: &LocalStore,
    index: &Index,
    written: &HashSet<Object>,
    cap: u64,
) -> Result<PackReport> {
    let mut existing = catalogue(store)?;
    let (chunks, deltas, tree) = objects(index);
    let mut writer = PackWriter::new(store, cap);
    let mut placed = Vec::new();
    let mut report = PackReport::default();
    let chunks_then_tree = chunks.into_iter().chain(tree).collect::<Vec<_>>();
    for group in [chunks_then_tree, deltas] {
        for object in group {
            if let Some(place) = existing.get(&object) {
                placed.push((object, *place));
                report.reused_objects += 1;
                continue;
            }
            let name = object.loose_name();
            let Some(bytes) = store.read_object(&name, max_stored())? else {
                // Another run packing into the store has packed it and removed its loose
                // file since the packs were listed (it does so in that order): list them
                // again.
                existing = catalogue(store)?;
                match existing.get(&object) {
                    Some(place) => {
                        placed.push((object, *place));
                        report.reused_objects += 1;
                        continue;
                    }
                    None => {
                        return Err(Error::Integrity(format!(
                            "{}: {name} is in neither the store's loose files nor its packs",
                            store.dir().display()
                        )))
                    }
                }
            };
            report.packed_bytes += bytes.len() as u64;
            writer.add(object, &bytes)?;
        }
        writer.close()?;
    }
    let (new, packs) = writer.finish()?;
    report.packs_written = packs;
    placed.extend(new);
    let map = PackMap::encode(&index.digest(), &placed);
    let path = store.dir().join(map_name(&index.digest()));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).at(dir)?;
    }
    crate::durable::write_file(&path, &PackMap::seal(&map)?)?;
    // This run's loose files, now in packs: packed by it, or by another run packing into
    // the store at the same time.
    for (object, _) in placed.iter().filter(|(o, _)| written.contains(o)) {
        if store.remove_object(&object.loose_name())? {
            report.loose_removed += 1;
        }
    }
    Ok(report)
}

/// [`pack_release`] for a release already in the store, holding the store as a
/// publisher's (see [`crate::store::lease`]) and recording the release in it.
pub fn pack_stored_release(
    store: &LocalStore,
    index: &Index,
    written: &HashSet<Object>,
    cap: u64,
    warn: &crate::store::Warn,
) -> Result<PackReport> {
    let hold = crate::store::lease::Hold::publish(std::sync::Arc::new(store.clone()), warn)?;
    let report = pack_release(store, index, written, cap)?;
    crate::prune::releases::record(store, index.as_bytes())?;
    hold.release()?;
    Ok(report)
}

/// Writes the loose file of every object `index` needs that only a pack holds, as
/// casync and older readers want them; returns how many it wrote.
pub fn unpack(store: &LocalStore, index: &Index) -> Result<u64> {
    let packed = catalogue(store)?;
    let (chunks, deltas, tree) = objects(index);
    let mut written = 0;
    for object in chunks.into_iter().chain(deltas).chain(tree) {
        let name = object.loose_name();
        if store.read_object(&name, max_stored())?.is_some() {
            continue;
        }
        let place = packed.get(&object).ok_or_else(|| {
            Error::Integrity(format!(
                "{}: {name} is in neither the store's loose files nor its packs",
                store.dir().display()
            ))
        })?;
        let bytes = read_packed(store, place)?;
        crate::store::WriteStore::put(store, &name, &bytes)?;
        written += 1;
    }
    store.sync()?;
    Ok(written)
}
