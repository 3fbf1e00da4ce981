//! Read access to an image file or block device. Large images are mapped in windows, so
//! the memory a pass needs is bounded whatever the image size.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// How many bytes of the image one pass maps at a time.
pub const WINDOW: u64 = 32 << 20;

pub struct Image {
    path: PathBuf,
    file: File,
    size: u64,
}

impl Image {
    pub fn open(path: &Path) -> Result<Image> {
        // Seeking to the end gives the size of block devices as well as of files.
        Image::from_file(path, File::open(path).at(path)?)
    }

    /// An image in a file already open; `path` names it in messages.
    pub fn from_file(path: &Path, mut file: File) -> Result<Image> {
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

    /// Maps `[offset, offset + len)`, clipped to the image.
    pub fn map(&self, offset: u64, len: u64) -> Result<Window> {
        let len = len.min(self.size.saturating_sub(offset));
        if len == 0 {
            return Ok(Window::Empty);
        }
        let len = usize::try_from(len).map_err(|_| Error::Invalid("window too large".into()))?;
        Ok(Window::Mapped(crate::sys::map(
            &self.file, &self.path, offset, len,
        )?))
    }

    /// Reads exactly `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset).at(&self.path)?;
        Ok(buf)
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
        _ => Err(Error::Invalid(format!(
            "{}: chunk [{lo}, {hi}) lies outside the image",
            path.display()
        ))),
    }
}

pub enum Window {
    Empty,
    Mapped(memmap2::Mmap),
}

impl Window {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Window::Empty => &[],
            Window::Mapped(m) => m,
        }
    }
}
