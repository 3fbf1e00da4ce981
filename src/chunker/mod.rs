//! Content-defined chunk boundaries (FastCDC) that fall on 4 KiB boundaries of the image.
//!
//! FastCDC proposes a cut from the content; the cut is then moved up to the next 4 KiB
//! boundary, so each chunk still depends only on the bytes from its own start, and two
//! images that share content re-synchronise at the first shared boundary. The image is
//! chunked window by window and, inside a window, segment by segment in parallel; the
//! segments are stitched at the first cut they share with the serial chain, so the
//! result is identical to a serial pass.

pub mod regions;

use fastcdc::v2020::{self, Normalization};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::{Image, WINDOW};
use crate::layout::{self, Cutting, FileMap, FsKind, LayoutSummary};
use crate::progress::Progress;

/// Every cut except the image's end falls on a multiple of this.
pub const ALIGN: u64 = 4096;

/// Smallest and largest average chunk sizes accepted.
pub const AVG_MIN: u32 = 16 << 10;
pub const AVG_MAX: u32 = 1 << 20;

/// Independent stretches of a window chunked in parallel before stitching.
const SEGMENT: u64 = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkParams {
    /// min = avg/4, max = avg×4; avg must be a power of two between 16 KiB and 1 MiB.
    pub fn from_avg(avg: u32) -> Result<ChunkParams> {
        if !avg.is_power_of_two() || !(AVG_MIN..=AVG_MAX).contains(&avg) {
            return Err(Error::Invalid(format!(
                "average chunk size {avg} must be a power of two from {AVG_MIN} to {AVG_MAX}"
            )));
        }
        Ok(ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
        })
    }

    /// Checks parameters read from an index before they drive the chunker.
    pub fn validate(self) -> Result<ChunkParams> {
        let expected = ChunkParams::from_avg(self.avg)?;
        if expected != self {
            return Err(Error::Invalid(format!(
                "chunk sizes min {} avg {} max {} are not min=avg/4, max=avg*4",
                self.min, self.avg, self.max
            )));
        }
        Ok(self)
    }
}

pub struct Chunker {
    params: ChunkParams,
    masks: (u64, u64),
}

impl Chunker {
    pub fn new(params: ChunkParams) -> Chunker {
        let masks = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Chunker { params, masks }
    }

    /// End of the chunk that starts at `start` in `data`, where `data` begins on an aligned
    /// image offset. Ends at `data.len()` when the data runs out.
    pub fn next_cut(&self, data: &[u8], start: usize) -> usize {
        let remaining = data.len() - start;
        if remaining <= self.params.min as usize {
            return data.len();
        }
        let (mask_s, mask_l) = self.masks;
        let (_, len) = v2020::cut(
            &data[start..],
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        // max is a multiple of ALIGN, so rounding up never exceeds it.
        let aligned = len.next_multiple_of(ALIGN as usize);
        (start + aligned).min(data.len())
    }

    /// Cuts the chain that starts at `from` until a chunk ends at or past `until`.
    fn cuts_from(&self, data: &[u8], from: usize, until: usize) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut pos = from;
        while pos < until && pos < data.len() {
            pos = self.next_cut(data, pos);
            cuts.push(pos);
        }
        cuts
    }

    /// Serial reference: all cuts of chunks that start before `until`.
    pub fn cuts_serial(&self, data: &[u8], until: usize) -> Vec<usize> {
        self.cuts_from(data, 0, until)
    }

    /// Same result as [`Chunker::cuts_serial`], computed segment by segment in parallel.
    pub fn cuts_parallel(&self, data: &[u8], until: usize) -> Vec<usize> {
        let until = until.min(data.len());
        let seg = SEGMENT as usize;
        let starts: Vec<usize> = (0..until).step_by(seg).collect();
        let lists: Vec<Vec<usize>> = starts
            .par_iter()
            .map(|&s| self.cuts_from(data, s, (s + seg).min(until)))
            .collect();
        let mut cuts: Vec<usize> = Vec::new();
        let mut pos = 0;
        for (&seg_start, list) in starts.iter().zip(&lists) {
            let seg_end = (seg_start + seg).min(until);
            if pos >= seg_end {
                continue;
            }
            // `pos` is a cut of the serial chain; follow it until it lands on this segment's list.
            let mut synced = if pos == seg_start { Some(0) } else { None };
            while synced.is_none() && pos < seg_end {
                if let Ok(i) = list.binary_search(&pos) {
                    synced = Some(i + 1);
                    break;
                }
                pos = self.next_cut(data, pos);
                cuts.push(pos);
            }
            if let Some(i) = synced {
                cuts.extend_from_slice(&list[i..]);
                pos = *cuts.last().unwrap_or(&pos);
            }
        }
        cuts
    }

