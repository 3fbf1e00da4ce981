//! The ext2/3/4 on-disk format as the kernel's `fs/ext4/ext4.h`, `ext4_extents.h` and
//! `xattr.h` define it: the fields of each structure the analyser reads. `docs/FORMAT.md`
//! has the same tables; `tests/format_doc.rs` holds them to these.

use crate::layout::source::{field, tiles, Field};

/// `struct ext4_super_block`: at byte 1024 of the image, and its backups.
pub const SUPER_SIZE: usize = 1024;
pub const SB_INODES_COUNT: Field = field("s_inodes_count", 0, 4);
pub const SB_BLOCKS_COUNT_LO: Field = field("s_blocks_count_lo", 4, 4);
pub const SB_R_BLOCKS_COUNT_LO: Field = field("s_r_blocks_count_lo", 8, 4);
pub const SB_FREE_BLOCKS_COUNT_LO: Field = field("s_free_blocks_count_lo", 12, 4);
pub const SB_FREE_INODES_COUNT: Field = field("s_free_inodes_count", 16, 4);
pub const SB_FIRST_DATA_BLOCK: Field = field("s_first_data_block", 20, 4);
pub const SB_LOG_BLOCK_SIZE: Field = field("s_log_block_size", 24, 4);
pub const SB_LOG_CLUSTER_SIZE: Field = field("s_log_cluster_size", 28, 4);
pub const SB_BLOCKS_PER_GROUP: Field = field("s_blocks_per_group", 32, 4);
pub const SB_CLUSTERS_PER_GROUP: Field = field("s_clusters_per_group", 36, 4);
pub const SB_INODES_PER_GROUP: Field = field("s_inodes_per_group", 40, 4);
pub const SB_MTIME: Field = field("s_mtime", 44, 4);
pub const SB_WTIME: Field = field("s_wtime", 48, 4);
pub const SB_MNT_COUNT: Field = field("s_mnt_count", 52, 2);
pub const SB_MAX_MNT_COUNT: Field = field("s_max_mnt_count", 54, 2);
pub const SB_MAGIC: Field = field("s_magic", 56, 2);
pub const SB_STATE: Field = field("s_state", 58, 2);
pub const SB_ERRORS: Field = field("s_errors", 60, 2);
pub const SB_MINOR_REV_LEVEL: Field = field("s_minor_rev_level", 62, 2);
pub const SB_LASTCHECK: Field = field("s_lastcheck", 64, 4);
pub const SB_CHECKINTERVAL: Field = field("s_checkinterval", 68, 4);
pub const SB_CREATOR_OS: Field = field("s_creator_os", 72, 4);
pub const SB_REV_LEVEL: Field = field("s_rev_level", 76, 4);
pub const SB_DEF_RESUID: Field = field("s_def_resuid", 80, 2);
pub const SB_DEF_RESGID: Field = field("s_def_resgid", 82, 2);
pub const SB_FIRST_INO: Field = field("s_first_ino", 84, 4);
pub const SB_INODE_SIZE: Field = field("s_inode_size", 88, 2);
pub const SB_BLOCK_GROUP_NR: Field = field("s_block_group_nr", 90, 2);
pub const SB_FEATURE_COMPAT: Field = field("s_feature_compat", 92, 4);
pub const SB_FEATURE_INCOMPAT: Field = field("s_feature_incompat", 96, 4);
pub const SB_FEATURE_RO_COMPAT: Field = field("s_feature_ro_compat", 100, 4);
pub const SB_UUID: Field = field("s_uuid", 104, 16);
pub const SB_VOLUME_NAME: Field = field("s_volume_name", 120, 16);
pub const SB_LAST_MOUNTED: Field = field("s_last_mounted", 136, 64);
pub const SB_ALGORITHM_USAGE_BITMAP: Field = field("s_algorithm_usage_bitmap", 200, 4);
pub const SB_PREALLOC_BLOCKS: Field = field("s_prealloc_blocks", 204, 1);
pub const SB_PREALLOC_DIR_BLOCKS: Field = field("s_prealloc_dir_blocks", 205, 1);
pub const SB_RESERVED_GDT_BLOCKS: Field = field("s_reserved_gdt_blocks", 206, 2);
pub const SB_JOURNAL_UUID: Field = field("s_journal_uuid", 208, 16);
pub const SB_JOURNAL_INUM: Field = field("s_journal_inum", 224, 4);
pub const SB_JOURNAL_DEV: Field = field("s_journal_dev", 228, 4);
pub const SB_LAST_ORPHAN: Field = field("s_last_orphan", 232, 4);
pub const SB_HASH_SEED: Field = field("s_hash_seed", 236, 16);
pub const SB_DEF_HASH_VERSION: Field = field("s_def_hash_version", 252, 1);
pub const SB_JNL_BACKUP_TYPE: Field = field("s_jnl_backup_type", 253, 1);
pub const SB_DESC_SIZE: Field = field("s_desc_size", 254, 2);
pub const SB_DEFAULT_MOUNT_OPTS: Field = field("s_default_mount_opts", 256, 4);
pub const SB_FIRST_META_BG: Field = field("s_first_meta_bg", 260, 4);
pub const SB_MKFS_TIME: Field = field("s_mkfs_time", 264, 4);
pub const SB_JNL_BLOCKS: Field = field("s_jnl_blocks", 268, 68);
pub const SB_BLOCKS_COUNT_HI: Field = field("s_blocks_count_hi", 336, 4);
pub const SB_R_BLOCKS_COUNT_HI: Field = field("s_r_blocks_count_hi", 340, 4);
pub const SB_FREE_BLOCKS_COUNT_HI: Field = field("s_free_blocks_count_hi", 344, 4);
pub const SB_MIN_EXTRA_ISIZE: Field = field("s_min_extra_isize", 348, 2);
pub const SB_WANT_EXTRA_ISIZE: Field = field("s_want_extra_isize", 350, 2);
pub const SB_FLAGS: Field = field("s_flags", 352, 4);
pub const SB_RAID_STRIDE: Field = field("s_raid_stride", 356, 2);
pub const SB_MMP_UPDATE_INTERVAL: Field = field("s_mmp_update_interval", 358, 2);
pub const SB_MMP_BLOCK: Field = field("s_mmp_block", 360, 8);
pub const SB_RAID_STRIPE_WIDTH: Field = field("s_raid_stripe_width", 368, 4);
pub const SB_LOG_GROUPS_PER_FLEX: Field = field("s_log_groups_per_flex", 372, 1);
pub const SB_CHECKSUM_TYPE: Field = field("s_checksum_type", 373, 1);
pub const SB_ENCRYPTION_LEVEL: Field = field("s_encryption_level", 374, 1);
pub const SB_RESERVED_PAD: Field = field("s_reserved_pad", 375, 1);
pub const SB_KBYTES_WRITTEN: Field = field("s_kbytes_written", 376, 8);
pub const SB_SNAPSHOT_INUM: Field = field("s_snapshot_inum", 384, 4);
pub const SB_SNAPSHOT_ID: Field = field("s_snapshot_id", 388, 4);
pub const SB_SNAPSHOT_R_BLOCKS_COUNT: Field = field("s_snapshot_r_blocks_count", 392, 8);
pub const SB_SNAPSHOT_LIST: Field = field("s_snapshot_list", 400, 4);
pub const SB_ERROR_COUNT: Field = field("s_error_count", 404, 4);
pub const SB_FIRST_ERROR_TIME: Field = field("s_first_error_time", 408, 4);
pub const SB_FIRST_ERROR_INO: Field = field("s_first_error_ino", 412, 4);
pub const SB_FIRST_ERROR_BLOCK: Field = field("s_first_error_block", 416, 8);
pub const SB_FIRST_ERROR_FUNC: Field = field("s_first_error_func", 424, 32);
pub const SB_FIRST_ERROR_LINE: Field = field("s_first_error_line", 456, 4);
pub const SB_LAST_ERROR_TIME: Field = field("s_last_error_time", 460, 4);
pub const SB_LAST_ERROR_INO: Field = field("s_last_error_ino", 464, 4);
pub const SB_LAST_ERROR_LINE: Field = field("s_last_error_line", 468, 4);
pub const SB_LAST_ERROR_BLOCK: Field = field("s_last_error_block", 472, 8);
pub const SB_LAST_ERROR_FUNC: Field = field("s_last_error_func", 480, 32);
pub const SB_MOUNT_OPTS: Field = field("s_mount_opts", 512, 64);
pub const SB_USR_QUOTA_INUM: Field = field("s_usr_quota_inum", 576, 4);
pub const SB_GRP_QUOTA_INUM: Field = field("s_grp_quota_inum", 580, 4);
pub const SB_OVERHEAD_CLUSTERS: Field = field("s_overhead_clusters", 584, 4);
pub const SB_BACKUP_BGS: Field = field("s_backup_bgs", 588, 8);
pub const SB_ENCRYPT_ALGOS: Field = field("s_encrypt_algos", 596, 4);
pub const SB_ENCRYPT_PW_SALT: Field = field("s_encrypt_pw_salt", 600, 16);
pub const SB_LPF_INO: Field = field("s_lpf_ino", 616, 4);
pub const SB_PRJ_QUOTA_INUM: Field = field("s_prj_quota_inum", 620, 4);
pub const SB_CHECKSUM_SEED: Field = field("s_checksum_seed", 624, 4);
pub const SB_WTIME_HI: Field = field("s_wtime_hi", 628, 1);
pub const SB_MTIME_HI: Field = field("s_mtime_hi", 629, 1);
pub const SB_MKFS_TIME_HI: Field = field("s_mkfs_time_hi", 630, 1);
pub const SB_LASTCHECK_HI: Field = field("s_lastcheck_hi", 631, 1);
pub const SB_FIRST_ERROR_TIME_HI: Field = field("s_first_error_time_hi", 632, 1);
pub const SB_LAST_ERROR_TIME_HI: Field = field("s_last_error_time_hi", 633, 1);
pub const SB_FIRST_ERROR_ERRCODE: Field = field("s_first_error_errcode", 634, 1);
pub const SB_LAST_ERROR_ERRCODE: Field = field("s_last_error_errcode", 635, 1);
pub const SB_ENCODING: Field = field("s_encoding", 636, 2);
pub const SB_ENCODING_FLAGS: Field = field("s_encoding_flags", 638, 2);
pub const SB_ORPHAN_FILE_INUM: Field = field("s_orphan_file_inum", 640, 4);
pub const SB_RESERVED: Field = field("s_reserved", 644, 376);
pub const SB_CHECKSUM: Field = field("s_checksum", 1020, 4);
pub const SUPER_FIELDS: [&Field; 103] = [
    &SB_INODES_COUNT,
    &SB_BLOCKS_COUNT_LO,
    &SB_R_BLOCKS_COUNT_LO,
    &SB_FREE_BLOCKS_COUNT_LO,
    &SB_FREE_INODES_COUNT,
    &SB_FIRST_DATA_BLOCK,
    &SB_LOG_BLOCK_SIZE,
    &SB_LOG_CLUSTER_SIZE,
    &SB_BLOCKS_PER_GROUP,
    &SB_CLUSTERS_PER_GROUP,
    &SB_INODES_PER_GROUP,
    &SB_MTIME,
    &SB_WTIME,
    &SB_MNT_COUNT,
    &SB_MAX_MNT_COUNT,
    &SB_MAGIC,
    &SB_STATE,
    &SB_ERRORS,
    &SB_MINOR_REV_LEVEL,
    &SB_LASTCHECK,
    &SB_CHECKINTERVAL,
    &SB_CREATOR_OS,
    &SB_REV_LEVEL,
    &SB_DEF_RESUID,
    &SB_DEF_RESGID,
    &SB_FIRST_INO,
    &SB_INODE_SIZE,
    &SB_BLOCK_GROUP_NR,
    &SB_FEATURE_COMPAT,
    &SB_FEATURE_INCOMPAT,
    &SB_FEATURE_RO_COMPAT,
    &SB_UUID,
    &SB_VOLUME_NAME,
    &SB_LAST_MOUNTED,
    &SB_ALGORITHM_USAGE_BITMAP,
    &SB_PREALLOC_BLOCKS,
    &SB_PREALLOC_DIR_BLOCKS,
    &SB_RESERVED_GDT_BLOCKS,
    &SB_JOURNAL_UUID,
    &SB_JOURNAL_INUM,
    &SB_JOURNAL_DEV,
    &SB_LAST_ORPHAN,
    &SB_HASH_SEED,
    &SB_DEF_HASH_VERSION,
    &SB_JNL_BACKUP_TYPE,
    &SB_DESC_SIZE,
    &SB_DEFAULT_MOUNT_OPTS,
    &SB_FIRST_META_BG,
    &SB_MKFS_TIME,
    &SB_JNL_BLOCKS,
    &SB_BLOCKS_COUNT_HI,
    &SB_R_BLOCKS_COUNT_HI,
    &SB_FREE_BLOCKS_COUNT_HI,
    &SB_MIN_EXTRA_ISIZE,
    &SB_WANT_EXTRA_ISIZE,
    &SB_FLAGS,
    &SB_RAID_STRIDE,
    &SB_MMP_UPDATE_INTERVAL,
    &SB_MMP_BLOCK,
    &SB_RAID_STRIPE_WIDTH,
    &SB_LOG_GROUPS_PER_FLEX,
    &SB_CHECKSUM_TYPE,
    &SB_ENCRYPTION_LEVEL,
    &SB_RESERVED_PAD,
    &SB_KBYTES_WRITTEN,
    &SB_SNAPSHOT_INUM,
    &SB_SNAPSHOT_ID,
    &SB_SNAPSHOT_R_BLOCKS_COUNT,
    &SB_SNAPSHOT_LIST,
    &SB_ERROR_COUNT,
    &SB_FIRST_ERROR_TIME,
    &SB_FIRST_ERROR_INO,
    &SB_FIRST_ERROR_BLOCK,
    &SB_FIRST_ERROR_FUNC,
    &SB_FIRST_ERROR_LINE,
    &SB_LAST_ERROR_TIME,
    &SB_LAST_ERROR_INO,
    &SB_LAST_ERROR_LINE,
    &SB_LAST_ERROR_BLOCK,
    &SB_LAST_ERROR_FUNC,
    &SB_MOUNT_OPTS,
    &SB_USR_QUOTA_INUM,
    &SB_GRP_QUOTA_INUM,
    &SB_OVERHEAD_CLUSTERS,
    &SB_BACKUP_BGS,
    &SB_ENCRYPT_ALGOS,
    &SB_ENCRYPT_PW_SALT,
    &SB_LPF_INO,
    &SB_PRJ_QUOTA_INUM,
    &SB_CHECKSUM_SEED,
    &SB_WTIME_HI,
    &SB_MTIME_HI,
    &SB_MKFS_TIME_HI,
    &SB_LASTCHECK_HI,
    &SB_FIRST_ERROR_TIME_HI,
    &SB_LAST_ERROR_TIME_HI,
    &SB_FIRST_ERROR_ERRCODE,
    &SB_LAST_ERROR_ERRCODE,
    &SB_ENCODING,
    &SB_ENCODING_FLAGS,
    &SB_ORPHAN_FILE_INUM,
    &SB_RESERVED,
    &SB_CHECKSUM,
];
const _: () = assert!(tiles(&SUPER_FIELDS, SUPER_SIZE));

