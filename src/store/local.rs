//! A store in a local directory, laid out as casync lays its stores:
//! `DIR/<first 4 hex digits of id>/<64 hex digits>.cacnk`, with deltas beside the chunk
//! files they rebuild: `DIR/<first 4 hex digits>/<id>.<base id>.cadelta`.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use crate::chunk::ChunkId;
use crate::error::{Error, IoContext, Result};

/// Where a store, local or over HTTP, keeps chunk file `id` (`base` None) or the delta
/// that rebuilds it from `base`, relative to the store's root.
pub fn place(id: &ChunkId, base: Option<&ChunkId>) -> String {
    let hex = id.to_hex();
    match base {
        None => format!("{}/{hex}.cacnk", &hex[..4]),
        Some(base) => format!("{}/{hex}.{}.cadelta", &hex[..4], base.to_hex()),
    }
}

#[derive(Clone)]
pub struct LocalStore {
    dir: PathBuf,
    /// The directory itself, which chunk files are opened relative to: a mount opens
    /// thousands of them, and walking the store's path for each costs more than it seems.
    root: Arc<OwnedFd>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Opens a store directory, creating it when `create` is set.
    pub fn open(dir: &Path, create: bool) -> Result<LocalStore> {
        if create {
            fs::create_dir_all(dir).at(dir)?;
        }
        let meta = fs::metadata(dir).at(dir)?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "store {} is not a directory",
                dir.display()
            )));
        }
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .at(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            root: Arc::new(root),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(place(id, None))
    }

    /// The delta that rebuilds chunk file `id` from the chunk `base`.
    pub fn delta_path(&self, id: &ChunkId, base: &ChunkId) -> PathBuf {
        self.dir.join(place(id, Some(base)))
    }

    /// Writes a chunk file atomically: a uniquely named temporary file, then a rename, so
    /// concurrent writers of one chunk leave one whole file. Durability comes from
    /// [`LocalStore::sync`], once for the whole run.
    pub fn put(&self, id: &ChunkId, stored: &[u8]) -> Result<()> {
        self.write(self.chunk_path(id), id, stored)
    }

    /// Writes the delta that rebuilds `id` from `base`, as [`LocalStore::put`] writes.
    pub fn put_delta(&self, id: &ChunkId, base: &ChunkId, delta: &[u8]) -> Result<()> {
        self.write(self.delta_path(id, base), id, delta)
    }

    fn write(&self, path: PathBuf, id: &ChunkId, stored: &[u8]) -> Result<()> {
        let parent = path.parent().unwrap_or(&self.dir);
        let temp = parent.join(format!(
            ".{}.{}-{}.tmp",
            id.to_hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = match File::create(&temp) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    fs::create_dir_all(parent)?;
                    File::create(&temp)?
                }
                other => other?,
            };
            f.write_all(stored)?;
            fs::rename(&temp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::Io { path, err: e }
        })
    }

    /// Flushes the store's whole filesystem once (syncfs), instead of an fsync per chunk.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.dir).at(&self.dir)?;
        crate::sys::syncfs(&dir, &self.dir)
    }

    /// The stored bytes of a chunk, or `None` when the store lacks it. A chunk file longer
    /// than `max_len` is an error, never a large allocation.
    pub fn get(&self, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.read(&place(id, None), id, max_len)
    }

    /// The delta that rebuilds `id` from `base`, as [`LocalStore::get`] reads.
    pub fn get_delta(&self, id: &ChunkId, base: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.read(&place(id, Some(base)), id, max_len)
    }

    /// Reads the store's file at `place` (see [`place`]).
    fn read(&self, place: &str, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(place);
        let opened = rustix::fs::openat(
            &*self.root,
            place,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let file = match opened.map_err(std::io::Error::from) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path, err: e }),
        };
        let too_large = || Error::BadChunk {
            id: *id,
            offset: 0,
            reason: format!("{} is larger than {max_len} bytes", path.display()),
        };
        let len = file.metadata().at(&path)?.len();
        if len > max_len {
            return Err(too_large());
        }
        // The file may change under us: read what is there, but never past the cap.
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max_len + 1).read_to_end(&mut bytes).at(&path)?;
        if bytes.len() as u64 > max_len {
            return Err(too_large());
        }
        Ok(Some(bytes))
    }

    pub fn has(&self, id: &ChunkId) -> Result<bool> {
        let path = self.chunk_path(id);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { path, err: e }),
        }
    }
}
