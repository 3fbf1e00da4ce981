//! The index: a fixed header and a table of fixed-size chunk records sorted by image
//! offset, so a reader can find the chunk holding any byte by binary search.

pub mod format;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::chunker::{ChunkParams, ALIGN};
use crate::error::{Error, IoContext, Result};
use crate::layout::{Cutting, FsKind, LayoutSummary, RegionTally};
use crate::verity::{self, Geometry, VerityParams};
use format::*;

/// What the header says about the image and how it was chunked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub image_size: u64,
    pub chunk_count: u64,
    pub params: ChunkParams,
    pub align: u32,
    /// Size of the largest chunk that is not all zero.
    pub largest_chunk: u32,
    pub fs_kind: FsKind,
    /// How the cuts were chosen; with the filesystem's regions when it was analysed.
    pub layout: LayoutSummary,
    /// Monotonic release number; extract can refuse older ones (rollback protection).
    pub release: u64,
    pub verity: VerityInfo,
}

/// The region tallies of a summary, with the header fields that hold them.
fn tallies(s: &LayoutSummary) -> [(&Field, &RegionTally); 4] {
    [
        (&H_METADATA, &s.metadata),
        (&H_DATA, &s.data),
        (&H_COMPRESSED, &s.compressed),
        (&H_FREE, &s.free),
    ]
}

fn decode_tally(b: &[u8]) -> RegionTally {
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[..4]);
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[4..12]);
    RegionTally {
        regions: u32::from_le_bytes(n),
        bytes: u64::from_le_bytes(v),
    }
}

fn encode_tally(t: &RegionTally) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&t.regions.to_le_bytes());
    b[4..].copy_from_slice(&t.bytes.to_le_bytes());
    b
}

/// The image's dm-verity hash tree: SHA-256, 4096-byte blocks, hash type 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityInfo {
    /// The image zero-padded to whole 4096-byte blocks, in blocks.
    pub data_blocks: u64,
    /// Bytes of the hash area (all levels, without the superblock).
    pub tree_size: u64,
    pub root: [u8; 32],
    pub uuid: [u8; 16],
    pub salt: Vec<u8>,
}

impl VerityInfo {
    pub fn params(&self) -> VerityParams {
        VerityParams {
            salt: self.salt.clone(),
            uuid: self.uuid,
        }
    }

    pub fn root_hex(&self) -> String {
        ChunkId(self.root).to_hex()
    }

    /// Bytes extract writes: the image padded to whole blocks.
    pub fn padded_size(&self) -> u64 {
        self.data_blocks * crate::verity::BLOCK
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRecord {
    pub offset: u64,
    pub size: u32,
    /// Bytes of the chunk file in the store: what fetching it transfers. Zero for zero
    /// chunks and for parts of a gathered chunk.
    pub stored_size: u32,
    pub flags: u32,
    /// SHA-256 of the record's own bytes, also for a part of a gathered chunk.
    pub id: ChunkId,
    /// For a part of a gathered chunk: that chunk, and where in it these bytes are.
    pub part: Option<Part>,
}

/// What a store holds as one chunk file and a fetch transfers: a record's own chunk, or
/// the gathered chunk a part belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// For a gathered chunk, where its first part is in the image.
    pub offset: u64,
    pub size: u32,
    pub stored_size: u32,
    pub id: ChunkId,
}

/// The place of a record's bytes inside a gathered chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub gathered: Unit,
    /// Offset of the record's bytes within the gathered chunk.
    pub at: u32,
}

impl ChunkRecord {
    pub fn zero(offset: u64, size: u32) -> ChunkRecord {
        ChunkRecord {
            offset,
            size,
            stored_size: 0,
            flags: FLAG_ZERO,
            id: ChunkId::default(),
            part: None,
        }
    }

    /// A record whose bytes are stored in a chunk file of their own.
    pub fn stored(offset: u64, size: u32, stored_size: u32, id: ChunkId) -> ChunkRecord {
        ChunkRecord {
            offset,
            size,
            stored_size,
            flags: 0,
            id,
            part: None,
        }
    }

    /// A record whose bytes are stored only as part of `gathered`, at `at` in it.
    pub fn gathered(offset: u64, size: u32, id: ChunkId, gathered: Unit, at: u32) -> ChunkRecord {
        ChunkRecord {
            offset,
            size,
            stored_size: 0,
            flags: FLAG_GATHERED,
            id,
            part: Some(Part { gathered, at }),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.flags & FLAG_ZERO != 0
    }

    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }

    /// The chunk file a fetch of this record transfers.
    pub fn unit(&self) -> Unit {
        match self.part {
            Some(p) => p.gathered,
            None => Unit {
                offset: self.offset,
                size: self.size,
                stored_size: self.stored_size,
                id: self.id,
            },
        }
    }

    /// This record's bytes out of its unit's (see [`ChunkRecord::unit`]), checked
    /// against its id; a copy of the unit when the record is not a part.
    pub fn take_from(&self, unit: &VerifiedChunk) -> Result<VerifiedChunk> {
        let Some(p) = self.part else {
            return Ok(unit.clone());
        };
        let at = p.at as usize;
        let bytes = unit
            .data()
            .get(at..at + self.size as usize)
            .ok_or_else(|| Error::BadChunk {
                id: p.gathered.id,
                offset: self.offset,
                reason: format!(
                    "gathered chunk of {} bytes has no part of {} bytes at {at}",
                    unit.data().len(),
                    self.size
                ),
            })?;
        VerifiedChunk::verify(self.id, self.offset, bytes.to_vec())
    }

    /// Decodes the record's own fields; the gathered chunk of a part is filled in by
    /// [`Index::record`].
    fn decode(b: &[u8]) -> (ChunkRecord, u32) {
        let mut id = [0u8; 32];
        id.copy_from_slice(slice(b, &R_ID));
        let r = ChunkRecord {
            offset: get_u64(b, &R_OFFSET),
            size: get_u32(b, &R_SIZE),
            stored_size: get_u32(b, &R_STORED_SIZE),
            flags: get_u32(b, &R_FLAGS),
            id: ChunkId(id),
            part: None,
        };
        (r, get_u32(b, &R_PART_OFFSET))
    }

    fn encode(&self, b: &mut [u8]) {
        put(b, &R_OFFSET, &self.offset.to_le_bytes());
        put(b, &R_SIZE, &self.size.to_le_bytes());
        put(b, &R_STORED_SIZE, &self.stored_size.to_le_bytes());
        put(b, &R_FLAGS, &self.flags.to_le_bytes());
        let at = self.part.map_or(0, |p| p.at);
        put(b, &R_PART_OFFSET, &at.to_le_bytes());
        put(b, &R_ID, &self.id.0);
    }
}

impl Unit {
    fn decode(b: &[u8]) -> (Unit, u32, u32) {
        let (r, at) = ChunkRecord::decode(b);
        let unit = Unit {
            offset: r.offset,
            size: r.size,
            stored_size: r.stored_size,
            id: r.id,
        };
        (unit, r.flags, at)
    }

