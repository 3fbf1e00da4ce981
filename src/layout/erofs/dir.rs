//! Directories: their content decoded, and the dirents of each block.

use super::format::*;
use super::inode::Inode;
use super::walk::Walker;
use super::{bad, check, read, Bytes, Result, FS};
use crate::layout::Piece;

/// Directory content is read this much at a time.
const PIECE: u64 = 64 << 10;

impl Walker<'_> {
    /// The content of a directory (or any inode), decoded.
    pub(super) fn content(&mut self, ino: &Inode, pieces: &[Piece]) -> Result<Vec<u8>> {
        self.spend(ino.size, ino.iloc)?;
        let mut out = Vec::with_capacity(ino.size as usize);
        for p in pieces {
            match *p {
                Piece::Plain { offset, len } => {
                    // A piece at a time: never a second copy of a whole directory.
                    check(self.image, offset, len, "directory")?;
                    let mut pos = offset;
                    while pos < offset + len {
                        let n = (offset + len - pos).min(PIECE);
                        out.extend_from_slice(&read(self.image, pos, n, "directory")?);
                        pos += n;
                    }
                }
                Piece::Zero { len } => out.resize(out.len() + len as usize, 0),
                Piece::Compressed {
                    offset,
                    len,
                    unit_size,
                    skip,
                    take,
                    ..
                } => {
                    self.spend(unit_size, offset)?;
                    let data = read(self.image, offset, len, "directory pcluster")?;
                    let unit = lz4_flex::block::decompress(&data, unit_size as usize)
                        .map_err(|e| bad(offset, format!("lz4: {e}")))?;
                    let part = skip
                        .checked_add(take)
                        .and_then(|end| unit.get(skip as usize..end as usize))
                        .ok_or_else(|| bad(offset, "pcluster decodes short"))?;
                    out.extend_from_slice(part);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn read_dir(&self, dir: &Inode, data: &[u8]) -> Result<Vec<(String, u64)>> {
        let bs = self.sb.bs as usize;
        let mut entries = Vec::new();
        for (blk, block) in data.chunks(bs).enumerate() {
            let fail = |why: &str| {
                bad(
                    dir.iloc,
                    format!("directory nid {} block {blk}: {why}", dir.nid),
                )
            };
            let view = Bytes::decoded(FS, dir.iloc, block);
            let dirent = |i: usize| {
                view.sub(i * DIRENT_SIZE, DIRENT_SIZE)
                    .map_err(|_| fail("dirent past the block"))
            };
            // The first dirent's name offset says how many dirents there are; only that
            // field need be in the block before the count is checked.
            let nameoff = |i: usize| -> Result<usize> {
                let at = i * DIRENT_SIZE + DE_NAMEOFF.offset;
                let off = view.u16(at).map_err(|_| fail("dirent past the block"))?;
                Ok(usize::from(off))
            };
            let first = nameoff(0)?;
            if first < DIRENT_SIZE || first % DIRENT_SIZE != 0 || first > block.len() {
                return Err(fail(&format!("bad first name offset {first}")));
            }
            let count = first / DIRENT_SIZE;
            let mut next = first;
            for i in 0..count {
                let d = dirent(i)?;
                let nid = d.get_u64(&DE_NID)?;
                let nameoff_i = usize::from(d.get_u16(&DE_NAMEOFF)?);
                if nameoff_i != next {
                    return Err(fail(&format!(
                        "dirent {i}: name offset {nameoff_i}, expected {next}"
                    )));
                }
                let len = if i + 1 < count {
                    nameoff(i + 1)?.saturating_sub(nameoff_i)
                } else {
                    let rest = block.get(nameoff_i..).unwrap_or(&[]);
                    rest.iter().position(|&b| b == 0).unwrap_or(rest.len())
                };
                let name = block
                    .get(nameoff_i..nameoff_i + len)
                    .filter(|n| !n.is_empty() && n.len() <= NAME_LEN)
                    .ok_or_else(|| fail(&format!("dirent {i}: bad name length {len}")))?;
                if name.contains(&b'/') || name.contains(&0) {
                    return Err(fail(&format!("dirent {i}: illegal name")));
                }
                next += len;
                if name != b"." && name != b".." {
                    entries.push((String::from_utf8_lossy(name).into_owned(), nid));
                }
            }
        }
        Ok(entries)
    }
}
