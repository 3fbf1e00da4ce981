//! ext2, ext3 and ext4: the superblock and its backups, group descriptors, bitmaps and
//! inode tables; then every allocated inode's blocks (extent trees or block maps); then
//! the directory tree from the root, for the paths of regular files.
//!
//! Every block is claimed at most once as metadata or file data (a byte per block), so
//! a hostile image that points two things at the same block is an error, and no tree
//! block (extent node, indirect block, directory block) is ever read twice: the work is
//! linear in the image size. The only blocks several inodes may share are xattr blocks.

use std::collections::{HashMap, HashSet};

pub mod format;

use format::*;

use super::source::{field_at, Bytes, Field, Source};
use super::{tile, Analysis, FileMap, FsKind, Kind, Layout, LayoutError, Piece, Region};

const FS: &str = "ext4";

const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xEF53;
const EXTENT_MAGIC: u16 = 0xF30A;
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// The kernel refuses deeper extent trees.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Nested directories deeper than this are taken for a hostile image.
const MAX_DIR_DEPTH: usize = 1024;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const COMPAT_ORPHAN_FILE: u32 = 0x1000;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_CASEFOLD: u32 = 0x2_0000;
/// What this reader understands. Compression, journal recovery pending, external
/// journal devices, dirdata and encryption are refused: the files would not read as the
/// kernel shows them.
const INCOMPAT_UNDERSTOOD: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_CASEFOLD;

const BG_INODE_UNINIT: u16 = 0x1;

const FL_EXTENTS: u32 = 0x8_0000;
const FL_EA_INODE: u32 = 0x20_0000;
const FL_INLINE_DATA: u32 = 0x1000_0000;

const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;
const S_IFLNK: u16 = 0xA000;

const ROOT_INO: u64 = 2;
const RESIZE_INO: u64 = 7;
const XATTR_INDEX_SYSTEM: u8 = 7;

fn err(offset: u64, reason: impl Into<String>) -> LayoutError {
    LayoutError::new(FS, offset, reason)
}

/// The superblock fields this reader uses, checked.
#[derive(Debug)]
struct Super {
    block_size: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inodes_count: u64,
    inode_size: u64,
    first_ino: u64,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    desc_size: u64,
    reserved_gdt_blocks: u64,
    first_meta_bg: u64,
    mmp_block: u64,
    backup_bgs: [u64; 2],
    /// Inodes whose blocks are filesystem metadata even if they are regular files:
    /// journal, quota files, orphan file.
    special: Vec<u64>,
    groups: u64,
}