    fn encode(&self, b: &mut [u8]) {
        ChunkRecord::stored(self.offset, self.size, self.stored_size, self.id).encode(b)
    }
}

/// Largest chunk that is not all zero: bounds the memory one chunk may take.
pub const MAX_CHUNK: u32 = 16 << 20;

/// Largest stored size accepted for a chunk of `size` bytes: zstd's worst-case bound.
pub fn stored_size_bound(size: u32) -> u64 {
    let size = u64::from(size);
    size + size / 128 + 1024
}

/// One chunk of a delta's base run: its id and size (a seed finds it by id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BasePiece {
    pub id: ChunkId,
    pub size: u32,
}

impl BasePiece {
    fn decode(b: &[u8]) -> BasePiece {
        let mut id = [0u8; 32];
        id.copy_from_slice(slice(b, &E_ID));
        BasePiece {
            id: ChunkId(id),
            size: get_u32(b, &E_SIZE),
        }
    }

    fn encode(&self, b: &mut [u8]) {
        put(b, &E_ID, &self.id.0);
        put(b, &E_SIZE, &self.size.to_le_bytes());
    }
}

/// The name of a base run: the id of its one chunk, or for a longer run the SHA-256 of
/// "blockcast base run" followed by its entries as the base-run table holds them.
pub fn base_run_id(run: &[BasePiece]) -> ChunkId {
    if let [one] = run {
        return one.id;
    }
    let mut h = Sha256::new();
    h.update(b"blockcast base run");
    let mut entry = [0u8; BASE_ENTRY_SIZE];
    for p in run {
        p.encode(&mut entry);
        h.update(entry);
    }
    ChunkId(h.finalize().into())
}

/// Another way to get a chunk file: a delta, encoded against the bytes of a run of chunks
/// of earlier releases that a seed may hold (see `docs/FORMAT.md`, Deltas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Image offset of a record whose chunk file (its own, or its gathered chunk) the
    /// delta rebuilds.
    pub offset: u64,
    /// The base run's name (see [`base_run_id`]): what the delta file is stored under.
    pub base: ChunkId,
    /// Bytes of the base run: its chunks' bytes, concatenated.
    pub base_size: u32,
    /// Bytes of the delta file in the store.
    pub stored_size: u32,
    /// The chunks whose bytes, in this order, are the base: at least one.
    pub run: Arc<[BasePiece]>,
}

impl Delta {
    /// A delta of the chunk file at `offset` against `run`, with its name and size.
    pub fn new(offset: u64, run: Vec<BasePiece>, stored_size: u32) -> Delta {
        Delta {
            offset,
            base: base_run_id(&run),
            base_size: run.iter().map(|p| p.size).sum(),
            stored_size,
            run: run.into(),
        }
    }

    /// The base, as errors and warnings name it.
    pub fn base_name(&self) -> String {
        match self.run.len() {
            0 | 1 => format!("chunk {}", self.base),
            n => format!("base run {} ({n} chunks)", self.base),
        }
    }

    /// The record's fields: the delta without its run, and the count of its run's entries.
    fn decode(b: &[u8]) -> (Delta, u32, u32) {
        let mut base = [0u8; 32];
        base.copy_from_slice(slice(b, &D_BASE));
        let delta = Delta {
            offset: get_u64(b, &D_OFFSET),
            base: ChunkId(base),
            base_size: get_u32(b, &D_BASE_SIZE),
            stored_size: get_u32(b, &D_STORED_SIZE),
            run: Arc::from([]),
        };
        (delta, get_u32(b, &D_BASE_COUNT), get_u32(b, &D_RESERVED))
    }

    fn encode(&self, b: &mut [u8]) {
        put(b, &D_OFFSET, &self.offset.to_le_bytes());
        put(b, &D_BASE_SIZE, &self.base_size.to_le_bytes());
        put(b, &D_STORED_SIZE, &self.stored_size.to_le_bytes());
        put(b, &D_BASE_COUNT, &(self.run.len() as u32).to_le_bytes());
        put(b, &D_BASE, &self.base.0);
    }
}

/// An index read from bytes, checked in full; records are decoded on access.
#[derive(Clone)]
pub struct Index {
    path: PathBuf,
    bytes: Vec<u8>,
    header: Header,
    tree_count: usize,
    delta_count: usize,
    /// Entries of the base-run table, which follows the delta table (version 6).
    base_count: usize,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index> {
        Index::from_bytes(path, Index::read_bytes(path)?)
    }