/// `struct ext4_group_desc`: 32 bytes without the `64bit` feature (the `_hi` fields are then absent), `s_desc_size` with it.
pub const GROUP_DESC_SIZE: usize = 64;
pub const BG_BLOCK_BITMAP_LO: Field = field("bg_block_bitmap_lo", 0, 4);
pub const BG_INODE_BITMAP_LO: Field = field("bg_inode_bitmap_lo", 4, 4);
pub const BG_INODE_TABLE_LO: Field = field("bg_inode_table_lo", 8, 4);
pub const BG_FREE_BLOCKS_COUNT_LO: Field = field("bg_free_blocks_count_lo", 12, 2);
pub const BG_FREE_INODES_COUNT_LO: Field = field("bg_free_inodes_count_lo", 14, 2);
pub const BG_USED_DIRS_COUNT_LO: Field = field("bg_used_dirs_count_lo", 16, 2);
pub const BG_FLAGS: Field = field("bg_flags", 18, 2);
pub const BG_EXCLUDE_BITMAP_LO: Field = field("bg_exclude_bitmap_lo", 20, 4);
pub const BG_BLOCK_BITMAP_CSUM_LO: Field = field("bg_block_bitmap_csum_lo", 24, 2);
pub const BG_INODE_BITMAP_CSUM_LO: Field = field("bg_inode_bitmap_csum_lo", 26, 2);
pub const BG_ITABLE_UNUSED_LO: Field = field("bg_itable_unused_lo", 28, 2);
pub const BG_CHECKSUM: Field = field("bg_checksum", 30, 2);
pub const BG_BLOCK_BITMAP_HI: Field = field("bg_block_bitmap_hi", 32, 4);
pub const BG_INODE_BITMAP_HI: Field = field("bg_inode_bitmap_hi", 36, 4);
pub const BG_INODE_TABLE_HI: Field = field("bg_inode_table_hi", 40, 4);
pub const BG_FREE_BLOCKS_COUNT_HI: Field = field("bg_free_blocks_count_hi", 44, 2);
pub const BG_FREE_INODES_COUNT_HI: Field = field("bg_free_inodes_count_hi", 46, 2);
pub const BG_USED_DIRS_COUNT_HI: Field = field("bg_used_dirs_count_hi", 48, 2);
pub const BG_ITABLE_UNUSED_HI: Field = field("bg_itable_unused_hi", 50, 2);
pub const BG_EXCLUDE_BITMAP_HI: Field = field("bg_exclude_bitmap_hi", 52, 4);
pub const BG_BLOCK_BITMAP_CSUM_HI: Field = field("bg_block_bitmap_csum_hi", 56, 2);
pub const BG_INODE_BITMAP_CSUM_HI: Field = field("bg_inode_bitmap_csum_hi", 58, 2);
pub const BG_RESERVED: Field = field("bg_reserved", 60, 4);
pub const GROUP_DESC_FIELDS: [&Field; 23] = [
    &BG_BLOCK_BITMAP_LO,
    &BG_INODE_BITMAP_LO,
    &BG_INODE_TABLE_LO,
    &BG_FREE_BLOCKS_COUNT_LO,
    &BG_FREE_INODES_COUNT_LO,
    &BG_USED_DIRS_COUNT_LO,
    &BG_FLAGS,
    &BG_EXCLUDE_BITMAP_LO,
    &BG_BLOCK_BITMAP_CSUM_LO,
    &BG_INODE_BITMAP_CSUM_LO,
    &BG_ITABLE_UNUSED_LO,
    &BG_CHECKSUM,
    &BG_BLOCK_BITMAP_HI,
    &BG_INODE_BITMAP_HI,
    &BG_INODE_TABLE_HI,
    &BG_FREE_BLOCKS_COUNT_HI,
    &BG_FREE_INODES_COUNT_HI,
    &BG_USED_DIRS_COUNT_HI,
    &BG_ITABLE_UNUSED_HI,
    &BG_EXCLUDE_BITMAP_HI,
    &BG_BLOCK_BITMAP_CSUM_HI,
    &BG_INODE_BITMAP_CSUM_HI,
    &BG_RESERVED,
];
const _: () = assert!(tiles(&GROUP_DESC_FIELDS, GROUP_DESC_SIZE));

