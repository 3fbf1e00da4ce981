//! squashfs 4.0, as mksquashfs writes it.
//!
//! The image is a 96-byte superblock, optional compressor options, the data and fragment
//! blocks, then the metadata tables: inodes, directories, fragment table, export (lookup)
//! table, ids and xattrs. A table is a chain of metadata blocks (a 2-byte header, then at
//! most 8 KiB once decompressed); the last four are found through an index of block
//! pointers. A regular file's inode lists the sizes of its data blocks, stored back to back
//! from a start offset; its tail may sit in a fragment block shared with other tails.
//!
//! The image may be hostile: every read is checked against `bytes_used`, a metadata block
//! decompresses to at most 8 KiB, counts read from the image are checked against the bytes
//! that would hold them before anything is sized from them, the walk reaches each
//! directory once and to a bounded depth, and what it builds stays within a budget
//! proportional to the image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use super::source::{field_at, Bytes, Field, Source};
use super::{tile, Algorithm, Analysis, FileMap, FsKind, Kind, Layout, LayoutError, Piece, Region};

pub mod format;

use format::*;

const FS: &str = "squashfs";
const SUPER_LEN: u64 = SUPER_SIZE as u64;
/// Directories nested deeper than this are refused (Linux paths stop at 4096 bytes).
const MAX_DEPTH: usize = 2048;
/// Decompressed metadata held at once, whatever the image claims.
const MAX_METADATA: usize = 1 << 30;
/// Bytes of file maps (paths and pieces) allowed per image byte, on top of a base: only a
/// hostile image (many paths to one huge inode, deep nesting) comes near it.
const BUDGET_PER_BYTE: usize = 16;
const BUDGET_BASE: usize = 16 << 20;

fn err(offset: u64, reason: impl Into<String>) -> LayoutError {
    LayoutError::new(FS, offset, reason)
}

