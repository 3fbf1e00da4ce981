//! A store in a local directory, laid out as casync lays its stores:
//! `DIR/<first 4 hex digits of id>/<64 hex digits>.cacnk`, with deltas beside the chunk
//! files they rebuild: `DIR/<first 4 hex digits>/<id>.<base id>.cadelta`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use futures_util::future::BoxFuture;

use super::{Check, Checked, Listed, PruneStore, ReadOptions, ReadStore, WriteStore};
use crate::chunk::{ChunkId, VerifiedChunk};
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
    /// Chunk files held in packs, by id: their pack (a name in the store), offset and
    /// stored size; read when no loose file has them.
    packed: Arc<HashMap<ChunkId, (String, u64, u32)>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number no other temporary file of this process has.
pub(crate) fn next_temp() -> u64 {
    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// How old a dead writer's temporary file must be before it is removed.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// The writer's process id, when `name` is a temporary file of the store's writes:
/// `.<file name>.<pid>-<counter>.tmp`.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (file, writer) = rest.rsplit_once('.')?;
    if file.is_empty() {
        return None;
    }
    let (pid, counter) = writer.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

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
            packed: Arc::new(HashMap::new()),
        })
    }

    /// This store, reading chunk files that no loose file holds from the packs given
    /// (see [`crate::pack::packed_chunks`]).
    pub fn with_packed(mut self, packed: HashMap<ChunkId, (String, u64, u32)>) -> LocalStore {
        self.packed = Arc::new(packed);
        self
    }

    /// A loose file's bytes (see [`place`]), at most `max_len` of them; `None` when the
    /// store lacks it.
    pub fn read_object(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.read(name, max_len, false)
    }

    /// Removes a loose file; false when there was none.
    pub fn remove_object(&self, name: &str) -> Result<bool> {
        let path = self.object_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                // The fan-out directory goes too once it is empty; a directory still in
                // use is not empty, and a writer that loses its directory to this makes
                // it again (see `write`).
                if let Some(dir) = path.parent().filter(|d| *d != self.dir) {
                    let _ = fs::remove_dir(dir);
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { path, err: e }),
        }
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
    pub fn put_chunk(&self, id: &ChunkId, stored: &[u8]) -> Result<()> {
        self.write(&place(id, None), stored)
    }

    /// Writes the delta that rebuilds `id` from `base`, as [`LocalStore::put_chunk`] writes.
    pub fn put_delta(&self, id: &ChunkId, base: &ChunkId, delta: &[u8]) -> Result<()> {
        self.write(&place(id, Some(base)), delta)
    }

    /// Writes the object `name` (a path relative to the store, see [`place`]).
    fn write(&self, name: &str, stored: &[u8]) -> Result<()> {
        let path = self.object_path(name)?;
        let parent = path.parent().unwrap_or(&self.dir);
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = parent.join(format!(
            ".{file_name}.{}-{}.tmp",
            std::process::id(),
            next_temp()
        ));
        let write = || -> std::io::Result<()> {
            // The fan-out directory may be missing, or removed by a packer (see
            // `remove_object`) between its creation and the file's: make it again.
            let mut attempts = 0;
            let mut f = loop {
                match File::create(&temp) {
                    Err(e) if e.kind() == ErrorKind::NotFound && attempts < 8 => {
                        attempts += 1;
                        fs::create_dir_all(parent)?;
                    }
                    other => break other?,
                }
            };
            f.write_all(stored)?;
            fs::rename(&temp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::Io { path, err: e }
        })
    }

    /// Removes, from the store's subdirectories `dirs` (their names: four hex digits), the
    /// temporary files that writers left when they were killed: those whose writer (the
    /// process named in the file name) no longer runs on this machine, and which are older
    /// than [`STALE_TEMP`], so that a writer in another process namespace sharing the store
    /// is never robbed of a file it is writing. Returns how many were removed.
    pub fn remove_stale_temps<'a>(&self, dirs: impl IntoIterator<Item = &'a str>) -> Result<u64> {
        let mut removed = 0;
        for dir in dirs {
            let path = self.dir.join(dir);
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { path, err: e }),
            };
            for entry in entries {
                let entry = entry.at(&path)?;
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(temp_writer) else {
                    continue;
                };
                if crate::sys::process_start(pid).is_some() {
                    continue;
                }
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= STALE_TEMP);
                if old && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Flushes the store's whole filesystem once (syncfs), instead of an fsync per chunk.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.dir).at(&self.dir)?;
        crate::sys::syncfs(&dir, &self.dir)
    }

    /// The stored bytes of a chunk, or `None` when the store lacks it. A chunk file longer
    /// than `max_len` is an error, never a large allocation.
    pub fn get_chunk(&self, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        match self.read(&place(id, None), max_len, false)? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.get_packed(id, max_len),
        }
    }

    /// A chunk file from the packs given by [`LocalStore::with_packed`].
    fn get_packed(&self, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        let Some((pack, offset, size)) = self.packed.get(id) else {
            return Ok(None);
        };
        let path = self.object_path(pack)?;
        if u64::from(*size) > max_len {
            return Err(Error::BadChunk {
                id: *id,
                offset: 0,
                reason: format!(
                    "{} holds it in {size} bytes, more than {max_len}",
                    path.display()
                ),
            });
        }
        let file = File::from(self.open_object(pack).at(&path)?);
        crate::image::readable_file(&file, false).at(&path)?;
        let mut bytes = vec![0u8; *size as usize];
        file.read_exact_at(&mut bytes, *offset).at(&path)?;
        Ok(Some(bytes))
    }

    /// As [`LocalStore::get_chunk`], but past the page cache (`O_DIRECT`) where the store's
    /// filesystem allows it, for a reader that keeps the bytes it needs itself: it spares
    /// the kernel caching a file that is read once, and the reader a copy.
    pub fn get_uncached(&self, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.read(&place(id, None), max_len, true)
    }

    /// Reads the store's file at `place` (see [`place`]), past the page cache if `direct`
    /// and the filesystem allows it.
    fn read(&self, place: &str, max_len: u64, direct: bool) -> Result<Option<Vec<u8>>> {
        let path = self.object_path(place)?;
        let open = |flags| open_beneath(&self.root, place, flags);
        let opened = match direct {
            // A filesystem without direct I/O refuses the flag itself.
            true => match open(OFlags::DIRECT) {
                Err(rustix::io::Errno::INVAL) => open(OFlags::empty()),
                other => other,
            },
            false => open(OFlags::empty()),
        };
        let file = match opened.map_err(beneath_error) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path, err: e }),
        };
        crate::image::readable_file(&file, false).at(&path)?;
        let too_large = || Error::BadChunk {
            id: ChunkId::default(),
            offset: 0,
            reason: format!("{} is larger than {max_len} bytes", path.display()),
        };
        let len = file.metadata().at(&path)?.len();
        if len > max_len {
            return Err(too_large());
        }
        // The file may change under us: read what is there, but never past the cap.
        let cap = max_len + 1;
        let bytes = match direct {
            true => read_direct(&file, len.min(max_len) + 1, cap),
            false => read_buffered(&file, len, cap),
        }
        .at(&path)?;
        if bytes.len() as u64 > max_len {
            return Err(too_large());
        }
        Ok(Some(bytes))
    }

    /// The path of the object `name`, which must be a path inside the store made of
    /// plain components (no `..`, no absolute path, no hidden file).
    fn object_path(&self, name: &str) -> Result<PathBuf> {
        let plain = !name.is_empty()
            && name
                .split('/')
                .all(|c| !c.is_empty() && !c.starts_with('.'));
        if !plain {
            return Err(Error::Invalid(format!(
                "{name:?} names no object inside the store {}",
                self.dir.display()
            )));
        }
        Ok(self.dir.join(name))
    }

    /// Reads the object `name` on this thread and hands it to `check`.
    pub fn read_now(
        &self,
        name: &str,
        opts: ReadOptions,
        check: &(dyn Fn(&[u8]) -> Result<VerifiedChunk> + Send + Sync),
    ) -> Result<Option<Checked>> {
        match self.read(name, opts.max_len, opts.for_mount)? {
            Some(stored) => Ok(Some((check(&stored)?, stored))),
            None => Ok(None),
        }
    }

    /// Reads byte ranges of the object `name`; `None` when the store lacks it.
    pub(crate) fn read_ranges(
        &self,
        name: &str,
        ranges: &[Range<u64>],
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let Some((file, path, size)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let mut parts = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.start > r.end || r.end > size {
                return Err(Error::Io {
                    path,
                    err: std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!(
                            "bytes {}..{} asked for, the file has {size}",
                            r.start, r.end
                        ),
                    ),
                });
            }
            let mut part = vec![0u8; (r.end - r.start) as usize];
            file.read_exact_at(&mut part, r.start).at(&path)?;
            parts.push(part);
        }
        Ok(Some(parts))
    }

    /// The length of the object `name`, a regular file inside the store; `None` when the
    /// store lacks it.
    pub fn object_len(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.open_regular(name)?.map(|(_, _, len)| len))
    }

    /// The object `name` opened for reading (a regular file reached inside the store),
    /// with its path and length; `None` when the store lacks it.
    fn open_regular(&self, name: &str) -> Result<Option<(File, PathBuf, u64)>> {
        let path = self.object_path(name)?;
        let file = match self.open_object(name) {
            Ok(fd) => File::from(fd),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path, err: e }),
        };
        crate::image::readable_file(&file, false).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        Ok(Some((file, path, len)))
    }

    fn open_object(&self, name: &str) -> std::io::Result<OwnedFd> {
        open_beneath(&self.root, name, OFlags::empty()).map_err(beneath_error)
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.packed.contains_key(id) || self.has_object(&place(id, None))?)
    }

    fn has_object(&self, name: &str) -> Result<bool> {
        let path = self.object_path(name)?;
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { path, err: e }),
        }
    }
}

