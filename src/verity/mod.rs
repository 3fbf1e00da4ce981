//! dm-verity hash trees, format version 1 exactly as `veritysetup format` writes them:
//! SHA-256, 4096-byte data and hash blocks, each digest `SHA-256(salt || block)`, the
//! levels stored top level first after a 4096-byte superblock area; and its forward error
//! correction ([`fec`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::chunk::{BlockCheck, Checked};
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, WINDOW};
use crate::progress::Progress;

pub mod fec;

pub const BLOCK: u64 = 4096;
pub const DIGEST: usize = 32;
/// log2 of the digests per hash block (128).
const PER_BLOCK_BITS: u32 = (BLOCK / DIGEST as u64).trailing_zeros();
pub const MAX_SALT: usize = 256;

/// Where each level sits in the hash area, in hash blocks from its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub data_blocks: u64,
    /// `(first block, block count)` per level, level 0 hashing the data.
    pub levels: Vec<(u64, u64)>,
    pub hash_blocks: u64,
}

impl Geometry {
    pub fn new(data_blocks: u64) -> Geometry {
        let mut count = 0u32;
        while count * PER_BLOCK_BITS < 64
            && (data_blocks.saturating_sub(1)) >> (PER_BLOCK_BITS * count) != 0
        {
            count += 1;
        }
        let mut levels = vec![(0, 0); count as usize];
        let mut position = 0;
        for i in (0..count as usize).rev() {
            let shift = PER_BLOCK_BITS * (i as u32 + 1);
            let blocks = data_blocks.div_ceil(1u64 << shift.min(63));
            levels[i] = (position, blocks);
            position += blocks;
        }
        Geometry {
            data_blocks,
            levels,
            hash_blocks: position,
        }
    }

    pub fn tree_size(&self) -> u64 {
        self.hash_blocks * BLOCK
    }

    /// The level hash block `n` of the area belongs to, with that level's place.
    pub fn level_of(&self, n: u64) -> Option<(usize, (u64, u64))> {
        self.levels
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, (first, count))| (first..first + count).contains(&n))
    }
}

/// The verity parameters recorded with an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    pub salt: Vec<u8>,
    pub uuid: [u8; 16],
}

impl VerityParams {
    /// The documented defaults, derived so that `make` stays reproducible: the salt is
    /// `SHA-256("blockcast verity salt" || image size (u64 LE) || first 4096 bytes)`, so
    /// it differs between images; the uuid is the first 16 bytes of
    /// `SHA-256("blockcast verity uuid" || salt)` marked as an RFC 4122 version 4 uuid.
    pub fn derive(
        image_size: u64,
        head: &[u8],
        salt: Option<Vec<u8>>,
        uuid: Option<[u8; 16]>,
    ) -> VerityParams {
        let salt = salt.unwrap_or_else(|| {
            let mut h = Sha256::new();
            h.update(b"blockcast verity salt");
            h.update(image_size.to_le_bytes());
            h.update(&head[..head.len().min(BLOCK as usize)]);
            h.finalize().to_vec()
        });
        let uuid = uuid.unwrap_or_else(|| {
            let mut h = Sha256::new();
            h.update(b"blockcast verity uuid");
            h.update(&salt);
            let d: [u8; 32] = h.finalize().into();
            let mut u = [0u8; 16];
            u.copy_from_slice(&d[..16]);
            u[6] = (u[6] & 0x0f) | 0x40;
            u[8] = (u[8] & 0x3f) | 0x80;
            u
        });
        VerityParams { salt, uuid }
    }
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(u)
}

/// The digest of one block: `SHA-256(salt || block)`.
pub fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Where the hash blocks of a tree go as they are made: `put(at, block)`, `at` being the
/// block's byte offset in the hash area (levels top first, as veritysetup lays them out).
pub trait TreeSink {
    fn put(&mut self, at: u64, block: &[u8]) -> Result<()>;
}

/// The whole hash area in memory: for small trees and tests.
impl TreeSink for Vec<u8> {
    fn put(&mut self, at: u64, block: &[u8]) -> Result<()> {
        let at = usize::try_from(at).map_err(|_| too_large())?;
        if self.len() < at + block.len() {
            self.resize(at + block.len(), 0);
        }
        self[at..at + block.len()].copy_from_slice(block);
        Ok(())
    }
}

