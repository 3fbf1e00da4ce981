//! erofs: the superblock, inodes (compact and extended), directories, xattrs, chunk
//! indexes and compression indexes (full and compact), read from the image as the
//! on-disk format (`erofs_fs.h`) defines them.
//!
//! Every read goes through the bounds-checked [`Source`]; every count read from the
//! image is checked against the image (or a work budget proportional to it) before it
//! sizes an allocation or a loop, so a hostile image costs at most a few times its own
//! size and ends in an `Err`, never a panic.
//!
//! Not handled (an `Err`, so the caller falls back to plain blocks): compression other
//! than lz4 (lzma, deflate, zstd), metadata compression (metabox) and data on extra
//! devices.

use std::collections::{HashMap, HashSet};

use super::source::{Bytes, Source};
use super::{tile, Algorithm, Analysis, FileMap, FsKind, Kind, Layout, LayoutError, Piece, Region};

const FS: &str = "erofs";

const SUPER_OFFSET: u64 = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;

const INCOMPAT_LZ4_0PADDING: u32 = 0x01;
/// Also "big pcluster": both mean compression configs follow the superblock.
const INCOMPAT_COMPR_CFGS: u32 = 0x02;
const INCOMPAT_FRAGMENTS: u32 = 0x20;
const INCOMPAT_XATTR_PREFIXES: u32 = 0x40;
const INCOMPAT_48BIT: u32 = 0x80;
const INCOMPAT_METABOX: u32 = 0x100;
const INCOMPAT_KNOWN: u32 = 0x1ff;

const LAYOUT_FLAT_PLAIN: u8 = 0;
const LAYOUT_COMPRESSED_FULL: u8 = 1;
const LAYOUT_FLAT_INLINE: u8 = 2;
const LAYOUT_COMPRESSED_COMPACT: u8 = 3;
const LAYOUT_CHUNK_BASED: u8 = 4;

const I_FORMAT_ALL: u16 = 0x1f;
const I_NLINK_1_BIT: u16 = 4;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;

const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x1f;
const CHUNK_FORMAT_INDEXES: u16 = 0x20;
const CHUNK_FORMAT_48BIT: u16 = 0x40;
const CHUNK_FORMAT_ALL: u16 = 0x7f;

const ADVISE_COMPACTED_2B: u16 = 0x01;
/// The same bit as `ADVISE_COMPACTED_2B`, meaningful for full indexes only.
const ADVISE_EXTENTS: u16 = 0x01;
const ADVISE_BIG_PCLUSTER_1: u16 = 0x02;
const ADVISE_BIG_PCLUSTER_2: u16 = 0x04;
const ADVISE_INLINE_PCLUSTER: u16 = 0x08;
const ADVISE_INTERLACED_PCLUSTER: u16 = 0x10;
const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x20;
/// Bit 7 of `h_clusterbits`: the whole file lives in the packed inode.
const FRAGMENT_INODE_BIT: u8 = 0x80;

const LCLUSTER_PLAIN: u8 = 0;
const LCLUSTER_HEAD1: u8 = 1;
const LCLUSTER_NONHEAD: u8 = 2;
const LCLUSTER_HEAD2: u8 = 3;
/// Set on the first non-head lcluster of a big pcluster: the rest is its block count.
const D0_CBLKCNT: u32 = 1 << 11;

const COMPRESSION_LZ4: u8 = 0;
/// Extent records: the low bits of `plen` are the encoded length, the top nibble the
/// algorithm plus one (0: stored uncompressed).
const PLEN_MASK: u32 = (1 << 21) - 1;
const PLEN_FMT_BIT: u32 = 28;
/// Largest encoded and decoded sizes of one pcluster the kernel accepts.
const PCLUSTER_MAX_SIZE: u64 = 1 << 20;
const PCLUSTER_MAX_DSIZE: u64 = 12 << 20;

const NAME_LEN: usize = 255;
/// Directory content is read this much at a time.
const PIECE: u64 = 64 << 10;
const MAX_DEPTH: u32 = 4096;

type Result<T> = std::result::Result<T, LayoutError>;

