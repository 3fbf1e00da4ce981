//! Byte layout of the index, version 6. `docs/FORMAT.md` is the specification; the tests
//! in `tests/format_doc.rs` hold these constants to it.

/// First 8 bytes of every index.
pub const MAGIC: [u8; 8] = *b"BCASTIDX";
pub const VERSION: u32 = 6;
/// Version written for an index without deltas, so that version-4 readers still read it.
pub const VERSION_WITHOUT_DELTAS: u32 = 4;
/// First version whose deltas have base runs (a base-run table); in version 5 every
/// delta's base is one chunk.
pub const VERSION_BASE_RUNS: u32 = 6;
/// Oldest version still read: version 3 is version 4 without gathered chunks, and
/// version 4 is version 5 without deltas.
pub const OLDEST_VERSION: u32 = 3;
pub const HEADER_SIZE: usize = 512;
pub const RECORD_SIZE: usize = 56;
/// Bytes of one entry of the base-run table: a chunk id and its size.
pub const BASE_ENTRY_SIZE: usize = 36;
/// Most bytes a delta's base run (version 6) may hold: what a device reads, checks and
/// keeps in memory to rebuild one chunk file from a delta.
pub const MAX_BASE_RUN: u32 = 4 << 20;

/// Largest index file read; bounds every allocation sized from an index.
pub const MAX_INDEX_SIZE: u64 = 1 << 30;

pub const HASH_SHA256: u8 = 1;
pub const COMPRESSION_ZSTD: u8 = 1;
pub const LAYOUT_ALIGNED_CDC: u8 = 0;
/// Filesystem-aware as first defined: metadata grouped with small files' data.
pub const LAYOUT_FILESYSTEM_V1: u8 = 1;
/// Filesystem-aware with metadata cut apart from file data.
pub const LAYOUT_FILESYSTEM: u8 = 2;

/// Record flag: the chunk is all zero bytes; it is never stored and its id field is zero.
pub const FLAG_ZERO: u32 = 1;
/// Record flag: the bytes are a part of a gathered chunk (in the gather table), stored only
/// as part of it; the id is still the SHA-256 of the record's own bytes.
pub const FLAG_GATHERED: u32 = 2;

/// Bytes of hash area per tree chunk (16 hash blocks): a lazy reader fetches only the
/// pieces on the path of the blocks it verifies.
pub const TREE_PIECE: u64 = 64 << 10;

/// A field of the header or of a record: name, offset, size in bytes.
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