/// `struct ext4_inode`, with `osd2` as Linux lays it out; an inode of 128 bytes ends at `i_extra_isize`.
pub const INODE_SIZE: usize = 160;
pub const I_MODE: Field = field("i_mode", 0, 2);
pub const I_UID: Field = field("i_uid", 2, 2);
pub const I_SIZE_LO: Field = field("i_size_lo", 4, 4);
pub const I_ATIME: Field = field("i_atime", 8, 4);
pub const I_CTIME: Field = field("i_ctime", 12, 4);
pub const I_MTIME: Field = field("i_mtime", 16, 4);
pub const I_DTIME: Field = field("i_dtime", 20, 4);
pub const I_GID: Field = field("i_gid", 24, 2);
pub const I_LINKS_COUNT: Field = field("i_links_count", 26, 2);
pub const I_BLOCKS_LO: Field = field("i_blocks_lo", 28, 4);
pub const I_FLAGS: Field = field("i_flags", 32, 4);
pub const I_OSD1: Field = field("osd1", 36, 4);
pub const I_BLOCK: Field = field("i_block", 40, 60);
pub const I_GENERATION: Field = field("i_generation", 100, 4);
pub const I_FILE_ACL_LO: Field = field("i_file_acl_lo", 104, 4);
pub const I_SIZE_HIGH: Field = field("i_size_high", 108, 4);
pub const I_OBSO_FADDR: Field = field("i_obso_faddr", 112, 4);
pub const I_BLOCKS_HIGH: Field = field("l_i_blocks_high", 116, 2);
pub const I_FILE_ACL_HIGH: Field = field("l_i_file_acl_high", 118, 2);
pub const I_UID_HIGH: Field = field("l_i_uid_high", 120, 2);
pub const I_GID_HIGH: Field = field("l_i_gid_high", 122, 2);
pub const I_CHECKSUM_LO: Field = field("l_i_checksum_lo", 124, 2);
pub const I_RESERVED: Field = field("l_i_reserved", 126, 2);
pub const I_EXTRA_ISIZE: Field = field("i_extra_isize", 128, 2);
pub const I_CHECKSUM_HI: Field = field("i_checksum_hi", 130, 2);
pub const I_CTIME_EXTRA: Field = field("i_ctime_extra", 132, 4);
pub const I_MTIME_EXTRA: Field = field("i_mtime_extra", 136, 4);
pub const I_ATIME_EXTRA: Field = field("i_atime_extra", 140, 4);
pub const I_CRTIME: Field = field("i_crtime", 144, 4);
pub const I_CRTIME_EXTRA: Field = field("i_crtime_extra", 148, 4);
pub const I_VERSION_HI: Field = field("i_version_hi", 152, 4);
pub const I_PROJID: Field = field("i_projid", 156, 4);
pub const INODE_FIELDS: [&Field; 32] = [
    &I_MODE,
    &I_UID,
    &I_SIZE_LO,
    &I_ATIME,
    &I_CTIME,
    &I_MTIME,
    &I_DTIME,
    &I_GID,
    &I_LINKS_COUNT,
    &I_BLOCKS_LO,
    &I_FLAGS,
    &I_OSD1,
    &I_BLOCK,
    &I_GENERATION,
    &I_FILE_ACL_LO,
    &I_SIZE_HIGH,
    &I_OBSO_FADDR,
    &I_BLOCKS_HIGH,
    &I_FILE_ACL_HIGH,
    &I_UID_HIGH,
    &I_GID_HIGH,
    &I_CHECKSUM_LO,
    &I_RESERVED,
    &I_EXTRA_ISIZE,
    &I_CHECKSUM_HI,
    &I_CTIME_EXTRA,
    &I_MTIME_EXTRA,
    &I_ATIME_EXTRA,
    &I_CRTIME,
    &I_CRTIME_EXTRA,
    &I_VERSION_HI,
    &I_PROJID,
];
const _: () = assert!(tiles(&INODE_FIELDS, INODE_SIZE));

