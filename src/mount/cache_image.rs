//! `--cache-image FILE`: a sparse copy of the image, filled as chunks are read, with a
//! state file (`FILE.state`) recording which chunks it holds. The next mount of the same
//! index starts from it; once every chunk has been read, FILE is the whole image and
//! mounts without blockcast.
//!
//! The state is only a hint of where to look: every block read from FILE is checked
//! against the hash tree like any other, so a torn write or a stale state costs a
//! re-fetch, never a wrong byte.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::durable;
use crate::error::{IoContext, Result};
use crate::index::Index;

const MAGIC: &[u8; 8] = b"BCCACHE1";
/// Magic, index digest, record count.
const HEADER: usize = 8 + 32 + 8;

pub struct CacheImage {
    path: PathBuf,
    state_path: PathBuf,
    file: File,
    /// Ties the state to one index: its whole-file digest.
    digest: [u8; 32],
    records: usize,
    held: Vec<AtomicU64>,
    dirty: AtomicBool,
}

impl CacheImage {
    /// Opens or creates the cache image for `index`. A state written for another index is
    /// discarded, and the image emptied.
    pub fn open(path: &Path, index: &Index) -> Result<CacheImage> {
        let records = index.len();
        let state_path = state_path(path);
        let digest = index.digest();
        let held: Vec<AtomicU64> = (0..records.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        let mut reused = false;
        if let Ok(state) = std::fs::read(&state_path) {
            if state.len() == HEADER + held.len() * 8
                && &state[..8] == MAGIC
                && state[8..40] == digest
                && state[40..48] == (records as u64).to_le_bytes()
            {
                for (word, bytes) in held.iter().zip(state[HEADER..].chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(bytes);
                    word.store(u64::from_le_bytes(b), Ordering::Relaxed);
                }
                reused = true;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let size = index.header().verity.padded_size();
        if !reused {
            // Another image's bytes would only be re-fetched block by block: start empty.
            file.set_len(0).at(path)?;
        }
        file.set_len(size).at(path)?;
        let cache = CacheImage {
            path: path.to_path_buf(),
            state_path,
            file,
            digest,
            records,
            held,
            dirty: AtomicBool::new(!reused),
        };
        for (i, r) in index.records().enumerate() {
            if r.is_zero() {
                cache.mark(i);
            }
        }
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn holds(&self, record: usize) -> bool {
        self.held[record / 64].load(Ordering::Relaxed) & (1 << (record % 64)) != 0
    }

    /// How many of the image's records the cache holds.
    pub fn held_count(&self) -> u64 {
        self.held
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    fn mark(&self, record: usize) {
        self.held[record / 64].fetch_or(1 << (record % 64), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Forgets a chunk whose bytes in the file failed verification.
    pub fn forget(&self, record: usize) {
        self.held[record / 64].fetch_and(!(1 << (record % 64)), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Stores a verified chunk's bytes at their place in the image.
    pub fn put(&self, record: usize, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).at(&self.path)?;
        self.mark(record);
        Ok(())
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).at(&self.path)
    }

    /// Makes the image's bytes durable, then the state that describes them.
    pub fn save(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        self.file.sync_data().at(&self.path)?;
        let mut state = Vec::with_capacity(HEADER + self.held.len() * 8);
        state.extend_from_slice(MAGIC);
        state.extend_from_slice(&self.digest);
        state.extend_from_slice(&(self.records as u64).to_le_bytes());
        for word in &self.held {
            state.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        durable::write_file(&self.state_path, &state)
    }
}

/// Where the state of a cache image lives: beside it.
pub fn state_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(".state");
    PathBuf::from(name)
}
