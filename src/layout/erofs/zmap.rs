//! Compressed inodes: the map header, full and compact lcluster indexes, extent records
//! (48-bit images), and the lz4 pclusters they point at.

use super::format::*;
use super::inode::Inode;
use super::map::{push_piece, Mapping, Unit};
use super::walk::Walker;
use super::{add, bad, check, mul, read, round_up, Result};
use crate::layout::source::field_at;
use crate::layout::{Algorithm, Piece};

/// The compressed block count a non-head lcluster's first delta may carry (big
/// pclusters only); `at` names the index entry in errors.
pub(super) fn cblkcnt(d0: u32, big: bool, at: u64, nid: u64) -> Result<Option<u64>> {
    if d0 & D0_CBLKCNT == 0 {
        return Ok(None);
    }
    if !big {
        return Err(bad(at, format!("nid {nid}: CBLKCNT without big pclusters")));
    }
    Ok(Some(u64::from(d0 & !D0_CBLKCNT)))
}

/// Walks an lz4 block without decoding it: returns the stream's length and its decoded
/// length. With `stop_at`, the stream is followed by padding (no 0padding feature) and
/// ends at the first literal run that reaches `stop_at` decoded bytes; without, it must
/// end exactly at the end of `data`.
pub(super) fn lz4_stream(
    data: &[u8],
    stop_at: Option<u64>,
) -> std::result::Result<(usize, u64), String> {
    let mut i = 0usize;
    let mut out = 0u64;
    let byte = |i: &mut usize| -> std::result::Result<u8, String> {
        let b = *data.get(*i).ok_or("lz4 stream ends inside a sequence")?;
        *i += 1;
        Ok(b)
    };
    let length = |i: &mut usize, mut n: u64| -> std::result::Result<u64, String> {
        if n == 15 {
            loop {
                let b = byte(i)?;
                n += u64::from(b);
                if b != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    loop {
        let token = byte(&mut i)?;
        let lit = length(&mut i, u64::from(token >> 4))?;
        if lit > (data.len() - i) as u64 {
            return Err("lz4 literals run past the stream".into());
        }
        i += lit as usize;
        out += lit;
        if out > PCLUSTER_MAX_DSIZE {
            return Err("lz4 stream decodes to more than a pcluster may".into());
        }
        match stop_at {
            Some(target) if out >= target => return Ok((i, out)),
            None if i == data.len() => return Ok((i, out)),
            _ => {}
        }
        let lo = byte(&mut i)?;
        let hi = byte(&mut i)?;
        let offset = u64::from(u16::from_le_bytes([lo, hi]));
        if offset == 0 || offset > out {
            return Err(format!("lz4 match offset {offset} at decoded byte {out}"));
        }
        out += length(&mut i, u64::from(token & 15))? + 4;
        if out > PCLUSTER_MAX_DSIZE {
            return Err("lz4 stream decodes to more than a pcluster may".into());
        }
    }
}

/// Where a logical extent of a compressed file is.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    /// A pcluster; `alg` is `None` when stored uncompressed.
    Pcluster {
        pa: u64,
        plen: u64,
        inline: bool,
        alg: Option<u8>,
        interlaced: bool,
    },
    /// At this offset in the packed inode.
    Fragment(u64),
    Hole,
}

/// One decoded lcluster index.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lcluster {
    kind: u8,
    /// Head lclusters: where the extent starts inside the lcluster.
    clusterofs: u64,
    /// Head lclusters: the pcluster's first block.
    blkaddr: u64,
    /// First non-head lcluster of a big pcluster: its compressed block count.
    cblkcnt: Option<u64>,
}

/// The compact index layout: where lcluster `lcn` is encoded (position, log2 of the
/// amortised bytes per entry).
pub(super) struct Compact {
    ebase: u64,
    initial: u64,
    c2b: u64,
}

impl Compact {
    pub(super) fn position(&self, lcn: u64) -> (u64, u32) {
        if lcn < self.initial {
            return (self.ebase + lcn * 4, 2);
        }
        let l = lcn - self.initial;
        let base = self.ebase + self.initial * 4;
        if l < self.c2b {
            (base + l * 2, 1)
        } else {
            (base + self.c2b * 2 + (l - self.c2b) * 4, 2)
        }
    }

    /// The pack holding `lcn`: its offset, entry count and index of `lcn` in it.
    pub(super) fn pack(&self, lcn: u64) -> (u64, u64, u64) {
        let (pos, shift) = self.position(lcn);
        let vcnt = if shift == 2 { 2 } else { 16 };
        let size = vcnt << shift;
        let start = pos - pos % size;
        (start, vcnt, (pos - start) >> shift)
    }
}

impl Walker<'_> {
    pub(super) fn map_compressed(&mut self, ino: &Inode) -> Result<Mapping> {
        let bs = self.sb.bs;
        let hpos = round_up(ino.body(), MAP_HEADER_SIZE as u64)?;
        let h = read(
            self.image,
            hpos,
            MAP_HEADER_SIZE as u64,
            "compression index header",
        )?;
        // All 8 bytes, for the fragment offset of a file wholly in the packed inode.
        let header = h.u64(0)?;
        let full = ino.layout == LAYOUT_COMPRESSED_FULL;
        let clusterbits = h.get_u8(&MH_CLUSTERBITS)?;
        if clusterbits & FRAGMENT_INODE_BIT != 0 {
            // The whole file is a fragment of the packed inode.
            let pieces = self.fragment(header ^ (1 << 63), ino.size, hpos)?;
            return Ok(Mapping {
                pieces,
                units: Vec::new(),
                meta_end: hpos + MAP_HEADER_SIZE as u64,
            });
        }
        let advise = h.get_u16(&MH_ADVISE)?;
        if full && advise & ADVISE_EXTENTS != 0 {
            return self.map_extent_records(ino, hpos, advise);
        }
        let algorithms = h.get_u8(&MH_ALGORITHMTYPE)?;
        let fragment = advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let idata_size = if !fragment && advise & ADVISE_INLINE_PCLUSTER != 0 {
            u64::from(h.get_u16(&MH_IDATA_SIZE)?)
        } else {
            0
        };
        let lclusterbits = self.sb.blkszbits + u32::from(clusterbits & 15);
        if lclusterbits > 20 {
            return Err(bad(
                field_at(hpos, &MH_CLUSTERBITS),
                format!("lcluster size 2^{lclusterbits}"),
            ));
        }
        let lcs = 1u64 << lclusterbits;
        let n = ino.size.div_ceil(lcs);
        let big1 = advise & ADVISE_BIG_PCLUSTER_1 != 0;
        let big2 = advise & ADVISE_BIG_PCLUSTER_2 != 0;
        let (lclusters, index_end) = if full {
            self.full_index(ino, hpos + FULL_INDEX_START, n, big1 || big2)?
        } else {
            if big1 != big2 {
                return Err(bad(
                    field_at(hpos, &MH_ADVISE),
                    "compact indexes with mixed big pcluster flags",
                ));
            }
            self.compact_index(
                ino,
                hpos + MAP_HEADER_SIZE as u64,
                n,
                lclusterbits,
                advise,
                big1,
            )?
        };

        // Extents run from one head lcluster's start to the next's.
        let mut heads = Vec::new();
        for (lcn, lc) in lclusters.iter().enumerate() {
            if lc.kind == LCLUSTER_NONHEAD {
                continue;
            }
            if lc.clusterofs >= lcs {
                return Err(bad(
                    hpos,
                    format!("lcluster {lcn}: offset {}", lc.clusterofs),
                ));
            }
            let la = ((lcn as u64) << lclusterbits) + lc.clusterofs;
            if la < ino.size {
                heads.push((lcn as u64, la, *lc));
            }
        }
        if n > 0 && heads.first().map(|h| h.1) != Some(0) {
            return Err(bad(
                hpos,
                format!("nid {}: lcluster 0 is not a head", ino.nid),
            ));
        }
        let mut m = Mapping {
            pieces: Vec::with_capacity(heads.len()),
            units: Vec::new(),
            meta_end: index_end + idata_size,
        };
        for (k, &(lcn, la, lc)) in heads.iter().enumerate() {
            let last = k + 1 == heads.len();
            let end = heads.get(k + 1).map_or(ino.size, |h| h.1);
            let llen = end - la;
            if last && fragment {
                let mut off = u64::from(h.get_u32(&MH_FRAGMENTOFF)?);
                if full {
                    off |= lc.blkaddr << 32;
                }
                self.push_extent(&mut m, la, llen, Origin::Fragment(off), hpos)?;
                continue;
            }
            let alg = match lc.kind {
                LCLUSTER_PLAIN => None,
                LCLUSTER_HEAD1 => Some(algorithms & 15),
                LCLUSTER_HEAD2 => Some(algorithms >> 4),
                kind => return Err(bad(hpos, format!("lcluster {lcn}: type {kind}"))),
            };
            let interlaced = advise & ADVISE_INTERLACED_PCLUSTER != 0;
            let (pa, plen, inline) = if last && idata_size > 0 {
                if self.sb.blkoff(index_end) + idata_size > bs {
                    return Err(bad(index_end, "inline pcluster crosses a block"));
                }
                (index_end, idata_size, true)
            } else {
                let big = if lc.kind == LCLUSTER_HEAD1 {
                    big1
                } else {
                    big2
                };
                let next = lclusters.get(lcn as usize + 1);
                let cblks = match next {
                    Some(nx) if big && ((lcn + 1) << lclusterbits) < ino.size => {
                        match (nx.kind, nx.cblkcnt) {
                            (LCLUSTER_NONHEAD, Some(c)) => c,
                            (LCLUSTER_NONHEAD, None) => {
                                return Err(bad(hpos, format!("lcluster {}: no CBLKCNT", lcn + 1)))
                            }
                            _ => 1,
                        }
                    }
                    _ => 1,
                };
                if cblks == 0 || cblks * bs > PCLUSTER_MAX_SIZE {
                    return Err(bad(
                        hpos,
                        format!("lcluster {lcn}: pcluster of {cblks} blocks"),
                    ));
                }
                (mul(lc.blkaddr, bs, hpos)?, cblks * bs, false)
            };
            let src = Origin::Pcluster {
                pa,
                plen,
                inline,
                alg,
                interlaced,
            };
            self.push_extent(&mut m, la, llen, src, hpos)?;
        }
        Ok(m)
    }

    /// Compressed files indexed by extent records rather than lclusters (48-bit images).
    pub(super) fn map_extent_records(
        &mut self,
        ino: &Inode,
        hpos: u64,
        advise: u16,
    ) -> Result<Mapping> {
        let image = self.image;
        let h = read(
            image,
            hpos,
            MAP_HEADER_SIZE as u64,
            "compression index header",
        )?;
        let recsz = 4u64 << ((advise >> 1) & 3);
        let mut pos = round_up(hpos + MAP_HEADER_SIZE as u64, recsz)?;
        let fragment = advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let interlaced = advise & ADVISE_INTERLACED_PCLUSTER != 0;
        // (logical start, plen field, physical start) of each record, in file order.
        let mut records = Vec::new();
        if recsz <= 8 {
            // One record per lcluster; 4-byte records follow a base address and are
            // stored back to back.
            let lclusterbits = self.sb.blkszbits + u32::from(h.get_u8(&MH_CLUSTERBITS)? & 15);
            if lclusterbits > 30 {
                return Err(bad(
                    field_at(hpos, &MH_CLUSTERBITS),
                    format!("lcluster size 2^{lclusterbits}"),
                ));
            }
            let n = ino.size.div_ceil(1 << lclusterbits);
            let mut pa = 0;
            if recsz == 4 {
                pa = read(image, pos, 8, "extent records")?.u64(0)?;
                pos += 8;
            }
            check(image, pos, mul(n, recsz, pos)?, "extent records")?;
            self.spend(32 * n, pos)?;
            for k in 0..n {
                let at = pos + k * recsz;
                let rec = read(image, at, recsz, "extent record")?;
                let plen = rec.get_u32(&EX_PLEN)?;
                let start = if recsz == 4 {
                    let start = pa;
                    pa = add(pa, u64::from(plen & PLEN_MASK), at)?;
                    start
                } else {
                    u64::from(rec.get_u32(&EX_PSTART_LO)?)
                };
                records.push((k << lclusterbits, plen, start));
            }
            pos += n * recsz;
        } else {
            let n =
                u64::from(h.get_u32(&MH_EXTENTS_LO)?) | u64::from(h.get_u16(&MH_EXTENTS_HI)?) << 32;
            check(image, pos, mul(n, recsz, pos)?, "extent records")?;
            self.spend(32 * n, pos)?;
            for k in 0..n {
                let at = pos + k * recsz;
                let rec = read(image, at, recsz, "extent record")?;
                let plen = rec.get_u32(&EX_PLEN)?;
                let pa = u64::from(rec.get_u32(&EX_PSTART_LO)?)
                    | u64::from(rec.get_u32(&EX_PSTART_HI)?) << 32;
                let mut la = u64::from(rec.get_u32(&EX_LSTART_LO)?);
                if recsz == 32 {
                    la |= u64::from(rec.get_u32(&EX_LSTART_HI)?) << 32;
                }
                if records.last().is_some_and(|&(prev, _, _)| la <= prev) || (k == 0 && la != 0) {
                    return Err(bad(at, format!("extent record {k} out of order")));
                }
                records.push((la, plen, pa));
            }
            pos += n * recsz;
        }
        let mut m = Mapping {
            pieces: Vec::with_capacity(records.len()),
            units: Vec::new(),
            meta_end: pos,
        };
        for (k, &(la, plen, pa)) in records.iter().enumerate() {
            let end = records.get(k + 1).map_or(ino.size, |r| r.0).min(ino.size);
            if la >= end {
                continue;
            }
            let last = k + 1 == records.len();
            let src = if last && fragment {
                let mut off = u64::from(plen);
                if recsz > 4 {
                    off |= pa << 32;
                }
                Origin::Fragment(off)
            } else if plen & PLEN_MASK == 0 {
                Origin::Hole
            } else {
                let fmt = plen >> PLEN_FMT_BIT;
                let len = u64::from(plen & PLEN_MASK);
                Origin::Pcluster {
                    pa,
                    plen: len,
                    inline: false,
                    alg: fmt.checked_sub(1).map(|a| a as u8),
                    interlaced: interlaced && (pa | len) % self.sb.bs == 0,
                }
            };
            self.push_extent(&mut m, la, end - la, src, hpos)?;
        }
        Ok(m)
    }

    /// Maps the logical extent `[la, la + llen)` of a compressed file.
    pub(super) fn push_extent(
        &mut self,
        m: &mut Mapping,
        la: u64,
        llen: u64,
        src: Origin,
        at: u64,
    ) -> Result<()> {
        let bs = self.sb.bs;
        let (pa, plen, inline, alg, interlaced) = match src {
            Origin::Hole => {
                push_piece(&mut m.pieces, Piece::Zero { len: llen });
                return Ok(());
            }
            Origin::Fragment(off) => {
                for p in self.fragment(off, llen, at)? {
                    push_piece(&mut m.pieces, p);
                }
                return Ok(());
            }
            Origin::Pcluster {
                pa,
                plen,
                inline,
                alg,
                interlaced,
            } => (pa, plen, inline, alg, interlaced),
        };
        if plen > PCLUSTER_MAX_SIZE || llen > PCLUSTER_MAX_DSIZE {
            return Err(bad(pa, format!("pcluster of {plen} bytes for {llen}")));
        }
        let raw = read(self.image, pa, plen, "pcluster")?;
        self.spend(plen, pa)?;
        if !inline {
            m.units.push(Unit {
                offset: pa,
                len: plen,
                compressed: alg.is_some(),
            });
        }
        let Some(alg) = alg else {
            // Stored uncompressed: from the pcluster's start, or rotated within the
            // block by the extent's block offset (interlaced).
            if llen > plen {
                return Err(bad(
                    pa,
                    format!("uncompressed extent of {llen} > {plen} bytes"),
                ));
            }
            let rot = self.sb.blkoff(la);
            if !interlaced || rot == 0 {
                push_piece(
                    &mut m.pieces,
                    Piece::Plain {
                        offset: pa,
                        len: llen,
                    },
                );
            } else {
                let right = (bs - rot).min(llen);
                if plen > bs || rot + right > plen {
                    return Err(bad(pa, "interlaced pcluster larger than a block"));
                }
                push_piece(
                    &mut m.pieces,
                    Piece::Plain {
                        offset: pa + rot,
                        len: right,
                    },
                );
                push_piece(
                    &mut m.pieces,
                    Piece::Plain {
                        offset: pa,
                        len: llen - right,
                    },
                );
            }
            return Ok(());
        };
        if alg != COMPRESSION_LZ4 {
            return Err(bad(
                at,
                format!("compression algorithm {alg} is not supported"),
            ));
        }
        let (start, stream, decoded) = if self.sb.incompat & INCOMPAT_LZ4_0PADDING != 0 {
            // Right-aligned: leading zeros pad the stream to the pcluster's end.
            let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
            let (len, decoded) =
                lz4_stream(&raw[start..], None).map_err(|e| bad(pa + start as u64, e))?;
            (start, len, decoded)
        } else {
            let (len, decoded) = lz4_stream(&raw, Some(llen)).map_err(|e| bad(pa, e))?;
            (0, len, decoded)
        };
        if decoded < llen {
            return Err(bad(
                pa,
                format!("pcluster decodes to {decoded} < {llen} bytes"),
            ));
        }
        m.pieces.push(Piece::Compressed {
            offset: pa + start as u64,
            len: stream as u64,
            algorithm: Algorithm::Lz4,
            unit_size: decoded,
            skip: 0,
            take: llen,
        });
        Ok(())
    }

    pub(super) fn full_index(
        &mut self,
        ino: &Inode,
        start: u64,
        n: u64,
        big: bool,
    ) -> Result<(Vec<Lcluster>, u64)> {
        let len = mul(n, LCLUSTER_INDEX_SIZE as u64, start)?;
        check(self.image, start, len, "lcluster index")?;
        self.spend(32 * n, start)?;
        let mut out = Vec::with_capacity(n as usize);
        for lcn in 0..n {
            let at = start + lcn * LCLUSTER_INDEX_SIZE as u64;
            let e = read(self.image, at, LCLUSTER_INDEX_SIZE as u64, "lcluster index")?;
            let kind = (e.get_u16(&LI_ADVISE)? & LI_TYPE_MASK) as u8;
            let mut lc = Lcluster {
                kind,
                clusterofs: u64::from(e.get_u16(&LI_CLUSTEROFS)?),
                blkaddr: 0,
                cblkcnt: None,
            };
            if kind == LCLUSTER_NONHEAD {
                let d0 = u32::from(e.get_u16(&LI_DELTA0)?);
                lc.cblkcnt = cblkcnt(d0, big, at, ino.nid)?;
            } else {
                lc.blkaddr = u64::from(e.get_u32(&LI_BLKADDR)?);
            }
            out.push(lc);
        }
        Ok((out, start + len))
    }

    pub(super) fn compact_index(
        &mut self,
        ino: &Inode,
        ebase: u64,
        n: u64,
        lclusterbits: u32,
        advise: u16,
        big: bool,
    ) -> Result<(Vec<Lcluster>, u64)> {
        if n == 0 {
            return Ok((Vec::new(), ebase));
        }
        if lclusterbits > 14 {
            return Err(bad(
                ebase,
                format!("compact indexes with lcluster size 2^{lclusterbits}"),
            ));
        }
        // 4-byte entries until 32-byte alignment, then 2-byte packs of 16, then 4-byte.
        let initial = ((32 - ebase % 32) / 4) & 7;
        let c2b = if advise & ADVISE_COMPACTED_2B != 0 && initial < n {
            (n - initial) / 16 * 16
        } else {
            0
        };
        if c2b > 0 && lclusterbits > 12 {
            return Err(bad(
                ebase,
                "2-byte compact indexes need lclusters of at most 4K",
            ));
        }
        let layout = Compact {
            ebase,
            initial,
            c2b,
        };
        let (last_pack, vcnt, _) = layout.pack(n - 1);
        let end = last_pack + if vcnt == 2 { 8 } else { 32 };
        check(self.image, ebase, end - ebase, "compact index")?;
        self.spend(32 * n, ebase)?;

        let lobits = lclusterbits.max(12);
        let mut out = Vec::with_capacity(n as usize);
        let mut entries: Vec<(u32, u8)> = Vec::with_capacity(16);
        let mut cached = u64::MAX;
        let mut base = 0u64;
        for lcn in 0..n {
            let (pack, vcnt, i) = layout.pack(lcn);
            let size = if vcnt == 2 { 8 } else { 32 };
            if pack != cached {
                let raw = read(self.image, pack, size, "compact index pack")?;
                let encodebits = ((size - 4) * 8) / vcnt;
                entries.clear();
                for j in 0..vcnt {
                    let bit = encodebits * j;
                    let at = (bit / 8) as usize;
                    let w = raw.get(at..at + 4).ok_or_else(|| bad(pack, "short pack"))?;
                    let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) >> (bit % 8);
                    entries.push((v & ((1 << lobits) - 1), ((v >> lobits) & 3) as u8));
                }
                base = u64::from(raw.u32((size - 4) as usize)?);
                cached = pack;
            }
            let (lo, kind) = entries[i as usize];
            let mut lc = Lcluster {
                kind,
                clusterofs: 0,
                blkaddr: 0,
                cblkcnt: None,
            };
            if kind == LCLUSTER_NONHEAD {
                lc.cblkcnt = cblkcnt(lo, big, pack, ino.nid)?;
            } else {
                lc.clusterofs = u64::from(lo);
                lc.blkaddr = base
                    + compact_blocks_before(&entries, i as usize, big)
                        .ok_or_else(|| bad(pack, format!("nid {}: bogus compact pack", ino.nid)))?;
            }
            out.push(lc);
        }
        Ok((out, end))
    }
}