/// A hash area written into a file at `base` (a hash device's, after its superblock; or
/// the hash device appended to an image).
pub struct FileSink<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub base: u64,
}

impl TreeSink for FileSink<'_> {
    fn put(&mut self, at: u64, block: &[u8]) -> Result<()> {
        self.file.write_all_at(block, self.base + at).at(self.path)
    }
}

/// Builds a hash tree from the digests of the data blocks, pushed in order, holding one
/// partly filled hash block per level: memory is levels × block size, whatever the image.
pub struct TreeBuilder<'s> {
    geometry: Geometry,
    salt: Vec<u8>,
    /// Per level: the hash block being filled, and how many of the level's blocks are done.
    levels: Vec<(Vec<u8>, u64)>,
    pushed: u64,
    root: Option<[u8; 32]>,
    sink: Option<&'s mut dyn TreeSink>,
}

impl<'s> TreeBuilder<'s> {
    pub fn new(data_blocks: u64, salt: &[u8], sink: Option<&'s mut dyn TreeSink>) -> Self {
        let geometry = Geometry::new(data_blocks);
        let levels = geometry
            .levels
            .iter()
            .map(|_| (Vec::with_capacity(BLOCK as usize), 0))
            .collect();
        TreeBuilder {
            geometry,
            salt: salt.to_vec(),
            levels,
            pushed: 0,
            root: None,
            sink,
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Adds the digest of the next data block.
    pub fn push(&mut self, leaf: [u8; 32]) -> Result<()> {
        if self.pushed >= self.geometry.data_blocks {
            return Err(Error::Internal(format!(
                "hash tree: more than {} data blocks pushed",
                self.geometry.data_blocks
            )));
        }
        self.pushed += 1;
        if self.levels.is_empty() {
            self.root = Some(leaf);
            return Ok(());
        }
        self.add(0, leaf)
    }

    fn add(&mut self, level: usize, digest: [u8; 32]) -> Result<()> {
        self.levels[level].0.extend_from_slice(&digest);
        if self.levels[level].0.len() == BLOCK as usize {
            self.flush(level)?;
        }
        Ok(())
    }

    /// Completes level `level`'s current block (zero-padded), hands it to the sink and its
    /// digest to the level above, or makes it the root.
    fn flush(&mut self, level: usize) -> Result<()> {
        let (first, _) = self.geometry.levels[level];
        let (block, done) = &mut self.levels[level];
        block.resize(BLOCK as usize, 0);
        let digest = salted(&self.salt, block);
        if let Some(sink) = self.sink.as_mut() {
            sink.put((first + *done) * BLOCK, block)?;
        }
        *done += 1;
        block.clear();
        if level + 1 < self.levels.len() {
            self.add(level + 1, digest)
        } else {
            self.root = Some(digest);
            Ok(())
        }
    }

    /// The root hash, once every data block was pushed.
    pub fn finish(mut self) -> Result<[u8; 32]> {
        if self.pushed != self.geometry.data_blocks {
            return Err(Error::Internal(format!(
                "hash tree: {} of {} data blocks pushed",
                self.pushed, self.geometry.data_blocks
            )));
        }
        if self.geometry.data_blocks == 0 {
            return Ok(salted(&self.salt, &[0u8; BLOCK as usize]));
        }
        for level in 0..self.levels.len() {
            if !self.levels[level].0.is_empty() {
                self.flush(level)?;
            }
        }
        self.root
            .ok_or_else(|| Error::Internal("hash tree: no root".into()))
    }
}

/// Hands `each(block, digest)` the digests of the data blocks from block `from` to the
/// end of the first `size` bytes of `image`, zero-padded to whole blocks, in order.
pub fn digest_blocks(
    image: &Image,
    from: u64,
    size: u64,
    salt: &[u8],
    progress: &dyn Progress,
    mut each: impl FnMut(u64, [u8; 32]) -> Result<()>,
) -> Result<()> {
    if image.size() < size {
        return Err(Error::Integrity(format!(
            "{} holds {} bytes, the image has {size}",
            image.path().display(),
            image.size()
        )));
    }
    let mut pos = from * BLOCK;
    while pos < size {
        let window = image.map(pos, WINDOW.min(size - pos))?;
        let bytes = window.bytes();
        let digests: Vec<[u8; 32]> = bytes
            .par_chunks(BLOCK as usize)
            .map(|b| {
                if b.len() == BLOCK as usize {
                    salted(salt, b)
                } else {
                    let mut padded = b.to_vec();
                    padded.resize(BLOCK as usize, 0);
                    salted(salt, &padded)
                }
            })
            .collect();
        for (i, d) in digests.into_iter().enumerate() {
            each(pos / BLOCK + i as u64, d)?;
        }
        progress.advance(bytes.len() as u64);
        pos += bytes.len() as u64;
    }
    Ok(())
}

/// The root hash of the first `size` bytes of `image` (zero-padded to whole blocks), its
/// hash area handed to `sink` when there is one.
pub fn hash_image(
    image: &Image,
    size: u64,
    salt: &[u8],
    sink: Option<&mut dyn TreeSink>,
    progress: &dyn Progress,
) -> Result<([u8; 32], Geometry)> {
    let mut tree = TreeBuilder::new(size.div_ceil(BLOCK), salt, sink);
    digest_blocks(image, 0, size, salt, progress, |_, d| tree.push(d))?;
    let geometry = tree.geometry().clone();
    Ok((tree.finish()?, geometry))
}

fn too_large() -> Error {
    Error::Unsupported("a hash tree larger than this machine's address space".into())
}

/// Random access to a hash area (levels top first, without superblock): a hash device, or
/// the tree's chunks in a store.
pub trait HashArea {
    /// `len` bytes at `at`; an error when they cannot be had whole.
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>>;
    /// Names the area in messages.
    fn describe(&self) -> String;
    /// The bytes around `at` that cost what reading its block costs (the stored piece
    /// holding it); a lazy check keeps every hash block of them it reads.
    fn span(&self, at: u64) -> std::ops::Range<u64> {
        at..at + BLOCK
    }
}

/// A hash area at `base` of a file (a hash device's tree starts after its superblock).
pub struct FileArea<'a> {
    pub image: &'a Image,
    pub base: u64,
}

impl HashArea for FileArea<'_> {
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        self.image.read_at(self.base + at, len)
    }

    fn describe(&self) -> String {
        self.image.path().display().to_string()
    }
}

