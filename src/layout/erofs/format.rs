//! The erofs on-disk format as `erofs_fs.h` defines it: the fields of each structure the
//! analyser reads, and the constants it checks. `docs/FORMAT.md` has the same tables;
//! `tests/format_doc.rs` holds them to these.

use crate::layout::source::{field, tiles, Field};

pub const SUPER_OFFSET: u64 = 1024;
pub const MAGIC: u32 = 0xE0F5_E1E2;

pub const INCOMPAT_LZ4_0PADDING: u32 = 0x01;
/// Also "big pcluster": both mean compression configs follow the superblock.
pub const INCOMPAT_COMPR_CFGS: u32 = 0x02;
pub const INCOMPAT_FRAGMENTS: u32 = 0x20;
pub const INCOMPAT_XATTR_PREFIXES: u32 = 0x40;
pub const INCOMPAT_48BIT: u32 = 0x80;
pub const INCOMPAT_METABOX: u32 = 0x100;
pub const INCOMPAT_KNOWN: u32 = 0x1ff;

pub const LAYOUT_FLAT_PLAIN: u8 = 0;
pub const LAYOUT_COMPRESSED_FULL: u8 = 1;
pub const LAYOUT_FLAT_INLINE: u8 = 2;
pub const LAYOUT_COMPRESSED_COMPACT: u8 = 3;
pub const LAYOUT_CHUNK_BASED: u8 = 4;

pub const I_FORMAT_ALL: u16 = 0x1f;
pub const I_NLINK_1_BIT: u16 = 4;

pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x1f;
pub const CHUNK_FORMAT_INDEXES: u16 = 0x20;
pub const CHUNK_FORMAT_48BIT: u16 = 0x40;
pub const CHUNK_FORMAT_ALL: u16 = 0x7f;

pub const ADVISE_COMPACTED_2B: u16 = 0x01;
/// The same bit as `ADVISE_COMPACTED_2B`, meaningful for full indexes only.
pub const ADVISE_EXTENTS: u16 = 0x01;
pub const ADVISE_BIG_PCLUSTER_1: u16 = 0x02;
pub const ADVISE_BIG_PCLUSTER_2: u16 = 0x04;
pub const ADVISE_INLINE_PCLUSTER: u16 = 0x08;
pub const ADVISE_INTERLACED_PCLUSTER: u16 = 0x10;
pub const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x20;
/// Bit 7 of `h_clusterbits`: the whole file lives in the packed inode.
pub const FRAGMENT_INODE_BIT: u8 = 0x80;

pub const LCLUSTER_PLAIN: u8 = 0;
pub const LCLUSTER_HEAD1: u8 = 1;
pub const LCLUSTER_NONHEAD: u8 = 2;
pub const LCLUSTER_HEAD2: u8 = 3;
/// Set on the first non-head lcluster of a big pcluster: the rest is its block count.
pub const D0_CBLKCNT: u32 = 1 << 11;

pub const COMPRESSION_LZ4: u8 = 0;
/// Extent records: the low bits of `plen` are the encoded length, the top nibble the
/// algorithm plus one (0: stored uncompressed).
pub const PLEN_MASK: u32 = (1 << 21) - 1;
pub const PLEN_FMT_BIT: u32 = 28;
/// Largest encoded and decoded sizes of one pcluster the kernel accepts.
pub const PCLUSTER_MAX_SIZE: u64 = 1 << 20;
pub const PCLUSTER_MAX_DSIZE: u64 = 12 << 20;

pub const NAME_LEN: usize = 255;

/// File types in `i_mode`, as `stat.h` has them.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFIFO: u16 = 0o010000;
pub const S_IFSOCK: u16 = 0o140000;

// The structures, with the kernel's field names; a union's members share an offset.