/// Describes a squashfs image: its metadata blocks, data and fragment blocks, and where
/// each regular file's bytes are.
pub fn analyse<'a>(image: impl Into<Source<'a>>) -> Result<Analysis, LayoutError> {
    let image = &image.into();
    let sb = Superblock::parse(image)?;
    let img = Image {
        src: image,
        used: sb.bytes_used,
        compression: sb.compression,
    };
    let mut meta = vec![metadata(0, SUPER_LEN)];
    let mut decompressed = 0usize;

    if sb.flags & COMP_OPT != 0 {
        let (options, end) = img.metadata_block(SUPER_LEN, "compressor options")?;
        check_options(sb.compression, &options)?;
        meta.push(metadata(SUPER_LEN, end - SUPER_LEN));
    }

    // Tables found through an index, and where each of their pieces starts: the inode and
    // directory tables are chains that end where the next structure begins.
    let mut starts = vec![sb.bytes_used, sb.inode_table, sb.directory_table];
    let fragments = read_fragment_table(&img, &sb, &mut meta, &mut starts, &mut decompressed)?;
    if sb.export_table != INVALID_BLK {
        let blocks = u64::from(sb.inodes).div_ceil(METADATA_SIZE as u64 / 8);
        indexed_table(
            &img,
            sb.export_table,
            blocks,
            0,
            "export table",
            &mut meta,
            &mut starts,
        )?;
    }
    let blocks = u64::from(sb.no_ids).div_ceil(METADATA_SIZE as u64 / 4);
    indexed_table(
        &img,
        sb.id_table,
        blocks,
        0,
        "id table",
        &mut meta,
        &mut starts,
    )?;
    if sb.xattr_id_table != INVALID_BLK {
        read_xattr_tables(&img, sb.xattr_id_table, &mut meta, &mut starts)?;
    }
    let next_after = |at: u64| starts.iter().copied().filter(|&s| s > at).min();

    let inode_end = next_after(sb.inode_table).unwrap_or(sb.bytes_used);
    let inodes = Table::read(
        &img,
        sb.inode_table,
        inode_end,
        "inode table",
        &mut meta,
        &mut decompressed,
    )?;
    let dir_end = next_after(sb.directory_table).unwrap_or(sb.bytes_used);
    let dirs = Table::read(
        &img,
        sb.directory_table,
        dir_end,
        "directory table",
        &mut meta,
        &mut decompressed,
    )?;

    let mut walk = Walk {
        sb: &sb,
        inodes: &inodes,
        dirs: &dirs,
        fragments: &fragments,
        parsed: Vec::new(),
        by_ref: HashMap::new(),
        paths: Vec::new(),
        units: BTreeMap::new(),
        budget: BUDGET_BASE.saturating_add(
            usize::try_from(image.size())
                .unwrap_or(usize::MAX)
                .saturating_mul(BUDGET_PER_BYTE),
        ),
    };
    walk.walk()?;
    let Walk {
        parsed,
        paths,
        mut units,
        ..
    } = walk;

    // A fragment block's decompressed size is not recorded: it ends with the last tail
    // packed into it, which is the furthest end any file uses.
    let mut fragment_used = vec![0u64; fragments.len()];
    for file in &parsed {
        if let Some(t) = file.tail {
            // `regular` checked the fragment number against the table.
            if let Some(used) = fragment_used.get_mut(t.fragment as usize) {
                *used = (*used).max(u64::from(t.offset) + t.len);
            }
        }
    }
    let algorithm = sb.compression.algorithm();
    let mut files = Vec::with_capacity(paths.len());
    for (path, index) in paths {
        let file = &parsed[index];
        let mut pieces = file.pieces.clone();
        if let Some(t) = file.tail {
            let (Some(&fragment), Some(&unit_size)) = (
                fragments.get(t.fragment as usize),
                fragment_used.get(t.fragment as usize),
            ) else {
                return Err(err(0, format!("{path}: no fragment {}", t.fragment)));
            };
            let offset = u64::from(t.offset);
            pieces.push(if fragment.stored {
                Piece::Plain {
                    offset: fragment.start + offset,
                    len: t.len,
                }
            } else {
                Piece::Compressed {
                    offset: fragment.start,
                    len: fragment.len,
                    algorithm,
                    unit_size,
                    skip: offset,
                    take: t.len,
                }
            });
        }
        files.push(FileMap {
            path,
            inode: file.inode,
            size: file.size,
            pieces,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    for f in &fragments {
        if f.len > 0 {
            units.insert((f.start, f.len), None);
        }
    }
    let mut parts = meta;
    parts.extend(units.into_iter().map(|((offset, len), file)| Region {
        offset,
        len,
        kind: Kind::Compressed,
        file,
    }));
    let regions = tile(FS, image, parts)?;
    Ok(Analysis {
        layout: Layout {
            fs: FsKind::Squashfs,
            block_size: sb.block_size,
            regions,
        },
        files,
    })
}

fn metadata(offset: u64, len: u64) -> Region {
    Region {
        offset,
        len,
        kind: Kind::Metadata,
        file: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Zlib,
    Xz,
    Lz4,
    Zstd,
}

impl Compression {
    fn algorithm(self) -> Algorithm {
        match self {
            Compression::Zlib => Algorithm::Gzip,
            Compression::Xz => Algorithm::Xz,
            Compression::Lz4 => Algorithm::Lz4,
            Compression::Zstd => Algorithm::Zstd,
        }
    }
}

/// The superblock fields the analysis uses, checked.
struct Superblock {
    inodes: u32,
    block_size: u32,
    block_log: u32,
    fragments: u32,
    compression: Compression,
    flags: u16,
    no_ids: u16,
    root_inode: u64,
    bytes_used: u64,
    id_table: u64,
    xattr_id_table: u64,
    inode_table: u64,
    directory_table: u64,
    fragment_table: u64,
    export_table: u64,
}

impl Superblock {
    fn parse(image: &Source) -> Result<Superblock, LayoutError> {
        if image.size() < SUPER_LEN {
            return Err(err(0, "image is shorter than the 96-byte superblock"));
        }
        let at = |f: &Field| field_at(0, f);
        let b = image.read(FS, 0, SUPER_LEN, "superblock")?;
        if b.array(SB_MAGIC.offset)? != MAGIC {
            return Err(err(0, "no squashfs magic (hsqs)"));
        }
        let (major, minor) = (b.get_u16(&SB_MAJOR)?, b.get_u16(&SB_MINOR)?);
        if (major, minor) != (MAJOR, MINOR) {
            return Err(err(
                at(&SB_MAJOR),
                format!("squashfs version {major}.{minor}, not 4.0"),
            ));
        }
        let block_size = b.get_u32(&SB_BLOCK_SIZE)?;
        if !block_size.is_power_of_two() || !(4096..=1 << 20).contains(&block_size) {
            return Err(err(
                at(&SB_BLOCK_SIZE),
                format!("block size {block_size} is not a power of two from 4 KiB to 1 MiB"),
            ));
        }
        let block_log = u32::from(b.get_u16(&SB_BLOCK_LOG)?);
        if block_log != block_size.trailing_zeros() {
            return Err(err(
                at(&SB_BLOCK_LOG),
                format!("block log {block_log} does not match block size {block_size}"),
            ));
        }
        let compression = match b.get_u16(&SB_COMPRESSION)? {
            ZLIB_COMPRESSION => Compression::Zlib,
            XZ_COMPRESSION => Compression::Xz,
            LZ4_COMPRESSION => Compression::Lz4,
            ZSTD_COMPRESSION => Compression::Zstd,
            LZMA_COMPRESSION => {
                return Err(err(
                    at(&SB_COMPRESSION),
                    "lzma compression is not supported",
                ))
            }
            LZO_COMPRESSION => {
                return Err(err(at(&SB_COMPRESSION), "lzo compression is not supported"))
            }
            c => return Err(err(at(&SB_COMPRESSION), format!("unknown compression {c}"))),
        };
        let sb = Superblock {
            inodes: b.get_u32(&SB_INODES)?,
            block_size,
            block_log,
            fragments: b.get_u32(&SB_FRAGMENTS)?,
            compression,
            flags: b.get_u16(&SB_FLAGS)?,
            no_ids: b.get_u16(&SB_NO_IDS)?,
            root_inode: b.get_u64(&SB_ROOT_INODE)?,
            bytes_used: b.get_u64(&SB_BYTES_USED)?,
            id_table: b.get_u64(&SB_ID_TABLE_START)?,
            xattr_id_table: b.get_u64(&SB_XATTR_ID_TABLE_START)?,
            inode_table: b.get_u64(&SB_INODE_TABLE_START)?,
            directory_table: b.get_u64(&SB_DIRECTORY_TABLE_START)?,
            fragment_table: b.get_u64(&SB_FRAGMENT_TABLE_START)?,
            export_table: b.get_u64(&SB_LOOKUP_TABLE_START)?,
        };
        if sb.bytes_used < SUPER_LEN || sb.bytes_used > image.size() {
            return Err(err(
                at(&SB_BYTES_USED),
                format!(
                    "filesystem size {} does not fit the image of {} bytes",
                    sb.bytes_used,
                    image.size()
                ),
            ));
        }
        for (field, start, what) in [
            (&SB_INODE_TABLE_START, sb.inode_table, "inode table"),
            (
                &SB_DIRECTORY_TABLE_START,
                sb.directory_table,
                "directory table",
            ),
            (&SB_ID_TABLE_START, sb.id_table, "id table"),
        ] {
            if start < SUPER_LEN || start >= sb.bytes_used {
                return Err(err(
                    at(field),
                    format!("{what} start {start} is outside the filesystem"),
                ));
            }
        }
        if sb.root_inode >> 48 != 0 || sb.root_inode & 0xffff >= METADATA_SIZE as u64 {
            return Err(err(
                at(&SB_ROOT_INODE),
                format!("bad root inode reference {:#x}", sb.root_inode),
            ));
        }
        Ok(sb)
    }
}

/// Refuses compressor options that change how blocks must be decoded.
fn check_options(compression: Compression, options: &[u8]) -> Result<(), LayoutError> {
    let word = |at: usize| {
        options
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| err(SUPER_LEN, "compressor options are too short"))
    };
    match compression {
        // dictionary size, then the BCJ filters tried on each block.
        Compression::Xz if word(4)? != 0 => {
            Err(err(SUPER_LEN, "xz with BCJ filters is not supported"))
        }
        // version, flags: only the legacy lz4 block format exists.
        Compression::Lz4 if word(0)? != 1 => Err(err(SUPER_LEN, "unknown lz4 format version")),
        _ => Ok(()),
    }
}

/// The filesystem's bytes, `[0, bytes_used)` of the image.
struct Image<'a> {
    src: &'a Source<'a>,
    used: u64,
    compression: Compression,
}

impl<'a> Image<'a> {
    /// `[offset, offset + len)` checked against the filesystem's end.
    fn check(&self, offset: u64, len: u64, what: &str) -> Result<(), LayoutError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.used => Ok(()),
            _ => Err(err(
                offset,
                format!(
                    "{what}: {len} bytes run past the end of the filesystem ({} bytes)",
                    self.used
                ),
            )),
        }
    }

    fn slice(&self, offset: u64, len: u64, what: &str) -> Result<Bytes<'a>, LayoutError> {
        self.check(offset, len, what)?;
        self.src.read(FS, offset, len, what)
    }

    /// A metadata block's payload and whether it is stored uncompressed; also where the
    /// block ends.
    fn metadata_extent(
        &self,
        offset: u64,
        what: &str,
    ) -> Result<(Bytes<'a>, bool, u64), LayoutError> {
        let header = self.slice(offset, 2, what)?.u16(0)?;
        let len = u64::from(header & !METADATA_STORED);
        if len == 0 || len > METADATA_SIZE as u64 {
            return Err(err(
                offset,
                format!("{what}: metadata block of {len} bytes"),
            ));
        }
        let payload = self.slice(offset + 2, len, what)?;
        Ok((payload, header & METADATA_STORED != 0, offset + 2 + len))
    }

    /// A metadata block decompressed, and where it ends.
    fn metadata_block(&self, offset: u64, what: &str) -> Result<(Vec<u8>, u64), LayoutError> {
        let (payload, stored, end) = self.metadata_extent(offset, what)?;
        let data = if stored {
            payload.to_vec()
        } else {
            decompress(self.compression, &payload, METADATA_SIZE)
                .map_err(|e| err(offset, format!("{what}: metadata block: {e}")))?
        };
        Ok((data, end))
    }
}