/// How many hash blocks a [`LevelReader`] reads at once.
const SPAN_BLOCKS: u64 = 16;

/// Reads one level's hash blocks front to back, a span at a time.
struct LevelReader<'a> {
    area: &'a dyn HashArea,
    span: (u64, Vec<u8>),
}

impl<'a> LevelReader<'a> {
    fn new(area: &'a dyn HashArea) -> Self {
        LevelReader {
            area,
            span: (u64::MAX, Vec::new()),
        }
    }

    /// Hash block `n` of the area, `limit` being the area's block count.
    fn block(&mut self, n: u64, limit: u64) -> Result<&[u8]> {
        let first = n / SPAN_BLOCKS * SPAN_BLOCKS;
        if self.span.0 != first {
            let count = SPAN_BLOCKS.min(limit - first);
            self.span = (
                first,
                self.area.read(first * BLOCK, (count * BLOCK) as usize)?,
            );
        }
        let at = ((n - first) * BLOCK) as usize;
        self.span.1.get(at..at + BLOCK as usize).ok_or_else(|| {
            Error::Integrity(format!(
                "{}: hash block {n} could not be read whole",
                self.area.describe()
            ))
        })
    }
}

/// Checks, level by level from the top, that the hash area `area` hashes to `root`: each
/// block against its digest in the level above, the top block against the root. Reads the
/// area once, front to back, with two spans of blocks in memory. Returns the first bad
/// hash block's number (in the hash area), if any.
pub fn check_area(
    geometry: &Geometry,
    salt: &[u8],
    root: &[u8; 32],
    area: &dyn HashArea,
) -> Result<Option<u64>> {
    let Some(&(top, _)) = geometry.levels.last() else {
        return Ok(None);
    };
    let limit = geometry.hash_blocks;
    let mut parents = LevelReader::new(area);
    let mut blocks = LevelReader::new(area);
    if salted(salt, blocks.block(top, limit)?) != *root {
        return Ok(Some(top));
    }
    for level in (0..geometry.levels.len() - 1).rev() {
        let (first, count) = geometry.levels[level];
        let (parent_first, _) = geometry.levels[level + 1];
        for j in 0..count {
            let digest = salted(salt, blocks.block(first + j, limit)?);
            let parent = parents.block(parent_first + (j >> PER_BLOCK_BITS), limit)?;
            if entry(parent, j) != digest {
                return Ok(Some(first + j));
            }
        }
    }
    Ok(None)
}