impl Super {
    fn parse(image: &Source) -> Result<Super, LayoutError> {
        let sb = image.read(FS, SUPERBLOCK_OFFSET, SUPER_SIZE as u64, "superblock")?;
        let at = |f: &Field| field_at(SUPERBLOCK_OFFSET, f);
        if sb.get_u16(&SB_MAGIC)? != MAGIC {
            return Err(err(at(&SB_MAGIC), "no ext2/3/4 magic"));
        }
        let log_block = sb.get_u32(&SB_LOG_BLOCK_SIZE)?;
        if log_block > 6 {
            return Err(err(
                at(&SB_LOG_BLOCK_SIZE),
                format!("block size 2^(10+{log_block})"),
            ));
        }
        let block_size = 1024u64 << log_block;
        let rev = sb.get_u32(&SB_REV_LEVEL)?;
        if rev > 1 {
            return Err(err(at(&SB_REV_LEVEL), format!("revision {rev}")));
        }
        let (compat, incompat, ro_compat) = if rev == 0 {
            (0, 0, 0)
        } else {
            (
                sb.get_u32(&SB_FEATURE_COMPAT)?,
                sb.get_u32(&SB_FEATURE_INCOMPAT)?,
                sb.get_u32(&SB_FEATURE_RO_COMPAT)?,
            )
        };
        let unknown = incompat & !INCOMPAT_UNDERSTOOD;
        if unknown != 0 {
            return Err(err(
                at(&SB_FEATURE_INCOMPAT),
                format!("incompatible features {unknown:#x} not understood"),
            ));
        }
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let hi = |lo: u32, hi: u32| u64::from(lo) | if is64 { u64::from(hi) << 32 } else { 0 };
        let blocks_count = hi(
            sb.get_u32(&SB_BLOCKS_COUNT_LO)?,
            sb.get_u32(&SB_BLOCKS_COUNT_HI)?,
        );
        let first_data_block = u64::from(sb.get_u32(&SB_FIRST_DATA_BLOCK)?);
        let blocks_per_group = u64::from(sb.get_u32(&SB_BLOCKS_PER_GROUP)?);
        let inodes_per_group = u64::from(sb.get_u32(&SB_INODES_PER_GROUP)?);
        let inodes_count = u64::from(sb.get_u32(&SB_INODES_COUNT)?);
        let (inode_size, first_ino) = if rev == 0 {
            (128, 11)
        } else {
            (
                u64::from(sb.get_u16(&SB_INODE_SIZE)?),
                u64::from(sb.get_u32(&SB_FIRST_INO)?),
            )
        };
        let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;

        let want_first = u64::from(block_size == 1024 && !bigalloc);
        if first_data_block != want_first {
            return Err(err(
                at(&SB_FIRST_DATA_BLOCK),
                format!("first data block {first_data_block}, expected {want_first}"),
            ));
        }
        if blocks_count <= first_data_block {
            return Err(err(
                at(&SB_BLOCKS_COUNT_LO),
                format!("{blocks_count} blocks"),
            ));
        }
        if blocks_count
            .checked_mul(block_size)
            .is_none_or(|b| b > image.size())
        {
            return Err(err(
                at(&SB_BLOCKS_COUNT_LO),
                format!(
                    "{blocks_count} blocks of {block_size} bytes do not fit in the image ({} bytes): truncated?",
                    image.size()
                ),
            ));
        }
        // The block bitmap of a group is one block: a bit per block (or cluster).
        let cluster_ratio = if bigalloc {
            let log_cluster = sb.get_u32(&SB_LOG_CLUSTER_SIZE)?;
            if log_cluster < log_block || log_cluster > log_block + 16 {
                return Err(err(
                    at(&SB_LOG_CLUSTER_SIZE),
                    format!("cluster size 2^(10+{log_cluster})"),
                ));
            }
            1u64 << (log_cluster - log_block)
        } else {
            1
        };
        if blocks_per_group == 0
            || blocks_per_group % cluster_ratio != 0
            || blocks_per_group / cluster_ratio > 8 * block_size
        {
            return Err(err(
                at(&SB_BLOCKS_PER_GROUP),
                format!("{blocks_per_group} blocks per group"),
            ));
        }
        if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
            return Err(err(
                at(&SB_INODES_PER_GROUP),
                format!("{inodes_per_group} inodes per group"),
            ));
        }
        if !inode_size.is_power_of_two() || inode_size < 128 || inode_size > block_size {
            return Err(err(at(&SB_INODE_SIZE), format!("inode size {inode_size}")));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if inodes_count == 0 || inodes_count > groups * inodes_per_group {
            return Err(err(
                at(&SB_INODES_COUNT),
                format!("{inodes_count} inodes in {groups} groups of {inodes_per_group}"),
            ));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return Err(err(at(&SB_FIRST_INO), format!("first inode {first_ino}")));
        }
        let desc_size = if is64 {
            let d = u64::from(sb.get_u16(&SB_DESC_SIZE)?);
            if !d.is_power_of_two() || !(64..=1024).contains(&d) {
                return Err(err(at(&SB_DESC_SIZE), format!("group descriptor size {d}")));
            }
            d
        } else {
            BG_BLOCK_BITMAP_HI.offset as u64
        };
        // Checked against the image before any allocation sized by the group count.
        if groups.saturating_mul(desc_size) > image.size() {
            return Err(err(at(&SB_BLOCKS_COUNT_LO), format!("{groups} groups")));
        }
        let reserved_gdt_blocks = if compat & COMPAT_RESIZE_INODE != 0 {
            u64::from(sb.get_u16(&SB_RESERVED_GDT_BLOCKS)?)
        } else {
            0
        };
        if reserved_gdt_blocks > block_size / 4 {
            return Err(err(
                at(&SB_RESERVED_GDT_BLOCKS),
                format!("{reserved_gdt_blocks} reserved GDT blocks"),
            ));
        }
        let first_meta_bg = if incompat & INCOMPAT_META_BG != 0 {
            let f = u64::from(sb.get_u32(&SB_FIRST_META_BG)?);
            let desc_blocks = groups.div_ceil(block_size / desc_size);
            if f > desc_blocks {
                return Err(err(at(&SB_FIRST_META_BG), format!("first meta group {f}")));
            }
            f
        } else {
            0
        };
        let mmp_block = if incompat & INCOMPAT_MMP != 0 {
            sb.get_u64(&SB_MMP_BLOCK)?
        } else {
            0
        };
        let backup_bgs = [
            u64::from(sb.get_u32_item(&SB_BACKUP_BGS, 0)?),
            u64::from(sb.get_u32_item(&SB_BACKUP_BGS, 1)?),
        ];
        let mut special = Vec::new();
        if compat & COMPAT_HAS_JOURNAL != 0 {
            special.push(u64::from(sb.get_u32(&SB_JOURNAL_INUM)?));
        }
        if rev > 0 {
            for quota in [&SB_USR_QUOTA_INUM, &SB_GRP_QUOTA_INUM, &SB_PRJ_QUOTA_INUM] {
                special.push(u64::from(sb.get_u32(quota)?));
            }
        }
        if compat & COMPAT_ORPHAN_FILE != 0 {
            special.push(u64::from(sb.get_u32(&SB_ORPHAN_FILE_INUM)?));
        }
        special.retain(|&i| i != 0);
        Ok(Super {
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            inode_size,
            first_ino,
            compat,
            incompat,
            ro_compat,
            desc_size,
            reserved_gdt_blocks,
            first_meta_bg,
            mmp_block,
            backup_bgs,
            special,
            groups,
        })
    }

    fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }

    fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    /// Where a group's superblock copy (if any) sits; its descriptors follow.
    fn group_base(&self, g: u64) -> u64 {
        let first = self.group_first_block(g);
        // 1 KiB blocks with bigalloc: group 0 starts at block 0, the superblock is block 1.
        if first == 0 && self.block_size == 1024 {
            1
        } else {
            first
        }
    }

    /// Whether group `g` holds a superblock copy (and, outside meta_bg, descriptors).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g == 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7))
    }

    /// Blocks of descriptors (and reserved descriptors) after a superblock copy in the
    /// classic layout.
    fn old_desc_blocks(&self) -> u64 {
        if self.has(INCOMPAT_META_BG) {
            self.first_meta_bg
        } else {
            self.groups.div_ceil(self.descs_per_block()) + self.reserved_gdt_blocks
        }
    }

    /// The block holding the primary descriptor of group `g`.
    fn desc_block(&self, g: u64) -> u64 {
        let dpb = self.descs_per_block();
        let meta_group = g / dpb;
        if self.has(INCOMPAT_META_BG) && meta_group >= self.first_meta_bg {
            let first = meta_group * dpb;
            self.group_base(first) + u64::from(self.has_super(first))
        } else {
            self.group_base(0) + 1 + meta_group
        }
    }

    fn csum(&self) -> bool {
        self.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

#[derive(Clone, Copy, Debug)]
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
}