/// Decompresses at most `cap` bytes; more is an error.
fn decompress(compression: Compression, data: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    match compression {
        Compression::Zstd => zstd::bulk::decompress(data, cap).map_err(|e| e.to_string()),
        Compression::Lz4 => lz4_flex::block::decompress(data, cap).map_err(|e| e.to_string()),
        Compression::Zlib => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(data)
                .take(cap as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            if out.len() > cap {
                return Err(format!("decompresses to more than {cap} bytes"));
            }
            Ok(out)
        }
        Compression::Xz => xz_decompress(data, cap),
    }
}

/// xz as squashfs writes it: one stream of one block, filtered by LZMA2 alone. lzma-rs
/// holds a whole block in memory before handing it over, so the LZMA2 chunk headers, which
/// declare their sizes, are summed first and a block that would exceed `cap` is refused
/// before anything is decoded. Checksums are not verified: the chunks are, later.
fn xz_decompress(data: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    const MAGIC: &[u8] = b"\xfd7zXZ\0";
    const LZMA2: u64 = 0x21;
    if data.get(..MAGIC.len()) != Some(MAGIC) {
        return Err("not an xz stream".into());
    }
    let at = |i: usize| data.get(i).copied().ok_or("xz stream is cut short");
    // Stream header: magic, 2 flag bytes, CRC32. Then the block header, its size in units
    // of 4 bytes (0 would start the index: no block at all).
    let size_byte = at(12)?;
    if size_byte == 0 {
        return Err("xz stream without a block".into());
    }
    let header_end = 12 + (usize::from(size_byte) + 1) * 4;
    let flags = at(13)?;
    if flags & 3 != 0 {
        return Err("xz block with more than one filter (BCJ) is not supported".into());
    }
    let mut pos = 14;
    let vli = |pos: &mut usize| -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..9 {
            let b = at(*pos)?;
            *pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("bad xz integer".into())
    };
    if flags & 0x40 != 0 {
        vli(&mut pos)?;
    }
    if flags & 0x80 != 0 {
        vli(&mut pos)?;
    }
    if vli(&mut pos)? != LZMA2 {
        return Err("xz filter is not LZMA2".into());
    }
    let chunks = data
        .get(header_end..)
        .ok_or("xz block header is cut short")?;
    let be16 = |i: usize| -> Result<usize, String> {
        match chunks.get(i..i + 2) {
            Some(b) => Ok(usize::from(u16::from_be_bytes([b[0], b[1]]))),
            None => Err("LZMA2 chunk header is cut short".into()),
        }
    };
    let (mut pos, mut total) = (0usize, 0usize);
    loop {
        let control = *chunks.get(pos).ok_or("LZMA2 data has no end marker")?;
        let (unpacked, len) = match control {
            0 => break,
            1 | 2 => {
                let n = be16(pos + 1)? + 1;
                (n, 3 + n)
            }
            0x80..=0xff => {
                let unpacked = (usize::from(control & 0x1f) << 16 | be16(pos + 1)?) + 1;
                let props = usize::from(control >= 0xc0);
                (unpacked, 5 + props + be16(pos + 3)? + 1)
            }
            _ => return Err(format!("bad LZMA2 control byte {control:#x}")),
        };
        total += unpacked;
        pos += len;
        if total > cap {
            return Err(format!("decompresses to more than {cap} bytes"));
        }
        if pos >= chunks.len() {
            return Err("LZMA2 chunk runs past the block".into());
        }
    }
    let mut out = Vec::with_capacity(total);
    lzma_rs::lzma2_decompress(&mut &chunks[..=pos], &mut out).map_err(|e| e.to_string())?;
    if out.len() > cap {
        return Err(format!("decompresses to more than {cap} bytes"));
    }
    Ok(out)
}