/// Level 0 of a checked hash area read front to back: the stored digest of each data block.
pub struct Leaves<'a> {
    geometry: &'a Geometry,
    root: [u8; 32],
    reader: LevelReader<'a>,
}

impl<'a> Leaves<'a> {
    pub fn new(geometry: &'a Geometry, root: [u8; 32], area: &'a dyn HashArea) -> Self {
        Leaves {
            geometry,
            root,
            reader: LevelReader::new(area),
        }
    }

    /// The stored digest of data block `block`.
    pub fn get(&mut self, block: u64) -> Result<[u8; 32]> {
        let Some(&(first, _)) = self.geometry.levels.first() else {
            return Ok(self.root);
        };
        let hash_block = self
            .reader
            .block(first + (block >> PER_BLOCK_BITS), self.geometry.hash_blocks)?;
        Ok(entry(hash_block, block))
    }
}

/// The digest a hash block holds for its `j`th child (counted along the child's level).
fn entry(block: &[u8], j: u64) -> [u8; 32] {
    let at = (j as usize % (1 << PER_BLOCK_BITS)) * DIGEST;
    let mut d = [0u8; 32];
    d.copy_from_slice(&block[at..at + DIGEST]);
    d
}

/// A hash tree checked lazily against its root, for a lazy mount: a hash block is read
/// only when a data block under it is, checked against its parent (the top block against
/// the root) and kept. Memory follows what the mount reads, never the size the index
/// claims.
pub struct TreeCheck {
    geometry: Geometry,
    salt: Vec<u8>,
    root: [u8; 32],
    /// Checked hash blocks, by number in the hash area.
    loaded: RwLock<HashMap<u64, Arc<[u8]>>>,
}

impl TreeCheck {
    pub fn new(data_blocks: u64, salt: Vec<u8>, root: [u8; 32]) -> TreeCheck {
        TreeCheck {
            geometry: Geometry::new(data_blocks),
            salt,
            root,
            loaded: RwLock::new(HashMap::new()),
        }
    }

    /// Reads and checks the hash blocks that cover data bytes `[offset, offset + len)`
    /// from `area`, those not loaded yet. Past the image's end there is nothing to load.
    pub fn load(&self, area: &dyn HashArea, offset: u64, len: u64) -> Result<()> {
        if self.geometry.levels.is_empty() || len == 0 {
            return Ok(());
        }
        let first = offset / BLOCK;
        let last = (offset.saturating_add(len) - 1) / BLOCK;
        let last = last.min(self.geometry.data_blocks.saturating_sub(1));
        let mut j = first >> PER_BLOCK_BITS;
        while j <= last >> PER_BLOCK_BITS && first < self.geometry.data_blocks {
            self.hash_block(area, 0, j)?;
            j += 1;
        }
        Ok(())
    }