/// `struct erofs_super_block`: the 128 bytes every image has. `sb_extslots` 16-byte slots
/// may follow (the metabox inode's nid is in the first), which are not read.
pub const SUPER_SIZE: usize = 128;
pub const SB_EXTSLOT_SIZE: usize = 16;
pub const SB_MAGIC: Field = field("magic", 0, 4);
pub const SB_CHECKSUM: Field = field("checksum", 4, 4);
pub const SB_FEATURE_COMPAT: Field = field("feature_compat", 8, 4);
pub const SB_BLKSZBITS: Field = field("blkszbits", 12, 1);
pub const SB_EXTSLOTS: Field = field("sb_extslots", 13, 1);
pub const SB_ROOTNID_2B: Field = field("rootnid_2b", 14, 2);
/// The same bytes as `rootnid_2b`, when `rootnid_8b` is set (48-bit images).
pub const SB_BLOCKS_HI: Field = field("blocks_hi", 14, 2);
pub const SB_INOS: Field = field("inos", 16, 8);
pub const SB_EPOCH: Field = field("epoch", 24, 8);
pub const SB_FIXED_NSEC: Field = field("fixed_nsec", 32, 4);
pub const SB_BLOCKS_LO: Field = field("blocks_lo", 36, 4);
pub const SB_META_BLKADDR: Field = field("meta_blkaddr", 40, 4);
pub const SB_XATTR_BLKADDR: Field = field("xattr_blkaddr", 44, 4);
pub const SB_UUID: Field = field("uuid", 48, 16);
pub const SB_VOLUME_NAME: Field = field("volume_name", 64, 16);
pub const SB_FEATURE_INCOMPAT: Field = field("feature_incompat", 80, 4);
pub const SB_AVAILABLE_COMPR_ALGS: Field = field("available_compr_algs", 84, 2);
pub const SB_LZ4_MAX_DISTANCE: Field = field("lz4_max_distance", 84, 2);
pub const SB_EXTRA_DEVICES: Field = field("extra_devices", 86, 2);
pub const SB_DEVT_SLOTOFF: Field = field("devt_slotoff", 88, 2);
pub const SB_DIRBLKBITS: Field = field("dirblkbits", 90, 1);
pub const SB_XATTR_PREFIX_COUNT: Field = field("xattr_prefix_count", 91, 1);
pub const SB_XATTR_PREFIX_START: Field = field("xattr_prefix_start", 92, 4);
pub const SB_PACKED_NID: Field = field("packed_nid", 96, 8);
pub const SB_XATTR_FILTER_RESERVED: Field = field("xattr_filter_reserved", 104, 1);
pub const SB_RESERVED: Field = field("reserved", 105, 3);
pub const SB_BUILD_TIME: Field = field("build_time", 108, 4);
pub const SB_ROOTNID_8B: Field = field("rootnid_8b", 112, 8);
pub const SB_RESERVED2: Field = field("reserved2", 120, 8);
pub const SUPER_FIELDS: [&Field; 29] = [
    &SB_MAGIC,
    &SB_CHECKSUM,
    &SB_FEATURE_COMPAT,
    &SB_BLKSZBITS,
    &SB_EXTSLOTS,
    &SB_ROOTNID_2B,
    &SB_BLOCKS_HI,
    &SB_INOS,
    &SB_EPOCH,
    &SB_FIXED_NSEC,
    &SB_BLOCKS_LO,
    &SB_META_BLKADDR,
    &SB_XATTR_BLKADDR,
    &SB_UUID,
    &SB_VOLUME_NAME,
    &SB_FEATURE_INCOMPAT,
    &SB_AVAILABLE_COMPR_ALGS,
    &SB_LZ4_MAX_DISTANCE,
    &SB_EXTRA_DEVICES,
    &SB_DEVT_SLOTOFF,
    &SB_DIRBLKBITS,
    &SB_XATTR_PREFIX_COUNT,
    &SB_XATTR_PREFIX_START,
    &SB_PACKED_NID,
    &SB_XATTR_FILTER_RESERVED,
    &SB_RESERVED,
    &SB_BUILD_TIME,
    &SB_ROOTNID_8B,
    &SB_RESERVED2,
];
const _: () = assert!(tiles(&SUPER_FIELDS, SUPER_SIZE));

/// `struct erofs_inode_compact`; an inode's slot number (nid) counts in these.
pub const INODE_COMPACT_SIZE: usize = 32;
pub const IC_FORMAT: Field = field("i_format", 0, 2);
pub const IC_XATTR_ICOUNT: Field = field("i_xattr_icount", 2, 2);
pub const IC_MODE: Field = field("i_mode", 4, 2);
/// `i_nb`: nlink, or the high bits of the start block when `I_NLINK_1_BIT` is set.
pub const IC_NB: Field = field("i_nb", 6, 2);
pub const IC_SIZE: Field = field("i_size", 8, 4);
pub const IC_MTIME: Field = field("i_mtime", 12, 4);
/// `i_u`: start block, compressed block count, device or chunk format by layout.
pub const IC_U: Field = field("i_u", 16, 4);
pub const IC_INO: Field = field("i_ino", 20, 4);
pub const IC_UID: Field = field("i_uid", 24, 2);
pub const IC_GID: Field = field("i_gid", 26, 2);
pub const IC_RESERVED: Field = field("i_reserved", 28, 4);
pub const INODE_COMPACT_FIELDS: [&Field; 11] = [
    &IC_FORMAT,
    &IC_XATTR_ICOUNT,
    &IC_MODE,
    &IC_NB,
    &IC_SIZE,
    &IC_MTIME,
    &IC_U,
    &IC_INO,
    &IC_UID,
    &IC_GID,
    &IC_RESERVED,
];
const _: () = assert!(tiles(&INODE_COMPACT_FIELDS, INODE_COMPACT_SIZE));