/// Opens `name` for reading without blocking, resolved beneath the store directory
/// `root`: a symbolic link that leads out of the store is refused (EXDEV), one inside
/// it is followed. Kernels without openat2 refuse every symbolic link in the last
/// component instead.
fn open_beneath(root: &OwnedFd, name: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | flags;
    match rustix::fs::openat2(
        root,
        name,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::openat(root, name, flags | OFlags::NOFOLLOW, Mode::empty())
        }
        other => other,
    }
}

/// The error of [`open_beneath`], saying what EXDEV means there.
fn beneath_error(e: rustix::io::Errno) -> std::io::Error {
    match e {
        rustix::io::Errno::XDEV => std::io::Error::new(
            ErrorKind::PermissionDenied,
            "a symbolic link that leads out of the store, refused",
        ),
        e => e.into(),
    }
}

/// Reads a file through the page cache, at most `cap` bytes, sized for `len`.
fn read_buffered(file: &File, len: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The alignment direct I/O asks of offsets, lengths and buffers: the largest logical
/// block size of the disks a store sits on.
const DIRECT_ALIGN: usize = 4096;

/// Reads a file opened with `O_DIRECT`: aligned reads into an aligned buffer, until a
/// short one (the file's end) or `cap` bytes, sized for a file of about `expect` bytes.
/// A file whose direct reads the kernel refuses after all is read through the page cache.
fn read_direct(file: &File, expect: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let want = usize::try_from(expect)
        .unwrap_or(usize::MAX)
        .min(cap)
        .div_ceil(DIRECT_ALIGN)
        .saturating_mul(DIRECT_ALIGN);
    let mut buf = vec![0u8; want + DIRECT_ALIGN];
    let pad = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[pad + got..pad + want], got as u64) {
            Ok(n) => {
                got += n;
                if n == 0 || n % DIRECT_ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                rustix::fs::fcntl_setfl(file, rustix::fs::fcntl_getfl(file)? - OFlags::DIRECT)?;
                return read_buffered(file, expect, cap as u64);
            }
            Err(e) => return Err(e),
        }
    }
    buf.truncate(pad + got.min(cap));
    buf.drain(..pad);
    Ok(buf)
}

