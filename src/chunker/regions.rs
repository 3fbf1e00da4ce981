//! Filesystem-aware cuts: chunk boundaries drawn from a layout's regions.
//!
//! The image becomes a sequence of atoms that are never cut inside: filesystem blocks of
//! file data, metadata and free space, and whole compression units. A large file's data
//! starts a chunk and ends one, so an unchanged file yields the same chunks wherever it
//! lands; free space is kept apart from data, and so is metadata (layout 2): on erofs
//! every inode block changes when data moves, and a group mixing them with small files
//! brought those unchanged files into every update. Between those forced boundaries
//! atoms are grouped by their content: after an atom, a chunk ends when a hash of that
//! atom's bytes falls under a threshold proportional to its length, so a changed atom
//! regroups only its own neighbourhood.

use sha2::{Digest, Sha256};

use crate::chunker::{ChunkParams, ALIGN};
use crate::error::Result;
use crate::image::Image;
use crate::layout::{Kind, Layout, Region};
use crate::progress::Progress;

#[derive(Clone, Copy, Debug)]
struct Atom {
    end: u64,
    /// A chunk must start here.
    boundary: bool,
    free: bool,
    metadata: bool,
    /// A whole compression unit.
    unit: bool,
}

/// A file whose data adds up to at least this many bytes gets chunks of its own.
fn large(params: ChunkParams) -> u64 {
    u64::from(params.min)
}

/// Bytes of data per inode, to tell large files from small ones.
fn file_sizes(regions: &[Region]) -> std::collections::HashMap<u64, u64> {
    let mut sizes = std::collections::HashMap::new();
    for r in regions {
        if let Some(f) = r.file {
            *sizes.entry(f).or_insert(0) += r.len;
        }
    }
    sizes
}

/// Which stretches a chunk never spans: free space, metadata (when kept apart) and file
/// data.
fn class(r: &Region, metadata_apart: bool) -> u8 {
    match r.kind {
        Kind::Free => 0,
        Kind::Metadata if metadata_apart => 1,
        _ => 2,
    }
}

fn atoms(layout: &Layout, params: ChunkParams, metadata_apart: bool) -> Vec<Atom> {
    let sizes = file_sizes(&layout.regions);
    let is_large = |r: &Region| r.file.is_some_and(|f| sizes[&f] >= large(params));
    let data_granule = u64::from(layout.block_size.max(1));
    let other_granule = data_granule.min(ALIGN);
    let mut out: Vec<Atom> = Vec::new();
    let mut prev: Option<&Region> = None;
    for r in &layout.regions {
        let same_run = prev.is_some_and(|p| p.file.is_some() && p.file == r.file);
        let ends_large_run = prev.is_some_and(&is_large) && !same_run;
        let starts_large_run = is_large(r) && !same_run;
        let class_edge = prev.is_some_and(|p| class(p, metadata_apart) != class(r, metadata_apart));
        let mut boundary = starts_large_run || ends_large_run || class_edge;
        let free = r.kind == Kind::Free;
        let metadata = r.kind == Kind::Metadata;
        if r.kind == Kind::Compressed {
            out.push(Atom {
                end: r.end(),
                boundary,
                free,
                metadata,
                unit: true,
            });
        } else {
            let granule = if r.kind == Kind::Data {
                data_granule
            } else {
                other_granule
            };
            let mut pos = r.offset;
            while pos < r.end() {
                let end = ((pos / granule + 1) * granule).min(r.end());
                out.push(Atom {
                    end,
                    boundary,
                    free,
                    metadata,
                    unit: false,
                });
                boundary = false;
                pos = end;
            }
        }
        prev = Some(r);
    }
    out
}

/// A hash of the atom's bytes as a number in `[0, 2^64)`.
fn atom_hash(data: &[u8]) -> u64 {
    let d = Sha256::digest(data);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// End offsets of the chunks of an image whose layout is known, and whether each chunk
/// holds metadata alone.
pub fn cut(
    image: &Image,
    layout: &Layout,
    params: ChunkParams,
    metadata_apart: bool,
    progress: &dyn Progress,
) -> Result<(Vec<u64>, Vec<bool>)> {
    let atoms = atoms(layout, params, metadata_apart);
    let ends: Vec<u64> = atoms.iter().map(|a| a.end).collect();
    let hashes = image.par_map_chunks(&ends, progress, |_, data| Ok(atom_hash(data)))?;
    let (min, avg, max) = (
        u64::from(params.min),
        u64::from(params.avg),
        u64::from(params.max),
    );
    // P(cut after an atom of len bytes) = len / (2 avg - min) for blocks, once the chunk
    // has min bytes: forced boundaries end many groups of blocks early, and aiming at
    // twice the average brings their mean near avg (49 KiB for 64 KiB on a Debian
    // rootfs). Compression units, large already, aim at avg itself: larger groups of
    // them only carry more unchanged bytes into an update (measured on squashfs).
    let per_block_byte = u64::MAX / (2 * avg - min);
    let per_unit_byte = u64::MAX / (avg - min);
    let mut cuts = Vec::new();
    let mut metadata = Vec::new();
    let mut all_metadata = true;
    let mut start = 0u64;
    let mut atom_start = 0u64;
    for (a, h) in atoms.iter().zip(hashes) {
        let len = a.end - atom_start;
        if atom_start > start && (a.boundary || atom_start - start + len > max) {
            cuts.push(atom_start);
            metadata.push(all_metadata);
            all_metadata = true;
            start = atom_start;
        }
        all_metadata &= a.metadata;
        let size = a.end - start;
        let per_byte = if a.unit {
            per_unit_byte
        } else {
            per_block_byte
        };
        if !a.free && size >= min && h < per_byte.saturating_mul(len) {
            cuts.push(a.end);
            metadata.push(all_metadata);
            all_metadata = true;
            start = a.end;
        }
        atom_start = a.end;
    }
    if start < image.size() {
        cuts.push(image.size());
        metadata.push(all_metadata);
    }
    Ok((cuts, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FsKind;

    fn region(offset: u64, len: u64, kind: Kind, file: Option<u64>) -> Region {
        Region {
            offset,
            len,
            kind,
            file,
        }
    }

    #[test]
    fn large_files_and_free_space_are_bounded() {
        let p = ChunkParams::from_avg(64 << 10).unwrap();
        let layout = Layout {
            fs: FsKind::Ext4,
            block_size: 4096,
            regions: vec![
                region(0, 8192, Kind::Metadata, None),
                region(8192, 4096, Kind::Data, Some(11)),
                region(12288, 40960, Kind::Data, Some(12)),
                region(53248, 3000, Kind::Compressed, Some(13)),
                region(56248, 8000, Kind::Free, None),
            ],
        };
        let boundaries = |metadata_apart| -> Vec<u64> {
            atoms(&layout, p, metadata_apart)
                .iter()
                .scan(0, |start, a| {
                    let s = *start;
                    *start = a.end;
                    Some((s, a.boundary))
                })
                .filter(|(_, b)| *b)
                .map(|(s, _)| s)
                .collect()
        };
        // The large file 12 starts and ends a chunk; free space starts one.
        assert_eq!(boundaries(false), vec![12288, 53248, 56248]);
        // Layout 2 also ends the metadata's chunk where file data starts.
        assert_eq!(boundaries(true), vec![8192, 12288, 53248, 56248]);
        let atoms = atoms(&layout, p, true);
        assert!(atoms
            .iter()
            .all(|a| a.end % 4096 == 0 || a.end == 56248 || a.end == 64248));
    }
}