    /// Block `j` of level `level`, checked, loading it and its parents as needed.
    fn hash_block(&self, area: &dyn HashArea, level: usize, j: u64) -> Result<Arc<[u8]>> {
        let (first, count) = self.geometry.levels[level];
        let n = first + j;
        if let Some(b) = self.read_loaded().get(&n) {
            return Ok(b.clone());
        }
        if j >= count {
            return Err(Error::Internal(format!(
                "hash block {j} of level {level} asked for"
            )));
        }
        // Every hash block in the span is read at once; each is checked and kept, top
        // level first (levels lie top first, so a parent in the span is checked before its
        // children). The one asked for must pass.
        let span = area.span(n * BLOCK);
        let lo = (span.start / BLOCK).min(n);
        let hi = span
            .end
            .div_ceil(BLOCK)
            .clamp(n + 1, self.geometry.hash_blocks);
        let bytes = area.read(lo * BLOCK, ((hi - lo) * BLOCK) as usize)?;
        if bytes.len() as u64 != (hi - lo) * BLOCK {
            return Err(Error::Integrity(format!(
                "{}: hash blocks {lo}..{hi} read short",
                area.describe()
            )));
        }
        let mut wanted = None;
        for (m, block) in (lo..hi).zip(bytes.chunks_exact(BLOCK as usize)) {
            let Some((at_level, (from, _))) = self.geometry.level_of(m) else {
                continue;
            };
            if m != n {
                // A neighbour is kept when its parent is at hand (earlier in the span, or
                // loaded before); nothing is read for it.
                let known = self.read_loaded().contains_key(&m);
                if !known && self.known(at_level, m - from) == Some(salted(&self.salt, block)) {
                    self.keep(m, block);
                }
                continue;
            }
            if self.expected(area, at_level, m - from)? != salted(&self.salt, block) {
                return Err(Error::Integrity(format!(
                    "{}: hash block {n} (level {level}) does not hash to {}",
                    area.describe(),
                    if level + 1 == self.geometry.levels.len() {
                        "the index's root"
                    } else {
                        "its digest in the level above"
                    }
                )));
            }
            wanted = Some(self.keep(m, block));
        }
        wanted.ok_or_else(|| Error::Internal(format!("hash block {n} not read")))
    }

    /// Keeps checked hash block `n`.
    fn keep(&self, n: u64, block: &[u8]) -> Arc<[u8]> {
        let block: Arc<[u8]> = block.into();
        self.loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n, block.clone());
        block
    }

    /// The digest block `j` of `level` must have: the root's, or its entry in its parent,
    /// read if need be.
    fn expected(&self, area: &dyn HashArea, level: usize, j: u64) -> Result<[u8; 32]> {
        if level + 1 == self.geometry.levels.len() {
            return Ok(self.root);
        }
        let parent = self.hash_block(area, level + 1, j >> PER_BLOCK_BITS)?;
        Ok(entry(&parent, j))
    }

    /// [`TreeCheck::expected`], when the parent is loaded already.
    fn known(&self, level: usize, j: u64) -> Option<[u8; 32]> {
        let Some(&(first, _)) = self.geometry.levels.get(level + 1) else {
            return Some(self.root);
        };
        let loaded = self.read_loaded();
        Some(entry(loaded.get(&(first + (j >> PER_BLOCK_BITS)))?, j))
    }

    fn read_loaded(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<[u8]>>> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored digest of data block `block`, when its hash block is loaded.
    fn leaf(&self, loaded: &HashMap<u64, Arc<[u8]>>, block: u64) -> Option<[u8; 32]> {
        if block >= self.geometry.data_blocks {
            return None;
        }
        let Some(&(first, _)) = self.geometry.levels.first() else {
            return Some(self.root);
        };
        let hash_block = loaded.get(&(first + (block >> PER_BLOCK_BITS)))?;
        Some(entry(hash_block, block))
    }
}

impl BlockCheck for TreeCheck {
    /// Checks `data` against the tree as far as it is loaded.
    fn check(&self, offset: u64, data: &[u8]) -> Checked {
        let loaded = self.read_loaded();
        let first = offset / BLOCK;
        for (bytes, block) in data.chunks(BLOCK as usize).zip(first..) {
            match self.leaf(&loaded, block) {
                None => return Checked::NotLoaded,
                Some(leaf) if salted(&self.salt, bytes) != leaf => return Checked::Bad(block),
                Some(_) => {}
            }
        }
        Checked::Good
    }
}

/// The fields of veritysetup's 512-byte superblock (`struct verity_sb` of cryptsetup),
/// checked against `docs/FORMAT.md` by `tests/format_doc.rs`.
pub mod sb {
    use crate::index::format::Field;

    pub const SIZE: usize = 512;
    pub const SIGNATURE: [u8; 8] = *b"verity\0\0";
    pub const ALGORITHM: &[u8] = b"sha256";

