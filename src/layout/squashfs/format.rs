//! The squashfs 4.0 on-disk format as the kernel's `squashfs_fs.h` defines it: the fields
//! of each structure the analyser reads, and the constants it checks. `docs/FORMAT.md`
//! has the same tables; `tests/format_doc.rs` holds them to these.

use crate::layout::source::{field, tiles, Field};

pub const MAGIC: [u8; 4] = *b"hsqs";
pub const MAJOR: u16 = 4;
pub const MINOR: u16 = 0;

/// The most a metadata block holds once decompressed (`SQUASHFS_METADATA_SIZE`).
pub const METADATA_SIZE: usize = 8192;
/// In a metadata block's 2-byte header: the block is stored as it is.
pub const METADATA_STORED: u16 = 1 << 15;
/// In a data or fragment block's size: the block is stored as it is.
pub const BLOCK_STORED: u32 = 1 << 24;
/// A table start of a table the image does not have (`SQUASHFS_INVALID_BLK`).
pub const INVALID_BLK: u64 = u64::MAX;
/// A regular inode's `fragment` when the file has no tail in a fragment block.
pub const INVALID_FRAG: u32 = u32::MAX;
/// `flags`: compressor options follow the superblock.
pub const COMP_OPT: u16 = 1 << 10;

pub const ZLIB_COMPRESSION: u16 = 1;
pub const LZMA_COMPRESSION: u16 = 2;
pub const LZO_COMPRESSION: u16 = 3;
pub const XZ_COMPRESSION: u16 = 4;
pub const LZ4_COMPRESSION: u16 = 5;
pub const ZSTD_COMPRESSION: u16 = 6;

/// Inode types (`SQUASHFS_DIR_TYPE` and siblings) the analyser tells apart; 3 to 7 and 10
/// to 14 are links, devices, FIFOs and sockets, which hold no data.
pub const DIR_TYPE: u16 = 1;
pub const REG_TYPE: u16 = 2;
pub const LDIR_TYPE: u16 = 8;
pub const LREG_TYPE: u16 = 9;
pub const MAX_TYPE: u16 = 14;

/// Entries one directory header may count, and the longest name (`SQUASHFS_NAME_LEN`).
pub const DIR_COUNT: u64 = 256;
pub const NAME_LEN: usize = 256;

/// `struct squashfs_super_block`.
pub const SUPER_SIZE: usize = 96;
pub const SB_MAGIC: Field = field("s_magic", 0, 4);
pub const SB_INODES: Field = field("inodes", 4, 4);
pub const SB_MKFS_TIME: Field = field("mkfs_time", 8, 4);
pub const SB_BLOCK_SIZE: Field = field("block_size", 12, 4);
pub const SB_FRAGMENTS: Field = field("fragments", 16, 4);
pub const SB_COMPRESSION: Field = field("compression", 20, 2);
pub const SB_BLOCK_LOG: Field = field("block_log", 22, 2);
pub const SB_FLAGS: Field = field("flags", 24, 2);
pub const SB_NO_IDS: Field = field("no_ids", 26, 2);
pub const SB_MAJOR: Field = field("s_major", 28, 2);
pub const SB_MINOR: Field = field("s_minor", 30, 2);
pub const SB_ROOT_INODE: Field = field("root_inode", 32, 8);
pub const SB_BYTES_USED: Field = field("bytes_used", 40, 8);
pub const SB_ID_TABLE_START: Field = field("id_table_start", 48, 8);
pub const SB_XATTR_ID_TABLE_START: Field = field("xattr_id_table_start", 56, 8);
pub const SB_INODE_TABLE_START: Field = field("inode_table_start", 64, 8);
pub const SB_DIRECTORY_TABLE_START: Field = field("directory_table_start", 72, 8);
pub const SB_FRAGMENT_TABLE_START: Field = field("fragment_table_start", 80, 8);
pub const SB_LOOKUP_TABLE_START: Field = field("lookup_table_start", 88, 8);
pub const SUPER_FIELDS: [&Field; 19] = [
    &SB_MAGIC,
    &SB_INODES,
    &SB_MKFS_TIME,
    &SB_BLOCK_SIZE,
    &SB_FRAGMENTS,
    &SB_COMPRESSION,
    &SB_BLOCK_LOG,
    &SB_FLAGS,
    &SB_NO_IDS,
    &SB_MAJOR,
    &SB_MINOR,
    &SB_ROOT_INODE,
    &SB_BYTES_USED,
    &SB_ID_TABLE_START,
    &SB_XATTR_ID_TABLE_START,
    &SB_INODE_TABLE_START,
    &SB_DIRECTORY_TABLE_START,
    &SB_FRAGMENT_TABLE_START,
    &SB_LOOKUP_TABLE_START,
];
const _: () = assert!(tiles(&SUPER_FIELDS, SUPER_SIZE));

