//! What is where in a filesystem image: the analysers read each filesystem's own
//! structures and describe the image as regions (metadata, file data, compression units,
//! free space), so that chunk boundaries can follow the filesystem's lines.
//!
//! A filesystem an analyser cannot describe (unknown, corrupt, hostile) gives an error
//! here, and the caller falls back to the plain aligned chunker. The analysers read
//! through [`Source`], every read checked against the image's size, a file read with
//! `pread`: a file that cannot be read (an I/O error, or it shrank since it was opened)
//! gives an error whose `io` is set, which the caller reports rather than falls
//! back from.

pub mod erofs;
pub mod ext4;
mod fskind;
mod source;
pub mod squashfs;
mod summary;

pub use fskind::FsKind;
pub use source::Source;
pub use summary::{Cutting, LayoutSummary, RegionTally};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Superblocks, group descriptors, inode tables, directories, bitmaps, lookup and
    /// xattr tables, journals, compressed metadata blocks.
    Metadata,
    /// Uncompressed file data; may be cut at any filesystem block boundary inside.
    Data,
    /// One compression unit (an erofs pcluster, a squashfs data or fragment block): never
    /// cut inside.
    Compressed,
    /// Unused space.
    Free,
}

/// A stretch of the image. Regions are sorted, do not overlap and tile the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
    pub kind: Kind,
    /// The inode whose data this is; `None` for metadata, free space, units shared by
    /// several files (fragment blocks) and data of a file no path names.
    pub file: Option<u64>,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub fs: FsKind,
    /// The filesystem block size: cuts inside `Data` regions fall on multiples of it.
    pub block_size: u32,
    pub regions: Vec<Region>,
}

/// Compression of a unit, as the filesystem records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Lz4,
    Lzma,
    Deflate,
    Gzip,
    Xz,
    Zstd,
    Lzo,
}

/// Where a piece of a file's content comes from, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes stored as they are.
    Plain { offset: u64, len: u64 },
    /// A hole: zeros not stored.
    Zero { len: u64 },
    /// Decompress the unit at `[offset, offset + len)` (to `unit_size` bytes), skip `skip`
    /// bytes of the result and take `take`.
    Compressed {
        offset: u64,
        len: u64,
        algorithm: Algorithm,
        unit_size: u64,
        skip: u64,
        take: u64,
    },
}

/// A regular file's content, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMap {
    /// Path from the root, without a leading slash.
    pub path: String,
    pub inode: u64,
    pub size: u64,
    pub pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
pub struct Analysis {
    pub layout: Layout,
    pub files: Vec<FileMap>,
}

/// Why an analyser gave up, with the offset at fault.
#[derive(Debug, thiserror::Error)]
#[error("{fs} at offset {offset}: {reason}")]
pub struct LayoutError {
    pub fs: &'static str,
    pub offset: u64,
    pub reason: String,
    /// Set when the image could not be read (an I/O error, or a file that shrank since
    /// it was opened), as opposed to a filesystem the analyser cannot describe.
    pub io: Option<std::io::ErrorKind>,
}

impl LayoutError {
    pub fn new(fs: &'static str, offset: u64, reason: impl Into<String>) -> LayoutError {
        LayoutError {
            fs,
            offset,
            reason: reason.into(),
            io: None,
        }
    }

    pub fn io(
        fs: &'static str,
        offset: u64,
        reason: impl Into<String>,
        kind: std::io::ErrorKind,
    ) -> LayoutError {
        LayoutError {
            io: Some(kind),
            ..LayoutError::new(fs, offset, reason)
        }
    }

    /// When the image at `path` could not be read, the I/O error that is.
    pub fn io_error(&self, path: &std::path::Path) -> Option<crate::error::Error> {
        self.io.map(|kind| crate::error::Error::Io {
            path: path.to_path_buf(),
            err: std::io::Error::new(kind, self.to_string()),
        })
    }
}

/// Analyses an image with the analyser its superblock calls for.
pub fn analyse<'a>(image: impl Into<Source<'a>>) -> Result<Analysis, LayoutError> {
    let image = image.into();
    let head = image.read("image", 0, image.size().min(4096), "the superblock")?;
    match FsKind::detect(&head) {
        FsKind::Erofs => erofs::analyse(image),
        FsKind::Squashfs => squashfs::analyse(image),
        FsKind::Ext4 => ext4::analyse(image),
        FsKind::Unknown => Err(LayoutError::new(
            "image",
            0,
            "no erofs, squashfs or ext4 superblock",
        )),
    }
}

/// Turns a list of attributed stretches (any order, possibly adjacent) into a tiling of
/// `[0, size)`: overlaps are errors, gaps become `Free` when all zero and `Metadata`
/// otherwise (bytes the analyser could not attribute are treated as metadata).
fn tile(
    fs: &'static str,
    image: &Source,
    mut parts: Vec<Region>,
) -> Result<Vec<Region>, LayoutError> {
    parts.retain(|r| r.len > 0);
    parts.sort_by_key(|r| r.offset);
    let size = image.size();
    let mut out = Vec::with_capacity(parts.len() * 2 + 1);
    let mut pos = 0u64;
    let gap = |from: u64, to: u64, out: &mut Vec<Region>| -> Result<(), LayoutError> {
        let kind = if image.is_zero(fs, from, to - from, "unattributed bytes")? {
            Kind::Free
        } else {
            Kind::Metadata
        };
        out.push(Region {
            offset: from,
            len: to - from,
            kind,
            file: None,
        });
        Ok(())
    };
    for r in parts {
        if r.offset < pos {
            return Err(LayoutError::new(
                fs,
                r.offset,
                format!("{:?} region overlaps the one before", r.kind),
            ));
        }
        if r.end() > size {
            return Err(LayoutError::new(
                fs,
                r.offset,
                "region runs past the end of the image",
            ));
        }
        if r.offset > pos {
            gap(pos, r.offset, &mut out)?;
        }
        pos = r.end();
        out.push(r);
    }
    if pos < size {
        gap(pos, size, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::chunker::{cut_image, ChunkParams};
    use crate::error::Error;
    use crate::image::Image;
    use crate::layout::Cutting;

    /// The file shrinks while the analysis reads it (after its first read, of the
    /// superblock): `cut_image` gives an I/O error naming the image, never a SIGBUS, and
    /// does not fall back to the chunker that would map the missing bytes.
    #[test]
    fn an_image_truncated_while_analysed_is_an_error() {
        for name in ["erofs-v2.img", "squashfs-v2.img", "ext4-v2.img"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testimages");
            std::fs::copy(from.join(name), &path).unwrap();
            let image = Image::open(&path).unwrap();
            let victim = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let reads = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let seen = reads.clone();
            super::source::hook::set(move |_, _| {
                seen.set(seen.get() + 1);
                if seen.get() == 2 {
                    victim.set_len(4096).unwrap();
                }
            });
            let result = cut_image(
                &image,
                ChunkParams::from_avg(64 << 10).unwrap(),
                Cutting::Filesystem {
                    metadata_apart: true,
                },
                &crate::progress::Silent,
            );
            super::source::hook::clear();
            assert!(reads.get() >= 2, "{name}: the file was not truncated");
            match result {
                Err(Error::Io { path: p, err }) => {
                    assert_eq!(p, path);
                    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
                    assert!(err.to_string().contains("shorter"), "{name}: {err}");
                }
                Err(e) => panic!("{name}: {e}"),
                Ok(_) => panic!("{name}: cut a truncated image"),
            }
        }
    }
}