impl ReadStore for LocalStore {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    /// A lazy mount's reads run on the calling thread (see
    /// [`super::Stores::read_locally_for_mount`]); others on the blocking pool, where a
    /// cold read waiting on the disk does not hold up the runtime's workers.
    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: ReadOptions,
        check: Check,
    ) -> BoxFuture<'a, Result<Option<Checked>>> {
        Box::pin(async move {
            if opts.for_mount {
                return self.read_now(name, opts, &*check);
            }
            let (store, name) = (self.clone(), name.to_string());
            tokio::task::spawn_blocking(move || store.read_now(&name, opts, &*check))
                .await
                .map_err(|_| super::worker_failed())?
        })
    }

    fn get_ranges<'a>(
        &'a self,
        name: &'a str,
        ranges: &'a [Range<u64>],
        part: &'a mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (store, owned_name, owned) = (self.clone(), name.to_string(), ranges.to_vec());
            let parts = tokio::task::spawn_blocking(move || store.read_ranges(&owned_name, &owned))
                .await
                .map_err(|_| super::worker_failed())??;
            let Some(parts) = parts else {
                return Ok(false);
            };
            for (i, bytes) in parts.into_iter().enumerate() {
                part(i, bytes)?;
            }
            Ok(true)
        })
    }

    fn has<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.has_object(name) })
    }

    fn get_file<'a>(
        &'a self,
        name: &'a str,
        max_len: u64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let (store, name) = (self.clone(), name.to_string());
            tokio::task::spawn_blocking(move || store.read_object(&name, max_len))
                .await
                .map_err(|_| super::worker_failed())?
                // A file past its bound is no chunk's: the error says only what it is.
                .map_err(|e| match e {
                    Error::BadChunk { reason, .. } => Error::Integrity(reason),
                    e => e,
                })
        })
    }
}