/// `struct squashfs_base_inode`: every inode starts with it.
pub const BASE_INODE_SIZE: usize = 16;
pub const I_INODE_TYPE: Field = field("inode_type", 0, 2);
pub const I_MODE: Field = field("mode", 2, 2);
pub const I_UID: Field = field("uid", 4, 2);
pub const I_GUID: Field = field("guid", 6, 2);
pub const I_MTIME: Field = field("mtime", 8, 4);
pub const I_INODE_NUMBER: Field = field("inode_number", 12, 4);
pub const BASE_INODE_FIELDS: [&Field; 6] = [
    &I_INODE_TYPE,
    &I_MODE,
    &I_UID,
    &I_GUID,
    &I_MTIME,
    &I_INODE_NUMBER,
];
const _: () = assert!(tiles(&BASE_INODE_FIELDS, BASE_INODE_SIZE));

/// `struct squashfs_dir_inode`: a directory whose listing is under 64 KiB.
pub const DIR_INODE_SIZE: usize = 32;
pub const DIR_START_BLOCK: Field = field("start_block", 16, 4);
pub const DIR_NLINK: Field = field("nlink", 20, 4);
pub const DIR_FILE_SIZE: Field = field("file_size", 24, 2);
pub const DIR_OFFSET: Field = field("offset", 26, 2);
pub const DIR_PARENT_INODE: Field = field("parent_inode", 28, 4);
pub const DIR_INODE_FIELDS: [&Field; 11] = [
    &I_INODE_TYPE,
    &I_MODE,
    &I_UID,
    &I_GUID,
    &I_MTIME,
    &I_INODE_NUMBER,
    &DIR_START_BLOCK,
    &DIR_NLINK,
    &DIR_FILE_SIZE,
    &DIR_OFFSET,
    &DIR_PARENT_INODE,
];
const _: () = assert!(tiles(&DIR_INODE_FIELDS, DIR_INODE_SIZE));

/// `struct squashfs_ldir_inode`: a directory with a larger listing or xattrs; an index of
/// its listing (not read) follows.
pub const LDIR_INODE_SIZE: usize = 40;
pub const LDIR_NLINK: Field = field("nlink", 16, 4);
pub const LDIR_FILE_SIZE: Field = field("file_size", 20, 4);
pub const LDIR_START_BLOCK: Field = field("start_block", 24, 4);
pub const LDIR_PARENT_INODE: Field = field("parent_inode", 28, 4);
pub const LDIR_I_COUNT: Field = field("i_count", 32, 2);
pub const LDIR_OFFSET: Field = field("offset", 34, 2);
pub const LDIR_XATTR: Field = field("xattr", 36, 4);
pub const LDIR_INODE_FIELDS: [&Field; 13] = [
    &I_INODE_TYPE,
    &I_MODE,
    &I_UID,
    &I_GUID,
    &I_MTIME,
    &I_INODE_NUMBER,
    &LDIR_NLINK,
    &LDIR_FILE_SIZE,
    &LDIR_START_BLOCK,
    &LDIR_PARENT_INODE,
    &LDIR_I_COUNT,
    &LDIR_OFFSET,
    &LDIR_XATTR,
];
const _: () = assert!(tiles(&LDIR_INODE_FIELDS, LDIR_INODE_SIZE));

/// `struct squashfs_reg_inode`: a regular file under 4 GiB; the 4-byte sizes of its data
/// blocks follow (`block_list`).
pub const REG_INODE_SIZE: usize = 32;
pub const REG_START_BLOCK: Field = field("start_block", 16, 4);
pub const REG_FRAGMENT: Field = field("fragment", 20, 4);
pub const REG_OFFSET: Field = field("offset", 24, 4);
pub const REG_FILE_SIZE: Field = field("file_size", 28, 4);
pub const REG_INODE_FIELDS: [&Field; 10] = [
    &I_INODE_TYPE,
    &I_MODE,
    &I_UID,
    &I_GUID,
    &I_MTIME,
    &I_INODE_NUMBER,
    &REG_START_BLOCK,
    &REG_FRAGMENT,
    &REG_OFFSET,
    &REG_FILE_SIZE,
];
const _: () = assert!(tiles(&REG_INODE_FIELDS, REG_INODE_SIZE));