/// A chain of metadata blocks decompressed into one buffer. Inodes and directories are
/// found by (offset of their block from the table start, offset inside the decompressed
/// block) and may run on into the next block.
struct Table {
    start: u64,
    what: &'static str,
    /// Per block: offset from the table start, start in `data`.
    blocks: Vec<(u64, usize)>,
    data: Vec<u8>,
}

impl Table {
    fn read(
        img: &Image,
        start: u64,
        end: u64,
        what: &'static str,
        meta: &mut Vec<Region>,
        decompressed: &mut usize,
    ) -> Result<Table, LayoutError> {
        let mut table = Table {
            start,
            what,
            blocks: Vec::new(),
            data: Vec::new(),
        };
        let mut at = start;
        while at < end {
            let (block, next) = img.metadata_block(at, what)?;
            if next > end {
                return Err(err(
                    at,
                    format!("{what}: metadata block runs into the next table at {end}"),
                ));
            }
            *decompressed += block.len();
            if *decompressed > MAX_METADATA {
                return Err(err(at, "more than 1 GiB of metadata"));
            }
            table.blocks.push((at - start, table.data.len()));
            table.data.extend_from_slice(&block);
            meta.push(metadata(at, next - at));
            at = next;
        }
        Ok(table)
    }

    /// Where (block, offset) is in `data`.
    fn pos(&self, block: u64, offset: u64) -> Result<usize, LayoutError> {
        let i = self
            .blocks
            .binary_search_by_key(&block, |b| b.0)
            .map_err(|_| {
                err(
                    self.start.saturating_add(block),
                    format!("{}: no metadata block starts here", self.what),
                )
            })?;
        let from = self.blocks[i].1;
        let to = self.blocks.get(i + 1).map_or(self.data.len(), |b| b.1);
        if offset > (to - from) as u64 {
            return Err(err(
                self.start + block,
                format!(
                    "{}: offset {offset} is past the block's {} bytes",
                    self.what,
                    to - from
                ),
            ));
        }
        Ok(from + offset as usize)
    }

    fn get(&self, pos: usize, len: u64) -> Result<&[u8], LayoutError> {
        usize::try_from(len)
            .ok()
            .and_then(|len| pos.checked_add(len))
            .and_then(|end| self.data.get(pos..end))
            .ok_or_else(|| {
                err(
                    self.image_offset(pos),
                    format!("{}: {len} bytes run past the end of the table", self.what),
                )
            })
    }