impl WriteStore for LocalStore {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write(name, bytes)
    }

    fn sync(&self) -> Result<()> {
        LocalStore::sync(self)
    }
}

impl PruneStore for LocalStore {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    /// The regular files in the store's subdirectories, not hidden ones (writers'
    /// temporary files, the lock).
    fn list(&self) -> Result<Vec<Listed>> {
        let mut objects = Vec::new();
        for dir in fs::read_dir(&self.dir).at(&self.dir)? {
            let dir = dir.at(&self.dir)?;
            let dir_name = dir.file_name().to_string_lossy().into_owned();
            if !dir_name.starts_with('.') && dir.file_type().at(&dir.path())?.is_dir() {
                objects.extend(self.list_dir(&dir_name)?);
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<Listed>> {
        let path = self.object_path(dir)?;
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io { path, err: e }),
        };
        let mut objects = Vec::new();
        for file in entries {
            let file = file.at(&path)?;
            let name = file.file_name().to_string_lossy().into_owned();
            let meta = match file.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Io {
                        path: file.path(),
                        err: e,
                    })
                }
            };
            if !name.starts_with('.') && meta.is_file() {
                objects.push(Listed {
                    name: format!("{dir}/{name}"),
                    size: meta.len(),
                    modified: meta.modified().at(&file.path())?,
                });
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.read_object(name, max_len)
    }

    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Option<Vec<u8>>> {
        match self.object_len(name)? {
            Some(len) if len >= range.end => Ok(self
                .read_ranges(name, std::slice::from_ref(&range))?
                .and_then(|mut parts| parts.pop())),
            _ => Ok(None),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        LocalStore::write(self, name, bytes)
    }

    fn sync(&self) -> Result<()> {
        LocalStore::sync(self)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.remove_object(name).map(|_| ())
    }

    fn local(&self) -> Option<&LocalStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ramfs mounted on a temporary directory: a filesystem that refuses `O_DIRECT`.
    struct Ramfs(tempfile::TempDir);

    impl Ramfs {
        fn mount() -> Ramfs {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "ramfs", "ramfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "mount -t ramfs (tests run as root)");
            Ramfs(dir)
        }
    }

    impl Drop for Ramfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn uncached_reads_return_the_whole_file_and_refuse_one_past_the_cap() {
        let ramfs = Ramfs::mount();
        let direct = OFlags::RDONLY | OFlags::DIRECT;
        let refused = rustix::fs::open(ramfs.0.path(), direct, Mode::empty()).unwrap_err();
        assert_eq!(
            refused,
            rustix::io::Errno::INVAL,
            "ramfs takes O_DIRECT now"
        );
        let disk = tempfile::tempdir().unwrap();
        for dir in [disk.path(), ramfs.0.path()] {
            let store = LocalStore::open(dir, false).unwrap();
            for len in [1usize, 4095, 4096, 4097, 8192, 65_536, 100_003] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let id = ChunkId::of(&bytes);
                store.put_chunk(&id, &bytes).unwrap();
                let at = format!("{len} bytes in {}", dir.display());
                let read = store.get_uncached(&id, len as u64).unwrap();
                assert!(read.as_deref() == Some(&bytes[..]), "{at}");
                let err = store.get_uncached(&id, len as u64 - 1).unwrap_err();
                assert!(err.to_string().contains("is larger than"), "{at}: {err}");
            }
            let absent = ChunkId::of(b"not stored");
            assert!(store.get_uncached(&absent, 10).unwrap().is_none());
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn objects_are_read_whole_or_by_ranges_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), true).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        WriteStore::put(&store, "ab12/object", &bytes).unwrap();
        std::fs::write(dir.path().join("ab12/.object.1-2.tmp"), b"partial").unwrap();
        let rt = runtime();

