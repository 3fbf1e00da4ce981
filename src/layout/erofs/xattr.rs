//! Inline xattrs: the shared xattrs an inode names are metadata, each recorded once.

use super::inode::Inode;
use super::walk::Walker;
use super::{add, bad, check, read, round_up, Result};
use crate::layout::{Kind, Region};

impl Walker<'_> {
    /// Records the shared xattrs `ino` names that no inode named before.
    pub(super) fn record_shared_xattrs(&mut self, ino: &Inode) -> Result<()> {
        let hdr = ino.iloc + ino.isize;
        let xattrs = read(self.image, hdr, ino.xattr_isize, "inline xattrs")?;
        let shared = u64::from(xattrs.u8(4)?);
        if 12 + 4 * shared > ino.xattr_isize {
            return Err(bad(
                hdr,
                format!("nid {}: {shared} shared xattrs overflow", ino.nid),
            ));
        }
        for k in 0..shared {
            let id = u64::from(xattrs.u32((12 + 4 * k) as usize)?);
            if !self.shared_xattrs.insert(id) {
                continue;
            }
            self.spend(64, hdr)?;
            let at = add(self.sb.xattr_base, id * 4, hdr)?;
            let entry = read(self.image, at, 4, "shared xattr")?;
            let name_len = u64::from(entry.u8(0)?);
            let value_len = u64::from(entry.u16(2)?);
            let len = round_up(4 + name_len + value_len, 4)?;
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