const fn field(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

pub const H_MAGIC: Field = field("magic", 0, 8);
pub const H_VERSION: Field = field("version", 8, 4);
pub const H_HEADER_SIZE: Field = field("header_size", 12, 4);
pub const H_RECORD_SIZE: Field = field("record_size", 16, 4);
/// Entries of the base-run table (version 6); zero in earlier versions, where it was a
/// flags field that had to be zero.
pub const H_BASE_COUNT: Field = field("base_count", 20, 4);
pub const H_IMAGE_SIZE: Field = field("image_size", 24, 8);
pub const H_CHUNK_COUNT: Field = field("chunk_count", 32, 8);
pub const H_TABLE_OFFSET: Field = field("chunk_table_offset", 40, 8);
pub const H_CHUNK_MIN: Field = field("chunk_min", 48, 4);
pub const H_CHUNK_AVG: Field = field("chunk_avg", 52, 4);
pub const H_CHUNK_MAX: Field = field("chunk_max", 56, 4);
pub const H_ALIGN: Field = field("align", 60, 4);
pub const H_LARGEST_CHUNK: Field = field("largest_chunk", 64, 4);
pub const H_HASH: Field = field("hash_algorithm", 68, 1);
pub const H_COMPRESSION: Field = field("compression", 69, 1);
pub const H_FS_KIND: Field = field("fs_kind", 70, 1);
pub const H_LAYOUT: Field = field("layout", 71, 1);
pub const H_RELEASE: Field = field("release", 72, 8);
pub const H_DATA_BLOCKS: Field = field("verity_data_blocks", 80, 8);
pub const H_TREE_COUNT: Field = field("tree_chunk_count", 88, 8);
pub const H_TREE_OFFSET: Field = field("tree_table_offset", 96, 8);
pub const H_TREE_SIZE: Field = field("tree_size", 104, 8);
pub const H_ROOT: Field = field("verity_root", 112, 32);
pub const H_UUID: Field = field("verity_uuid", 144, 16);
pub const H_SALT_SIZE: Field = field("verity_salt_size", 160, 2);
pub const H_SALT: Field = field("verity_salt", 162, 256);
pub const H_METADATA: Field = field("metadata_regions", 418, 12);
pub const H_DATA: Field = field("data_regions", 430, 12);
pub const H_COMPRESSED: Field = field("compressed_regions", 442, 12);
pub const H_FREE: Field = field("free_regions", 454, 12);
pub const H_GATHER_COUNT: Field = field("gather_count", 466, 8);
pub const H_DELTA_COUNT: Field = field("delta_count", 474, 4);
pub const H_RESERVED: Field = field("reserved", 478, 2);
pub const H_DIGEST: Field = field("digest", 480, 32);

pub const HEADER_FIELDS: [&Field; 34] = [
    &H_MAGIC,
    &H_VERSION,
    &H_HEADER_SIZE,
    &H_RECORD_SIZE,
    &H_BASE_COUNT,
    &H_IMAGE_SIZE,
    &H_CHUNK_COUNT,
    &H_TABLE_OFFSET,
    &H_CHUNK_MIN,
    &H_CHUNK_AVG,
    &H_CHUNK_MAX,
    &H_ALIGN,
    &H_LARGEST_CHUNK,
    &H_HASH,
    &H_COMPRESSION,
    &H_FS_KIND,
    &H_LAYOUT,
    &H_RELEASE,
    &H_DATA_BLOCKS,
    &H_TREE_COUNT,
    &H_TREE_OFFSET,
    &H_TREE_SIZE,
    &H_ROOT,
    &H_UUID,
    &H_SALT_SIZE,
    &H_SALT,
    &H_METADATA,
    &H_DATA,
    &H_COMPRESSED,
    &H_FREE,
    &H_GATHER_COUNT,
    &H_DELTA_COUNT,
    &H_RESERVED,
    &H_DIGEST,
];

pub const R_OFFSET: Field = field("offset", 0, 8);
pub const R_SIZE: Field = field("size", 8, 4);
pub const R_STORED_SIZE: Field = field("stored_size", 12, 4);
pub const R_FLAGS: Field = field("flags", 16, 4);
pub const R_PART_OFFSET: Field = field("part_offset", 20, 4);
pub const R_ID: Field = field("id", 24, 32);

pub const RECORD_FIELDS: [&Field; 6] = [
    &R_OFFSET,
    &R_SIZE,
    &R_STORED_SIZE,
    &R_FLAGS,
    &R_PART_OFFSET,
    &R_ID,
];

pub const D_OFFSET: Field = field("offset", 0, 8);
pub const D_BASE_SIZE: Field = field("base_size", 8, 4);
pub const D_STORED_SIZE: Field = field("stored_size", 12, 4);
pub const D_BASE_COUNT: Field = field("base_count", 16, 4);
pub const D_RESERVED: Field = field("reserved", 20, 4);
pub const D_BASE: Field = field("base", 24, 32);

pub const DELTA_FIELDS: [&Field; 6] = [
    &D_OFFSET,
    &D_BASE_SIZE,
    &D_STORED_SIZE,
    &D_BASE_COUNT,
    &D_RESERVED,
    &D_BASE,
];

pub const E_ID: Field = field("id", 0, 32);
pub const E_SIZE: Field = field("size", 32, 4);

pub const BASE_ENTRY_FIELDS: [&Field; 2] = [&E_ID, &E_SIZE];

/// The bytes of `f` within `buf`, which callers size to the header or a record.
pub fn slice<'a>(buf: &'a [u8], f: &Field) -> &'a [u8] {
    &buf[f.offset..f.offset + f.size]
}

pub fn get_u32(buf: &[u8], f: &Field) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(slice(buf, f));
    u32::from_le_bytes(b)
}

pub fn get_u16(buf: &[u8], f: &Field) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(slice(buf, f));
    u16::from_le_bytes(b)
}

pub fn get_u64(buf: &[u8], f: &Field) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(slice(buf, f));
    u64::from_le_bytes(b)
}

pub fn put(buf: &mut [u8], f: &Field, bytes: &[u8]) {
    buf[f.offset..f.offset + f.size].copy_from_slice(bytes);
}