/// `struct erofs_inode_extended`: the first 8 bytes and `i_u` as in the compact form.
pub const INODE_EXTENDED_SIZE: usize = 64;
pub const IE_FORMAT: Field = field("i_format", 0, 2);
pub const IE_XATTR_ICOUNT: Field = field("i_xattr_icount", 2, 2);
pub const IE_MODE: Field = field("i_mode", 4, 2);
pub const IE_NB: Field = field("i_nb", 6, 2);
pub const IE_SIZE: Field = field("i_size", 8, 8);
pub const IE_U: Field = field("i_u", 16, 4);
pub const IE_INO: Field = field("i_ino", 20, 4);
pub const IE_UID: Field = field("i_uid", 24, 4);
pub const IE_GID: Field = field("i_gid", 28, 4);
pub const IE_MTIME: Field = field("i_mtime", 32, 8);
pub const IE_MTIME_NSEC: Field = field("i_mtime_nsec", 40, 4);
pub const IE_NLINK: Field = field("i_nlink", 44, 4);
pub const IE_RESERVED2: Field = field("i_reserved2", 48, 16);
pub const INODE_EXTENDED_FIELDS: [&Field; 13] = [
    &IE_FORMAT,
    &IE_XATTR_ICOUNT,
    &IE_MODE,
    &IE_NB,
    &IE_SIZE,
    &IE_U,
    &IE_INO,
    &IE_UID,
    &IE_GID,
    &IE_MTIME,
    &IE_MTIME_NSEC,
    &IE_NLINK,
    &IE_RESERVED2,
];
const _: () = assert!(tiles(&INODE_EXTENDED_FIELDS, INODE_EXTENDED_SIZE));
const _: () = assert!(
    IC_FORMAT.offset == IE_FORMAT.offset
        && IC_XATTR_ICOUNT.offset == IE_XATTR_ICOUNT.offset
        && IC_MODE.offset == IE_MODE.offset
        && IC_NB.offset == IE_NB.offset
        && IC_SIZE.offset == IE_SIZE.offset
        && IC_U.offset == IE_U.offset
);

/// `struct erofs_xattr_ibody_header`, followed by `h_shared_count` 4-byte shared xattr
/// ids and then the inline xattr entries.
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
pub const XH_NAME_FILTER: Field = field("h_name_filter", 0, 4);
pub const XH_SHARED_COUNT: Field = field("h_shared_count", 4, 1);
pub const XH_RESERVED2: Field = field("h_reserved2", 5, 7);
pub const XATTR_IBODY_HEADER_FIELDS: [&Field; 3] =
    [&XH_NAME_FILTER, &XH_SHARED_COUNT, &XH_RESERVED2];
const _: () = assert!(tiles(&XATTR_IBODY_HEADER_FIELDS, XATTR_IBODY_HEADER_SIZE));
/// A shared xattr id: its entry is at `xattr_blkaddr` plus four times the id.
pub const XATTR_ID_SIZE: usize = 4;

/// `struct erofs_xattr_entry`, followed by the name and the value, 4-aligned.
pub const XATTR_ENTRY_SIZE: usize = 4;
pub const XE_NAME_LEN: Field = field("e_name_len", 0, 1);
pub const XE_NAME_INDEX: Field = field("e_name_index", 1, 1);
pub const XE_VALUE_SIZE: Field = field("e_value_size", 2, 2);
pub const XATTR_ENTRY_FIELDS: [&Field; 3] = [&XE_NAME_LEN, &XE_NAME_INDEX, &XE_VALUE_SIZE];
const _: () = assert!(tiles(&XATTR_ENTRY_FIELDS, XATTR_ENTRY_SIZE));

/// `struct erofs_inode_chunk_index`, when the chunk format has `CHUNK_FORMAT_INDEXES`;
/// otherwise each chunk is a 4-byte block address.
pub const CHUNK_INDEX_SIZE: usize = 8;
pub const BLOCK_MAP_ENTRY_SIZE: usize = 4;
pub const CI_STARTBLK_HI: Field = field("startblk_hi", 0, 2);
pub const CI_DEVICE_ID: Field = field("device_id", 2, 2);
pub const CI_STARTBLK_LO: Field = field("startblk_lo", 4, 4);
pub const CHUNK_INDEX_FIELDS: [&Field; 3] = [&CI_STARTBLK_HI, &CI_DEVICE_ID, &CI_STARTBLK_LO];
const _: () = assert!(tiles(&CHUNK_INDEX_FIELDS, CHUNK_INDEX_SIZE));

