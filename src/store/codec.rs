//! Chunk files are single zstd frames, as casync stores them. Incompressible data still
//! gets a frame: zstd emits raw blocks when compression does not pay.

use crate::chunk::ChunkId;
use crate::error::{Error, Result};

pub const DEFAULT_LEVEL: i32 = 3;

pub struct Compressor(zstd::bulk::Compressor<'static>);

impl Compressor {
    pub fn new(level: i32) -> Result<Compressor> {
        let c = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::Invalid(format!("zstd level {level}: {e}")))?;
        Ok(Compressor(c))
    }

    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.0
            .compress(data)
            .map_err(|e| Error::Invalid(format!("zstd compression failed: {e}")))
    }
}

thread_local! {
    /// One decompression context per thread, rather than one per chunk.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Decompresses a chunk file, refusing output larger than the chunk's `size` and frames
/// followed by trailing bytes.
pub fn decompress(stored: &[u8], size: u32, id: ChunkId, offset: u64) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::BadChunk { id, offset, reason };
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(stored)
        .map_err(|_| bad("chunk file is not a zstd frame".into()))?;
    if frame_len != stored.len() {
        return Err(bad("chunk file has bytes after its zstd frame".into()));
    }
    let data = DECOMPRESSOR
        .with(|d| match &mut *d.borrow_mut() {
            Some(d) => d.decompress(stored, size as usize),
            None => zstd::bulk::decompress(stored, size as usize),
        })
        .map_err(|e| bad(format!("zstd decompression failed: {e}")))?;
    if data.len() != size as usize {
        return Err(bad(format!(
            "decompressed to {} bytes, the index says {size}",
            data.len()
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_caps() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let z = Compressor::new(3).unwrap().compress(&data).unwrap();
        let id = ChunkId::of(&data);
        assert_eq!(decompress(&z, 100_000, id, 0).unwrap(), data);
        assert!(decompress(&z, 99_999, id, 0).is_err());
        assert!(decompress(&z, 100_001, id, 0).is_err());
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(decompress(&trailing, 100_000, id, 0).is_err());
        assert!(decompress(b"garbage", 10, id, 0).is_err());
    }
}