/// `struct ext4_extent_header`: starts `i_block` and every extent tree block.
pub const EXTENT_HEADER_SIZE: usize = 12;
pub const EH_MAGIC: Field = field("eh_magic", 0, 2);
pub const EH_ENTRIES: Field = field("eh_entries", 2, 2);
pub const EH_MAX: Field = field("eh_max", 4, 2);
pub const EH_DEPTH: Field = field("eh_depth", 6, 2);
pub const EH_GENERATION: Field = field("eh_generation", 8, 4);
pub const EXTENT_HEADER_FIELDS: [&Field; 5] =
    [&EH_MAGIC, &EH_ENTRIES, &EH_MAX, &EH_DEPTH, &EH_GENERATION];
const _: () = assert!(tiles(&EXTENT_HEADER_FIELDS, EXTENT_HEADER_SIZE));

/// `struct ext4_extent`: a leaf's entry.
pub const EXTENT_SIZE: usize = 12;
pub const EE_BLOCK: Field = field("ee_block", 0, 4);
pub const EE_LEN: Field = field("ee_len", 4, 2);
pub const EE_START_HI: Field = field("ee_start_hi", 6, 2);
pub const EE_START_LO: Field = field("ee_start_lo", 8, 4);
pub const EXTENT_FIELDS: [&Field; 4] = [&EE_BLOCK, &EE_LEN, &EE_START_HI, &EE_START_LO];
const _: () = assert!(tiles(&EXTENT_FIELDS, EXTENT_SIZE));

