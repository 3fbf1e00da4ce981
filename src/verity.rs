//! dm-verity hash trees, format version 1 exactly as `veritysetup format` writes them:
//! SHA-256, 4096-byte data and hash blocks, each digest `SHA-256(salt || block)`, the
//! levels stored top level first after a 4096-byte superblock area.

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::{Image, WINDOW};
use crate::progress::Progress;

pub const BLOCK: u64 = 4096;
pub const DIGEST: usize = 32;
/// log2 of the digests per hash block (128).
const PER_BLOCK_BITS: u32 = (BLOCK / DIGEST as u64).trailing_zeros();
pub const MAX_SALT: usize = 256;
const SUPERBLOCK_SIZE: usize = 512;

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

/// A complete hash tree: the hash area (without superblock) and the root hash.
#[derive(Clone, Debug)]
pub struct HashTree {
    pub geometry: Geometry,
    pub tree: Vec<u8>,
    pub root: [u8; 32],
}

impl HashTree {
    /// The stored digest of data block `block`, from level 0.
    pub fn leaf(&self, block: u64) -> Option<&[u8]> {
        if block >= self.geometry.data_blocks {
            return None;
        }
        let Some(&(first, _)) = self.geometry.levels.first() else {
            return Some(&self.root);
        };
        let at = usize::try_from(first * BLOCK + block * DIGEST as u64).ok()?;
        self.tree.get(at..at + DIGEST)
    }
}

/// A hash tree whose root was checked, with its salt: what a lazy mount checks the
/// image's blocks against.
pub struct BlockCheck {
    tree: HashTree,
    salt: Vec<u8>,
}

impl BlockCheck {
    pub fn new(tree: HashTree, salt: Vec<u8>) -> BlockCheck {
        BlockCheck { tree, salt }
    }

    /// Whether `len` bytes at `offset` of the image are whole data blocks.
    pub fn whole_blocks(offset: u64, len: usize) -> bool {
        offset.is_multiple_of(BLOCK) && (len as u64).is_multiple_of(BLOCK)
    }

    /// Whether `data` is data block `block` as the tree has it.
    pub fn block_ok(&self, block: u64, data: &[u8]) -> bool {
        self.tree
            .leaf(block)
            .is_some_and(|leaf| salted(&self.salt, data) == leaf)
    }

    /// The first block of `data`, the image's whole blocks from `offset`, that the tree
    /// does not have; `None` when every one matches.
    pub fn first_bad(&self, offset: u64, data: &[u8]) -> Option<u64> {
        let first = offset / BLOCK;
        data.chunks(BLOCK as usize)
            .zip(first..)
            .find(|(bytes, block)| !self.block_ok(*block, bytes))
            .map(|(_, block)| block)
    }
}

/// Digests of the data blocks of the first `size` bytes of an image, zero-padded to whole
/// blocks.
pub fn leaf_digests(
    image: &Image,
    size: u64,
    salt: &[u8],
    progress: &dyn Progress,
) -> Result<Vec<[u8; 32]>> {
    if image.size() < size {
        return Err(Error::Invalid(format!(
            "{} holds {} bytes, the image has {size}",
            image.path().display(),
            image.size()
        )));
    }
    let blocks = size.div_ceil(BLOCK);
    let mut out = Vec::with_capacity(usize::try_from(blocks).map_err(|_| too_large())?);
    let mut pos = 0;
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
        out.extend(digests);
        progress.advance(bytes.len() as u64);
        pos += bytes.len() as u64;
    }
    Ok(out)
}

fn too_large() -> Error {
    Error::Invalid("image too large for a hash tree in memory".into())
}

