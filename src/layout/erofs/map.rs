//! Where an inode's content is: the pieces of a file in file order, the units of the
//! image holding them; flat and chunk-based inodes here, compressed ones in `zmap`.

use super::format::*;
use super::inode::Inode;
use super::walk::Walker;
use super::{bad, check, mul, read, round_up, Result};
use crate::layout::source::field_at;
use crate::layout::Piece;

/// Physical stretch holding some of an inode's content outside its own metadata.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) compressed: bool,
}

/// An inode's content pieces, the units holding them and where its metadata (inode,
/// xattrs, indexes, inline data) ends.
pub(super) struct Mapping {
    pub(super) pieces: Vec<Piece>,
    pub(super) units: Vec<Unit>,
    pub(super) meta_end: u64,
}

pub(super) fn push_piece(pieces: &mut Vec<Piece>, piece: Piece) {
    match (pieces.last_mut(), piece) {
        (_, Piece::Plain { len: 0, .. } | Piece::Zero { len: 0 }) => {}
        (Some(Piece::Plain { offset, len }), Piece::Plain { offset: o, len: l })
            if *offset + *len == o =>
        {
            *len += l
        }
        (Some(Piece::Zero { len }), Piece::Zero { len: l }) => *len += l,
        _ => pieces.push(piece),
    }
}

pub(super) fn piece_len(p: &Piece) -> u64 {
    match *p {
        Piece::Plain { len, .. } | Piece::Zero { len } => len,
        Piece::Compressed { take, .. } => take,
    }
}

/// The content `[start, start + len)` of a file mapped by `pieces` (whose logical start
/// offsets are `starts`).
pub(super) fn slice_pieces(
    pieces: &[Piece],
    starts: &[u64],
    start: u64,
    len: u64,
) -> Option<Vec<Piece>> {
    let end = start.checked_add(len)?;
    let total = match (pieces.last(), starts.last()) {
        (Some(p), Some(&s)) => s + piece_len(p),
        _ => 0,
    };
    if end > total {
        return None;
    }
    let mut out = Vec::new();
    let first = starts.partition_point(|&s| s <= start).saturating_sub(1);
    for (p, &s) in pieces.iter().zip(starts).skip(first) {
        if s >= end {
            break;
        }
        let from = start.max(s) - s;
        let to = end.min(s + piece_len(p)) - s;
        if from >= to {
            continue;
        }
        let part = match *p {
            Piece::Plain { offset, .. } => Piece::Plain {
                offset: offset + from,
                len: to - from,
            },
            Piece::Zero { .. } => Piece::Zero { len: to - from },
            Piece::Compressed {
                offset,
                len,
                algorithm,
                unit_size,
                skip,
                ..
            } => Piece::Compressed {
                offset,
                len,
                algorithm,
                unit_size,
                skip: skip + from,
                take: to - from,
            },
        };
        push_piece(&mut out, part);
    }
    Some(out)
}