/// `struct ext4_extent_idx`: an inner node's entry.
pub const EXTENT_IDX_SIZE: usize = 12;
pub const EI_BLOCK: Field = field("ei_block", 0, 4);
pub const EI_LEAF_LO: Field = field("ei_leaf_lo", 4, 4);
pub const EI_LEAF_HI: Field = field("ei_leaf_hi", 8, 2);
pub const EI_UNUSED: Field = field("ei_unused", 10, 2);
pub const EXTENT_IDX_FIELDS: [&Field; 4] = [&EI_BLOCK, &EI_LEAF_LO, &EI_LEAF_HI, &EI_UNUSED];
const _: () = assert!(tiles(&EXTENT_IDX_FIELDS, EXTENT_IDX_SIZE));

/// `struct ext4_dir_entry_2`.
pub const DIR_ENTRY_SIZE: usize = 8;
pub const DE_INODE: Field = field("inode", 0, 4);
pub const DE_REC_LEN: Field = field("rec_len", 4, 2);
pub const DE_NAME_LEN: Field = field("name_len", 6, 1);
pub const DE_FILE_TYPE: Field = field("file_type", 7, 1);
pub const DIR_ENTRY_FIELDS: [&Field; 4] = [&DE_INODE, &DE_REC_LEN, &DE_NAME_LEN, &DE_FILE_TYPE];
const _: () = assert!(tiles(&DIR_ENTRY_FIELDS, DIR_ENTRY_SIZE));

