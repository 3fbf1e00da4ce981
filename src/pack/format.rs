//! Byte layout of packs and pack maps, version 1. `docs/FORMAT.md` is the specification;
//! `tests/format_doc.rs` holds these constants to it.

pub use crate::index::format::Field;

const fn field(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

pub const PACK_MAGIC: [u8; 8] = *b"BCPACK\0\0";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_SIZE: usize = 32;
pub const TOC_ENTRY_SIZE: usize = 80;

pub const P_MAGIC: Field = field("magic", 0, 8);
pub const P_VERSION: Field = field("version", 8, 4);
pub const P_ENTRY_COUNT: Field = field("entry_count", 12, 4);
pub const P_TOC_OFFSET: Field = field("toc_offset", 16, 8);
pub const P_RESERVED: Field = field("reserved", 24, 8);
pub const PACK_HEADER_FIELDS: [&Field; 5] = [
    &P_MAGIC,
    &P_VERSION,
    &P_ENTRY_COUNT,
    &P_TOC_OFFSET,
    &P_RESERVED,
];

pub const T_KIND: Field = field("kind", 0, 1);
pub const T_RESERVED: Field = field("reserved", 1, 3);
pub const T_SIZE: Field = field("size", 4, 4);
pub const T_OFFSET: Field = field("offset", 8, 8);
pub const T_ID: Field = field("id", 16, 32);
pub const T_BASE: Field = field("base", 48, 32);
pub const TOC_FIELDS: [&Field; 6] = [&T_KIND, &T_RESERVED, &T_SIZE, &T_OFFSET, &T_ID, &T_BASE];

/// Entry kind: a chunk file (of the image or of the hash tree).
pub const KIND_CHUNK: u8 = 1;
/// Entry kind: a delta that rebuilds chunk file `id` from chunk `base`.
pub const KIND_DELTA: u8 = 2;

pub const MAP_MAGIC: [u8; 8] = *b"BCPMAP\0\0";
pub const MAP_VERSION: u32 = 1;
pub const MAP_HEADER_SIZE: usize = 64;
pub const MAP_ENTRY_SIZE: usize = 88;

pub const M_MAGIC: Field = field("magic", 0, 8);
pub const M_VERSION: Field = field("version", 8, 4);
pub const M_PACK_COUNT: Field = field("pack_count", 12, 4);
pub const M_ENTRY_COUNT: Field = field("entry_count", 16, 8);
pub const M_INDEX_DIGEST: Field = field("index_digest", 24, 32);
pub const M_RESERVED: Field = field("reserved", 56, 8);
pub const MAP_HEADER_FIELDS: [&Field; 6] = [
    &M_MAGIC,
    &M_VERSION,
    &M_PACK_COUNT,
    &M_ENTRY_COUNT,
    &M_INDEX_DIGEST,
    &M_RESERVED,
];

pub const E_KIND: Field = field("kind", 0, 1);
pub const E_RESERVED: Field = field("reserved", 1, 3);
pub const E_PACK: Field = field("pack", 4, 4);
pub const E_OFFSET: Field = field("offset", 8, 8);
pub const E_SIZE: Field = field("size", 16, 4);
pub const E_RESERVED2: Field = field("reserved2", 20, 4);
pub const E_ID: Field = field("id", 24, 32);
pub const E_BASE: Field = field("base", 56, 32);
pub const MAP_ENTRY_FIELDS: [&Field; 8] = [
    &E_KIND,
    &E_RESERVED,
    &E_PACK,
    &E_OFFSET,
    &E_SIZE,
    &E_RESERVED2,
    &E_ID,
    &E_BASE,
];

/// Most entries one pack holds, and most packs and entries one map names: bounds every
/// allocation sized from a pack or map.
pub const MAX_ENTRIES: usize = 1 << 22;
pub const MAX_PACKS: usize = 1 << 16;

/// The largest pack a reader accepts a place in (256 TiB): bounds every offset read from
/// a pack map or a table of contents, so that no sum of them overflows.
pub const MAX_PACK_BYTES: u64 = 1 << 48;

/// zstd level of pack map files: a map is small and read on every update.
pub const MAP_ZSTD_LEVEL: i32 = 19;

/// Default cap on a pack's bytes (`make --pack-size`).
pub const DEFAULT_PACK_SIZE: u64 = 64 << 20;

const _: () = assert!(P_RESERVED.offset + P_RESERVED.size == PACK_HEADER_SIZE);
const _: () = assert!(T_BASE.offset + T_BASE.size == TOC_ENTRY_SIZE);
const _: () = assert!(M_RESERVED.offset + M_RESERVED.size == MAP_HEADER_SIZE);
const _: () = assert!(E_BASE.offset + E_BASE.size == MAP_ENTRY_SIZE);