    /// The raw bytes of an index file, at most `MAX_INDEX_SIZE + 1` of them (one byte over
    /// the cap tells an oversized file from one exactly at it): what a signature covers.
    pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
        let file = crate::image::open_readable(path, false).at(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_SIZE + 1)
            .read_to_end(&mut bytes)
            .at(path)?;
        Ok(bytes)
    }

    /// The length of the index whose first [`HEADER_SIZE`] bytes are `header`, read
    /// from its magic, version and record counts: lets a download stop at what the index
    /// claims, before it is whole.
    pub fn declared_len(header: &[u8]) -> Result<u64, String> {
        let h = header
            .get(..HEADER_SIZE)
            .ok_or_else(|| format!("shorter than the {HEADER_SIZE}-byte header"))?;
        if slice(h, &H_MAGIC) != MAGIC {
            return Err("not a blockcast index (bad magic)".into());
        }
        let records = get_u64(h, &H_CHUNK_COUNT)
            .checked_add(get_u64(h, &H_TREE_COUNT))
            .and_then(|n| n.checked_add(get_u64(h, &H_GATHER_COUNT)))
            .and_then(|n| n.checked_add(u64::from(get_u32(h, &H_DELTA_COUNT))));
        let entries = u64::from(get_u32(h, &H_BASE_COUNT)) * BASE_ENTRY_SIZE as u64;
        records
            .and_then(|n| n.checked_mul(RECORD_SIZE as u64))
            .and_then(|n| n.checked_add(HEADER_SIZE as u64))
            .and_then(|n| n.checked_add(entries))
            .filter(|&n| n <= MAX_INDEX_SIZE)
            .ok_or_else(|| "its record counts give an implausible size".into())
    }

    /// Whether `bytes` are whole as written: their length is the declared one and their
    /// digest matches. Cheap enough to decide whether a download must be retried.
    pub fn is_intact(bytes: &[u8]) -> bool {
        Index::intact_digest(bytes).is_some()
    }

    /// The digest an intact index (see [`Index::is_intact`]) records; `None` when the
    /// bytes are not one.
    pub fn intact_digest(bytes: &[u8]) -> Option<[u8; 32]> {
        if !Index::declared_len(bytes).is_ok_and(|n| n == bytes.len() as u64) {
            return None;
        }
        let d = digest(bytes);
        (d == slice(&bytes[..HEADER_SIZE], &H_DIGEST)).then_some(d)
    }

    /// `path` only names the index in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Index> {
        let bad = |reason: String| Error::BadIndex {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(bad(format!("larger than {MAX_INDEX_SIZE} bytes")));
        }
        if bytes.len() < HEADER_SIZE {
            return Err(bad(format!(
                "truncated: {} bytes, shorter than the {HEADER_SIZE}-byte header",
                bytes.len()
            )));
        }
        let h = &bytes[..HEADER_SIZE];
        if slice(h, &H_MAGIC) != MAGIC {
            return Err(bad("not a blockcast index (bad magic)".into()));
        }
        let version = get_u32(h, &H_VERSION);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version} is not supported (this build reads versions {OLDEST_VERSION} to {VERSION})"
            )));
        }
        let check = |f: &Field, want: u64| -> Result<()> {
            let got = if f.size == 4 {
                u64::from(get_u32(h, f))
            } else {
                get_u64(h, f)
            };
            if got != want {
                return Err(bad(format!("{} is {got}, expected {want}", f.name)));
            }
            Ok(())
        };
        check(&H_HEADER_SIZE, HEADER_SIZE as u64)?;
        check(&H_RECORD_SIZE, RECORD_SIZE as u64)?;
        check(&H_TABLE_OFFSET, HEADER_SIZE as u64)?;
        let cutting = match h[H_LAYOUT.offset] {
            LAYOUT_ALIGNED_CDC => Cutting::Aligned,
            LAYOUT_FILESYSTEM_V1 => Cutting::Filesystem {
                metadata_apart: false,
            },
            LAYOUT_FILESYSTEM => Cutting::Filesystem {
                metadata_apart: true,
            },
            other => return Err(bad(format!("unknown layout {other}"))),
        };
        let align = get_u32(h, &H_ALIGN);
        if cutting.is_filesystem_aware() {
            if !align.is_power_of_two() || align > 1 << 20 {
                return Err(bad(format!(
                    "align {align} is not a power of two up to 1 MiB"
                )));
            }
        } else {
            check(&H_ALIGN, ALIGN)?;
        }
        let chunk_count = get_u64(h, &H_CHUNK_COUNT);
        let tree_count = get_u64(h, &H_TREE_COUNT);
        let gather_count = get_u64(h, &H_GATHER_COUNT);
        if version < 4 && gather_count != 0 {
            return Err(bad(format!(
                "version {version} has no gathered chunks, yet gather_count is {gather_count}"
            )));
        }
        let delta_count = u64::from(get_u32(h, &H_DELTA_COUNT));
        if version < 5 && delta_count != 0 {
            return Err(bad(format!(
                "version {version} has no deltas, yet delta_count is {delta_count}"
            )));
        }
        let base_count = u64::from(get_u32(h, &H_BASE_COUNT));
        if version < VERSION_BASE_RUNS && base_count != 0 {
            return Err(bad(format!(
                "version {version} has no base-run table, yet base_count is {base_count}"
            )));
        }
        let table_len = (bytes.len() - HEADER_SIZE) as u64;
        let records = chunk_count
            .checked_add(tree_count)
            .and_then(|n| n.checked_add(gather_count))
            .and_then(|n| n.checked_add(delta_count));
        let tables = records
            .and_then(|n| n.checked_mul(RECORD_SIZE as u64))
            .and_then(|n| n.checked_add(base_count * BASE_ENTRY_SIZE as u64));
        if tables != Some(table_len) {
            return Err(bad(format!(
                "chunk count {chunk_count}, tree chunk count {tree_count}, gather count {gather_count}, delta count {delta_count} and base count {base_count} do not match the {table_len}-byte tables (truncated or corrupt)"
            )));
        }
        check(
            &H_TREE_OFFSET,
            HEADER_SIZE as u64 + chunk_count * RECORD_SIZE as u64,
        )?;
        let digest_field = slice(h, &H_DIGEST);
        if digest(&bytes) != digest_field {
            return Err(bad(
                "digest mismatch: the index is corrupt or truncated".into()
            ));
        }
        if slice(h, &H_RESERVED).iter().any(|&b| b != 0) {
            return Err(bad("reserved header bytes are not zero".into()));
        }
        if h[H_HASH.offset] != HASH_SHA256 || h[H_COMPRESSION.offset] != COMPRESSION_ZSTD {
            return Err(bad("unknown hash or compression algorithm".into()));
        }
        let fs_kind = FsKind::from_code(h[H_FS_KIND.offset])
            .ok_or_else(|| bad(format!("unknown filesystem kind {}", h[H_FS_KIND.offset])))?;
        let params = ChunkParams {
            min: get_u32(h, &H_CHUNK_MIN),
            avg: get_u32(h, &H_CHUNK_AVG),
            max: get_u32(h, &H_CHUNK_MAX),
        }
        .validate()
        .map_err(|e| match e {
            Error::Invalid(reason) => bad(reason),
            other => bad(other.to_string()),
        })?;
        let largest_chunk = get_u32(h, &H_LARGEST_CHUNK);
        if largest_chunk > MAX_CHUNK {
            return Err(bad(format!(
                "largest chunk {largest_chunk} exceeds the {MAX_CHUNK}-byte limit"
            )));
        }
        let image_size = get_u64(h, &H_IMAGE_SIZE);
        let data_blocks = image_size.div_ceil(verity::BLOCK);
        check(&H_DATA_BLOCKS, data_blocks)?;
        let tree_size = Geometry::new(data_blocks).tree_size();
        check(&H_TREE_SIZE, tree_size)?;
        let salt_size = usize::from(get_u16(h, &H_SALT_SIZE));
        if salt_size > verity::MAX_SALT {
            return Err(bad(format!("verity salt of {salt_size} bytes is too long")));
        }
        let salt_field = slice(h, &H_SALT);
        if salt_field[salt_size..].iter().any(|&b| b != 0) {
            return Err(bad("bytes past the verity salt are not zero".into()));
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(slice(h, &H_ROOT));
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(slice(h, &H_UUID));
        let header = Header {
            image_size,
            chunk_count,
            params,
            align,
            largest_chunk,
            fs_kind,
            layout: LayoutSummary {
                cutting,
                metadata: decode_tally(slice(h, &H_METADATA)),
                data: decode_tally(slice(h, &H_DATA)),
                compressed: decode_tally(slice(h, &H_COMPRESSED)),
                free: decode_tally(slice(h, &H_FREE)),
            },
            release: get_u64(h, &H_RELEASE),
            verity: VerityInfo {
                data_blocks,
                tree_size,
                root,
                uuid,
                salt: salt_field[..salt_size].to_vec(),
            },
        };
        let index = Index {
            path: path.to_path_buf(),
            bytes,
            header,
            tree_count: tree_count as usize,
            delta_count: delta_count as usize,
            base_count: base_count as usize,
        };
        index.check_gather_records()?;
        index.check_records()?;
        index.check_tree_records()?;
        index.check_delta_records()?;
        Ok(index)
    }

    /// Records must tile the image in order, every size must be plausible, and the parts
    /// of gathered chunks must fill them in order, one after the other.
    fn check_records(&self) -> Result<()> {
        let mut expected = 0u64;
        let mut largest = 0u32;
        let mut gathering = Gathering::default();
        for (i, raw) in self.raw_records().enumerate() {
            let (r, at) = ChunkRecord::decode(raw);
            let bad = |what: &str| Error::BadIndex {
                path: self.path.clone(),
                reason: format!("chunk record {i} (offset {}): {what}", r.offset),
            };
            if r.offset != expected {
                return Err(bad(&format!("expected offset {expected}")));
            }
            if r.size == 0 {
                return Err(bad("size is zero"));
            }
            if r.flags != 0 && r.flags != FLAG_ZERO && r.flags != FLAG_GATHERED {
                return Err(bad("unknown flags"));
            }
            if r.flags != FLAG_GATHERED && at != 0 {
                return Err(bad("part offset outside a gathered chunk"));
            }
            if r.is_zero() {
                if r.stored_size != 0 || r.id != ChunkId::default() {
                    return Err(bad("zero chunk with an id or stored size"));
                }
            } else if r.flags == FLAG_GATHERED {
                if r.stored_size != 0 {
                    return Err(bad("part of a gathered chunk with a stored size"));
                }
                gathering.take(self, &r, at).map_err(|e| bad(&e))?;
            } else {
                if r.size > self.header.largest_chunk {
                    return Err(bad("larger than the header's largest chunk"));
                }
                if r.stored_size == 0 || u64::from(r.stored_size) > stored_size_bound(r.size) {
                    return Err(bad("implausible stored size"));
                }
                largest = largest.max(r.size);
            }
            expected = r.end();
        }
        if expected != self.header.image_size {
            return Err(Error::BadIndex {
                path: self.path.clone(),
                reason: format!(
                    "chunks cover {expected} bytes but the image has {}",
                    self.header.image_size
                ),
            });
        }
        let filled = gathering.unit.is_none_or(|u| gathering.fill == u.size);
        if !filled || gathering.next != self.gathered_len() {
            return Err(Error::BadIndex {
                path: self.path.clone(),
                reason: format!(
                    "the parts fill {} of {} gathered chunks",
                    gathering.next - usize::from(!filled),
                    self.gathered_len()
                ),
            });
        }
        largest = self.gathered().map(|u| u.size).fold(largest, u32::max);
        if largest != self.header.largest_chunk {
            return Err(Error::BadIndex {
                path: self.path.clone(),
                reason: "largest_chunk does not match the chunk table".into(),
            });
        }
        Ok(())
    }

    /// Gather records must describe plausible chunk files; whether the parts fill them is
    /// checked with the chunk table.
    fn check_gather_records(&self) -> Result<()> {
        for (g, raw) in self.raw_gathered().enumerate() {
            let (u, flags, at) = Unit::decode(raw);
            let plausible = u.size > 0
                && u.size <= self.header.largest_chunk
                && u.stored_size > 0
                && u64::from(u.stored_size) <= stored_size_bound(u.size);
            if !plausible || flags != 0 || at != 0 {
                return Err(Error::BadIndex {
                    path: self.path.clone(),
                    reason: format!(
                        "gathered chunk {g} (first part at offset {}): bad size, stored size or flags",
                        u.offset
                    ),
                });
            }
        }
        Ok(())
    }

    /// Delta records are sorted by offset and base, each names the start of a record with a
    /// chunk file, sizes are plausible, and (version 6) each base run fills its share of the
    /// base-run table, is named by its digest and sums to its base size.
    fn check_delta_records(&self) -> Result<()> {
        let runs = self.version() >= VERSION_BASE_RUNS;
        let (cap, cap_name) = if runs {
            (MAX_BASE_RUN, "MAX_BASE_RUN")
        } else {
            (MAX_CHUNK, "MAX_CHUNK")
        };
        let mut previous: Option<(u64, ChunkId)> = None;
        let mut entries = 0usize;
        for (i, raw) in self.raw_deltas().enumerate() {
            let (d, count, reserved) = Delta::decode(raw);
            let bad = |what: &str| Error::BadIndex {
                path: self.path.clone(),
                reason: format!("delta record {i} (offset {}): {what}", d.offset),
            };
            if previous.is_some_and(|p| p >= (d.offset, d.base)) {
                return Err(bad("not after the previous delta record"));
            }
            previous = Some((d.offset, d.base));
            let record = self
                .find(d.offset)
                .map(|r| self.record(r))
                .filter(|r| r.offset == d.offset && !r.is_zero())
                .ok_or_else(|| bad("no record with a chunk file starts there"))?;
            let unit = record.unit();
            if reserved != 0 || (!runs && count != 0) || (runs && count == 0) {
                return Err(bad("bad base count or reserved bytes"));
            }
            if d.base_size == 0 || d.base_size > cap {
                return Err(bad(&format!(
                    "base size {} is 0 or above {cap_name} ({cap})",
                    d.base_size
                )));
            }
            if d.stored_size == 0 || u64::from(d.stored_size) > stored_size_bound(unit.size) {
                return Err(bad("implausible stored size"));
            }
            let run = self.run_at(entries, count as usize).ok_or_else(|| {
                bad(&format!(
                    "its {count} base entries run past the {}-entry base-run table",
                    self.base_count
                ))
            })?;
            entries += count as usize;
            let pieces: Vec<BasePiece> = run.collect();
            if runs {
                let mut total = 0u64;
                for p in &pieces {
                    if p.size == 0 {
                        return Err(bad("a base chunk of size 0"));
                    }
                    total += u64::from(p.size);
                }
                if total != u64::from(d.base_size) {
                    return Err(bad(&format!(
                        "its base chunks hold {total} bytes, its base size is {}",
                        d.base_size
                    )));
                }
                if base_run_id(&pieces) != d.base {
                    return Err(bad("its base is not the name of its base run"));
                }
            }
            if d.base == unit.id || pieces.iter().any(|p| p.id == unit.id) {
                return Err(bad("the base is the chunk itself"));
            }
        }
        if entries != self.base_count {
            return Err(Error::BadIndex {
                path: self.path.clone(),
                reason: format!(
                    "the delta records name {entries} base entries, the base-run table has {}",
                    self.base_count
                ),
            });
        }
        Ok(())
    }

    /// Tree records tile the hash area in pieces of at most `TREE_PIECE` bytes.
    fn check_tree_records(&self) -> Result<()> {
        let mut expected = 0u64;
        for (i, r) in self.tree_records().enumerate() {
            let bad = |what: &str| Error::BadIndex {
                path: self.path.clone(),
                reason: format!("tree record {i} (offset {}): {what}", r.offset),
            };
            if r.offset != expected {
                return Err(bad(&format!("expected offset {expected}")));
            }
            if r.size == 0 || u64::from(r.size) > TREE_PIECE || r.flags != 0 {
                return Err(bad("bad size or flags"));
            }
            if r.stored_size == 0 || u64::from(r.stored_size) > stored_size_bound(r.size) {
                return Err(bad("implausible stored size"));
            }
            expected = r.end();
        }
        if expected != self.header.verity.tree_size {
            return Err(Error::BadIndex {
                path: self.path.clone(),
                reason: format!(
                    "tree chunks cover {expected} bytes but the hash tree has {}",
                    self.header.verity.tree_size
                ),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index's bytes, as read or written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The format version the index was written in.
    pub fn version(&self) -> u32 {
        get_u32(&self.bytes, &H_VERSION)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of chunk records (the tree's are counted apart).
    /// The index's whole-file digest, as its header records it: names this exact index.
    pub fn digest(&self) -> [u8; 32] {
        let mut d = [0u8; 32];
        d.copy_from_slice(slice(&self.bytes[..HEADER_SIZE], &H_DIGEST));
        d
    }

    pub fn len(&self) -> usize {
        self.header.chunk_count as usize
    }

    pub fn tree_len(&self) -> usize {
        self.tree_count
    }

    /// Number of gathered chunks.
    pub fn gathered_len(&self) -> usize {
        (self.bytes.len() - HEADER_SIZE - self.base_count * BASE_ENTRY_SIZE) / RECORD_SIZE
            - self.len()
            - self.tree_count
            - self.delta_count
    }

    /// Number of deltas.
    pub fn deltas_len(&self) -> usize {
        self.delta_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self, first: usize, count: usize) -> std::slice::ChunksExact<'_, u8> {
        let at = HEADER_SIZE + first * RECORD_SIZE;
        self.bytes[at..at + count * RECORD_SIZE].chunks_exact(RECORD_SIZE)
    }

    /// Row `i` of the tables: the chunk table, then the tree table, then the gather table.
    fn row(&self, i: usize) -> &[u8] {
        let at = HEADER_SIZE + i * RECORD_SIZE;
        &self.bytes[at..at + RECORD_SIZE]
    }

    fn raw_records(&self) -> std::slice::ChunksExact<'_, u8> {
        self.table(0, self.len())
    }

    fn raw_gathered(&self) -> std::slice::ChunksExact<'_, u8> {
        self.table(self.len() + self.tree_count, self.gathered_len())
    }

    fn raw_deltas(&self) -> std::slice::ChunksExact<'_, u8> {
        self.table(
            self.len() + self.tree_count + self.gathered_len(),
            self.delta_count,
        )
    }

    /// Entries `first..first + count` of the base-run table; `None` past its end.
    fn run_at(&self, first: usize, count: usize) -> Option<impl Iterator<Item = BasePiece> + '_> {
        let end = first.checked_add(count).filter(|&e| e <= self.base_count)?;
        let at = self.bytes.len() - self.base_count * BASE_ENTRY_SIZE;
        Some(
            self.bytes[at + first * BASE_ENTRY_SIZE..at + end * BASE_ENTRY_SIZE]
                .chunks_exact(BASE_ENTRY_SIZE)
                .map(BasePiece::decode),
        )
    }

    /// The deltas, sorted by offset and base, each with its base run (a version-5 delta's
    /// is its one base chunk).
    pub fn deltas(&self) -> std::vec::IntoIter<Delta> {
        let mut first = 0;
        let mut out = Vec::with_capacity(self.delta_count);
        for raw in self.raw_deltas() {
            let (mut d, count, _) = Delta::decode(raw);
            let count = count as usize;
            d.run = if count == 0 {
                Arc::from([BasePiece {
                    id: d.base,
                    size: d.base_size,
                }])
            } else {
                self.run_at(first, count)
                    .map(Iterator::collect)
                    .unwrap_or_default()
            };
            first += count;
            out.push(d);
        }
        out.into_iter()
    }

    /// The deltas of each chunk file, by its id, in index order.
    pub fn deltas_by_unit(&self) -> HashMap<ChunkId, Vec<Delta>> {
        let mut by_unit: HashMap<ChunkId, Vec<Delta>> = HashMap::new();
        for d in self.deltas() {
            if let Some(i) = self.find(d.offset) {
                by_unit.entry(self.record(i).unit().id).or_default().push(d);
            }
        }
        by_unit
    }

    /// Record `i`, with the gathered chunk of a part filled in.
    pub fn record(&self, i: usize) -> ChunkRecord {
        self.resolve(ChunkRecord::decode(self.row(i)))
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = ChunkRecord> + '_ {
        self.raw_records()
            .map(|b| self.resolve(ChunkRecord::decode(b)))
    }

    /// The hash tree's chunks; their offsets are within the hash area.
    pub fn tree_records(&self) -> impl ExactSizeIterator<Item = ChunkRecord> + '_ {
        self.table(self.len(), self.tree_count)
            .map(|b| ChunkRecord::decode(b).0)
    }

    /// Tree record `i`.
    pub fn tree_record(&self, i: usize) -> Option<ChunkRecord> {
        (i < self.tree_count).then(|| ChunkRecord::decode(self.row(self.len() + i)).0)
    }

    /// The tree records overlapping bytes `[start, end)` of the hash area.
    pub fn tree_records_in(&self, start: u64, end: u64) -> Vec<ChunkRecord> {
        let (mut lo, mut hi) = (0, self.tree_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.tree_record(mid) {
                Some(r) if r.end() <= start => lo = mid + 1,
                _ => hi = mid,
            }
        }
        (lo..self.tree_count)
            .map_while(|i| self.tree_record(i).filter(|r| r.offset < end))
            .collect()
    }

    /// The gathered chunks, in the order of their first parts.
    pub fn gathered(&self) -> impl ExactSizeIterator<Item = Unit> + '_ {
        self.raw_gathered().map(|b| Unit::decode(b).0)
    }

    /// The gathered chunk a part at `offset` belongs to: the last one whose first part
    /// starts at or before it, since gathered chunks do not interleave.
    fn gathered_at(&self, offset: u64) -> Option<Unit> {
        let first = self.len() + self.tree_count;
        let g = self.last_at_or_before(first, self.gathered_len(), offset)?;
        Some(Unit::decode(self.row(first + g)).0)
    }

    /// Of the `rows` records from row `first` of the tables, sorted by offset, the number
    /// of the last one that starts at or before `offset`: a binary search that reads the
    /// offsets alone.
    fn last_at_or_before(&self, first: usize, rows: usize, offset: u64) -> Option<usize> {
        let start = |i: usize| get_u64(self.row(first + i), &R_OFFSET);
        let (mut lo, mut hi) = (0, rows);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if start(mid) <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    fn resolve(&self, (mut r, at): (ChunkRecord, u32)) -> ChunkRecord {
        if r.flags == FLAG_GATHERED {
            r.part = self
                .gathered_at(r.offset)
                .map(|gathered| Part { gathered, at });
        }
        r
    }

    /// The record holding image byte `offset`, by binary search.
    pub fn find(&self, offset: u64) -> Option<usize> {
        if offset >= self.header.image_size {
            return None;
        }
        // The records tile the image from 0, so the last one starting at or before
        // `offset` holds it.
        self.last_at_or_before(0, self.len(), offset)
    }
}