/// Logically contiguous blocks of an inode, physically contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    logical: u64,
    physical: u64,
    len: u64,
    /// An unwritten (preallocated) extent: reads as zeros.
    unwritten: bool,
}

fn push_run(runs: &mut Vec<Run>, run: Run) {
    if let Some(last) = runs.last_mut() {
        if last.unwritten == run.unwritten
            && last.logical + last.len == run.logical
            && last.physical + last.len == run.physical
        {
            last.len += run.len;
            return;
        }
    }
    runs.push(run);
}

/// A regular file's pieces for `[0, size)` from its runs (sorted, not overlapping).
fn pieces_of(runs: &[Run], size: u64, block_size: u64) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut push = |p: Piece| match (out.last_mut(), p) {
        (Some(Piece::Zero { len }), Piece::Zero { len: more }) => *len += more,
        (
            Some(Piece::Plain { offset, len }),
            Piece::Plain {
                offset: next,
                len: more,
            },
        ) if *offset + *len == next => *len += more,
        _ => out.push(p),
    };
    let mut pos = 0u64;
    for r in runs {
        let start = r.logical * block_size;
        if start >= size {
            break;
        }
        if start > pos {
            push(Piece::Zero { len: start - pos });
        }
        let end = ((r.logical + r.len) * block_size).min(size);
        let len = end - start;
        push(if r.unwritten {
            Piece::Zero { len }
        } else {
            Piece::Plain {
                offset: r.physical * block_size,
                len,
            }
        });
        pos = end;
    }
    if pos < size {
        push(Piece::Zero { len: size - pos });
    }
    out
}

struct Inode<'a> {
    ino: u64,
    raw: Bytes<'a>,
    mode: u16,
    flags: u32,
    size: u64,
    file_acl: u64,
}

impl<'a> Inode<'a> {
    fn kind(&self) -> u16 {
        self.mode & S_IFMT
    }

    fn i_block(&self) -> Result<Bytes<'a>, LayoutError> {
        self.raw.sub(I_BLOCK.offset, I_BLOCK.size)
    }

    /// The value of the in-inode `system.data` xattr (inline data beyond `i_block`).
    fn inline_xattr(&self) -> Result<Option<Bytes<'a>>, LayoutError> {
        let size = self.raw.len();
        // An inode of 128 bytes ends where `i_extra_isize` would be.
        let base = I_EXTRA_ISIZE.offset;
        if size <= base {
            return Ok(None);
        }
        let extra = usize::from(self.raw.get_u16(&I_EXTRA_ISIZE)?);
        let header = base + extra;
        if extra % 4 != 0 || header + XATTR_IBODY_HEADER_SIZE > size {
            return Ok(None);
        }
        if self
            .raw
            .sub(header, XATTR_IBODY_HEADER_SIZE)?
            .get_u32(&XH_MAGIC)?
            != XATTR_MAGIC
        {
            return Ok(None);
        }
        let first = header + XATTR_IBODY_HEADER_SIZE;
        let mut pos = first;
        // Each entry takes at least 16 bytes, and the list ends with 4 zero bytes: the loop
        // ends within the inode.
        while pos + 4 <= size && self.raw.u32(pos)? != 0 {
            let e = self.raw.sub(pos, XATTR_ENTRY_SIZE)?;
            let name_len = usize::from(e.get_u8(&XE_NAME_LEN)?);
            let index = e.get_u8(&XE_NAME_INDEX)?;
            let value_offs = usize::from(e.get_u16(&XE_VALUE_OFFS)?);
            let value_inum = e.get_u32(&XE_VALUE_INUM)?;
            let value_size = e.get_u32(&XE_VALUE_SIZE)? as usize;
            let name = self.raw.sub(pos + XATTR_ENTRY_SIZE, name_len)?;
            if index == XATTR_INDEX_SYSTEM && *name == *b"data" {
                if value_inum != 0 {
                    return Err(err(
                        self.raw.at() + pos as u64,
                        "inline data in an xattr inode",
                    ));
                }
                return self.raw.sub(first + value_offs, value_size).map(Some);
            }
            pos += (XATTR_ENTRY_SIZE + name_len + 3) & !3;
        }
        Ok(None)
    }
}

/// A directory entry: the inode it names and its name (which knows where it is).
struct Entry<'a> {
    ino: u64,
    name: Bytes<'a>,
}

/// What the directory walk needs to know of an allocated inode.
enum Node {
    Dir { runs: Vec<Run>, size: u64 },
    InlineDir,
    File { size: u64, pieces: Vec<Piece> },
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Blocks nothing else may use: a second claim is an error.
    Own,
    /// Metadata several inodes may point to (xattr blocks).
    Shared,
}

const FREE: u8 = 0;
const META: u8 = 1;
const DATA: u8 = 2;

