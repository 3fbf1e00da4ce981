//! erofs: the superblock, inodes (compact and extended), directories, xattrs, chunk
//! indexes and compression indexes (full and compact), read from the image as the
//! on-disk format (`erofs_fs.h`) defines them.
//!
//! Every read goes through the bounds-checked [`Source`]; every count read from the
//! image is checked against the image (or a work budget proportional to it) before it
//! sizes an allocation or a loop, so a hostile image costs at most a few times its own
//! size and ends in an `Err`, never a panic.
//!
//! Not handled (an `Err`, so the caller falls back to plain blocks): compression other
//! than lz4 (lzma, deflate, zstd), metadata compression (metabox) and data on extra
//! devices.
//!
//! The code follows the format's parts: [`format`] declares the on-disk structures,
//! `superblock` and `inode` read those, `map` and `zmap` locate an inode's content
//! (flat, chunk-based, compressed), `dir` and `xattr` read directories and shared xattrs,
//! and `walk` goes through the tree and turns what it found into regions.

mod dir;
pub mod format;
mod inode;
mod map;
mod superblock;
mod walk;
mod xattr;
mod zmap;

pub use walk::analyse;

use super::source::{Bytes, Source};
use super::LayoutError;

const FS: &str = "erofs";

type Result<T> = std::result::Result<T, LayoutError>;

fn bad(offset: u64, reason: impl Into<String>) -> LayoutError {
    LayoutError::new(FS, offset, reason)
}

// ---------------------------------------------------------------------------------------
// Bounds-checked little-endian reads.

fn read<'a>(image: &Source<'a>, off: u64, len: u64, what: &str) -> Result<Bytes<'a>> {
    image.read(FS, off, len, what)
}

/// Checks that `[off, off + len)` is in the image, without reading it.
fn check(image: &Source, off: u64, len: u64, what: &str) -> Result<()> {
    image.check(FS, off, len, what)
}

fn round_up(x: u64, align: u64) -> Result<u64> {
    x.checked_next_multiple_of(align)
        .ok_or_else(|| bad(x, "offset overflows"))
}

/// `a + b` for on-disk quantities, an error at `at` when it overflows.
fn add(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_add(b).ok_or_else(|| bad(at, "offset overflows"))
}

fn mul(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_mul(b).ok_or_else(|| bad(at, "offset overflows"))
}

#[cfg(test)]
mod tests {
    use super::format::MAGIC;
    use super::*;

    #[test]
    fn rejects_junk() {
        assert!(analyse(&[]).is_err());
        assert!(analyse(&[0u8; 8192]).is_err());
        let mut sb = vec![0u8; 8192];
        sb[1024..1028].copy_from_slice(&MAGIC.to_le_bytes());
        sb[1024 + 12] = 20; // 1 MiB blocks
        let e = analyse(&sb).unwrap_err();
        assert_eq!(e.offset, 1036, "{e}");
        sb[1024 + 12] = 12;
        sb[1024 + 36] = 2; // two blocks
        sb[1024 + 14] = 0xff; // root nid 255: a zero inode, a fifo-less bogus mode
        assert!(analyse(&sb).is_err());
    }
}