    /// End offsets of every chunk of the image, in order; the last is the image size.
    pub fn cut_image(&self, image: &Image, progress: &dyn Progress) -> Result<Vec<u64>> {
        let size = image.size();
        let mut ends = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            // Map past the window by one maximal chunk so every chunk starting inside it is whole.
            let window = image.map(pos, WINDOW + u64::from(self.params.max))?;
            let data = window.bytes();
            let until = usize::try_from(WINDOW)
                .unwrap_or(usize::MAX)
                .min(data.len());
            for cut in self.cuts_parallel(data, until) {
                ends.push(pos + cut as u64);
            }
            let next = *ends.last().unwrap_or(&size);
            progress.advance(next - pos);
            pos = next;
        }
        Ok(ends)
    }
}

/// Where an image was cut, and how.
pub struct Cuts {
    /// End offsets of the chunks, in order; the last is the image size.
    pub ends: Vec<u64>,
    /// Per chunk, whether it holds filesystem metadata alone; empty when the cuts do not
    /// follow the filesystem.
    pub metadata: Vec<bool>,
    pub layout: LayoutSummary,
    /// The granularity every cut but the last respects.
    pub align: u32,
    /// Why the filesystem-aware chunker was not used, when it was asked for.
    pub fallback: Option<String>,
    /// The filesystem's regular files, when the cuts follow it.
    pub files: Vec<FileMap>,
}

/// Cuts an image as `cutting` says; an image whose filesystem cannot be read is cut with
/// the 4 KiB-aligned content-defined chunker.
pub fn cut_image(
    image: &Image,
    params: ChunkParams,
    cutting: Cutting,
    progress: &dyn Progress,
) -> Result<Cuts> {
    let mut fallback = None;
    if let Cutting::Filesystem { metadata_apart } = cutting {
        // Read with pread: a file that shrinks under the analysis is an error, not a SIGBUS.
        let analysis = layout::analyse(layout::Source::file(image.file(), image.size()));
        match analysis {
            Ok(analysis) => {
                let l = &analysis.layout;
                let align = match l.fs {
                    FsKind::Squashfs => 1,
                    _ => l.block_size,
                };
                let (ends, metadata) = regions::cut(image, l, params, metadata_apart, progress)?;
                return Ok(Cuts {
                    ends,
                    metadata,
                    layout: LayoutSummary::of(l, cutting),
                    align,
                    fallback: None,
                    files: analysis.files,
                });
            }
            Err(e) => match e.io_error(image.path()) {
                // An image that cannot be read would not chunk either: fail, not fall back.
                Some(err) => return Err(err),
                None => fallback = Some(e.to_string()),
            },
        }
    }
    Ok(Cuts {
        ends: Chunker::new(params).cut_image(image, progress)?,
        metadata: Vec::new(),
        layout: LayoutSummary::default(),
        align: ALIGN as u32,
        fallback,
        files: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Pseudo-random bytes with repeated stretches, so cuts both vary and recur.
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let (a, b) = v.split_at_mut(len / 2);
        b[..len / 8].copy_from_slice(&a[..len / 8]);
        v
    }

    #[test]
    fn parallel_equals_serial() {
        let data = sample(11 << 20);
        let c = Chunker::new(ChunkParams::from_avg(64 << 10).unwrap());
        for until in [data.len(), 5 << 20, 4096 * 3 + 17] {
            assert_eq!(c.cuts_parallel(&data, until), c.cuts_serial(&data, until));
        }
    }

    #[test]
    fn cuts_are_aligned_and_bounded() {
        let data = sample(3 << 20);
        let p = ChunkParams::from_avg(64 << 10).unwrap();
        let cuts = Chunker::new(p).cuts_serial(&data, data.len());
        let mut prev = 0;
        for &c in &cuts[..cuts.len() - 1] {
            assert_eq!(c % ALIGN as usize, 0);
            assert!(c - prev >= p.min as usize && c - prev <= p.max as usize);
            prev = c;
        }
        assert_eq!(*cuts.last().unwrap(), data.len());
    }

    #[test]
    fn shared_content_resynchronises() {
        let data = sample(4 << 20);
        let mut shifted = vec![7u8; 3 * 4096];
        shifted.extend_from_slice(&data);
        let c = Chunker::new(ChunkParams::from_avg(64 << 10).unwrap());
        let a: std::collections::HashSet<usize> = c
            .cuts_serial(&data, data.len())
            .into_iter()
            .map(|x| x + 3 * 4096)
            .collect();
        let b = c.cuts_serial(&shifted, shifted.len());
        let shared = b.iter().filter(|x| a.contains(x)).count();
        assert!(shared * 10 >= b.len() * 9, "{shared} of {}", b.len());
    }

    #[test]
    fn rejects_bad_average() {
        assert!(ChunkParams::from_avg(65000).is_err());
        assert!(ChunkParams::from_avg(4096).is_err());
        assert!(ChunkParams::from_avg(2 << 20).is_err());
    }
}
