//! Chunk identities and the only way to obtain bytes that may be written or served:
//! a [`VerifiedChunk`], which exists only after its bytes were hashed to its id or, for a
//! lazy mount, checked block by block against the dm-verity tree at their place.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 of a chunk's uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    pub fn from_hex(hex: &str) -> Option<ChunkId> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            id[i] = u8::try_from(hi << 4 | lo).ok()?;
        }
        Some(ChunkId(id))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// True when every byte is zero; such chunks are never stored or fetched.
pub fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed blocks vectorises well and still stops at the first non-zero block.
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// How bytes at a place of the image fare against a block-by-block check (the dm-verity
/// tree, for a lazy mount).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Every block matches.
    Good,
    /// This data block does not.
    Bad(u64),
    /// The check cannot vouch for these bytes (its data is not at hand): check them
    /// another way.
    NotLoaded,
}

/// Checks whole blocks of the image at their place: what [`VerifiedChunk::verify_blocks`]
/// asks of the dm-verity tree.
pub trait BlockCheck {
    /// Checks `data`, the image's whole 4096-byte blocks from `offset`.
    fn check(&self, offset: u64, data: &[u8]) -> Checked;
}

/// Whether `len` bytes at `offset` of the image are whole 4096-byte blocks.
pub fn whole_blocks(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(4096) && (len as u64).is_multiple_of(4096)
}

/// Bytes checked against the signed index: hashed to the id they claim to be or, for a
/// lazy mount, block by block against the dm-verity tree (see
/// [`VerifiedChunk::verify_blocks`]). Only the former vouch for the id: a store files
/// bytes under an id only when [`VerifiedChunk::id_checked`].
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    id: ChunkId,
    data: Vec<u8>,
    /// Where in the image the tree vouches for these bytes: the offset they were checked
    /// at, when they were checked against the tree.
    checked_at: Option<u64>,
}

impl VerifiedChunk {
    /// Checks `data` against `id`; `offset` names the chunk's place in the image for the error.
    pub fn verify(id: ChunkId, offset: u64, data: Vec<u8>) -> Result<VerifiedChunk> {
        let actual = ChunkId::of(&data);
        if actual != id {
            return Err(Error::BadChunk {
                id,
                offset,
                reason: format!("content hashes to {actual}"),
            });
        }
        Ok(VerifiedChunk {
            id,
            data,
            checked_at: None,
        })
    }

    /// Checks `data`, the image's bytes at `offset`, against the dm-verity tree when they
    /// are whole blocks and the tree is loaded for them: every block must match, which
    /// vouches for each byte at that place, with one hash of each byte instead of two for
    /// a mount. Other bytes are checked against `id`.
    pub fn verify_blocks(
        id: ChunkId,
        offset: u64,
        data: Vec<u8>,
        check: &dyn BlockCheck,
    ) -> Result<VerifiedChunk> {
        if !whole_blocks(offset, data.len()) {
            return VerifiedChunk::verify(id, offset, data);
        }
        match check.check(offset, &data) {
            Checked::NotLoaded => VerifiedChunk::verify(id, offset, data),
            Checked::Bad(block) => Err(Error::BadChunk {
                id,
                offset,
                reason: format!("data block {block} does not match the dm-verity tree"),
            }),
            Checked::Good => Ok(VerifiedChunk {
                id,
                data,
                checked_at: Some(offset),
            }),
        }
    }

    /// Whether these bytes, placed at `offset` of the image, are blocks the tree already
    /// vouched for.
    pub fn blocks_checked_at(&self, offset: u64) -> bool {
        self.checked_at == Some(offset)
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// Whether the bytes were hashed to [`VerifiedChunk::id`] (not only checked against
    /// the tree at their place).
    pub fn id_checked(&self) -> bool {
        self.checked_at.is_none()
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::{self, HashArea, TreeCheck, BLOCK};

    struct Area(Vec<u8>);

    impl HashArea for Area {
        fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
            Ok(self.0[at as usize..at as usize + len].to_vec())
        }

        fn describe(&self) -> String {
            "a test tree".into()
        }
    }

    #[test]
    fn whole_blocks_are_checked_against_the_tree_and_anything_else_against_the_id() {
        let salt = b"salt".to_vec();
        let image: Vec<u8> = (0..8 * BLOCK as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut area = Vec::new();
        let mut tree = verity::TreeBuilder::new(8, &salt, Some(&mut area));
        for b in image.chunks(BLOCK as usize) {
            tree.push(verity::salted(&salt, b)).unwrap();
        }
        let root = tree.finish().unwrap();
        let check = TreeCheck::new(8, salt, root);
        // Until its tree is loaded, whole blocks are checked against the id.
        let at = 2 * BLOCK;
        let bytes = image[at as usize..(at + 3 * BLOCK) as usize].to_vec();
        let unloaded = VerifiedChunk::verify_blocks(ChunkId::of(&bytes), at, bytes, &check);
        assert!(unloaded.unwrap().id_checked());
        check.load(&Area(area), 0, 8 * BLOCK).unwrap();
        let bytes = image[at as usize..(at + 3 * BLOCK) as usize].to_vec();
        let id = ChunkId::of(&bytes);

        let good = VerifiedChunk::verify_blocks(id, at, bytes.clone(), &check).unwrap();
        assert!(good.blocks_checked_at(at));
        assert!(!good.id_checked());
        assert!(!good.blocks_checked_at(at + BLOCK));

        // Right bytes at the wrong place, and a changed byte, name the first bad block.
        let moved = VerifiedChunk::verify_blocks(id, at + BLOCK, bytes.clone(), &check);
        assert!(moved.unwrap_err().to_string().contains("data block 3 "));
        let mut bad = bytes.clone();
        bad[BLOCK as usize + 9] ^= 1;
        let err = VerifiedChunk::verify_blocks(id, at, bad, &check).unwrap_err();
        assert!(err.to_string().contains("data block 3 "), "{err}");

        // Not whole blocks: the id decides, and the tree vouches for nothing.
        let part = bytes[..5000].to_vec();
        let part_id = ChunkId::of(&part);
        let chunk = VerifiedChunk::verify_blocks(part_id, at, part.clone(), &check).unwrap();
        assert!(!chunk.blocks_checked_at(at));
        assert!(VerifiedChunk::verify_blocks(id, at, part, &check).is_err());
        let shifted = bytes[100..100 + 2 * BLOCK as usize].to_vec();
        let shifted_id = ChunkId::of(&shifted);
        let chunk = VerifiedChunk::verify_blocks(shifted_id, at + 100, shifted, &check).unwrap();
        assert!(!chunk.blocks_checked_at(at + 100));
    }
}