struct Reader<'a> {
    image: &'a Source<'a>,
    sb: Super,
    groups: Vec<Group>,
    /// FREE, META or DATA per block.
    owner: Vec<u8>,
    meta: Vec<(u64, u64)>,
    /// (first block, blocks, inode)
    data: Vec<(u64, u64, u64)>,
    nodes: HashMap<u64, Node>,
    /// Left of what may be allocated for paths and file maps (hard links and deep trees
    /// multiply them beyond the image size).
    budget: u64,
}

impl<'a> Reader<'a> {
    fn block(&self, blk: u64) -> Result<Bytes<'a>, LayoutError> {
        if blk >= self.sb.blocks_count {
            return Err(err(
                blk.saturating_mul(self.sb.block_size),
                format!("block {blk} is past the filesystem's end"),
            ));
        }
        self.image.read(
            FS,
            blk * self.sb.block_size,
            self.sb.block_size,
            "filesystem block",
        )
    }

    fn range_ok(&self, start: u64, count: u64, at: u64) -> Result<(), LayoutError> {
        if count == 0
            || start
                .checked_add(count)
                .is_none_or(|end| end > self.sb.blocks_count)
        {
            return Err(err(
                at,
                format!(
                    "blocks {start}+{count} outside the filesystem ({} blocks)",
                    self.sb.blocks_count
                ),
            ));
        }
        Ok(())
    }

    /// Claims blocks as metadata; `at` is where the pointer to them was read.
    fn claim_meta(
        &mut self,
        start: u64,
        count: u64,
        how: Claim,
        at: u64,
    ) -> Result<(), LayoutError> {
        self.range_ok(start, count, at)?;
        for b in start..start + count {
            match self.owner[b as usize] {
                FREE => self.owner[b as usize] = META,
                META if how == Claim::Shared => {}
                _ => return Err(err(at, format!("block {b} is claimed twice"))),
            }
        }
        self.meta.push((start, count));
        Ok(())
    }

    fn claim_data(&mut self, start: u64, count: u64, ino: u64, at: u64) -> Result<(), LayoutError> {
        self.range_ok(start, count, at)?;
        for b in start..start + count {
            if self.owner[b as usize] != FREE {
                return Err(err(
                    at,
                    format!("block {b} of inode {ino} is claimed twice"),
                ));
            }
            self.owner[b as usize] = DATA;
        }
        self.data.push((start, count, ino));
        Ok(())
    }

    fn spend(&mut self, amount: u64, at: u64) -> Result<(), LayoutError> {
        self.budget = self.budget.checked_sub(amount).ok_or_else(|| {
            err(
                at,
                "too many paths or pieces for the image's size (hard links?)",
            )
        })?;
        Ok(())
    }

    fn read_groups(&mut self) -> Result<(), LayoutError> {
        let sb = &self.sb;
        let dpb = sb.descs_per_block();
        let is64 = sb.has(INCOMPAT_64BIT);
        let mut groups = Vec::with_capacity(sb.groups as usize);
        for g in 0..sb.groups {
            let blk = sb.desc_block(g);
            let d = self
                .block(blk)?
                .sub(((g % dpb) * sb.desc_size) as usize, sb.desc_size as usize)?;
            let wide = |lo: &Field, hi: &Field| -> Result<u64, LayoutError> {
                let high = if is64 {
                    u64::from(d.get_u32(hi)?) << 32
                } else {
                    0
                };
                Ok(u64::from(d.get_u32(lo)?) | high)
            };
            groups.push(Group {
                block_bitmap: wide(&BG_BLOCK_BITMAP_LO, &BG_BLOCK_BITMAP_HI)?,
                inode_bitmap: wide(&BG_INODE_BITMAP_LO, &BG_INODE_BITMAP_HI)?,
                inode_table: wide(&BG_INODE_TABLE_LO, &BG_INODE_TABLE_HI)?,
                flags: d.get_u16(&BG_FLAGS)?,
            });
        }
        self.groups = groups;
        Ok(())
    }

    /// Superblock copies, descriptors, reserved descriptors, bitmaps, inode tables.
    fn claim_static(&mut self) -> Result<(), LayoutError> {
        let sb_at = SUPERBLOCK_OFFSET;
        let dpb = self.sb.descs_per_block();
        let meta_bg = self.sb.has(INCOMPAT_META_BG);
        let itable_blocks =
            (self.sb.inodes_per_group * self.sb.inode_size).div_ceil(self.sb.block_size);
        for g in 0..self.sb.groups {
            let base = self.sb.group_base(g);
            let has_super = self.sb.has_super(g);
            if has_super {
                self.claim_meta(base, 1, Claim::Own, sb_at)?;
            }
            if !meta_bg || g / dpb < self.sb.first_meta_bg {
                let n = self.sb.old_desc_blocks();
                if has_super && n > 0 {
                    self.claim_meta(base + 1, n, Claim::Own, sb_at)?;
                }
            } else {
                let r = g % dpb;
                if r == 0 || r == 1 || r == dpb - 1 {
                    self.claim_meta(base + u64::from(has_super), 1, Claim::Own, sb_at)?;
                }
            }
        }
        for g in 0..self.sb.groups {
            let gd = self.groups[g as usize];
            let at = self.sb.desc_block(g) * self.sb.block_size;
            self.claim_meta(gd.block_bitmap, 1, Claim::Own, at)?;
            self.claim_meta(gd.inode_bitmap, 1, Claim::Own, at)?;
            self.claim_meta(gd.inode_table, itable_blocks, Claim::Own, at)?;
        }
        if self.sb.has(INCOMPAT_MMP) {
            let at = field_at(SUPERBLOCK_OFFSET, &SB_MMP_BLOCK);
            self.claim_meta(self.sb.mmp_block, 1, Claim::Own, at)?;
        }
        Ok(())
    }

    fn inode(&self, ino: u64) -> Result<Inode<'a>, LayoutError> {
        let sb = &self.sb;
        let g = (ino - 1) / sb.inodes_per_group;
        let index = (ino - 1) % sb.inodes_per_group;
        let table = self.groups[g as usize].inode_table;
        let raw = self.image.read(
            FS,
            table * sb.block_size + index * sb.inode_size,
            sb.inode_size,
            "inode",
        )?;
        let is64 = sb.has(INCOMPAT_64BIT);
        Ok(Inode {
            ino,
            mode: raw.get_u16(&I_MODE)?,
            flags: raw.get_u32(&I_FLAGS)?,
            size: u64::from(raw.get_u32(&I_SIZE_LO)?) | u64::from(raw.get_u32(&I_SIZE_HIGH)?) << 32,
            file_acl: u64::from(raw.get_u32(&I_FILE_ACL_LO)?)
                | if is64 {
                    u64::from(raw.get_u16(&I_FILE_ACL_HIGH)?) << 32
                } else {
                    0
                },
            raw,
        })
    }

    /// Every allocated inode (by the inode bitmaps) in inode number order.
    fn scan_inodes(&mut self) -> Result<(), LayoutError> {
        for g in 0..self.sb.groups {
            let gd = self.groups[g as usize];
            if self.sb.csum() && gd.flags & BG_INODE_UNINIT != 0 {
                continue;
            }
            let bitmap = self.block(gd.inode_bitmap)?;
            for i in 0..self.sb.inodes_per_group {
                let ino = g * self.sb.inodes_per_group + i + 1;
                if ino > self.sb.inodes_count {
                    break;
                }
                if bitmap.u8((i / 8) as usize)? >> (i % 8) & 1 == 1 {
                    self.scan_inode(ino)?;
                }
            }
        }
        Ok(())
    }

    fn scan_inode(&mut self, ino: u64) -> Result<(), LayoutError> {
        let inode = self.inode(ino)?;
        let at = inode.raw.at();
        if inode.file_acl != 0 {
            self.claim_meta(
                inode.file_acl,
                1,
                Claim::Shared,
                field_at(at, &I_FILE_ACL_LO),
            )?;
        }
        if ino == RESIZE_INO && self.sb.compat & COMPAT_RESIZE_INODE != 0 {
            // Its double-indirect block lists the reserved descriptor blocks, already
            // claimed with the groups.
            let dind = u64::from(inode.i_block()?.u32(13 * 4)?);
            if dind != 0 {
                self.claim_meta(dind, 1, Claim::Own, field_at(at, &I_BLOCK) + 13 * 4)?;
            }
            self.nodes.insert(ino, Node::Other);
            return Ok(());
        }
        let inline = inode.flags & FL_INLINE_DATA != 0;
        if inline && !self.sb.has(INCOMPAT_INLINE_DATA) {
            return Err(err(
                at + 0x20,
                format!("inode {ino} has inline data, the filesystem not"),
            ));
        }
        if inline && inode.flags & FL_EXTENTS != 0 {
            return Err(err(
                at + 0x20,
                format!("inode {ino} has inline data and extents"),
            ));
        }
        let kind = inode.kind();
        let node = match kind {
            S_IFREG => {
                if inline {
                    Node::File {
                        size: inode.size,
                        pieces: self.inline_pieces(&inode)?,
                    }
                } else {
                    let runs = self.runs(&inode)?;
                    let data = ino >= self.sb.first_ino
                        && !self.sb.special.contains(&ino)
                        && inode.flags & FL_EA_INODE == 0;
                    self.claim_runs(&runs, data.then_some(ino), at)?;
                    Node::File {
                        size: inode.size,
                        pieces: pieces_of(&runs, inode.size, self.sb.block_size),
                    }
                }
            }
            S_IFDIR if inline => Node::InlineDir,
            S_IFDIR => {
                let runs = self.runs(&inode)?;
                self.claim_runs(&runs, None, at)?;
                Node::Dir {
                    runs,
                    size: inode.size,
                }
            }
            // Fast symlinks keep their target in i_block.
            S_IFLNK if inline || inode.size < I_BLOCK.size as u64 => Node::Other,
            S_IFLNK => {
                let runs = self.runs(&inode)?;
                self.claim_runs(&runs, None, at)?;
                Node::Other
            }
            // Reserved inodes without a type: unused (all zeros, whatever the flags say)
            // or the bad blocks list.
            0 if ino < self.sb.first_ino && inode.i_block()?.iter().any(|&b| b != 0) => {
                let runs = self.runs(&inode)?;
                self.claim_runs(&runs, None, at)?;
                Node::Other
            }
            // Devices, fifos, sockets: no blocks.
            _ => Node::Other,
        };
        self.nodes.insert(ino, node);
        Ok(())
    }

    fn claim_runs(
        &mut self,
        runs: &[Run],
        data_of: Option<u64>,
        at: u64,
    ) -> Result<(), LayoutError> {
        for r in runs {
            match data_of {
                Some(ino) => self.claim_data(r.physical, r.len, ino, at)?,
                None => self.claim_meta(r.physical, r.len, Claim::Own, at)?,
            }
        }
        Ok(())
    }

    /// Inline data: the first 60 bytes in `i_block`, the rest in the `system.data` xattr,
    /// and zeros beyond (mkfs -d leaves an all-zero file inline with its full size; the
    /// kernel reads the bytes past the inline data as zeros).
    fn inline_pieces(&self, inode: &Inode) -> Result<Vec<Piece>, LayoutError> {
        if inode.size > self.max_file_size(false) {
            return Err(err(
                inode.raw.at() + 4,
                format!("inode {}: size {}", inode.ino, inode.size),
            ));
        }
        let i_block = inode.i_block()?;
        let head = inode.size.min(I_BLOCK.size as u64);
        let mut pieces = Vec::new();
        if head > 0 {
            pieces.push(Piece::Plain {
                offset: i_block.at(),
                len: head,
            });
        }
        let mut rest = inode.size - head;
        if rest > 0 {
            if let Some(value) = inode.inline_xattr()? {
                let len = rest.min(value.len() as u64);
                if len > 0 {
                    pieces.push(Piece::Plain {
                        offset: value.at(),
                        len,
                    });
                }
                rest -= len;
            }
        }
        if rest > 0 {
            pieces.push(Piece::Zero { len: rest });
        }
        Ok(pieces)
    }

    /// The largest file size an extent tree (or a block map) can address.
    fn max_file_size(&self, block_map: bool) -> u64 {
        let bs = self.sb.block_size;
        let blocks = if block_map {
            let a = bs / 4;
            12 + a + a * a + a * a * a
        } else {
            1 << 32
        };
        blocks * bs
    }

    /// The inode's blocks in file order. Extent tree blocks and indirect blocks are
    /// claimed as metadata on the way; the runs themselves are left to the caller.
    fn runs(&mut self, inode: &Inode<'a>) -> Result<Vec<Run>, LayoutError> {
        let i_block = inode.i_block()?;
        let mut runs = Vec::new();
        let bs = self.sb.block_size;
        let extents = inode.flags & FL_EXTENTS != 0;
        if extents {
            self.extent_node(i_block, None, &mut runs)?;
            runs.sort_by_key(|r| r.logical);
            for w in runs.windows(2) {
                if w[0].logical + w[0].len > w[1].logical {
                    return Err(err(
                        inode.raw.at(),
                        format!(
                            "inode {}: extents overlap at block {}",
                            inode.ino, w[1].logical
                        ),
                    ));
                }
            }
        } else {
            let a = bs / 4;
            for i in 0..12 {
                let p = u64::from(i_block.u32(i * 4)?);
                if p != 0 {
                    push_run(
                        &mut runs,
                        Run {
                            logical: i as u64,
                            physical: p,
                            len: 1,
                            unwritten: false,
                        },
                    );
                }
            }
            let mut base = 12u64;
            for level in 1..=3u32 {
                let off = (11 + level as usize) * 4;
                let p = u64::from(i_block.u32(off)?);
                if p != 0 {
                    self.indirect(p, level, base, i_block.at() + off as u64, &mut runs)?;
                }
                base += a.pow(level);
            }
        }
        if inode.kind() == S_IFREG && inode.size > self.max_file_size(!extents) {
            return Err(err(
                field_at(inode.raw.at(), &I_SIZE_LO),
                format!(
                    "inode {}: size {} beyond what its block map can hold",
                    inode.ino, inode.size
                ),
            ));
        }
        Ok(runs)
    }

    fn extent_node(
        &mut self,
        node: Bytes<'a>,
        depth: Option<u16>,
        runs: &mut Vec<Run>,
    ) -> Result<(), LayoutError> {
        if node.get_u16(&EH_MAGIC)? != EXTENT_MAGIC {
            return Err(err(node.at(), "no extent header"));
        }
        let entries = usize::from(node.get_u16(&EH_ENTRIES)?);
        let max = usize::from(node.get_u16(&EH_MAX)?);
        let d = node.get_u16(&EH_DEPTH)?;
        if EXTENT_HEADER_SIZE + EXTENT_SIZE * max > node.len() || entries > max {
            return Err(err(
                node.at(),
                format!("{entries} of {max} extents in {} bytes", node.len()),
            ));
        }
        if d > MAX_EXTENT_DEPTH || depth.is_some_and(|want| want != d) {
            return Err(err(
                field_at(node.at(), &EH_DEPTH),
                format!("extent tree depth {d}"),
            ));
        }
        for i in 0..entries {
            let e = node.sub(EXTENT_HEADER_SIZE + EXTENT_SIZE * i, EXTENT_SIZE)?;
            if d > 0 {
                let child =
                    u64::from(e.get_u32(&EI_LEAF_LO)?) | u64::from(e.get_u16(&EI_LEAF_HI)?) << 32;
                self.claim_meta(child, 1, Claim::Own, e.at())?;
                let b = self.block(child)?;
                self.extent_node(b, Some(d - 1), runs)?;
            } else {
                let logical = u64::from(e.get_u32(&EE_BLOCK)?);
                let raw_len = u64::from(e.get_u16(&EE_LEN)?);
                let physical =
                    u64::from(e.get_u16(&EE_START_HI)?) << 32 | u64::from(e.get_u32(&EE_START_LO)?);
                let (len, unwritten) = if raw_len > 32768 {
                    (raw_len - 32768, true)
                } else {
                    (raw_len, false)
                };
                if len == 0 {
                    return Err(err(e.at(), "empty extent"));
                }
                if logical + len > 1 << 32 {
                    return Err(err(e.at(), "extent past the largest file"));
                }
                push_run(
                    runs,
                    Run {
                        logical,
                        physical,
                        len,
                        unwritten,
                    },
                );
            }
        }
        Ok(())
    }

    fn indirect(
        &mut self,
        blk: u64,
        level: u32,
        base: u64,
        at: u64,
        runs: &mut Vec<Run>,
    ) -> Result<(), LayoutError> {
        self.claim_meta(blk, 1, Claim::Own, at)?;
        let b = self.block(blk)?;
        let a = self.sb.block_size / 4;
        let span = a.pow(level - 1);
        for i in 0..a {
            let off = (i * 4) as usize;
            let p = u64::from(b.u32(off)?);
            if p == 0 {
                continue;
            }
            if level == 1 {
                push_run(
                    runs,
                    Run {
                        logical: base + i,
                        physical: p,
                        len: 1,
                        unwritten: false,
                    },
                );
            } else {
                self.indirect(p, level - 1, base + i * span, b.at() + off as u64, runs)?;
            }
        }
        Ok(())
    }

    /// The entries of one directory block or inline area that name an inode.
    fn entries(&self, area: Bytes<'a>, out: &mut Vec<Entry<'a>>) -> Result<(), LayoutError> {
        let mut pos = 0usize;
        while pos < area.len() {
            let e = area.sub(pos, DIR_ENTRY_SIZE)?;
            let ino = u64::from(e.get_u32(&DE_INODE)?);
            let raw_len = e.get_u16(&DE_REC_LEN)?;
            let rec_len = if self.sb.block_size == 65536 && (raw_len == 0 || raw_len == 0xFFFF) {
                65536
            } else {
                usize::from(raw_len)
            };
            let name_len = usize::from(e.get_u8(&DE_NAME_LEN)?);
            if rec_len < DIR_ENTRY_SIZE
                || rec_len % 4 != 0
                || pos + rec_len > area.len()
                || DIR_ENTRY_SIZE + name_len > rec_len
            {
                return Err(err(
                    area.at() + pos as u64,
                    format!("directory entry of {rec_len} bytes"),
                ));
            }
            if ino != 0 {
                let name = area.sub(pos + DIR_ENTRY_SIZE, name_len)?;
                out.push(Entry { ino, name });
            }
            pos += rec_len;
        }
        Ok(())
    }

    fn dir_entries(&self, ino: u64) -> Result<Vec<Entry<'a>>, LayoutError> {
        let mut out = Vec::new();
        match self.nodes.get(&ino) {
            Some(Node::Dir { runs, size }) => {
                let bs = self.sb.block_size;
                let blocks = size.div_ceil(bs);
                for r in runs.iter().filter(|r| !r.unwritten) {
                    for k in 0..r.len.min(blocks.saturating_sub(r.logical)) {
                        self.entries(self.block(r.physical + k)?, &mut out)?;
                    }
                }
            }
            Some(Node::InlineDir) => {
                let inode = self.inode(ino)?;
                // The parent's number, then entries; more entries may follow in system.data.
                self.entries(inode.i_block()?.sub(4, I_BLOCK.size - 4)?, &mut out)?;
                if let Some(more) = inode.inline_xattr()? {
                    if !more.is_empty() {
                        self.entries(more, &mut out)?;
                    }
                }
            }
            _ => return Err(err(0, format!("inode {ino} is not a directory"))),
        }
        Ok(out)
    }

    /// Paths of regular files, from the root.
    fn walk(&mut self) -> Result<Vec<FileMap>, LayoutError> {
        let mut files = Vec::new();
        let mut seen_dirs = HashSet::from([ROOT_INO]);
        let mut stack = vec![(ROOT_INO, String::new(), 0usize)];
        while let Some((dir, path, depth)) = stack.pop() {
            for Entry { ino, name } in self.dir_entries(dir)? {
                let at = name.at();
                let name = &*name;
                if name == b"." || name == b".." {
                    continue;
                }
                if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                    return Err(err(at, "bad file name"));
                }
                if ino > self.sb.inodes_count {
                    return Err(err(
                        at - 8,
                        format!("entry for inode {ino} of {}", self.sb.inodes_count),
                    ));
                }
                let name = String::from_utf8_lossy(name);
                let child = if path.is_empty() {
                    name.into_owned()
                } else {
                    format!("{path}/{name}")
                };
                match self.nodes.get(&ino) {
                    None => {
                        return Err(err(
                            at - 8,
                            format!("entry {child:?} names unused inode {ino}"),
                        ))
                    }
                    Some(Node::Dir { .. } | Node::InlineDir) => {
                        if depth + 1 > MAX_DIR_DEPTH {
                            return Err(err(at, "directories nested too deep"));
                        }
                        if seen_dirs.insert(ino) {
                            self.spend(child.len() as u64, at)?;
                            stack.push((ino, child, depth + 1));
                        }
                    }
                    Some(Node::File { size, pieces }) => {
                        let (size, pieces) = (*size, pieces.clone());
                        self.spend(
                            child.len() as u64
                                + (pieces.len() * std::mem::size_of::<Piece>()) as u64,
                            at,
                        )?;
                        files.push(FileMap {
                            path: child,
                            inode: ino,
                            size,
                            pieces,
                        });
                    }
                    Some(Node::Other) => {}
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn regions(&self, files: &[FileMap]) -> Result<Vec<Region>, LayoutError> {
        let bs = self.sb.block_size;
        let named: HashSet<u64> = files.iter().map(|f| f.inode).collect();
        let mut parts = Vec::with_capacity(self.meta.len() + self.data.len());
        let mut meta = self.meta.clone();
        meta.sort_unstable();
        let mut last: Option<(u64, u64)> = None;
        for (start, count) in meta {
            match &mut last {
                // Shared xattr blocks are claimed once per inode.
                Some((s, c)) if start < *s + *c => *c = (*c).max(start + count - *s),
                _ => {
                    if let Some((s, c)) = last {
                        parts.push(Region {
                            offset: s * bs,
                            len: c * bs,
                            kind: Kind::Metadata,
                            file: None,
                        });
                    }
                    last = Some((start, count));
                }
            }
        }
        if let Some((s, c)) = last {
            parts.push(Region {
                offset: s * bs,
                len: c * bs,
                kind: Kind::Metadata,
                file: None,
            });
        }
        let mut data = self.data.clone();
        data.sort_unstable();
        let mut last: Option<(u64, u64, u64)> = None;
        let flush = |run: (u64, u64, u64), parts: &mut Vec<Region>| {
            let (s, c, ino) = run;
            parts.push(Region {
                offset: s * bs,
                len: c * bs,
                kind: Kind::Data,
                file: named.contains(&ino).then_some(ino),
            });
        };
        for (start, count, ino) in data {
            match &mut last {
                Some((s, c, i)) if *i == ino && *s + *c == start => *c += count,
                _ => {
                    if let Some(run) = last {
                        flush(run, &mut parts);
                    }
                    last = Some((start, count, ino));
                }
            }
        }
        if let Some(run) = last {
            flush(run, &mut parts);
        }
        tile(FS, self.image, parts)
    }
}

/// Describes an ext2/3/4 image: its metadata, each regular file's data extents and the
/// free space between, with every regular file's pieces.
pub fn analyse<'a>(image: impl Into<Source<'a>>) -> Result<Analysis, LayoutError> {
    let image = &image.into();
    let sb = Super::parse(image)?;
    let blocks = sb.blocks_count as usize;
    let block_size = sb.block_size;
    let budget = image.size().saturating_mul(8) + (64 << 20);
    let mut r = Reader {
        image,
        sb,
        groups: Vec::new(),
        owner: vec![FREE; blocks],
        meta: Vec::new(),
        data: Vec::new(),
        nodes: HashMap::new(),
        budget,
    };
    r.read_groups()?;
    r.claim_static()?;
    r.scan_inodes()?;
    match r.nodes.get(&ROOT_INO) {
        Some(Node::Dir { .. } | Node::InlineDir) => {}
        _ => return Err(err(0, "the root inode is not an allocated directory")),
    }
    let files = r.walk()?;
    let regions = r.regions(&files)?;
    Ok(Analysis {
        layout: Layout {
            fs: FsKind::Ext4,
            block_size: block_size as u32,
            regions,
        },
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_groups_follow_sparse_super() {
        let sb = Super {
            block_size: 4096,
            blocks_count: 1 << 20,
            first_data_block: 0,
            blocks_per_group: 32768,
            inodes_per_group: 8192,
            inodes_count: 32 * 8192,
            inode_size: 256,
            first_ino: 11,
            compat: 0,
            incompat: 0,
            ro_compat: RO_COMPAT_SPARSE_SUPER,
            desc_size: 32,
            reserved_gdt_blocks: 0,
            first_meta_bg: 0,
            mmp_block: 0,
            backup_bgs: [0, 0],
            special: Vec::new(),
            groups: 32,
        };
        let with: Vec<u64> = (0..130).filter(|&g| sb.has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    #[test]
    fn pieces_fill_holes_and_clip_at_size() {
        let runs = [
            Run {
                logical: 1,
                physical: 10,
                len: 2,
                unwritten: false,
            },
            Run {
                logical: 3,
                physical: 12,
                len: 1,
                unwritten: false,
            },
            Run {
                logical: 5,
                physical: 20,
                len: 1,
                unwritten: true,
            },
            Run {
                logical: 8,
                physical: 30,
                len: 4,
                unwritten: false,
            },
        ];
        let p = pieces_of(&runs, 8 * 1024 + 100, 1024);
        assert_eq!(
            p,
            [
                Piece::Zero { len: 1024 },
                Piece::Plain {
                    offset: 10 * 1024,
                    len: 3 * 1024
                },
                Piece::Zero { len: 4 * 1024 },
                Piece::Plain {
                    offset: 30 * 1024,
                    len: 100
                },
            ]
        );
        assert_eq!(pieces_of(&[], 5000, 1024), [Piece::Zero { len: 5000 }]);
        assert!(pieces_of(&runs, 0, 1024).is_empty());
    }

    #[test]
    fn not_ext4_is_an_error() {
        assert!(analyse(&[]).is_err());
        assert!(analyse(&[0u8; 4096]).is_err());
        let mut img = vec![0u8; 8192];
        img[1024 + 0x38..1024 + 0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        let e = analyse(&img).unwrap_err();
        assert_eq!(e.fs, "ext4");
    }
}