/// The compressed block count a non-head lcluster's first delta may carry (big
/// pclusters only); `at` names the index entry in errors.
fn cblkcnt(d0: u32, big: bool, at: u64, nid: u64) -> Result<Option<u64>> {
    if d0 & D0_CBLKCNT == 0 {
        return Ok(None);
    }
    if !big {
        return Err(bad(at, format!("nid {nid}: CBLKCNT without big pclusters")));
    }
    Ok(Some(u64::from(d0 & !D0_CBLKCNT)))
}

fn bad(offset: u64, reason: impl Into<String>) -> LayoutError {
    LayoutError::new(FS, offset, reason)
}

// ---------------------------------------------------------------------------------------
// Bounds-checked little-endian reads.

fn read<'a>(image: &Source<'a>, off: u64, len: u64, what: &str) -> Result<Bytes<'a>> {
    image.read(FS, off, len, what)
}

/// Checks that `[off, off + len)` is in the image, without reading it.
fn check(image: &Source, off: u64, len: u64, what: &str) -> Result<()> {
    image.check(FS, off, len, what)
}

fn round_up(x: u64, align: u64) -> Result<u64> {
    x.checked_next_multiple_of(align)
        .ok_or_else(|| bad(x, "offset overflows"))
}

/// `a + b` for on-disk quantities, an error at `at` when it overflows.
fn add(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_add(b).ok_or_else(|| bad(at, "offset overflows"))
}

fn mul(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_mul(b).ok_or_else(|| bad(at, "offset overflows"))
}

// ---------------------------------------------------------------------------------------
// Superblock.

struct Super {
    blkszbits: u32,
    bs: u64,
    incompat: u32,
    meta_base: u64,
    xattr_base: u64,
    root_nid: u64,
    /// The packed inode (fragments, long xattr prefixes), when the features use one.
    packed_nid: Option<u64>,
    /// Superblock, compression configs and long xattr prefixes stored outside the
    /// packed inode.
    meta: Vec<(u64, u64)>,
}

impl Super {
    fn parse(image: &Source) -> Result<Super> {
        let at = SUPER_OFFSET;
        let magic = read(image, at, 4, "superblock")?.u32(0)?;
        if magic != MAGIC {
            return Err(bad(at, format!("bad magic {magic:#010x}")));
        }
        let sb = read(image, at, 128, "superblock")?;
        let blkszbits = u32::from(sb.u8(12)?);
        if !(9..=16).contains(&blkszbits) {
            return Err(bad(
                at + 12,
                format!("block size 2^{blkszbits} is not 512..64K"),
            ));
        }
        let bs = 1u64 << blkszbits;
        let incompat = sb.u32(80)?;
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(bad(
                at + 80,
                format!(
                    "unknown incompatible features {:#x}",
                    incompat & !INCOMPAT_KNOWN
                ),
            ));
        }
        if incompat & INCOMPAT_METABOX != 0 {
            return Err(bad(
                at + 80,
                "metadata compression (metabox) is not supported",
            ));
        }
        let sb_size = 128 + 16 * u64::from(sb.u8(13)?);
        check(image, at, sb_size, "superblock")?;
        let is_48bit = incompat & INCOMPAT_48BIT != 0;
        let rootnid_8b = if is_48bit { sb.u64(112)? } else { 0 };
        let blocks_lo = u64::from(sb.u32(36)?);
        let (root_nid, blocks) = if rootnid_8b != 0 {
            let hi = u64::from(sb.u16(14)?);
            (rootnid_8b, blocks_lo | hi << 32)
        } else {
            (u64::from(sb.u16(14)?), blocks_lo)
        };
        let fs_size = mul(blocks, bs, at + 36)?;
        if fs_size == 0 {
            return Err(bad(at + 36, "the filesystem has no blocks"));
        }
        if fs_size > image.size() {
            return Err(bad(
                image.size(),
                format!("image is truncated: the filesystem has {fs_size} bytes"),
            ));
        }
        if sb.u16(86)? != 0 {
            return Err(bad(at + 86, "data on extra devices is not supported"));
        }
        let meta_base = u64::from(sb.u32(40)?) << blkszbits;
        let xattr_base = u64::from(sb.u32(44)?) << blkszbits;

