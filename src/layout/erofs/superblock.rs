//! The superblock: block size, features, where the metadata and the shared xattrs are,
//! and the root and packed inodes.

use super::format::*;
use super::{bad, check, mul, read, round_up, Result, Source};
use crate::layout::source::field_at;

pub(super) struct Super {
    pub(super) blkszbits: u32,
    pub(super) bs: u64,
    pub(super) incompat: u32,
    pub(super) meta_base: u64,
    pub(super) xattr_base: u64,
    pub(super) root_nid: u64,
    /// The packed inode (fragments, long xattr prefixes), when the features use one.
    pub(super) packed_nid: Option<u64>,
    /// Superblock, compression configs and long xattr prefixes stored outside the
    /// packed inode.
    pub(super) meta: Vec<(u64, u64)>,
}

impl Super {
    pub(super) fn parse(image: &Source) -> Result<Super> {
        let at = SUPER_OFFSET;
        let magic = read(image, at, SB_MAGIC.size as u64, "superblock")?.get_u32(&SB_MAGIC)?;
        if magic != MAGIC {
            return Err(bad(at, format!("bad magic {magic:#010x}")));
        }
        let sb = read(image, at, SUPER_SIZE as u64, "superblock")?;
        let blkszbits = u32::from(sb.get_u8(&SB_BLKSZBITS)?);
        if !(9..=16).contains(&blkszbits) {
            return Err(bad(
                field_at(at, &SB_BLKSZBITS),
                format!("block size 2^{blkszbits} is not 512..64K"),
            ));
        }
        let bs = 1u64 << blkszbits;
        let incompat = sb.get_u32(&SB_FEATURE_INCOMPAT)?;
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(bad(
                field_at(at, &SB_FEATURE_INCOMPAT),
                format!(
                    "unknown incompatible features {:#x}",
                    incompat & !INCOMPAT_KNOWN
                ),
            ));
        }
        if incompat & INCOMPAT_METABOX != 0 {
            return Err(bad(
                field_at(at, &SB_FEATURE_INCOMPAT),
                "metadata compression (metabox) is not supported",
            ));
        }
        let sb_size = (SUPER_SIZE + SB_EXTSLOT_SIZE * usize::from(sb.get_u8(&SB_EXTSLOTS)?)) as u64;
        check(image, at, sb_size, "superblock")?;
        let is_48bit = incompat & INCOMPAT_48BIT != 0;
        let rootnid_8b = if is_48bit {
            sb.get_u64(&SB_ROOTNID_8B)?
        } else {
            0
        };
        let blocks_lo = u64::from(sb.get_u32(&SB_BLOCKS_LO)?);
        let (root_nid, blocks) = if rootnid_8b != 0 {
            let hi = u64::from(sb.get_u16(&SB_BLOCKS_HI)?);
            (rootnid_8b, blocks_lo | hi << 32)
        } else {
            (u64::from(sb.get_u16(&SB_ROOTNID_2B)?), blocks_lo)
        };
        let fs_size = mul(blocks, bs, field_at(at, &SB_BLOCKS_LO))?;
        if fs_size == 0 {
            return Err(bad(
                field_at(at, &SB_BLOCKS_LO),
                "the filesystem has no blocks",
            ));
        }
        if fs_size > image.size() {
            return Err(bad(
                image.size(),
                format!("image is truncated: the filesystem has {fs_size} bytes"),
            ));
        }
        if sb.get_u16(&SB_EXTRA_DEVICES)? != 0 {
            return Err(bad(
                field_at(at, &SB_EXTRA_DEVICES),
                "data on extra devices is not supported",
            ));
        }
        let meta_base = u64::from(sb.get_u32(&SB_META_BLKADDR)?) << blkszbits;
        let xattr_base = u64::from(sb.get_u32(&SB_XATTR_BLKADDR)?) << blkszbits;

        // Compression configs follow the superblock, one per available algorithm, each a
        // 4-aligned length-prefixed record.
        let mut sb_end = at + sb_size;
        if incompat & INCOMPAT_COMPR_CFGS != 0 {
            let algs = sb.get_u16(&SB_AVAILABLE_COMPR_ALGS)?;
            for alg in 0..16 {
                if algs & (1 << alg) != 0 {
                    sb_end = round_up(sb_end, 4)?;
                    let len = u64::from(read(image, sb_end, 2, "compression config")?.u16(0)?);
                    check(image, sb_end, 2 + len, "compression config")?;
                    sb_end += 2 + len;
                }
            }
        }
        let mut meta = vec![(at, sb_end - at)];

        let packed = sb.get_u64(&SB_PACKED_NID)?;
        let packed_nid = (packed != 0
            && incompat & (INCOMPAT_FRAGMENTS | INCOMPAT_XATTR_PREFIXES) != 0)
            .then_some(packed);
        if incompat & INCOMPAT_XATTR_PREFIXES != 0 && packed_nid.is_none() {
            // Long xattr name prefixes stored on the device, 4-aligned length-prefixed.
            let count = sb.get_u8(&SB_XATTR_PREFIX_COUNT)?;
            let mut pos = u64::from(sb.get_u32(&SB_XATTR_PREFIX_START)?) * 4;
            let start = pos;
            for _ in 0..count {
                pos = round_up(pos, 4)?;
                let len = u64::from(read(image, pos, 2, "long xattr prefix")?.u16(0)?);
                check(image, pos, 2 + len, "long xattr prefix")?;
                pos += 2 + len;
            }
            meta.push((start, pos - start));
        }
        Ok(Super {
            blkszbits,
            bs,
            incompat,
            meta_base,
            xattr_base,
            root_nid,
            packed_nid,
            meta,
        })
    }

    pub(super) fn blkoff(&self, off: u64) -> u64 {
        off & (self.bs - 1)
    }
}