    /// The image offset of the metadata block holding `pos`, for errors.
    fn image_offset(&self, pos: usize) -> u64 {
        let i = self.blocks.partition_point(|b| b.1 <= pos);
        self.start + i.checked_sub(1).map_or(0, |i| self.blocks[i].0)
    }
}

/// The little-endian field at `i` of bytes taken from a table; `at`, the image offset of
/// the metadata block they came from, names it should `b` be too short.
fn field<const N: usize>(b: &[u8], i: usize, at: u64) -> Result<[u8; N], LayoutError> {
    i.checked_add(N)
        .and_then(|end| b.get(i..end))
        .and_then(|f| f.try_into().ok())
        .ok_or_else(|| {
            err(
                at,
                format!(
                    "a {N}-byte field at {i} runs past the {} bytes read",
                    b.len()
                ),
            )
        })
}

/// Field `f` of a structure that `b` starts with.
fn u16_of(b: &[u8], f: &Field, at: u64) -> Result<u16, LayoutError> {
    debug_assert_eq!(f.size, 2, "{}", f.name);
    field(b, f.offset, at).map(u16::from_le_bytes)
}

fn u32_of(b: &[u8], f: &Field, at: u64) -> Result<u32, LayoutError> {
    debug_assert_eq!(f.size, 4, "{}", f.name);
    field(b, f.offset, at).map(u32::from_le_bytes)
}

fn u64_of(b: &[u8], f: &Field, at: u64) -> Result<u64, LayoutError> {
    debug_assert_eq!(f.size, 8, "{}", f.name);
    field(b, f.offset, at).map(u64::from_le_bytes)
}

/// A table found through an index of `blocks` pointers at `index` (after `header` bytes):
/// records the index and each block as metadata, and returns the blocks' offsets.
fn indexed_table(
    img: &Image,
    index: u64,
    blocks: u64,
    header: u64,
    what: &str,
    meta: &mut Vec<Region>,
    starts: &mut Vec<u64>,
) -> Result<Vec<u64>, LayoutError> {
    // The index must be in the image before its length is trusted.
    let len = header + blocks * 8;
    let pointers = img.slice(index, len, what)?;
    meta.push(metadata(index, len));
    starts.push(index);
    let mut out = Vec::with_capacity(blocks as usize);
    for i in 0..blocks {
        let at = pointers.u64((header + i * 8) as usize)?;
        let (_, _, end) = img.metadata_extent(at, what)?;
        meta.push(metadata(at, end - at));
        starts.push(at);
        out.push(at);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug)]
struct Fragment {
    start: u64,
    len: u64,
    stored: bool,
}

fn read_fragment_table(
    img: &Image,
    sb: &Superblock,
    meta: &mut Vec<Region>,
    starts: &mut Vec<u64>,
    decompressed: &mut usize,
) -> Result<Vec<Fragment>, LayoutError> {
    if sb.fragments == 0 {
        return Ok(Vec::new());
    }
    const PER_BLOCK: u64 = (METADATA_SIZE / FRAGMENT_ENTRY_SIZE) as u64;
    let blocks = u64::from(sb.fragments).div_ceil(PER_BLOCK);
    let pointers = indexed_table(
        img,
        sb.fragment_table,
        blocks,
        0,
        "fragment table",
        meta,
        starts,
    )?;
    let mut fragments = Vec::new();
    let mut left = u64::from(sb.fragments);
    for at in pointers {
        let (block, _) = img.metadata_block(at, "fragment table")?;
        *decompressed += block.len();
        if *decompressed > MAX_METADATA {
            return Err(err(at, "more than 1 GiB of metadata"));
        }
        let here = left.min(PER_BLOCK);
        if (block.len() as u64) < here * FRAGMENT_ENTRY_SIZE as u64 {
            return Err(err(at, "fragment table block is short"));
        }
        for e in block.chunks_exact(FRAGMENT_ENTRY_SIZE).take(here as usize) {
            let (start, size) = (u64_of(e, &FE_START_BLOCK, at)?, u32_of(e, &FE_SIZE, at)?);
            if size >> 25 != 0 || size & !BLOCK_STORED > sb.block_size {
                return Err(err(
                    at,
                    format!("fragment {} has bad size {size:#x}", fragments.len()),
                ));
            }
            let len = u64::from(size & !BLOCK_STORED);
            img.check(start, len, "fragment block")?;
            fragments.push(Fragment {
                start,
                len,
                stored: size & BLOCK_STORED != 0,
            });
        }
        left -= here;
    }
    Ok(fragments)
}

/// The xattr id table (a 16-byte header and an index) and the key/value blocks it points
/// into, which run from the header's start up to the first id block.
fn read_xattr_tables(
    img: &Image,
    at: u64,
    meta: &mut Vec<Region>,
    starts: &mut Vec<u64>,
) -> Result<(), LayoutError> {
    let header = img.slice(at, XATTR_ID_TABLE_SIZE as u64, "xattr id table")?;
    let kv_start = header.get_u64(&XT_XATTR_TABLE_START)?;
    let ids = u64::from(header.get_u32(&XT_XATTR_IDS)?);
    let blocks = ids.div_ceil((METADATA_SIZE / XATTR_ID_SIZE) as u64);
    let pointers = indexed_table(img, at, blocks, 16, "xattr id table", meta, starts)?;
    let kv_end = pointers.iter().copied().chain([at]).min().unwrap_or(at);
    if kv_start > kv_end {
        return Err(err(at, "xattr table starts after its ids"));
    }
    let mut pos = kv_start;
    while pos < kv_end {
        let (_, _, end) = img.metadata_extent(pos, "xattr table")?;
        if end > kv_end {
            return Err(err(pos, "xattr table block runs into the xattr ids"));
        }
        meta.push(metadata(pos, end - pos));
        pos = end;
    }
    starts.push(kv_start);
    Ok(())
}

