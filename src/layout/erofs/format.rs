//! The erofs on-disk format as `erofs_fs.h` defines it: the fields of each structure the
//! analyser reads, and the constants it checks.

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