impl Walker<'_> {
    pub(super) fn map(&mut self, ino: &Inode) -> Result<Mapping> {
        self.spend(128, ino.iloc)?;
        let mut m = match ino.kind() {
            S_IFREG | S_IFDIR | S_IFLNK => match ino.layout {
                LAYOUT_FLAT_PLAIN | LAYOUT_FLAT_INLINE => self.map_flat(ino)?,
                LAYOUT_CHUNK_BASED => self.map_chunks(ino)?,
                LAYOUT_COMPRESSED_FULL | LAYOUT_COMPRESSED_COMPACT => self.map_compressed(ino)?,
                layout => return Err(bad(ino.iloc, format!("unknown data layout {layout}"))),
            },
            _ => Mapping {
                pieces: Vec::new(),
                units: Vec::new(),
                meta_end: ino.body(),
            },
        };
        let mapped = m
            .pieces
            .iter()
            .fold(0u64, |n, p| n.saturating_add(piece_len(p)));
        if mapped != ino.size && matches!(ino.kind(), S_IFREG | S_IFDIR | S_IFLNK) {
            return Err(bad(
                ino.iloc,
                format!("nid {}: mapped {mapped} of {} bytes", ino.nid, ino.size),
            ));
        }
        m.pieces.shrink_to_fit();
        self.spend(
            48 * m.pieces.len() as u64 + 32 * m.units.len() as u64,
            ino.iloc,
        )?;
        Ok(m)
    }

    pub(super) fn map_flat(&mut self, ino: &Inode) -> Result<Mapping> {
        let bs = self.sb.bs;
        let mut m = Mapping {
            pieces: Vec::new(),
            units: Vec::new(),
            meta_end: ino.body(),
        };
        if ino.size == 0 {
            return Ok(m);
        }
        let nblocks = ino.size.div_ceil(bs);
        let inline = ino.layout == LAYOUT_FLAT_INLINE;
        let full_blocks = nblocks - u64::from(inline);
        let lo = ino.startblk & 0xffff_ffff;
        if !inline && lo == 0xffff_ffff && matches!(ino.startblk >> 32, 0 | 0xffff) {
            m.pieces.push(Piece::Zero { len: ino.size });
            return Ok(m);
        }
        if full_blocks > 0 {
            let start = mul(ino.startblk, bs, field_at(ino.iloc, &IC_U))?;
            let span = mul(full_blocks, bs, field_at(ino.iloc, &IC_SIZE))?;
            let len = if inline { span } else { ino.size };
            check(self.image, start, span, "file data")?;
            m.units.push(Unit {
                offset: start,
                len: span,
                compressed: false,
            });
            push_piece(&mut m.pieces, Piece::Plain { offset: start, len });
        }
        if inline {
            let tail = ino.size - full_blocks * bs;
            let at = ino.body();
            if self.sb.blkoff(at) + tail > bs {
                return Err(bad(
                    at,
                    format!("nid {}: inline data crosses a block", ino.nid),
                ));
            }
            check(self.image, at, tail, "inline data")?;
            push_piece(
                &mut m.pieces,
                Piece::Plain {
                    offset: at,
                    len: tail,
                },
            );
            m.meta_end = at + tail;
        }
        Ok(m)
    }

    pub(super) fn map_chunks(&mut self, ino: &Inode) -> Result<Mapping> {
        let bs = self.sb.bs;
        let format = (ino.i_u & 0xffff) as u16;
        if format & !CHUNK_FORMAT_ALL != 0 {
            return Err(bad(
                field_at(ino.iloc, &IC_U),
                format!("unknown chunk format {format:#x}"),
            ));
        }
        let chunkbits = self.sb.blkszbits + u32::from(format & CHUNK_FORMAT_BLKBITS_MASK);
        if chunkbits > 47 {
            return Err(bad(
                field_at(ino.iloc, &IC_U),
                format!("chunk size 2^{chunkbits}"),
            ));
        }
        let chunksize = 1u64 << chunkbits;
        let indexes = format & CHUNK_FORMAT_INDEXES != 0;
        let unit = if indexes {
            CHUNK_INDEX_SIZE
        } else {
            BLOCK_MAP_ENTRY_SIZE
        } as u64;
        let table = round_up(ino.body(), unit)?;
        let count = ino.size.div_ceil(chunksize);
        let table_len = mul(count, unit, table)?;
        check(self.image, table, table_len, "chunk index")?;
        self.spend(8 * count, table)?;
        let addrmask: u64 = if format & CHUNK_FORMAT_48BIT != 0 {
            (1 << 48) - 1
        } else {
            (1 << 32) - 1
        };
        let mut m = Mapping {
            pieces: Vec::new(),
            units: Vec::new(),
            meta_end: table + table_len,
        };
        for i in 0..count {
            let at = table + i * unit;
            let la = i << chunkbits;
            let len = chunksize.min(ino.size - la);
            let entry = read(self.image, at, unit, "chunk index")?;
            let blk = if indexes {
                let hi = u64::from(entry.get_u16(&CI_STARTBLK_HI)?);
                let lo = u64::from(entry.get_u32(&CI_STARTBLK_LO)?);
                Some((hi << 32 | lo) & addrmask).filter(|&b| b != addrmask)
            } else {
                Some(u64::from(entry.u32(0)?)).filter(|&b| b != 0xffff_ffff)
            };
            match blk {
                None => push_piece(&mut m.pieces, Piece::Zero { len }),
                Some(blk) => {
                    let offset = mul(blk, bs, at)?;
                    let plen = round_up(len, bs)?;
                    check(self.image, offset, plen, "chunk")?;
                    m.units.push(Unit {
                        offset,
                        len: plen,
                        compressed: false,
                    });
                    push_piece(&mut m.pieces, Piece::Plain { offset, len });
                }
            }
        }
        Ok(m)
    }

    /// `len` bytes of the packed inode from `offset`.
    pub(super) fn fragment(&self, offset: u64, len: u64, at: u64) -> Result<Vec<Piece>> {
        let (pieces, starts) = self
            .packed
            .as_ref()
            .ok_or_else(|| bad(at, "fragment without a packed inode"))?;
        slice_pieces(pieces, starts, offset, len).ok_or_else(|| {
            bad(
                at,
                format!("fragment {offset}+{len} outside the packed inode"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Algorithm;

    #[test]
    fn slices_pieces() {
        let pieces = [
            Piece::Plain {
                offset: 100,
                len: 10,
            },
            Piece::Zero { len: 5 },
            Piece::Compressed {
                offset: 500,
                len: 7,
                algorithm: Algorithm::Lz4,
                unit_size: 40,
                skip: 2,
                take: 20,
            },
        ];
        let starts = [0, 10, 15];
        assert_eq!(
            slice_pieces(&pieces, &starts, 8, 10),
            Some(vec![
                Piece::Plain {
                    offset: 108,
                    len: 2
                },
                Piece::Zero { len: 5 },
                Piece::Compressed {
                    offset: 500,
                    len: 7,
                    algorithm: Algorithm::Lz4,
                    unit_size: 40,
                    skip: 2,
                    take: 3,
                },
            ])
        );
        assert_eq!(
            slice_pieces(&pieces, &starts, 20, 15),
            Some(vec![Piece::Compressed {
                offset: 500,
                len: 7,
                algorithm: Algorithm::Lz4,
                unit_size: 40,
                skip: 7,
                take: 15,
            }])
        );
        assert_eq!(slice_pieces(&pieces, &starts, 30, 6), None);
        assert_eq!(slice_pieces(&pieces, &starts, u64::MAX, 2), None);
    }
}
