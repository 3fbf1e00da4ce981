//! Read access to an image file or block device, with `pread` into buffers of our own,
//! never through a mapping: a file that shrinks or a hole that cannot be filled gives an
//! error, not SIGBUS. Large images are read in windows, so the memory a pass needs is
//! bounded whatever the image size.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{Mode, OFlags};

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// How many bytes of the image one pass reads at a time.
pub const WINDOW: u64 = 32 << 20;

pub struct Image {
    path: PathBuf,
    file: File,
    size: u64,
}

impl Image {
    /// Opens a regular file or a block device. Anything else (a FIFO, a socket, a
    /// character device, a directory) is refused without blocking on it.
    pub fn open(path: &Path) -> Result<Image> {
        Image::from_file(path, open_readable(path, true).at(path)?)
    }

    /// An image in a file already open; `path` names it in messages.
    pub fn from_file(path: &Path, mut file: File) -> Result<Image> {
        // Seeking to the end gives the size of block devices as well as of files.
        let size = file.seek(SeekFrom::End(0)).at(path)?;
        Ok(Image {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file, for readers that read it with `pread` themselves.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads `[offset, offset + len)`, clipped to the image's size when it was opened.
    pub fn map(&self, offset: u64, len: u64) -> Result<Window> {
        let len = len.min(self.size.saturating_sub(offset));
        let len = usize::try_from(len).map_err(|_| Error::Invalid("window too large".into()))?;
        Ok(Window(self.read_at(offset, len)?))
    }

    /// Reads exactly `len` bytes at `offset`; a file that ends before is an error that
    /// says so.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the bytes at `offset`, as [`Image::read_at`] reads them.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.file.read_exact_at(buf, offset).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Io {
                    path: self.path.clone(),
                    err: std::io::Error::new(
                        err.kind(),
                        format!(
                            "ends before byte {} (it was {} bytes when opened: did it shrink?)",
                            offset + len as u64,
                            self.size
                        ),
                    ),
                }
            } else {
                Error::Io {
                    path: self.path.clone(),
                    err,
                }
            }
        })
    }

    /// Applies `f(offset, bytes)` to every chunk, in parallel, one mapped window at a time.
    /// `ends` are the chunks' end offsets in image order; the first chunk starts at 0.
    pub fn par_map_chunks<T, F>(
        &self,
        ends: &[u64],
        progress: &dyn Progress,
        f: F,
    ) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(u64, &[u8]) -> Result<T> + Sync,
    {
        let mut out = Vec::with_capacity(ends.len());
        let mut first = 0;
        while first < ends.len() {
            let start = if first == 0 { 0 } else { ends[first - 1] };
            let mut last = first;
            while last + 1 < ends.len() && ends[last + 1] - start <= WINDOW {
                last += 1;
            }
            let end = ends[last];
            let window = self.map(start, end - start)?;
            let bytes = window.bytes();
            let results: Vec<Result<T>> = (first..=last)
                .into_par_iter()
                .map(|i| {
                    let lo = if i == 0 { 0 } else { ends[i - 1] };
                    let slice = window_slice(bytes, start, lo, ends[i], &self.path)?;
                    f(lo, slice)
                })
                .collect();
            for r in results {
                out.push(r?);
            }
            progress.advance(end - start);
            first = last + 1;
        }
        Ok(out)
    }
}

fn window_slice<'a>(bytes: &'a [u8], base: u64, lo: u64, hi: u64, path: &Path) -> Result<&'a [u8]> {
    let a = usize::try_from(lo - base).ok();
    let b = usize::try_from(hi - base).ok();
    match (a, b) {
        (Some(a), Some(b)) if a <= b && b <= bytes.len() => Ok(&bytes[a..b]),
        _ => Err(Error::Internal(format!(
            "{}: chunk [{lo}, {hi}) lies outside the image",
            path.display()
        ))),
    }
}

/// Opens `path` for reading without blocking on it, and keeps it only when it is a
/// regular file or, with `block_device`, a block device (see [`readable_file`]).
pub fn open_readable(path: &Path, block_device: bool) -> std::io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    readable_file(&file, block_device)?;
    Ok(file)
}

/// A small text file (a key, a signature, credentials): a regular file (see
/// [`open_readable`]) of at most `max` bytes, read whole; a larger one is refused as
/// larger than `what` is.
pub fn read_text(path: &Path, max: u64, what: &str) -> std::io::Result<String> {
    String::from_utf8(read_small(path, max, what)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A small file (a certificate, a DER signature), as [`read_text`] reads it, as bytes.
pub fn read_small(path: &Path, max: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_readable(path, false)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {what} ({max} bytes at most)"),
        ));
    }
    Ok(bytes)
}

/// Refuses anything but a regular file (or, with `block_device`, a block device): a FIFO
/// or a socket would block a reader for ever, a directory or character device is no
/// image. Clears `O_NONBLOCK`, with which such files are opened so that the open itself
/// cannot block.
pub fn readable_file(file: &File, block_device: bool) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() || (block_device && kind.is_block_device()) {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() {
        Some("a character device")
    } else {
        Some("a special file")
    };
    if let Some(what) = what {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{what}, not {}",
                if block_device {
                    "a regular file or block device"
                } else {
                    "a regular file"
                }
            ),
        ));
    }
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

/// Bytes read from an image.
pub struct Window(Vec<u8>);

impl Window {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_shrinks_after_it_was_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, vec![7u8; 3 * WINDOW as usize / 2]).unwrap();
        let image = Image::open(&path).unwrap();
        assert_eq!(
            image.map(WINDOW, WINDOW).unwrap().bytes().len(),
            WINDOW as usize / 2
        );
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        for err in [
            image.map(0, WINDOW).err().unwrap(),
            image.read_at(8192, 10).err().unwrap(),
        ] {
            let text = err.to_string();
            assert!(
                text.contains("image") && text.contains("did it shrink"),
                "{text}"
            );
        }
        let ends = [WINDOW / 2, WINDOW];
        let hashed = image.par_map_chunks(&ends, &crate::progress::Silent, |_, d| Ok(d.len()));
        assert!(hashed.is_err());
    }
}
