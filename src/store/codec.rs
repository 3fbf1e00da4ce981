//! Chunk files are single zstd frames, as casync stores them. Incompressible data still
//! gets a frame: zstd emits raw blocks when compression does not pay.

use crate::chunk::{ChunkId, VerifiedChunk};
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
            .map_err(|e| Error::Internal(format!("zstd compression failed: {e}")))
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
    one_zstd_frame(stored, "chunk file").map_err(bad)?;
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

/// Compresses `data` as one zstd frame that refers to `base` as raw content before it: a
/// delta, small when `data` resembles `base` (see `docs/FORMAT.md`, Deltas).
pub fn compress_against(data: &[u8], base: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let fail = |what: &str, code: usize| {
        Error::Internal(format!(
            "zstd delta {what}: {}",
            zstd::zstd_safe::get_error_name(code)
        ))
    };
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(|c| fail("level", c))?;
    cctx.set_parameter(CParameter::WindowLog(window_log(base.len() + data.len())))
        .map_err(|c| fail("window", c))?;
    cctx.ref_prefix(base).map_err(|c| fail("base", c))?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data)
        .map_err(|c| fail("compression", c))?;
    Ok(out)
}

/// Rebuilds a chunk from a delta made by [`compress_against`] with the same `base`,
/// refusing output larger than `size` and frames followed by trailing bytes, and checks
/// it against `id`.
pub fn decompress_against(
    stored: &[u8],
    base: &[u8],
    size: u32,
    id: ChunkId,
    offset: u64,
) -> Result<VerifiedChunk> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let bad = |reason: String| Error::BadChunk { id, offset, reason };
    one_zstd_frame(stored, "delta file").map_err(bad)?;
    let failed = |c: usize| {
        bad(format!(
            "zstd delta decompression failed: {}",
            zstd::zstd_safe::get_error_name(c)
        ))
    };
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(window_log(
        base.len() + size as usize,
    )))
    .map_err(failed)?;
    dctx.ref_prefix(base).map_err(failed)?;
    let mut data = Vec::with_capacity(size as usize);
    dctx.decompress(&mut data, stored).map_err(failed)?;
    if data.len() != size as usize {
        return Err(bad(format!(
            "delta decompressed to {} bytes, the index says {size}",
            data.len()
        )));
    }
    VerifiedChunk::verify(id, offset, data)
}

/// Why `stored`, a `what`, is not exactly one zstd frame with nothing after it.
fn one_zstd_frame(stored: &[u8], what: &str) -> std::result::Result<(), String> {
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(stored)
        .map_err(|_| format!("{what} is not a zstd frame"))?;
    if frame_len != stored.len() {
        return Err(format!("{what} has bytes after its zstd frame"));
    }
    Ok(())
}

/// The zstd window that reaches from the end of a delta's output back to the start of
/// its base: `len` bytes in all.
fn window_log(len: usize) -> u32 {
    (usize::BITS - len.max(1 << 10).next_power_of_two().leading_zeros() - 1).max(17)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_rebuilds_its_chunk_from_the_same_base_only() {
        // Incompressible alone, so the delta must refer to the base.
        let base: Vec<u8> = crate::testutil::noise(0x9E37_79B9_7F4A_7C15, 200_000);
        let mut data = base.clone();
        data[1000] ^= 1;
        data.extend_from_slice(b"a few new bytes");
        let delta = compress_against(&data, &base, 3).unwrap();
        let alone = Compressor::new(3).unwrap().compress(&data).unwrap();
        assert!(
            delta.len() * 4 < alone.len(),
            "{} vs {}",
            delta.len(),
            alone.len()
        );
        let id = ChunkId::of(&data);
        let size = data.len() as u32;
        let got = decompress_against(&delta, &base, size, id, 0).unwrap();
        assert_eq!(got.data(), &data[..]);
        let mut other = base.clone();
        other[5000] ^= 1;
        assert!(decompress_against(&delta, &other, size, id, 0).is_err());
        assert!(decompress_against(&delta, &base, size - 1, id, 0).is_err());
        let mut trailing = delta.clone();
        trailing.push(0);
        assert!(decompress_against(&trailing, &base, size, id, 0).is_err());
        assert!(decompress_against(b"garbage", &base, size, id, 0).is_err());
        // A base that looks like a zstd dictionary is still raw content.
        let mut dict_like = vec![0x37, 0xA4, 0x30, 0xEC];
        dict_like.extend_from_slice(&base[..50_000]);
        let delta = compress_against(&data[..60_000], &dict_like, 3).unwrap();
        let id = ChunkId::of(&data[..60_000]);
        assert!(decompress_against(&delta, &dict_like, 60_000, id, 0).is_ok());
    }

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