    pub const SB_SIGNATURE: Field = field("signature", 0, 8);
    pub const SB_VERSION: Field = field("version", 8, 4);
    pub const SB_HASH_TYPE: Field = field("hash_type", 12, 4);
    pub const SB_UUID: Field = field("uuid", 16, 16);
    pub const SB_ALGORITHM: Field = field("algorithm", 32, 32);
    pub const SB_DATA_BLOCK_SIZE: Field = field("data_block_size", 64, 4);
    pub const SB_HASH_BLOCK_SIZE: Field = field("hash_block_size", 68, 4);
    pub const SB_DATA_BLOCKS: Field = field("data_blocks", 72, 8);
    pub const SB_SALT_SIZE: Field = field("salt_size", 80, 2);
    pub const SB_PAD1: Field = field("_pad1", 82, 6);
    pub const SB_SALT: Field = field("salt", 88, 256);
    pub const SB_PAD2: Field = field("_pad2", 344, 168);

    pub const FIELDS: [&Field; 12] = [
        &SB_SIGNATURE,
        &SB_VERSION,
        &SB_HASH_TYPE,
        &SB_UUID,
        &SB_ALGORITHM,
        &SB_DATA_BLOCK_SIZE,
        &SB_HASH_BLOCK_SIZE,
        &SB_DATA_BLOCKS,
        &SB_SALT_SIZE,
        &SB_PAD1,
        &SB_SALT,
        &SB_PAD2,
    ];

    const _: () = assert!(SB_PAD2.offset + SB_PAD2.size == SIZE);
    const _: () = assert!(SB_SALT.size == super::MAX_SALT);

    const fn field(name: &'static str, offset: usize, size: usize) -> Field {
        Field { name, offset, size }
    }
}

/// The 512-byte veritysetup superblock, padded to a full hash block.
pub fn superblock(geometry: &Geometry, params: &VerityParams) -> Vec<u8> {
    use crate::index::format::put;
    let mut buf = vec![0u8; BLOCK as usize];
    put(&mut buf, &sb::SB_SIGNATURE, &sb::SIGNATURE);
    put(&mut buf, &sb::SB_VERSION, &1u32.to_le_bytes());
    put(&mut buf, &sb::SB_HASH_TYPE, &1u32.to_le_bytes());
    put(&mut buf, &sb::SB_UUID, &params.uuid);
    let mut algorithm = [0u8; sb::SB_ALGORITHM.size];
    algorithm[..sb::ALGORITHM.len()].copy_from_slice(sb::ALGORITHM);
    put(&mut buf, &sb::SB_ALGORITHM, &algorithm);
    put(
        &mut buf,
        &sb::SB_DATA_BLOCK_SIZE,
        &(BLOCK as u32).to_le_bytes(),
    );
    put(
        &mut buf,
        &sb::SB_HASH_BLOCK_SIZE,
        &(BLOCK as u32).to_le_bytes(),
    );
    put(
        &mut buf,
        &sb::SB_DATA_BLOCKS,
        &geometry.data_blocks.to_le_bytes(),
    );
    let salt = &params.salt[..params.salt.len().min(MAX_SALT)];
    put(
        &mut buf,
        &sb::SB_SALT_SIZE,
        &(salt.len() as u16).to_le_bytes(),
    );
    let mut padded = [0u8; MAX_SALT];
    padded[..salt.len()].copy_from_slice(salt);
    put(&mut buf, &sb::SB_SALT, &padded);
    buf
}

