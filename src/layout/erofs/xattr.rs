//! Inline xattrs: the shared xattrs an inode names are metadata, each recorded once.

use super::format::*;
use super::inode::Inode;
use super::walk::Walker;
use super::{add, bad, check, read, round_up, Result};
use crate::layout::{Kind, Region};

impl Walker<'_> {
    /// Records the shared xattrs `ino` names that no inode named before.
    pub(super) fn record_shared_xattrs(&mut self, ino: &Inode) -> Result<()> {
        let hdr = ino.iloc + ino.isize;
        let xattrs = read(self.image, hdr, ino.xattr_isize, "inline xattrs")?;
        let shared = u64::from(xattrs.get_u8(&XH_SHARED_COUNT)?);
        if (XATTR_IBODY_HEADER_SIZE + XATTR_ID_SIZE * shared as usize) as u64 > ino.xattr_isize {
            return Err(bad(
                hdr,
                format!("nid {}: {shared} shared xattrs overflow", ino.nid),
            ));
        }
        for k in 0..shared {
            let id = u64::from(xattrs.u32(XATTR_IBODY_HEADER_SIZE + XATTR_ID_SIZE * k as usize)?);
            if !self.shared_xattrs.insert(id) {
                continue;
            }
            self.spend(64, hdr)?;
            let at = add(self.sb.xattr_base, id * XATTR_ID_SIZE as u64, hdr)?;
            let entry = read(self.image, at, XATTR_ENTRY_SIZE as u64, "shared xattr")?;
            let name_len = u64::from(entry.get_u8(&XE_NAME_LEN)?);
            let value_len = u64::from(entry.get_u16(&XE_VALUE_SIZE)?);
            let len = round_up(
                XATTR_ENTRY_SIZE as u64 + name_len + value_len,
                XATTR_ENTRY_SIZE as u64,
            )?;
            check(self.image, at, len, "shared xattr")?;
            self.parts.push(Region {
                offset: at,
                len,
                kind: Kind::Metadata,
                file: None,
            });
        }
        Ok(())
    }
}
