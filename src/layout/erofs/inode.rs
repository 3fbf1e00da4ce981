//! Inodes, compact (32 bytes) and extended (64 bytes).

use super::format::*;
use super::superblock::Super;
use super::{bad, check, read, Result, Source};
use crate::layout::source::field_at;

#[derive(Clone, Copy, Debug)]
pub(super) struct Inode {
    pub(super) nid: u64,
    pub(super) iloc: u64,
    pub(super) layout: u8,
    /// 32 (compact) or 64 (extended).
    pub(super) isize: u64,
    pub(super) xattr_isize: u64,
    pub(super) mode: u16,
    pub(super) size: u64,
    /// `i_u`: start block, chunk format or compressed block count by layout.
    pub(super) i_u: u32,
    pub(super) startblk: u64,
}

impl Inode {
    pub(super) fn kind(&self) -> u16 {
        self.mode & S_IFMT
    }

    /// Where inline xattrs end and indexes or inline data begin.
    pub(super) fn body(&self) -> u64 {
        self.iloc + self.isize + self.xattr_isize
    }
}

pub(super) fn read_inode(image: &Source, sb: &Super, nid: u64) -> Result<Inode> {
    let iloc = nid
        .checked_mul(INODE_COMPACT_SIZE as u64)
        .and_then(|o| o.checked_add(sb.meta_base))
        .filter(|&o| o < image.size())
        .ok_or_else(|| {
            bad(
                sb.meta_base,
                format!("inode nid {nid} is outside the image"),
            )
        })?;
    let raw = read(image, iloc, INODE_COMPACT_SIZE as u64, "inode")?;
    let format = raw.get_u16(&IC_FORMAT)?;
    if format & !I_FORMAT_ALL != 0 {
        return Err(bad(
            iloc,
            format!("nid {nid}: unsupported i_format {format:#x}"),
        ));
    }
    let extended = format & 1 != 0;
    let layout = ((format >> 1) & 7) as u8;
    if layout > LAYOUT_CHUNK_BASED {
        return Err(bad(
            iloc,
            format!("nid {nid}: unknown data layout {layout}"),
        ));
    }
    let icount = u64::from(raw.get_u16(&IC_XATTR_ICOUNT)?);
    let mode = raw.get_u16(&IC_MODE)?;
    let nb = u64::from(raw.get_u16(&IC_NB)?);
    let i_u = raw.get_u32(&IC_U)?;
    let (isize, size, hi) = if extended {
        (INODE_EXTENDED_SIZE as u64, raw.get_u64(&IE_SIZE)?, nb)
    } else {
        // i_nb holds the start block's high bits only when the nlink-is-1 bit says so.
        let nlink_1 = mode & S_IFMT != S_IFDIR && (format >> I_NLINK_1_BIT) & 1 != 0;
        (
            INODE_COMPACT_SIZE as u64,
            u64::from(raw.get_u32(&IC_SIZE)?),
            if nlink_1 { nb } else { 0 },
        )
    };
    let xattr_isize = if icount == 0 {
        0
    } else {
        XATTR_IBODY_HEADER_SIZE as u64 + XATTR_ID_SIZE as u64 * (icount - 1)
    };
    check(image, iloc, isize + xattr_isize, "inode")?;
    match mode & S_IFMT {
        S_IFREG | S_IFDIR | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {}
        _ => {
            return Err(bad(
                field_at(iloc, &IC_MODE),
                format!("nid {nid}: bogus mode {mode:o}"),
            ))
        }
    }
    Ok(Inode {
        nid,
        iloc,
        layout,
        isize,
        xattr_isize,
        mode,
        size,
        i_u,
        startblk: u64::from(i_u) | hi << 32,
    })
}