/// Parses a hash device's superblock: (uuid, data blocks, salt), after checking that it
/// describes a version 1, SHA-256, 4096-byte-block tree.
pub fn parse_superblock(buf: &[u8]) -> Option<([u8; 16], u64, Vec<u8>)> {
    use crate::index::format::{get_u16, get_u32, get_u64, slice};
    let buf = buf.get(..sb::SIZE)?;
    if slice(buf, &sb::SB_SIGNATURE) != sb::SIGNATURE
        || get_u32(buf, &sb::SB_VERSION) != 1
        || get_u32(buf, &sb::SB_HASH_TYPE) != 1
    {
        return None;
    }
    let (name, padding) = slice(buf, &sb::SB_ALGORITHM).split_at(sb::ALGORITHM.len());
    if name != sb::ALGORITHM || padding.iter().any(|&b| b != 0) {
        return None;
    }
    if u64::from(get_u32(buf, &sb::SB_DATA_BLOCK_SIZE)) != BLOCK
        || u64::from(get_u32(buf, &sb::SB_HASH_BLOCK_SIZE)) != BLOCK
    {
        return None;
    }
    let salt_size = usize::from(get_u16(buf, &sb::SB_SALT_SIZE));
    if salt_size > MAX_SALT {
        return None;
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(slice(buf, &sb::SB_UUID));
    Some((
        uuid,
        get_u64(buf, &sb::SB_DATA_BLOCKS),
        slice(buf, &sb::SB_SALT)[..salt_size].to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A hash area read in spans of 16 blocks, counting its reads.
    struct Spans {
        area: Vec<u8>,
        reads: AtomicUsize,
    }

    impl HashArea for Spans {
        fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.area[at as usize..at as usize + len].to_vec())
        }

        fn describe(&self) -> String {
            "a test tree".into()
        }

        fn span(&self, at: u64) -> std::ops::Range<u64> {
            let group = 16 * BLOCK;
            let start = at / group * group;
            start..(start + group).min(self.area.len() as u64)
        }
    }

    /// The tree of `blocks` data blocks whose block `i` is filled with `i`'s low byte.
    fn tree(blocks: u64) -> (Vec<u8>, [u8; 32]) {
        let mut area = Vec::new();
        let mut tree = TreeBuilder::new(blocks, b"s", Some(&mut area));
        for i in 0..blocks {
            tree.push(salted(b"s", &[i as u8; BLOCK as usize])).unwrap();
        }
        let root = tree.finish().unwrap();
        (area, root)
    }

    #[test]
    fn a_lazy_check_keeps_every_hash_block_of_the_span_it_reads() {
        // 40 level-0 hash blocks under one top block: the area's blocks 0..41.
        let blocks = 40 << PER_BLOCK_BITS;
        let (area, root) = tree(blocks);
        assert_eq!(area.len() as u64, 41 * BLOCK);
        let area = Spans {
            area,
            reads: AtomicUsize::new(0),
        };
        let check = TreeCheck::new(blocks, b"s".to_vec(), root);
        // The top block and level-0 blocks 0..15 come in one read.
        check.load(&area, 0, BLOCK).unwrap();
        assert_eq!(area.reads.load(Ordering::Relaxed), 1);
        let data = |i: u64| vec![i as u8; BLOCK as usize];
        let last = (15 << PER_BLOCK_BITS) - 1;
        check.load(&area, last * BLOCK, BLOCK).unwrap();
        assert_eq!(check.check(last * BLOCK, &data(last)), Checked::Good);
        assert_eq!(area.reads.load(Ordering::Relaxed), 1);
        // Level-0 block 15 is the area's block 16: the next span.
        let next = 15 << PER_BLOCK_BITS;
        assert_eq!(check.check(next * BLOCK, &data(next)), Checked::NotLoaded);
        check.load(&area, next * BLOCK, BLOCK).unwrap();
        assert_eq!(area.reads.load(Ordering::Relaxed), 2);
        assert_eq!(check.check(next * BLOCK, &data(next)), Checked::Good);
    }

    #[test]
    fn a_bad_hash_block_fails_only_the_reads_under_it() {
        let blocks = 40 << PER_BLOCK_BITS;
        let (mut area, root) = tree(blocks);
        // Level-0 block 5 (the area's block 6) is damaged.
        area[6 * BLOCK as usize + 100] ^= 1;
        let area = Spans {
            area,
            reads: AtomicUsize::new(0),
        };
        let check = TreeCheck::new(blocks, b"s".to_vec(), root);
        check.load(&area, 0, BLOCK).unwrap();
        let under = 5 << PER_BLOCK_BITS;
        let err = check.load(&area, under * BLOCK, BLOCK).unwrap_err();
        assert!(
            matches!(&err, Error::Integrity(m) if m.contains("hash block 6 (level 0)")),
            "{err}"
        );
        let beside = 6 << PER_BLOCK_BITS;
        check.load(&area, beside * BLOCK, BLOCK).unwrap();
        let data = vec![beside as u8; BLOCK as usize];
        assert_eq!(check.check(beside * BLOCK, &data), Checked::Good);
    }
}
