//! Directories: their content decoded, and the dirents of each block.

use super::format::*;
use super::inode::Inode;
use super::walk::Walker;
use super::{bad, check, read, Result};
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
            let field16 = |at: usize| -> Result<usize> {
                let b = block
                    .get(at..at + 2)
                    .ok_or_else(|| fail("dirent past the block"))?;
                Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
            };
            let first = field16(8)?;
            if first < 12 || first % 12 != 0 || first > block.len() {
                return Err(fail(&format!("bad first name offset {first}")));
            }
            let count = first / 12;
            let mut next = first;
            for i in 0..count {
                let d = block
                    .get(i * 12..i * 12 + 12)
                    .ok_or_else(|| fail("dirent past the block"))?;
                let nid = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
                let nameoff = usize::from(u16::from_le_bytes([d[8], d[9]]));
                if nameoff != next {
                    return Err(fail(&format!(
                        "dirent {i}: name offset {nameoff}, expected {next}"
                    )));
                }
                let len = if i + 1 < count {
                    field16((i + 1) * 12 + 8)?.saturating_sub(nameoff)
                } else {
                    let rest = block.get(nameoff..).unwrap_or(&[]);
                    rest.iter().position(|&b| b == 0).unwrap_or(rest.len())
                };
                let name = block
                    .get(nameoff..nameoff + len)
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