/// Builds the tree over data blocks whose digests are `leaves`.
pub fn build(leaves: &[[u8; 32]], salt: &[u8]) -> Result<HashTree> {
    let geometry = Geometry::new(leaves.len() as u64);
    if geometry.levels.is_empty() {
        // One data block: the root is its digest, and there is no hash area.
        let root = leaves
            .first()
            .copied()
            .unwrap_or_else(|| salted(salt, &[0u8; BLOCK as usize]));
        return Ok(HashTree {
            geometry,
            tree: Vec::new(),
            root,
        });
    }
    let size = usize::try_from(geometry.tree_size()).map_err(|_| too_large())?;
    let mut tree = vec![0u8; size];
    let mut below: Vec<[u8; 32]> = leaves.to_vec();
    for &(first, count) in &geometry.levels {
        let start = (first * BLOCK) as usize;
        let area = &mut tree[start..start + (count * BLOCK) as usize];
        for (slot, d) in area.chunks_exact_mut(DIGEST).zip(&below) {
            slot.copy_from_slice(d);
        }
        below = area
            .par_chunks(BLOCK as usize)
            .map(|b| salted(salt, b))
            .collect();
    }
    let root = below.first().copied().ok_or_else(too_large)?;
    Ok(HashTree {
        geometry,
        tree,
        root,
    })
}

/// The 512-byte veritysetup superblock, padded to a full hash block.
pub fn superblock(geometry: &Geometry, params: &VerityParams) -> Vec<u8> {
    let mut sb = vec![0u8; BLOCK as usize];
    sb[..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes());
    sb[12..16].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(&params.uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&geometry.data_blocks.to_le_bytes());
    let salt = &params.salt[..params.salt.len().min(MAX_SALT)];
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

/// The data blocks whose digests differ from level 0 of `tree`, at most `limit` of them.
pub fn bad_blocks(leaves: &[[u8; 32]], tree: &HashTree, limit: usize) -> Vec<u64> {
    let expected = level0(tree);
    leaves
        .iter()
        .enumerate()
        .filter(|(i, d)| expected.get(*i) != Some(*d))
        .map(|(i, _)| i as u64)
        .take(limit)
        .collect()
}

/// A tree read from a hash device or a store; `None` unless its levels hash up to `root`.
pub fn tree_from_bytes(
    data_blocks: u64,
    tree: Vec<u8>,
    salt: &[u8],
    root: [u8; 32],
) -> Option<HashTree> {
    let geometry = Geometry::new(data_blocks);
    if tree.len() as u64 != geometry.tree_size() {
        return None;
    }
    let candidate = HashTree {
        geometry,
        tree,
        root,
    };
    check_tree(&candidate, salt).then_some(candidate)
}

/// Parses a hash device's superblock: (uuid, data blocks, salt), after checking that it
/// describes a version 1, SHA-256, 4096-byte-block tree.
pub fn parse_superblock(sb: &[u8]) -> Option<([u8; 16], u64, Vec<u8>)> {
    let sb = sb.get(..SUPERBLOCK_SIZE)?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if &sb[..8] != b"verity\0\0" || u32_at(8) != 1 || u32_at(12) != 1 {
        return None;
    }
    if &sb[32..38] != b"sha256" || sb[38..64].iter().any(|&b| b != 0) {
        return None;
    }
    if u64::from(u32_at(64)) != BLOCK || u64::from(u32_at(68)) != BLOCK {
        return None;
    }
    let mut blocks = [0u8; 8];
    blocks.copy_from_slice(&sb[72..80]);
    let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if salt_size > MAX_SALT {
        return None;
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[16..32]);
    Some((
        uuid,
        u64::from_le_bytes(blocks),
        sb[88..88 + salt_size].to_vec(),
    ))
}

/// The hash device veritysetup would write: the superblock block, then the hash area.
pub fn hash_device(tree: &HashTree, params: &VerityParams) -> Vec<u8> {
    let mut out = superblock(&tree.geometry, params);
    out.extend_from_slice(&tree.tree);
    out
}

/// The digests of level 0 (of the data blocks), as stored in the tree.
fn level0(tree: &HashTree) -> Vec<[u8; 32]> {
    let Some(&(first, _)) = tree.geometry.levels.first() else {
        return vec![tree.root];
    };
    let start = (first * BLOCK) as usize;
    tree.tree[start..]
        .chunks_exact(DIGEST)
        .take(tree.geometry.data_blocks as usize)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            d
        })
        .collect()
}

/// Recomputes the root from the tree's levels; a tree whose root differs was tampered with.
pub fn check_tree(tree: &HashTree, salt: &[u8]) -> bool {
    match build(&level0(tree), salt) {
        Ok(rebuilt) => rebuilt.root == tree.root && rebuilt.tree == tree.tree,
        Err(_) => false,
    }
}