/// A file's tail in a fragment block.
#[derive(Clone, Copy)]
struct Tail {
    fragment: u32,
    offset: u32,
    len: u64,
}

/// A regular file inode: its blocks as pieces, and its tail.
struct Regular {
    inode: u64,
    size: u64,
    pieces: Vec<Piece>,
    tail: Option<Tail>,
}

/// Where a directory's listing is in the directory table.
#[derive(Clone, Copy)]
struct Directory {
    block: u64,
    offset: u64,
    size: u64,
}

struct Entry<'t> {
    name: &'t [u8],
    inode: u64,
    kind: u16,
}

struct Walk<'a> {
    sb: &'a Superblock,
    inodes: &'a Table,
    dirs: &'a Table,
    fragments: &'a [Fragment],
    /// Regular inodes, each parsed once whatever the number of its names.
    parsed: Vec<Regular>,
    by_ref: HashMap<u64, usize>,
    /// Path of each regular file, and its inode in `parsed`.
    paths: Vec<(String, usize)>,
    /// Data blocks: the inode number of their file, `None` when several files share them.
    units: BTreeMap<(u64, u64), Option<u64>>,
    budget: usize,
}

impl<'a> Walk<'a> {
    fn spend(&mut self, bytes: usize, at: u64) -> Result<(), LayoutError> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or_else(|| err(at, "file maps would outgrow the image many times over"))?;
        Ok(())
    }

    /// Depth first from the root, each directory once.
    fn walk(&mut self) -> Result<(), LayoutError> {
        let root = self.sb.root_inode;
        if !matches!(self.inode_type(root)?, DIR_TYPE | LDIR_TYPE) {
            return Err(err(32, "root inode is not a directory"));
        }
        let mut seen = HashSet::from([root]);
        let mut stack = vec![(self.directory(root)?, String::new(), 0usize)];
        while let Some((dir, path, depth)) = stack.pop() {
            let at = self.dirs.start.saturating_add(dir.block);
            for entry in self.entries(dir)? {
                let name = String::from_utf8_lossy(entry.name);
                let child = if path.is_empty() {
                    name.into_owned()
                } else {
                    format!("{path}/{name}")
                };
                let ty = self.inode_type(entry.inode)?;
                let basic = if ty > 7 { ty - 7 } else { ty };
                if basic != entry.kind {
                    return Err(err(
                        at,
                        format!("{child}: entry type {} but inode type {ty}", entry.kind),
                    ));
                }
                match ty {
                    DIR_TYPE | LDIR_TYPE => {
                        if !seen.insert(entry.inode) {
                            return Err(err(at, format!("{child}: directory reached twice")));
                        }
                        if depth >= MAX_DEPTH {
                            return Err(err(
                                at,
                                format!("directories nested deeper than {MAX_DEPTH}"),
                            ));
                        }
                        self.spend(child.len(), at)?;
                        stack.push((self.directory(entry.inode)?, child, depth + 1));
                    }
                    REG_TYPE | LREG_TYPE => {
                        let index = match self.by_ref.get(&entry.inode) {
                            Some(&i) => i,
                            None => {
                                let file = self.regular(entry.inode)?;
                                self.add_units(&file);
                                self.parsed.push(file);
                                self.by_ref.insert(entry.inode, self.parsed.len() - 1);
                                self.parsed.len() - 1
                            }
                        };
                        let pieces = self.parsed[index].pieces.len() + 1;
                        self.spend(
                            child.len() + pieces * size_of::<Piece>() + size_of::<FileMap>(),
                            at,
                        )?;
                        self.paths.push((child, index));
                    }
                    // Symlinks, devices, fifos and sockets own no blocks.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn add_units(&mut self, file: &Regular) {
        for p in &file.pieces {
            let (offset, len) = match *p {
                Piece::Compressed { offset, len, .. } | Piece::Plain { offset, len } => {
                    (offset, len)
                }
                Piece::Zero { .. } => continue,
            };
            self.units
                .entry((offset, len))
                .and_modify(|owner| {
                    if *owner != Some(file.inode) {
                        *owner = None
                    }
                })
                .or_insert(Some(file.inode));
        }
    }

    /// The type of the inode at reference `r` ((block, offset) in the inode table).
    fn inode_type(&self, r: u64) -> Result<u16, LayoutError> {
        let t = self.inodes;
        let pos = t.pos(r >> 16, r & 0xffff)?;
        let at = t.image_offset(pos);
        let ty = u16_of(t.get(pos, I_INODE_TYPE.size as u64)?, &I_INODE_TYPE, at)?;
        if ty == 0 || ty > MAX_TYPE {
            return Err(err(at, format!("unknown inode type {ty}")));
        }
        Ok(ty)
    }

    /// Where a directory inode's listing is.
    fn directory(&self, r: u64) -> Result<Directory, LayoutError> {
        let t = self.inodes;
        let pos = t.pos(r >> 16, r & 0xffff)?;
        let at = t.image_offset(pos);
        let b = t.get(pos, DIR_INODE_SIZE as u64)?;
        Ok(if u16_of(b, &I_INODE_TYPE, at)? == DIR_TYPE {
            Directory {
                block: u64::from(u32_of(b, &DIR_START_BLOCK, at)?),
                size: u64::from(u16_of(b, &DIR_FILE_SIZE, at)?),
                offset: u64::from(u16_of(b, &DIR_OFFSET, at)?),
            }
        } else {
            let b = t.get(pos, LDIR_INODE_SIZE as u64)?;
            Directory {
                size: u64::from(u32_of(b, &LDIR_FILE_SIZE, at)?),
                block: u64::from(u32_of(b, &LDIR_START_BLOCK, at)?),
                offset: u64::from(u16_of(b, &LDIR_OFFSET, at)?),
            }
        })
    }

    /// A regular file inode: its blocks, whose sizes follow the inode, and its tail.
    fn regular(&mut self, r: u64) -> Result<Regular, LayoutError> {
        let t = self.inodes;
        let pos = t.pos(r >> 16, r & 0xffff)?;
        let at = t.image_offset(pos);
        let b = t.get(pos, REG_INODE_SIZE as u64)?;
        let inode = u64::from(u32_of(b, &I_INODE_NUMBER, at)?);
        let (start, size, fragment, frag_offset, list) =
            if u16_of(b, &I_INODE_TYPE, at)? == REG_TYPE {
                (
                    u64::from(u32_of(b, &REG_START_BLOCK, at)?),
                    u64::from(u32_of(b, &REG_FILE_SIZE, at)?),
                    u32_of(b, &REG_FRAGMENT, at)?,
                    u32_of(b, &REG_OFFSET, at)?,
                    pos + REG_INODE_SIZE,
                )
            } else {
                let b = t.get(pos, LREG_INODE_SIZE as u64)?;
                (
                    u64_of(b, &LREG_START_BLOCK, at)?,
                    u64_of(b, &LREG_FILE_SIZE, at)?,
                    u32_of(b, &LREG_FRAGMENT, at)?,
                    u32_of(b, &LREG_OFFSET, at)?,
                    pos + LREG_INODE_SIZE,
                )
            };
        let bs = u64::from(self.sb.block_size);
        let has_tail = fragment != INVALID_FRAG;
        let blocks = if has_tail {
            size >> self.sb.block_log
        } else {
            size.div_ceil(bs)
        };
        // The list must be in the table before the count is trusted.
        let list = t.get(list, blocks.saturating_mul(4))?;
        self.spend(list.len() / 4 * size_of::<Piece>(), at)?;
        let algorithm = self.sb.compression.algorithm();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut pos = start;
        for (i, word) in list.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes(field(word, 0, at)?);
            let unit = bs.min(size - i as u64 * bs);
            if word == 0 {
                // A hole: runs of them become one piece.
                match pieces.last_mut() {
                    Some(Piece::Zero { len }) => *len += unit,
                    _ => pieces.push(Piece::Zero { len: unit }),
                }
                continue;
            }
            let len = u64::from(word & !BLOCK_STORED);
            let stored = word & BLOCK_STORED != 0;
            if word >> 25 != 0 || len == 0 || len > bs || (stored && len != unit) {
                return Err(err(
                    at,
                    format!("inode {inode}: block {i} has bad size {word:#x}"),
                ));
            }
            if pos
                .checked_add(len)
                .is_none_or(|end| end > self.sb.bytes_used)
            {
                return Err(err(
                    pos,
                    format!("inode {inode}: block {i} runs past the filesystem"),
                ));
            }
            pieces.push(if stored {
                Piece::Plain { offset: pos, len }
            } else {
                Piece::Compressed {
                    offset: pos,
                    len,
                    algorithm,
                    unit_size: unit,
                    skip: 0,
                    take: unit,
                }
            });
            pos += len;
        }
        let tail_len = if has_tail { size - blocks * bs } else { 0 };
        let tail = if tail_len > 0 {
            let f = self
                .fragments
                .get(fragment as usize)
                .ok_or_else(|| err(at, format!("inode {inode}: no fragment {fragment}")))?;
            let limit = if f.stored { f.len } else { bs };
            if f.len == 0 || u64::from(frag_offset) + tail_len > limit {
                return Err(err(
                    at,
                    format!("inode {inode}: tail does not fit fragment {fragment}"),
                ));
            }
            Some(Tail {
                fragment,
                offset: frag_offset,
                len: tail_len,
            })
        } else {
            None
        };
        Ok(Regular {
            inode,
            size,
            pieces,
            tail,
        })
    }

    /// A directory's entries; `size` counts 3 bytes more than the listing, as in the kernel.
    fn entries(&self, dir: Directory) -> Result<Vec<Entry<'a>>, LayoutError> {
        let Directory {
            block,
            offset,
            size,
        } = dir;
        let t: &'a Table = self.dirs;
        let at = t.start.saturating_add(block);
        let len = size
            .checked_sub(3)
            .ok_or_else(|| err(at, format!("directory size {size} is below 3")))?;
        let pos = t.pos(block, offset)?;
        let listing = t.get(pos, len)?;
        let short = || err(at, "directory listing is cut short");
        let mut out = Vec::new();
        let mut i = 0usize;
        while i < listing.len() {
            let h = listing.get(i..i + DIR_HEADER_SIZE).ok_or_else(short)?;
            let count = u64::from(u32_of(h, &DH_COUNT, at)?) + 1;
            let inode_block = u64::from(u32_of(h, &DH_START_BLOCK, at)?);
            if count > DIR_COUNT {
                return Err(err(at, format!("directory header counts {count} entries")));
            }
            i += DIR_HEADER_SIZE;
            for _ in 0..count {
                let e = listing.get(i..i + DIR_ENTRY_SIZE).ok_or_else(short)?;
                let (inode_offset, kind) = (u16_of(e, &DE_OFFSET, at)?, u16_of(e, &DE_TYPE, at)?);
                let name_len = usize::from(u16_of(e, &DE_SIZE, at)?) + 1;
                if name_len > NAME_LEN {
                    return Err(err(at, "directory entry name is longer than 256 bytes"));
                }
                let name = listing
                    .get(i + DIR_ENTRY_SIZE..i + DIR_ENTRY_SIZE + name_len)
                    .ok_or_else(short)?;
                if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                    return Err(err(
                        at,
                        format!(
                            "bad name {:?} in a directory",
                            String::from_utf8_lossy(name)
                        ),
                    ));
                }
                if usize::from(inode_offset) >= METADATA_SIZE {
                    return Err(err(at, "directory entry points past an inode block"));
                }
                i += DIR_ENTRY_SIZE + name_len;
                out.push(Entry {
                    name,
                    inode: inode_block << 16 | u64::from(inode_offset),
                    kind,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"hsqs");
        b[12..16].copy_from_slice(&131072u32.to_le_bytes());
        b[20..22].copy_from_slice(&6u16.to_le_bytes());
        b[22..24].copy_from_slice(&17u16.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        for at in [48, 64, 72] {
            b[at..at + 8].copy_from_slice(&200u64.to_le_bytes());
        }
        b
    }

    fn reason(image: &[u8]) -> String {
        match analyse(image) {
            Err(e) => e.reason,
            Ok(_) => panic!("analysed a broken image"),
        }
    }

    #[test]
    fn superblock_checks() {
        assert!(reason(&[]).contains("shorter"));
        let mut b = superblock();
        b[0] = b'x';
        assert!(reason(&b).contains("magic"));
        let mut b = superblock();
        b[28] = 3;
        assert!(reason(&b).contains("version 3.0"));
        let mut b = superblock();
        b[12..16].copy_from_slice(&131073u32.to_le_bytes());
        assert!(reason(&b).contains("block size"));
        let mut b = superblock();
        b[22] = 16;
        assert!(reason(&b).contains("block log"));
        let mut b = superblock();
        b[20] = 3;
        assert!(reason(&b).contains("lzo"));
        let mut b = superblock();
        b[40..48].copy_from_slice(&8192u64.to_le_bytes());
        assert!(reason(&b).contains("does not fit"));
        let mut b = superblock();
        b[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(reason(&b).contains("inode table start"));
    }

    #[test]
    fn metadata_blocks_are_capped() {
        let big = vec![7u8; METADATA_SIZE + 1];
        let z = zstd::bulk::compress(&big, 3).unwrap();
        assert!(decompress(Compression::Zstd, &z, METADATA_SIZE).is_err());
        assert_eq!(
            decompress(Compression::Zstd, &z, METADATA_SIZE + 1).unwrap(),
            big
        );

        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut &big[..], &mut x).unwrap();
        let e = xz_decompress(&x, METADATA_SIZE).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        assert_eq!(xz_decompress(&x, METADATA_SIZE + 1).unwrap(), big);

        let lz = lz4_flex::block::compress(&big);
        assert!(decompress(Compression::Lz4, &lz, METADATA_SIZE).is_err());

        use std::io::Write;
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&big).unwrap();
        let zl = zl.finish().unwrap();
        assert!(decompress(Compression::Zlib, &zl, METADATA_SIZE).is_err());
        assert_eq!(
            decompress(Compression::Zlib, &zl, METADATA_SIZE + 1).unwrap(),
            big
        );
    }

    #[test]
    fn xz_bomb_is_refused_before_decoding() {
        // A stream header, a block header naming LZMA2, then chunks that claim 2 MiB each.
        let mut x = b"\xfd7zXZ\0\0\x01\0\0\0\0".to_vec();
        x.extend_from_slice(&[2, 0, 0x21, 1, 0x16, 0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..4 {
            x.extend_from_slice(&[0xff, 0xff, 0xff, 0, 9, 0x5d]);
            x.extend_from_slice(&[0; 10]);
        }
        x.push(0);
        let e = xz_decompress(&x, METADATA_SIZE).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
