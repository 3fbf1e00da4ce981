//! Chunk identities and the only way to obtain bytes that may be written or served:
//! a [`VerifiedChunk`], which exists only after its bytes were hashed to its id.

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

/// Bytes whose SHA-256 has been checked against the id they claim to be.
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    id: ChunkId,
    data: Vec<u8>,
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
        Ok(VerifiedChunk { id, data })
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }
}