/// The number of blocks taken by pclusters headed earlier in the same compact pack, as
/// the kernel counts them to find a head's block from the pack's base address.
pub(super) fn compact_blocks_before(entries: &[(u32, u8)], i: usize, big: bool) -> Option<u64> {
    let mut i = i as i64;
    if !big {
        // Each pcluster is one block; the base counts one before the first.
        let mut nblk = 1;
        while i > 0 {
            i -= 1;
            let (lo, kind) = *entries.get(i as usize)?;
            if kind == LCLUSTER_NONHEAD {
                i -= i64::from(lo);
            }
            if i >= 0 {
                nblk += 1;
            }
        }
        return Some(nblk);
    }
    let mut nblk = 0u64;
    while i > 0 {
        i -= 1;
        let (lo, kind) = *entries.get(i as usize)?;
        if kind == LCLUSTER_NONHEAD {
            if lo & D0_CBLKCNT != 0 {
                i -= 1;
                nblk += u64::from(lo & !D0_CBLKCNT);
                continue;
            }
            if lo <= 1 {
                return None;
            }
            i -= i64::from(lo) - 2;
            continue;
        }
        nblk += 1;
    }
    Some(nblk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_stream_finds_the_end() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i % 251) as u8 ^ (i / 700) as u8)
            .collect();
        let packed = lz4_flex::block::compress(&data);
        assert_eq!(
            lz4_stream(&packed, None),
            Ok((packed.len(), data.len() as u64))
        );
        // Followed by padding: stops where the output is complete.
        let mut padded = packed.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(
            lz4_stream(&padded, Some(data.len() as u64)),
            Ok((packed.len(), data.len() as u64))
        );
        assert!(lz4_stream(&padded, None).is_err());
        assert!(lz4_stream(&packed[..packed.len() - 1], None).is_err());
        assert!(lz4_stream(&[0x00, 0x01, 0x00], None).is_err()); // match before any output
        assert!(lz4_stream(&[], None).is_err());
    }

    #[test]
    fn compact_pack_block_counts() {
        // Without big pclusters: HEAD, NONHEAD(d0=1), HEAD -> the second head is two
        // pclusters past the base's "one before".
        let e = [
            (0, LCLUSTER_HEAD1),
            (1, LCLUSTER_NONHEAD),
            (100, LCLUSTER_HEAD1),
        ];
        assert_eq!(compact_blocks_before(&e, 0, false), Some(1));
        assert_eq!(compact_blocks_before(&e, 2, false), Some(2));
        // Big pclusters: HEAD, CBLKCNT(3), NONHEAD(d0=2), HEAD.
        let e = [
            (0, LCLUSTER_HEAD1),
            (D0_CBLKCNT | 3, LCLUSTER_NONHEAD),
            (2, LCLUSTER_NONHEAD),
            (0, LCLUSTER_HEAD1),
        ];
        assert_eq!(compact_blocks_before(&e, 0, true), Some(0));
        assert_eq!(compact_blocks_before(&e, 3, true), Some(3));
        assert_eq!(
            compact_blocks_before(&[(1, LCLUSTER_NONHEAD), (0, 1)], 1, true),
            None
        );
    }
}