/// Where the check of the chunk table stands in the gathered chunks: parts must fill
/// each in turn, from its first byte to its last.
#[derive(Default)]
struct Gathering {
    /// The gathered chunk being filled.
    unit: Option<Unit>,
    fill: u32,
    /// Number of the next gathered chunk to start.
    next: usize,
}

impl Gathering {
    fn take(&mut self, index: &Index, r: &ChunkRecord, at: u32) -> Result<(), String> {
        let filling = self.unit.filter(|u| self.fill < u.size);
        let unit = match filling {
            Some(u) => u,
            None => {
                let raw = index
                    .raw_gathered()
                    .nth(self.next)
                    .ok_or("a part beyond the gathered chunks")?;
                let u = Unit::decode(raw).0;
                if u.offset != r.offset {
                    return Err(format!(
                        "starts gathered chunk {}, whose first part is at {}",
                        self.next, u.offset
                    ));
                }
                self.next += 1;
                self.fill = 0;
                self.unit = Some(u);
                u
            }
        };
        if at != self.fill {
            return Err(format!(
                "part offset {at}, expected {} in the gathered chunk",
                self.fill
            ));
        }
        self.fill = at
            .checked_add(r.size)
            .filter(|&end| end <= unit.size)
            .ok_or("part runs past its gathered chunk")?;
        Ok(())
    }
}