/// `struct squashfs_lreg_inode`: a regular file that is larger, sparse, hard-linked or has
/// xattrs; its block sizes follow as for `squashfs_reg_inode`.
pub const LREG_INODE_SIZE: usize = 56;
pub const LREG_START_BLOCK: Field = field("start_block", 16, 8);
pub const LREG_FILE_SIZE: Field = field("file_size", 24, 8);
pub const LREG_SPARSE: Field = field("sparse", 32, 8);
pub const LREG_NLINK: Field = field("nlink", 40, 4);
pub const LREG_FRAGMENT: Field = field("fragment", 44, 4);
pub const LREG_OFFSET: Field = field("offset", 48, 4);
pub const LREG_XATTR: Field = field("xattr", 52, 4);
pub const LREG_INODE_FIELDS: [&Field; 13] = [
    &I_INODE_TYPE,
    &I_MODE,
    &I_UID,
    &I_GUID,
    &I_MTIME,
    &I_INODE_NUMBER,
    &LREG_START_BLOCK,
    &LREG_FILE_SIZE,
    &LREG_SPARSE,
    &LREG_NLINK,
    &LREG_FRAGMENT,
    &LREG_OFFSET,
    &LREG_XATTR,
];
const _: () = assert!(tiles(&LREG_INODE_FIELDS, LREG_INODE_SIZE));

/// `struct squashfs_dir_header`: starts each run of entries whose inodes share a block.
pub const DIR_HEADER_SIZE: usize = 12;
pub const DH_COUNT: Field = field("count", 0, 4);
pub const DH_START_BLOCK: Field = field("start_block", 4, 4);
pub const DH_INODE_NUMBER: Field = field("inode_number", 8, 4);
pub const DIR_HEADER_FIELDS: [&Field; 3] = [&DH_COUNT, &DH_START_BLOCK, &DH_INODE_NUMBER];
const _: () = assert!(tiles(&DIR_HEADER_FIELDS, DIR_HEADER_SIZE));

/// `struct squashfs_dir_entry`: `size + 1` bytes of name follow.
pub const DIR_ENTRY_SIZE: usize = 8;
pub const DE_OFFSET: Field = field("offset", 0, 2);
pub const DE_INODE_NUMBER: Field = field("inode_number", 2, 2);
pub const DE_TYPE: Field = field("type", 4, 2);
pub const DE_SIZE: Field = field("size", 6, 2);
pub const DIR_ENTRY_FIELDS: [&Field; 4] = [&DE_OFFSET, &DE_INODE_NUMBER, &DE_TYPE, &DE_SIZE];
const _: () = assert!(tiles(&DIR_ENTRY_FIELDS, DIR_ENTRY_SIZE));

/// `struct squashfs_fragment_entry`: where a fragment block is, in the fragment table.
pub const FRAGMENT_ENTRY_SIZE: usize = 16;
pub const FE_START_BLOCK: Field = field("start_block", 0, 8);
pub const FE_SIZE: Field = field("size", 8, 4);
pub const FE_UNUSED: Field = field("unused", 12, 4);
pub const FRAGMENT_ENTRY_FIELDS: [&Field; 3] = [&FE_START_BLOCK, &FE_SIZE, &FE_UNUSED];
const _: () = assert!(tiles(&FRAGMENT_ENTRY_FIELDS, FRAGMENT_ENTRY_SIZE));

/// `struct squashfs_xattr_id_table`: the xattr id table's header; the index of its blocks
/// follows.
pub const XATTR_ID_TABLE_SIZE: usize = 16;
pub const XT_XATTR_TABLE_START: Field = field("xattr_table_start", 0, 8);
pub const XT_XATTR_IDS: Field = field("xattr_ids", 8, 4);
pub const XT_UNUSED: Field = field("unused", 12, 4);
pub const XATTR_ID_TABLE_FIELDS: [&Field; 3] = [&XT_XATTR_TABLE_START, &XT_XATTR_IDS, &XT_UNUSED];
const _: () = assert!(tiles(&XATTR_ID_TABLE_FIELDS, XATTR_ID_TABLE_SIZE));

/// `struct squashfs_xattr_id`: one entry of the xattr id table, counted but not read.
pub const XATTR_ID_SIZE: usize = 16;