/// `struct z_erofs_map_header`, at the first 8-aligned offset after the inline xattrs.
/// With `FRAGMENT_INODE_BIT` set in `h_clusterbits` all 8 bytes, that bit cleared, are
/// the file's offset in the packed inode.
pub const MAP_HEADER_SIZE: usize = 8;
pub const MH_FRAGMENTOFF: Field = field("h_fragmentoff", 0, 4);
pub const MH_EXTENTS_LO: Field = field("h_extents_lo", 0, 4);
pub const MH_RESERVED1: Field = field("h_reserved1", 0, 2);
pub const MH_IDATA_SIZE: Field = field("h_idata_size", 2, 2);
pub const MH_ADVISE: Field = field("h_advise", 4, 2);
pub const MH_EXTENTS_HI: Field = field("h_extents_hi", 6, 2);
pub const MH_ALGORITHMTYPE: Field = field("h_algorithmtype", 6, 1);
pub const MH_CLUSTERBITS: Field = field("h_clusterbits", 7, 1);
pub const MAP_HEADER_FIELDS: [&Field; 8] = [
    &MH_FRAGMENTOFF,
    &MH_EXTENTS_LO,
    &MH_RESERVED1,
    &MH_IDATA_SIZE,
    &MH_ADVISE,
    &MH_EXTENTS_HI,
    &MH_ALGORITHMTYPE,
    &MH_CLUSTERBITS,
];
const _: () = assert!(tiles(&MAP_HEADER_FIELDS, MAP_HEADER_SIZE));
/// Full lcluster indexes start this far past the map header's start (8 reserved bytes
/// follow the header); compact ones right after it.
pub const FULL_INDEX_START: u64 = 16;

/// `struct z_erofs_lcluster_index`, one per lcluster in a full index.
pub const LCLUSTER_INDEX_SIZE: usize = 8;
pub const LI_ADVISE: Field = field("di_advise", 0, 2);
pub const LI_CLUSTEROFS: Field = field("di_clusterofs", 2, 2);
/// Head lclusters: the pcluster's first block.
pub const LI_BLKADDR: Field = field("di_u.blkaddr", 4, 4);
/// Non-head lclusters: the distance back to the head, or `D0_CBLKCNT` and a block count.
pub const LI_DELTA0: Field = field("di_u.delta[0]", 4, 2);
pub const LI_DELTA1: Field = field("di_u.delta[1]", 6, 2);
pub const LCLUSTER_INDEX_FIELDS: [&Field; 5] = [
    &LI_ADVISE,
    &LI_CLUSTEROFS,
    &LI_BLKADDR,
    &LI_DELTA0,
    &LI_DELTA1,
];
const _: () = assert!(tiles(&LCLUSTER_INDEX_FIELDS, LCLUSTER_INDEX_SIZE));
const _: () = assert!(LCLUSTER_INDEX_SIZE == CHUNK_INDEX_SIZE);
/// The lcluster type in the low bits of `di_advise`.
pub const LI_TYPE_MASK: u16 = 3;

/// `struct z_erofs_extent`: a record of 4, 8, 16 or 32 bytes (by `h_advise`), each size
/// a prefix of this; 4-byte records follow an 8-byte base address.
pub const EXTENT_SIZE: usize = 32;
pub const EX_PLEN: Field = field("plen", 0, 4);
pub const EX_PSTART_LO: Field = field("pstart_lo", 4, 4);
pub const EX_PSTART_HI: Field = field("pstart_hi", 8, 4);
pub const EX_LSTART_LO: Field = field("lstart_lo", 12, 4);
pub const EX_LSTART_HI: Field = field("lstart_hi", 16, 4);
pub const EX_RESERVED: Field = field("reserved", 20, 12);
pub const EXTENT_FIELDS: [&Field; 6] = [
    &EX_PLEN,
    &EX_PSTART_LO,
    &EX_PSTART_HI,
    &EX_LSTART_LO,
    &EX_LSTART_HI,
    &EX_RESERVED,
];
const _: () = assert!(tiles(&EXTENT_FIELDS, EXTENT_SIZE));

/// `struct erofs_dirent`: a directory block starts with these, the first's `nameoff`
/// giving their count; the names follow, not NUL-terminated but the last may be padded.
pub const DIRENT_SIZE: usize = 12;
pub const DE_NID: Field = field("nid", 0, 8);
pub const DE_NAMEOFF: Field = field("nameoff", 8, 2);
pub const DE_FILE_TYPE: Field = field("file_type", 10, 1);
pub const DE_RESERVED: Field = field("reserved", 11, 1);
pub const DIRENT_FIELDS: [&Field; 4] = [&DE_NID, &DE_NAMEOFF, &DE_FILE_TYPE, &DE_RESERVED];
const _: () = assert!(tiles(&DIRENT_FIELDS, DIRENT_SIZE));