/// SHA-256 of the whole index with the digest field taken as zeros.
fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&bytes[..H_DIGEST.offset]);
    h.update([0u8; 32]);
    h.update(&bytes[H_DIGEST.offset + H_DIGEST.size..]);
    h.finalize().into()
}

/// Serialises a header, its chunk records (tiling the image in order), its tree records
/// (tiling the hash area in order), the gathered chunks its parts name (in the order of
/// their first parts) and its deltas (sorted by offset and base). Without deltas the
/// index is written as version 4.
pub fn encode(
    header: &Header,
    records: &[ChunkRecord],
    tree: &[ChunkRecord],
    gathered: &[Unit],
    deltas: &[Delta],
) -> Vec<u8> {
    let tables = records.len() + tree.len() + gathered.len() + deltas.len();
    let entries: usize = deltas.iter().map(|d| d.run.len()).sum();
    let mut bytes = vec![0u8; HEADER_SIZE + tables * RECORD_SIZE + entries * BASE_ENTRY_SIZE];
    {
        let h = &mut bytes[..HEADER_SIZE];
        put(h, &H_MAGIC, &MAGIC);
        let version = if deltas.is_empty() {
            VERSION_WITHOUT_DELTAS
        } else {
            VERSION
        };
        put(h, &H_VERSION, &version.to_le_bytes());
        put(h, &H_HEADER_SIZE, &(HEADER_SIZE as u32).to_le_bytes());
        put(h, &H_RECORD_SIZE, &(RECORD_SIZE as u32).to_le_bytes());
        put(h, &H_IMAGE_SIZE, &header.image_size.to_le_bytes());
        put(h, &H_CHUNK_COUNT, &(records.len() as u64).to_le_bytes());
        put(h, &H_TABLE_OFFSET, &(HEADER_SIZE as u64).to_le_bytes());
        put(h, &H_CHUNK_MIN, &header.params.min.to_le_bytes());
        put(h, &H_CHUNK_AVG, &header.params.avg.to_le_bytes());
        put(h, &H_CHUNK_MAX, &header.params.max.to_le_bytes());
        put(h, &H_ALIGN, &header.align.to_le_bytes());
        put(h, &H_LARGEST_CHUNK, &header.largest_chunk.to_le_bytes());
        h[H_HASH.offset] = HASH_SHA256;
        h[H_COMPRESSION.offset] = COMPRESSION_ZSTD;
        h[H_FS_KIND.offset] = header.fs_kind.code();
        h[H_LAYOUT.offset] = match header.layout.cutting {
            Cutting::Aligned => LAYOUT_ALIGNED_CDC,
            Cutting::Filesystem {
                metadata_apart: false,
            } => LAYOUT_FILESYSTEM_V1,
            Cutting::Filesystem {
                metadata_apart: true,
            } => LAYOUT_FILESYSTEM,
        };
        for (f, t) in tallies(&header.layout) {
            put(h, f, &encode_tally(t));
        }
        let v = &header.verity;
        put(h, &H_RELEASE, &header.release.to_le_bytes());
        put(h, &H_DATA_BLOCKS, &v.data_blocks.to_le_bytes());
        put(h, &H_TREE_COUNT, &(tree.len() as u64).to_le_bytes());
        put(h, &H_GATHER_COUNT, &(gathered.len() as u64).to_le_bytes());
        put(h, &H_DELTA_COUNT, &(deltas.len() as u32).to_le_bytes());
        put(h, &H_BASE_COUNT, &(entries as u32).to_le_bytes());
        let tree_offset = (HEADER_SIZE + records.len() * RECORD_SIZE) as u64;
        put(h, &H_TREE_OFFSET, &tree_offset.to_le_bytes());
        put(h, &H_TREE_SIZE, &v.tree_size.to_le_bytes());
        put(h, &H_ROOT, &v.root);
        put(h, &H_UUID, &v.uuid);
        let salt = &v.salt[..v.salt.len().min(verity::MAX_SALT)];
        put(h, &H_SALT_SIZE, &(salt.len() as u16).to_le_bytes());
        h[H_SALT.offset..H_SALT.offset + salt.len()].copy_from_slice(salt);
    }
    let mut out = bytes[HEADER_SIZE..].chunks_exact_mut(RECORD_SIZE);
    for (r, b) in records.iter().chain(tree).zip(&mut out) {
        r.encode(b);
    }
    for (u, b) in gathered.iter().zip(&mut out) {
        u.encode(b);
    }
    for (d, b) in deltas.iter().zip(&mut out) {
        d.encode(b);
    }
    let at = bytes.len() - entries * BASE_ENTRY_SIZE;
    let pieces = deltas.iter().flat_map(|d| d.run.iter());
    for (p, b) in pieces.zip(bytes[at..].chunks_exact_mut(BASE_ENTRY_SIZE)) {
        p.encode(b);
    }
    let d = digest(&bytes);
    put(&mut bytes, &H_DIGEST, &d);
    bytes
}