        // Compression configs follow the superblock, one per available algorithm, each a
        // 4-aligned length-prefixed record.
        let mut sb_end = at + sb_size;
        if incompat & INCOMPAT_COMPR_CFGS != 0 {
            let algs = sb.u16(84)?;
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

        let packed = sb.u64(96)?;
        let packed_nid = (packed != 0
            && incompat & (INCOMPAT_FRAGMENTS | INCOMPAT_XATTR_PREFIXES) != 0)
            .then_some(packed);
        if incompat & INCOMPAT_XATTR_PREFIXES != 0 && packed_nid.is_none() {
            // Long xattr name prefixes stored on the device, 4-aligned length-prefixed.
            let count = sb.u8(91)?;
            let mut pos = u64::from(sb.u32(92)?) * 4;
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

    fn blkoff(&self, off: u64) -> u64 {
        off & (self.bs - 1)
    }
}

// ---------------------------------------------------------------------------------------
// Inodes.

#[derive(Clone, Copy, Debug)]
struct Inode {
    nid: u64,
    iloc: u64,
    layout: u8,
    /// 32 (compact) or 64 (extended).
    isize: u64,
    xattr_isize: u64,
    mode: u16,
    size: u64,
    /// `i_u`: start block, chunk format or compressed block count by layout.
    i_u: u32,
    startblk: u64,
}

impl Inode {
    fn kind(&self) -> u16 {
        self.mode & S_IFMT
    }

    /// Where inline xattrs end and indexes or inline data begin.
    fn body(&self) -> u64 {
        self.iloc + self.isize + self.xattr_isize
    }
}

fn read_inode(image: &Source, sb: &Super, nid: u64) -> Result<Inode> {
    let iloc = nid
        .checked_mul(32)
        .and_then(|o| o.checked_add(sb.meta_base))
        .filter(|&o| o < image.size())
        .ok_or_else(|| {
            bad(
                sb.meta_base,
                format!("inode nid {nid} is outside the image"),
            )
        })?;
    let raw = read(image, iloc, 32, "inode")?;
    let format = raw.u16(0)?;
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
    let icount = u64::from(raw.u16(2)?);
    let mode = raw.u16(4)?;
    let nb = u64::from(raw.u16(6)?);
    let i_u = raw.u32(16)?;
    let (isize, size, hi) = if extended {
        (64, raw.u64(8)?, nb)
    } else {
        // i_nb holds the start block's high bits only when the nlink-is-1 bit says so.
        let nlink_1 = mode & S_IFMT != S_IFDIR && (format >> I_NLINK_1_BIT) & 1 != 0;
        (32, u64::from(raw.u32(8)?), if nlink_1 { nb } else { 0 })
    };
    let xattr_isize = if icount == 0 {
        0
    } else {
        12 + 4 * (icount - 1)
    };
    check(image, iloc, isize + xattr_isize, "inode")?;
    match mode & S_IFMT {
        S_IFREG | S_IFDIR | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {}
        _ => return Err(bad(iloc + 4, format!("nid {nid}: bogus mode {mode:o}"))),
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

// ---------------------------------------------------------------------------------------
// Where an inode's content is.

/// Physical stretch holding some of an inode's content outside its own metadata.
#[derive(Clone, Copy, Debug)]
struct Unit {
    offset: u64,
    len: u64,
    compressed: bool,
}

/// An inode's content pieces, the units holding them and where its metadata (inode,
/// xattrs, indexes, inline data) ends.
struct Mapping {
    pieces: Vec<Piece>,
    units: Vec<Unit>,
    meta_end: u64,
}

fn push_piece(pieces: &mut Vec<Piece>, piece: Piece) {
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

fn piece_len(p: &Piece) -> u64 {
    match *p {
        Piece::Plain { len, .. } | Piece::Zero { len } => len,
        Piece::Compressed { take, .. } => take,
    }
}

/// The content `[start, start + len)` of a file mapped by `pieces` (whose logical start
/// offsets are `starts`).
fn slice_pieces(pieces: &[Piece], starts: &[u64], start: u64, len: u64) -> Option<Vec<Piece>> {
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

/// Walks an lz4 block without decoding it: returns the stream's length and its decoded
/// length. With `stop_at`, the stream is followed by padding (no 0padding feature) and
/// ends at the first literal run that reaches `stop_at` decoded bytes; without, it must
/// end exactly at the end of `data`.
fn lz4_stream(data: &[u8], stop_at: Option<u64>) -> std::result::Result<(usize, u64), String> {
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
enum Origin {
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
struct Lcluster {
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
struct Compact {
    ebase: u64,
    initial: u64,
    c2b: u64,
}

impl Compact {
    fn position(&self, lcn: u64) -> (u64, u32) {
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
    fn pack(&self, lcn: u64) -> (u64, u64, u64) {
        let (pos, shift) = self.position(lcn);
        let vcnt = if shift == 2 { 2 } else { 16 };
        let size = vcnt << shift;
        let start = pos - pos % size;
        (start, vcnt, (pos - start) >> shift)
    }
}

struct Walker<'a> {
    image: &'a Source<'a>,
    sb: Super,
    /// Work and memory left, in bytes; hostile images run out of it.
    budget: u64,
    parts: Vec<Region>,
    shared_xattrs: HashSet<u64>,
    /// The packed inode's content and the logical start of each piece.
    packed: Option<(Vec<Piece>, Vec<u64>)>,
}

impl<'a> Walker<'a> {
    fn spend(&mut self, cost: u64, at: u64) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(cost)
            .ok_or_else(|| bad(at, "the image describes far more than it holds"))?;
        Ok(())
    }

    fn map(&mut self, ino: &Inode) -> Result<Mapping> {
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

    fn map_flat(&mut self, ino: &Inode) -> Result<Mapping> {
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
            let start = mul(ino.startblk, bs, ino.iloc + 16)?;
            let span = mul(full_blocks, bs, ino.iloc + 8)?;
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

    fn map_chunks(&mut self, ino: &Inode) -> Result<Mapping> {
        let bs = self.sb.bs;
        let format = (ino.i_u & 0xffff) as u16;
        if format & !CHUNK_FORMAT_ALL != 0 {
            return Err(bad(
                ino.iloc + 16,
                format!("unknown chunk format {format:#x}"),
            ));
        }
        let chunkbits = self.sb.blkszbits + u32::from(format & CHUNK_FORMAT_BLKBITS_MASK);
        if chunkbits > 47 {
            return Err(bad(ino.iloc + 16, format!("chunk size 2^{chunkbits}")));
        }
        let chunksize = 1u64 << chunkbits;
        let indexes = format & CHUNK_FORMAT_INDEXES != 0;
        let unit = if indexes { 8 } else { 4 };
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
                let hi = u64::from(entry.u16(0)?);
                let lo = u64::from(entry.u32(4)?);
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

    fn map_compressed(&mut self, ino: &Inode) -> Result<Mapping> {
        let bs = self.sb.bs;
        let hpos = round_up(ino.body(), 8)?;
        let h = read(self.image, hpos, 8, "compression index header")?;
        let header = h.u64(0)?;
        let full = ino.layout == LAYOUT_COMPRESSED_FULL;
        let clusterbits = h.u8(7)?;
        if clusterbits & FRAGMENT_INODE_BIT != 0 {
            // The whole file is a fragment of the packed inode.
            let pieces = self.fragment(header ^ (1 << 63), ino.size, hpos)?;
            return Ok(Mapping {
                pieces,
                units: Vec::new(),
                meta_end: hpos + 8,
            });
        }
        let advise = h.u16(4)?;
        if full && advise & ADVISE_EXTENTS != 0 {
            return self.map_extent_records(ino, hpos, advise);
        }
        let algorithms = h.u8(6)?;
        let fragment = advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let idata_size = if !fragment && advise & ADVISE_INLINE_PCLUSTER != 0 {
            u64::from(h.u16(2)?)
        } else {
            0
        };
        let lclusterbits = self.sb.blkszbits + u32::from(clusterbits & 15);
        if lclusterbits > 20 {
            return Err(bad(hpos + 7, format!("lcluster size 2^{lclusterbits}")));
        }
        let lcs = 1u64 << lclusterbits;
        let n = ino.size.div_ceil(lcs);
        let big1 = advise & ADVISE_BIG_PCLUSTER_1 != 0;
        let big2 = advise & ADVISE_BIG_PCLUSTER_2 != 0;
        let (lclusters, index_end) = if full {
            self.full_index(ino, hpos + 16, n, big1 || big2)?
        } else {
            if big1 != big2 {
                return Err(bad(
                    hpos + 4,
                    "compact indexes with mixed big pcluster flags",
                ));
            }
            self.compact_index(ino, hpos + 8, n, lclusterbits, advise, big1)?
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
                let mut off = header & 0xffff_ffff;
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
    fn map_extent_records(&mut self, ino: &Inode, hpos: u64, advise: u16) -> Result<Mapping> {
        let image = self.image;
        let h = read(image, hpos, 8, "compression index header")?;
        let recsz = 4u64 << ((advise >> 1) & 3);
        let mut pos = round_up(hpos + 8, recsz)?;
        let fragment = advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let interlaced = advise & ADVISE_INTERLACED_PCLUSTER != 0;
        // (logical start, plen field, physical start) of each record, in file order.
        let mut records = Vec::new();
        if recsz <= 8 {
            // One record per lcluster; 4-byte records follow a base address and are
            // stored back to back.
            let lclusterbits = self.sb.blkszbits + u32::from(h.u8(7)? & 15);
            if lclusterbits > 30 {
                return Err(bad(hpos + 7, format!("lcluster size 2^{lclusterbits}")));
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
                let plen = rec.u32(0)?;
                let start = if recsz == 4 {
                    let start = pa;
                    pa = add(pa, u64::from(plen & PLEN_MASK), at)?;
                    start
                } else {
                    u64::from(rec.u32(4)?)
                };
                records.push((k << lclusterbits, plen, start));
            }
            pos += n * recsz;
        } else {
            let n = u64::from(h.u32(0)?) | u64::from(h.u16(6)?) << 32;
            check(image, pos, mul(n, recsz, pos)?, "extent records")?;
            self.spend(32 * n, pos)?;
            for k in 0..n {
                let at = pos + k * recsz;
                let rec = read(image, at, recsz, "extent record")?;
                let plen = rec.u32(0)?;
                let pa = u64::from(rec.u32(4)?) | u64::from(rec.u32(8)?) << 32;
                let mut la = u64::from(rec.u32(12)?);
                if recsz == 32 {
                    la |= u64::from(rec.u32(16)?) << 32;
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
    fn push_extent(
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

    fn full_index(
        &mut self,
        ino: &Inode,
        start: u64,
        n: u64,
        big: bool,
    ) -> Result<(Vec<Lcluster>, u64)> {
        let len = mul(n, 8, start)?;
        check(self.image, start, len, "lcluster index")?;
        self.spend(32 * n, start)?;
        let mut out = Vec::with_capacity(n as usize);
        for lcn in 0..n {
            let at = start + lcn * 8;
            let e = read(self.image, at, 8, "lcluster index")?;
            let kind = (e.u16(0)? & 3) as u8;
            let mut lc = Lcluster {
                kind,
                clusterofs: u64::from(e.u16(2)?),
                blkaddr: 0,
                cblkcnt: None,
            };
            if kind == LCLUSTER_NONHEAD {
                let d0 = u32::from(e.u16(4)?);
                lc.cblkcnt = cblkcnt(d0, big, at, ino.nid)?;
            } else {
                lc.blkaddr = u64::from(e.u32(4)?);
            }
            out.push(lc);
        }
        Ok((out, start + len))
    }

    fn compact_index(
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

    /// `len` bytes of the packed inode from `offset`.
    fn fragment(&self, offset: u64, len: u64, at: u64) -> Result<Vec<Piece>> {
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

    // -----------------------------------------------------------------------------------

    /// Records an inode's metadata and the units holding its content.
    fn record(&mut self, ino: &Inode, m: &Mapping, file: Option<u64>, regular: bool) -> Result<()> {
        self.parts.push(Region {
            offset: ino.iloc,
            len: m.meta_end - ino.iloc,
            kind: Kind::Metadata,
            file: None,
        });
        for u in &m.units {
            let kind = match (u.compressed, regular) {
                (true, _) => Kind::Compressed,
                (false, true) => Kind::Data,
                (false, false) => Kind::Metadata,
            };
            self.parts.push(Region {
                offset: u.offset,
                len: u.len,
                kind,
                file: if kind == Kind::Metadata { None } else { file },
            });
        }
        if ino.xattr_isize > 0 {
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
        }
        Ok(())
    }

    /// The content of a directory (or any inode), decoded.
    fn content(&mut self, ino: &Inode, pieces: &[Piece]) -> Result<Vec<u8>> {
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

    fn read_dir(&self, dir: &Inode, data: &[u8]) -> Result<Vec<(String, u64)>> {
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

/// The number of blocks taken by pclusters headed earlier in the same compact pack, as
/// the kernel counts them to find a head's block from the pack's base address.
fn compact_blocks_before(entries: &[(u32, u8)], i: usize, big: bool) -> Option<u64> {
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

/// Sorts the recorded stretches into regions: identical units named by several files
/// become shared, a file's adjacent data extents merge, metadata merges and widens to
/// whole blocks where nothing else lies, and `tile` fills the gaps.
fn finish(image: &Source, bs: u64, parts: Vec<Region>) -> Result<Vec<Region>> {
    let size = image.size();
    let (mut meta, mut units): (Vec<Region>, Vec<Region>) = parts
        .into_iter()
        .filter(|r| r.len > 0)
        .partition(|r| r.kind == Kind::Metadata);
    units.sort_by_key(|r| (r.offset, r.len));
    let mut merged: Vec<Region> = Vec::with_capacity(units.len());
    for r in units {
        if let Some(last) = merged.last_mut() {
            let same = last.offset == r.offset && last.len == r.len && last.kind == r.kind;
            let data_overlap =
                last.kind == Kind::Data && r.kind == Kind::Data && r.offset < last.end();
            if same || data_overlap {
                if last.file != r.file {
                    last.file = None;
                }
                last.len = last.len.max(r.end() - last.offset);
                continue;
            }
            if last.kind == Kind::Data
                && r.kind == Kind::Data
                && r.offset == last.end()
                && last.file.is_some()
                && last.file == r.file
            {
                last.len += r.len;
                continue;
            }
        }
        merged.push(r);
    }
    let units = merged;

    let union = |mut v: Vec<Region>| -> Vec<Region> {
        v.sort_by_key(|r| r.offset);
        let mut out: Vec<Region> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if r.offset <= last.end() => {
                    last.len = last.len.max(r.end() - last.offset)
                }
                _ => out.push(r),
            }
        }
        out
    };
    meta = union(meta);
    for m in &mut meta {
        let idx = units.partition_point(|u| u.offset < m.offset);
        let prev_end = if idx > 0 { units[idx - 1].end() } else { 0 };
        let next_start = units.get(idx).map_or(size, |u| u.offset);
        let lo = (m.offset - m.offset % bs).max(prev_end.min(m.offset));
        let hi = m
            .end()
            .next_multiple_of(bs)
            .min(size)
            .min(next_start.max(m.end()))
            .max(m.end());
        *m = Region {
            offset: lo,
            len: hi - lo,
            kind: Kind::Metadata,
            file: None,
        };
    }
    meta = union(meta);
    meta.extend(units);
    tile(FS, image, meta)
}

/// Describes an erofs image: its metadata, every regular file's data extents and
/// pclusters, and its free space.
pub fn analyse<'a>(image: impl Into<Source<'a>>) -> Result<Analysis> {
    let image = &image.into();
    let sb = Super::parse(image)?;
    let bs = sb.bs;
    let mut w = Walker {
        image,
        budget: image.size().saturating_mul(32).saturating_add(16 << 20),
        parts: sb
            .meta
            .iter()
            .map(|&(offset, len)| Region {
                offset,
                len,
                kind: Kind::Metadata,
                file: None,
            })
            .collect(),
        sb,
        shared_xattrs: HashSet::new(),
        packed: None,
    };

    let mut seen = HashSet::new();
    if let Some(nid) = w.sb.packed_nid {
        let ino = read_inode(image, &w.sb, nid)?;
        if ino.kind() != S_IFREG {
            return Err(bad(ino.iloc, "the packed inode is not a regular file"));
        }
        let m = w.map(&ino)?;
        w.record(&ino, &m, None, true)?;
        let mut starts = Vec::with_capacity(m.pieces.len());
        let mut pos = 0;
        for p in &m.pieces {
            starts.push(pos);
            pos += piece_len(p);
        }
        w.packed = Some((m.pieces, starts));
        seen.insert(nid);
    }

    let root = read_inode(image, &w.sb, w.sb.root_nid)?;
    if root.kind() != S_IFDIR {
        return Err(bad(root.iloc, "the root inode is not a directory"));
    }
    seen.insert(root.nid);
    let mut files: Vec<FileMap> = Vec::new();
    let mut file_of: HashMap<u64, usize> = HashMap::new();
    let mut stack = vec![(root, String::new(), 0u32)];
    while let Some((dir, path, depth)) = stack.pop() {
        let m = w.map(&dir)?;
        w.record(&dir, &m, None, false)?;
        let data = w.content(&dir, &m.pieces)?;
        for (name, nid) in w.read_dir(&dir, &data)? {
            let child_path = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            w.spend(child_path.len() as u64 + 64, dir.iloc)?;
            if !seen.insert(nid) {
                // Hard links share the inode, its regions already recorded.
                if let Some(&i) = file_of.get(&nid) {
                    let (inode, size, pieces) =
                        (files[i].inode, files[i].size, files[i].pieces.clone());
                    w.spend(48 * pieces.len() as u64, dir.iloc)?;
                    files.push(FileMap {
                        path: child_path,
                        inode,
                        size,
                        pieces,
                    });
                }
                continue;
            }
            let ino = read_inode(image, &w.sb, nid)?;
            match ino.kind() {
                S_IFDIR => {
                    if depth >= MAX_DEPTH {
                        return Err(bad(ino.iloc, "directories nest too deep"));
                    }
                    stack.push((ino, child_path, depth + 1));
                }
                S_IFREG => {
                    let m = w.map(&ino)?;
                    w.record(&ino, &m, Some(nid), true)?;
                    file_of.insert(nid, files.len());
                    files.push(FileMap {
                        path: child_path,
                        inode: nid,
                        size: ino.size,
                        pieces: m.pieces,
                    });
                }
                _ => {
                    let m = w.map(&ino)?;
                    w.record(&ino, &m, None, false)?;
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let regions = finish(image, bs, std::mem::take(&mut w.parts))?;
    Ok(Analysis {
        layout: Layout {
            fs: FsKind::Erofs,
            block_size: bs as u32,
            regions,
        },
        files,
    })
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

    #[test]
    fn rejects_junk() {
        assert!(analyse(&[]).is_err());
        assert!(analyse(&[0u8; 8192]).is_err());
        let mut sb = vec![0u8; 8192];
        sb[1024..1028].copy_from_slice(&MAGIC.to_le_bytes());
        sb[1024 + 12] = 20; // 1 MiB blocks
        let e = analyse(&sb).unwrap_err();
        assert_eq!(e.offset, 1036, "{e}");
        sb[1024 + 12] = 12;
        sb[1024 + 36] = 2; // two blocks
        sb[1024 + 14] = 0xff; // root nid 255: a zero inode, a fifo-less bogus mode
        assert!(analyse(&sb).is_err());
    }
}
