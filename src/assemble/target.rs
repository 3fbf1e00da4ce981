//! The output being written: a new file (built as a hidden partial sibling and renamed
//! when whole), an existing file updated in place, or a block device.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::chunk::{is_zero, ChunkId, VerifiedChunk};
use crate::durable;
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::progress::Progress;

/// Suffix of the hidden file a new output is built in; a rerun resumes from it.
pub const PARTIAL_SUFFIX: &str = ".blockcast-partial";

/// Zeroed first and written last, so an interrupted write never looks like a filesystem.
pub const GUARD: u64 = 4096;

const ZERO_PIECE: usize = 1 << 20;

pub struct Target {
    file: File,
    /// Where bytes are written now.
    path: PathBuf,
    /// Where the finished image goes, when that is not `path`.
    rename_to: Option<PathBuf>,
    block_device: bool,
    /// Bytes of earlier content, which may serve as a seed.
    old_len: u64,
    dev_ino: (u64, u64),
}

impl Target {
    pub fn open(output: &Path, image_size: u64) -> Result<Target> {
        let (path, rename_to) = match fs::metadata(output) {
            Ok(_) => (output.to_path_buf(), None),
            Err(e) if e.kind() == ErrorKind::NotFound => (
                durable::sibling(output, PARTIAL_SUFFIX)?,
                Some(output.to_path_buf()),
            ),
            Err(e) => {
                return Err(Error::Io {
                    path: output.to_path_buf(),
                    err: e,
                })
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(rename_to.is_some())
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let meta = file.metadata().at(&path)?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        }
        let old_len = file.seek(SeekFrom::End(0)).at(&path)?;
        if block_device && old_len < image_size {
            return Err(Error::Invalid(format!(
                "block device {} holds {old_len} bytes, the image needs {image_size}",
                path.display()
            )));
        }
        if !block_device && old_len < image_size {
            file.set_len(image_size).at(&path)?;
        }
        Ok(Target {
            file,
            path,
            rename_to,
            block_device,
            old_len,
            dev_ino: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn old_len(&self) -> u64 {
        self.old_len
    }

    pub fn is_new(&self) -> bool {
        self.rename_to.is_some()
    }

    /// True when `other` names this very file (a seed must not be the output).
    pub fn is_same_file(&self, other: &Path) -> bool {
        fs::metadata(other).is_ok_and(|m| (m.dev(), m.ino()) == self.dev_ino)
    }

    /// For each record, whether the output already holds it. (Records under the guard are
    /// still rewritten at the end, from this copy when it is good.)
    pub fn in_place(&self, index: &Index, progress: &dyn Progress) -> Result<Vec<bool>> {
        progress.start("checking output", index.header().image_size);
        let result = (0..index.len())
            .into_par_iter()
            .map(|i| {
                let r = index.record(i);
                progress.advance(u64::from(r.size));
                if r.is_zero() {
                    if r.offset >= self.old_len && !self.block_device {
                        return Ok(true);
                    }
                    return self.is_zero_range(r.offset, r.end());
                }
                if r.end() > self.old_len {
                    return Ok(false);
                }
                let data = self.read(r.offset, r.size)?;
                Ok(ChunkId::of(&data) == r.id)
            })
            .collect();
        progress.finish();
        result
    }

    fn is_zero_range(&self, start: u64, end: u64) -> Result<bool> {
        let mut buf = vec![0u8; ZERO_PIECE];
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(ZERO_PIECE as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], pos).at(&self.path)?;
            if !is_zero(&buf[..n]) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    pub fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        self.file.read_exact_at(&mut data, offset).at(&self.path)?;
        Ok(data)
    }

    pub fn write(&self, offset: u64, chunk: &VerifiedChunk) -> Result<()> {
        self.write_bytes(offset, chunk.data())
    }

    /// Writes the part of a verified chunk from byte `from` on, at `offset`.
    pub fn write_tail(&self, offset: u64, chunk: &VerifiedChunk, from: usize) -> Result<()> {
        self.write_bytes(offset, chunk.data().get(from..).unwrap_or_default())
    }

    /// Writes bytes that were verified as part of chunks the caller holds.
    fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).at(&self.path)
    }

    /// Makes `[start, end)` read as zeros: a hole in a regular file, written zeros elsewhere.
    pub fn zero(&self, start: u64, end: u64) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        if !self.block_device && crate::sys::punch_hole(&self.file, start, end - start) {
            return Ok(());
        }
        let zeros = vec![0u8; ZERO_PIECE];
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(ZERO_PIECE as u64) as usize;
            self.write_bytes(pos, &zeros[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes the verity hash device after the padded image.
    /// The output file, for the hash device appended to it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Zeroes the guard and makes that durable before anything else is written.
    pub fn invalidate(&self, image_size: u64) -> Result<()> {
        let len = GUARD.min(image_size.max(self.old_len));
        self.write_bytes(0, &vec![0u8; len as usize])?;
        self.file.sync_data().at(&self.path)
    }

    /// Finishes the image: drops old bytes past `final_len`, writes the guard's bytes last,
    /// after everything else is durable, and moves a new image into place.
    pub fn complete(self, final_len: u64, guard: &[u8]) -> Result<()> {
        if !self.block_device && self.old_len > final_len {
            self.file.set_len(final_len).at(&self.path)?;
        }
        self.file.sync_data().at(&self.path)?;
        self.write_bytes(0, guard)?;
        self.file.sync_all().at(&self.path)?;
        if let Some(to) = &self.rename_to {
            durable::rename(&self.path, to)?;
        }
        Ok(())
    }
}