/// `struct ext4_xattr_ibody_header`: after `i_extra_isize` in a large inode.
pub const XATTR_IBODY_HEADER_SIZE: usize = 4;
pub const XH_MAGIC: Field = field("h_magic", 0, 4);
pub const XATTR_IBODY_HEADER_FIELDS: [&Field; 1] = [&XH_MAGIC];
const _: () = assert!(tiles(&XATTR_IBODY_HEADER_FIELDS, XATTR_IBODY_HEADER_SIZE));

/// `struct ext4_xattr_entry`.
pub const XATTR_ENTRY_SIZE: usize = 16;
pub const XE_NAME_LEN: Field = field("e_name_len", 0, 1);
pub const XE_NAME_INDEX: Field = field("e_name_index", 1, 1);
pub const XE_VALUE_OFFS: Field = field("e_value_offs", 2, 2);
pub const XE_VALUE_INUM: Field = field("e_value_inum", 4, 4);
pub const XE_VALUE_SIZE: Field = field("e_value_size", 8, 4);
pub const XE_HASH: Field = field("e_hash", 12, 4);
pub const XATTR_ENTRY_FIELDS: [&Field; 6] = [
    &XE_NAME_LEN,
    &XE_NAME_INDEX,
    &XE_VALUE_OFFS,
    &XE_VALUE_INUM,
    &XE_VALUE_SIZE,
    &XE_HASH,
];
const _: () = assert!(tiles(&XATTR_ENTRY_FIELDS, XATTR_ENTRY_SIZE));