        let mut parts = Vec::new();
        let ranges = [0..1, 4095..4097, 9_000..10_000, 5..5];
        let found = rt
            .block_on(store.get_ranges("ab12/object", &ranges, &mut |i, b| {
                parts.push((i, b));
                Ok(())
            }))
            .unwrap();
        assert!(found);
        for (i, part) in &parts {
            let r = &ranges[*i];
            assert_eq!(part[..], bytes[r.start as usize..r.end as usize]);
        }
        assert_eq!(parts.len(), ranges.len());
        let past = rt.block_on(store.get_ranges(
            "ab12/object",
            std::slice::from_ref(&(9_999..10_001)),
            &mut |_, _| Ok(()),
        ));
        assert!(past.unwrap_err().to_string().contains("the file has 10000"));
        let absent = rt.block_on(store.get_ranges(
            "ab12/none",
            std::slice::from_ref(&(0..1)),
            &mut |_, _| Ok(()),
        ));
        assert!(!absent.unwrap());
        assert!(rt.block_on(store.has("ab12/object")).unwrap());

        let listed = store.list().unwrap();
        let names: Vec<_> = listed.iter().map(|l| (l.name.as_str(), l.size)).collect();
        assert_eq!(names, vec![("ab12/object", 10_000)]);
        PruneStore::delete(&store, "ab12/object").unwrap();
        PruneStore::delete(&store, "ab12/object").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!rt.block_on(store.has("ab12/object")).unwrap());
    }

    #[test]
    fn names_and_links_never_lead_out_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"not for the store").unwrap();
        let store = LocalStore::open(&dir.path().join("store"), true).unwrap();
        for name in [
            "../secret",
            "/etc/hostname",
            ".hidden",
            "ab12/../../secret",
            "",
        ] {
            let err = WriteStore::put(&store, name, b"x").unwrap_err();
            assert!(err.to_string().contains("names no object"), "{name}: {err}");
            assert!(PruneStore::delete(&store, name).is_err(), "{name}");
        }
        let id = ChunkId::of(b"linked");
        let path = store.chunk_path(&id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        let err = store.get_chunk(&id, 1 << 20).unwrap_err();
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        let rt = runtime();
        let name = place(&id, None);
        let ranges =
            rt.block_on(store.get_ranges(&name, std::slice::from_ref(&(0..4)), &mut |_, _| Ok(())));
        assert!(ranges.is_err());
    }
}