/// A small valid index of every record kind, for other modules' tests.
#[cfg(test)]
pub(crate) fn sample_bytes() -> Vec<u8> {
    let (header, records, tree, gathered) = tests::sample();
    encode(&header, &records, &tree, &gathered, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of every kind, unaligned, with one gathered chunk whose two parts have a
    /// zero run and nothing else between them.
    pub(super) fn sample() -> (Header, Vec<ChunkRecord>, Vec<ChunkRecord>, Vec<Unit>) {
        let gathered = Unit {
            offset: 5000,
            size: 7096,
            stored_size: 200,
            id: ChunkId([9; 32]),
        };
        let records = vec![
            ChunkRecord::stored(0, 5000, 300, ChunkId([1; 32])),
            ChunkRecord::gathered(5000, 4096, ChunkId([7; 32]), gathered, 0),
            ChunkRecord::zero(9096, 12345),
            ChunkRecord::gathered(21441, 3000, ChunkId([8; 32]), gathered, 4096),
            ChunkRecord::stored(24441, 7, 16, ChunkId([2; 32])),
        ];
        let header = Header {
            image_size: 24448,
            chunk_count: 5,
            params: ChunkParams::from_avg(65536).unwrap(),
            align: ALIGN as u32,
            largest_chunk: 7096,
            fs_kind: FsKind::Squashfs,
            layout: LayoutSummary::default(),
            release: 7,
            verity: VerityInfo {
                data_blocks: 6,
                tree_size: 4096,
                root: [3; 32],
                uuid: [4; 16],
                salt: vec![5; 32],
            },
        };
        let tree = vec![ChunkRecord::stored(0, 4096, 100, ChunkId([6; 32]))];
        (header, records, tree, vec![gathered])
    }

    #[test]
    fn round_trips_unaligned_records() {
        let (header, records, tree, gathered) = sample();
        let bytes = encode(&header, &records, &tree, &gathered, &[]);
        let index = Index::from_bytes(Path::new("t"), bytes).unwrap();
        assert_eq!(index.header(), &header);
        assert_eq!(index.version(), VERSION_WITHOUT_DELTAS);
        assert_eq!(index.records().collect::<Vec<_>>(), records);
        assert_eq!(index.tree_records().collect::<Vec<_>>(), tree);
        assert_eq!(index.gathered().collect::<Vec<_>>(), gathered);
        assert_eq!(index.record(3).unit(), gathered[0]);
        assert_eq!(index.record(3).part.map(|p| p.at), Some(4096));
        assert_eq!(index.find(0), Some(0));
        assert_eq!(index.find(4999), Some(0));
        assert_eq!(index.find(5000), Some(1));
        assert_eq!(index.find(24447), Some(4));
        assert_eq!(index.find(24448), None);
    }

    fn piece(id: u8, size: u32) -> BasePiece {
        BasePiece {
            id: ChunkId([id; 32]),
            size,
        }
    }

    fn deltas() -> Vec<Delta> {
        // Two for the first chunk (one against a run of two chunks), one for the gathered
        // chunk (named by its first part).
        let mut d = vec![
            Delta::new(0, vec![piece(20, 4000)], 50),
            Delta::new(0, vec![piece(21, 6000), piece(23, 1000)], 60),
            Delta::new(5000, vec![piece(22, 7000)], 40),
        ];
        d.sort_by_key(|d| (d.offset, d.base));
        d
    }

    /// `bytes` (deltas whose runs are one chunk each) as version 5 wrote them: no base
    /// counts, no base-run table.
    fn as_version_5(mut bytes: Vec<u8>) -> Vec<u8> {
        let entries = get_u32(&bytes, &H_BASE_COUNT) as usize;
        let deltas = get_u32(&bytes, &H_DELTA_COUNT) as usize;
        bytes.truncate(bytes.len() - entries * BASE_ENTRY_SIZE);
        let first = bytes.len() - deltas * RECORD_SIZE;
        for r in bytes[first..].chunks_exact_mut(RECORD_SIZE) {
            put(r, &D_BASE_COUNT, &0u32.to_le_bytes());
        }
        put(&mut bytes, &H_VERSION, &5u32.to_le_bytes());
        put(&mut bytes, &H_BASE_COUNT, &0u32.to_le_bytes());
        let d = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &d);
        bytes
    }

    #[test]
    fn deltas_round_trip_with_their_base_runs() {
        let (header, records, tree, gathered) = sample();
        let bytes = encode(&header, &records, &tree, &gathered, &deltas());
        assert_eq!(
            Index::declared_len(&bytes[..HEADER_SIZE]),
            Ok(bytes.len() as u64)
        );
        let index = Index::from_bytes(Path::new("t"), bytes).unwrap();
        assert_eq!(index.version(), VERSION);
        assert_eq!(index.deltas().collect::<Vec<_>>(), deltas());
        assert_eq!(index.gathered().collect::<Vec<_>>(), gathered);
        let by_unit = index.deltas_by_unit();
        assert_eq!(by_unit[&ChunkId([1; 32])], deltas()[..2]);
        assert_eq!(by_unit[&gathered[0].id], deltas()[2..]);
        assert_eq!(by_unit.len(), 2);
        let run = &deltas()[1];
        assert_eq!(run.run.len(), 2);
        assert_eq!(run.base_size, 7000);
        assert_ne!(run.base, ChunkId([21; 32]));
        assert_eq!(deltas()[0].base, ChunkId([20; 32]));
    }

    #[test]
    fn version_5_deltas_are_still_read() {
        let (header, records, tree, gathered) = sample();
        let single: Vec<Delta> = deltas().into_iter().filter(|d| d.run.len() == 1).collect();
        let bytes = as_version_5(encode(&header, &records, &tree, &gathered, &single));
        assert_eq!(
            Index::declared_len(&bytes[..HEADER_SIZE]),
            Ok(bytes.len() as u64)
        );
        let index = Index::from_bytes(Path::new("t"), bytes).unwrap();
        assert_eq!(index.version(), 5);
        assert_eq!(index.deltas().collect::<Vec<_>>(), single);
    }

    #[test]
    fn rejects_deltas_that_name_no_chunk_file_or_are_out_of_order() {
        let reject_bytes = |bytes: Vec<u8>, why: &str| {
            let err = Index::from_bytes(Path::new("t"), bytes).err();
            let err = err.expect(why).to_string();
            assert!(err.contains(why), "{err} lacks {why}");
        };
        let reject = |d: Vec<Delta>, why: &str| {
            let (h, r, t, g) = sample();
            reject_bytes(encode(&h, &r, &t, &g, &d), why);
        };
        let mut d = deltas();
        d.swap(0, 1);
        reject(d, "not after the previous delta record");
        let mut d = deltas();
        d[1] = d[0].clone();
        reject(d, "not after the previous delta record");
        for offset in [1, 9096, 24448] {
            let mut d = deltas();
            d[2].offset = offset;
            reject(d, "no record with a chunk file starts there");
        }
        let mut d = deltas();
        d[2] = Delta::new(5000, vec![piece(9, 100)], 40);
        reject(d, "the base is the chunk itself");
        let mut d = deltas();
        d[1] = Delta::new(0, vec![piece(1, 5000), piece(20, 100)], 40);
        d.sort_by_key(|d| (d.offset, d.base));
        reject(d, "the base is the chunk itself");
        for size in [0, MAX_BASE_RUN + 1] {
            let mut d = deltas();
            d[2] = Delta::new(5000, vec![piece(22, size)], 40);
            reject(d, "is 0 or above MAX_BASE_RUN");
        }
        for stored_size in [0, 9000] {
            let mut d = deltas();
            d[0].stored_size = stored_size;
            reject(d, "implausible stored size");
        }
        let mut d = deltas();
        let two = d.iter().position(|d| d.run.len() == 2).unwrap();
        d[two].base_size += 1;
        reject(d, "its base chunks hold 7000 bytes, its base size is 7001");
        let mut d = deltas();
        d[two].run = Arc::from([piece(21, 6000), piece(24, 1000)]);
        reject(d, "its base is not the name of its base run");
        // A run of one chunk is named by that chunk.
        let mut d = deltas();
        d[2].base = ChunkId([25; 32]);
        reject(d, "its base is not the name of its base run");
        let (h, r, t, g) = sample();
        let mut bytes = encode(&h, &r, &t, &g, &deltas());
        let first = bytes.len() - 4 * BASE_ENTRY_SIZE - 3 * RECORD_SIZE;
        put(&mut bytes[first..], &D_BASE_COUNT, &0u32.to_le_bytes());
        let digest_now = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &digest_now);
        reject_bytes(bytes, "bad base count or reserved bytes");
        let mut bytes = encode(&h, &r, &t, &g, &deltas());
        put(&mut bytes, &H_BASE_COUNT, &5u32.to_le_bytes());
        let digest_now = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &digest_now);
        reject_bytes(bytes, "do not match the");
        // One more entry in the table than the runs use, and the last run one entry
        // longer than the table holds.
        let mut bytes = encode(&h, &r, &t, &g, &deltas());
        bytes.extend_from_slice(&[0; BASE_ENTRY_SIZE]);
        put(&mut bytes, &H_BASE_COUNT, &5u32.to_le_bytes());
        let digest_now = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &digest_now);
        reject_bytes(
            bytes,
            "the delta records name 4 base entries, the base-run table has 5",
        );
        let mut bytes = encode(&h, &r, &t, &g, &deltas());
        let last = bytes.len() - 4 * BASE_ENTRY_SIZE - RECORD_SIZE;
        put(&mut bytes[last..], &D_BASE_COUNT, &2u32.to_le_bytes());
        let digest_now = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &digest_now);
        reject_bytes(
            bytes,
            "its 2 base entries run past the 4-entry base-run table",
        );
        let mut bytes = encode(&h, &r, &t, &g, &deltas());
        put(&mut bytes, &H_VERSION, &4u32.to_le_bytes());
        let d = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &d);
        reject_bytes(bytes, "version 4 has no deltas");
        let single: Vec<Delta> = deltas().into_iter().filter(|d| d.run.len() == 1).collect();
        let mut bytes = as_version_5(encode(&h, &r, &t, &g, &single));
        put(&mut bytes, &H_BASE_COUNT, &1u32.to_le_bytes());
        let d = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &d);
        reject_bytes(bytes, "version 5 has no base-run table");
    }

    /// A part's bytes come out of its gathered chunk, and must hash to its own id.
    #[test]
    fn parts_are_taken_from_their_gathered_chunk() {
        let (a, b) = (vec![1u8; 4096], vec![2u8; 3000]);
        let whole = [a.clone(), b.clone()].concat();
        let unit = Unit {
            offset: 5000,
            size: whole.len() as u32,
            stored_size: 100,
            id: ChunkId::of(&whole),
        };
        let whole = VerifiedChunk::verify(unit.id, 5000, whole).unwrap();
        let second = ChunkRecord::gathered(21441, 3000, ChunkId::of(&b), unit, 4096);
        assert_eq!(second.take_from(&whole).unwrap().data(), &b[..]);
        let wrong = ChunkRecord::gathered(21441, 3000, ChunkId::of(&a), unit, 4096);
        assert!(wrong.take_from(&whole).is_err());
        let past = ChunkRecord::gathered(21441, 3000, ChunkId::of(&b), unit, 4097);
        assert!(past.take_from(&whole).is_err());
    }

    /// Version 3 is version 4 without gathered chunks, and is still read.
    #[test]
    fn version_3_reads_without_gathered_chunks() {
        let (header, _, tree, _) = sample();
        let records = vec![
            ChunkRecord::stored(0, 7096, 300, ChunkId([1; 32])),
            ChunkRecord::zero(7096, 17352),
        ];
        let mut bytes = encode(&header, &records, &tree, &[], &[]);
        put(&mut bytes, &H_VERSION, &3u32.to_le_bytes());
        let d = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &d);
        let index = Index::from_bytes(Path::new("t"), bytes).unwrap();
        assert_eq!(index.version(), 3);
        assert_eq!(index.gathered_len(), 0);
        let (header, records, tree, gathered) = sample();
        let mut bytes = encode(&header, &records, &tree, &gathered, &[]);
        put(&mut bytes, &H_VERSION, &3u32.to_le_bytes());
        let d = digest(&bytes);
        put(&mut bytes, &H_DIGEST, &d);
        let err = Index::from_bytes(Path::new("t"), bytes).err().unwrap();
        assert!(err.to_string().contains("no gathered chunks"), "{err}");
    }

    /// Layout 1 indexes read back as such, so their seeds are cut by the layout-1 rule.
    #[test]
    fn both_filesystem_layouts_round_trip() {
        for (metadata_apart, code) in [(false, LAYOUT_FILESYSTEM_V1), (true, LAYOUT_FILESYSTEM)] {
            let (mut header, records, tree, gathered) = sample();
            header.align = 1;
            header.layout = LayoutSummary {
                cutting: Cutting::Filesystem { metadata_apart },
                ..LayoutSummary::default()
            };
            let bytes = encode(&header, &records, &tree, &gathered, &[]);
            assert_eq!(bytes[H_LAYOUT.offset], code);
            let index = Index::from_bytes(Path::new("t"), bytes).unwrap();
            assert_eq!(index.header(), &header);
            assert_eq!(
                index.header().layout.cutting,
                Cutting::Filesystem { metadata_apart }
            );
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error() {
        let (header, records, tree, gathered) = sample();
        let bytes = encode(&header, &records, &tree, &gathered, &[]);
        for len in 0..bytes.len() {
            assert!(Index::from_bytes(Path::new("t"), bytes[..len].to_vec()).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Index::from_bytes(Path::new("t"), b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn rejects_inconsistent_tables_even_with_a_valid_digest() {
        let reject = |(h, r, t, g): (Header, Vec<ChunkRecord>, Vec<ChunkRecord>, Vec<Unit>),
                      why: &str| {
            let err = Index::from_bytes(Path::new("t"), encode(&h, &r, &t, &g, &[])).err();
            let err = err.expect(why).to_string();
            assert!(err.contains(why), "{err} lacks {why}");
        };
        let mut s = sample();
        s.1[4].offset += 1;
        reject(s, "expected offset");
        let mut s = sample();
        s.0.image_size += 1;
        reject(s, "the image has");
        let mut s = sample();
        s.2[0].size = 4095;
        reject(s, "hash tree");
        // A part out of place in its gathered chunk.
        let mut s = sample();
        if let Some(p) = s.1[3].part.as_mut() {
            p.at = 4000;
        }
        reject(s, "expected 4096 in the gathered chunk");
        // A gathered chunk its parts do not fill.
        let mut s = sample();
        s.3[0].size = 8000;
        s.0.largest_chunk = 8000;
        reject(s, "the parts fill 0 of 1 gathered chunks");
        // A gathered chunk that does not start at its first part.
        let mut s = sample();
        s.3[0].offset = 4999;
        reject(s, "starts gathered chunk 0");
        // Parts with no gathered chunk.
        let mut s = sample();
        s.3.clear();
        reject(s, "beyond the gathered chunks");
        // A part with a stored size of its own.
        let mut s = sample();
        s.1[1].stored_size = 10;
        reject(s, "with a stored size");
        // A part offset on a record that is no part.
        let mut s = sample();
        s.1[0].part = s.1[3].part;
        reject(s, "part offset outside");
    }
}
