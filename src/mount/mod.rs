//! `mount`: the image as a lazy, verified FUSE file ([`reader`], [`fuse`]), attached
//! read-only at a mountpoint ([`attach`]), optionally filling a [`cache_image`].
//!
//! Each mount keeps a record under [`RUN_DIR`] (its process, FUSE directory and how it
//! was attached), so that `blockcast umount` can take it all down even when the process
//! that made it is gone.

pub mod attach;
pub mod cache_image;
pub mod fuse;
pub mod reader;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::index::format::TREE_PIECE;
use crate::index::Index;
use crate::store::{Stores, Warn};
use crate::verity;
use attach::{AttachMode, Attached};
use reader::LazyImage;

/// Where mounts keep their records.
pub const RUN_DIR: &str = "/run/blockcast/mounts";

/// Tree pieces a lazy mount reads at once: 1 MiB of hash blocks, which cover 128 MiB of
/// the image.
const TREE_SPAN: u64 = 16;

/// The index's hash area as the stores hold it: the tree's chunks, fetched when read and
/// checked against their ids.
pub struct StoredTree<'a> {
    pub index: &'a Index,
    pub stores: &'a Stores,
}

impl verity::HashArea for StoredTree<'_> {
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let end = at.saturating_add(len as u64);
        if end > self.index.header().verity.tree_size {
            return Err(Error::Internal(format!(
                "hash area bytes [{at}, {end}) asked for, past the tree's end"
            )));
        }
        let records = self.index.tree_records_in(at, end);
        let mut out = vec![0u8; len];
        self.stores.fetch_many(records, |r, chunk| {
            let (lo, hi) = (r.offset.max(at), r.end().min(end));
            let from = &chunk.data()[(lo - r.offset) as usize..(hi - r.offset) as usize];
            out[(lo - at) as usize..(hi - at) as usize].copy_from_slice(from);
            Ok(())
        })?;
        Ok(out)
    }

    /// The [`TREE_SPAN`] pieces around `at`: fetched together, in one request from a
    /// pack, and each chunk file is fetched whole anyway.
    fn span(&self, at: u64) -> std::ops::Range<u64> {
        let group = TREE_PIECE * TREE_SPAN;
        let start = at / group * group;
        let end = start
            .saturating_add(group)
            .min(self.index.header().verity.tree_size);
        match end > at {
            true => start..end,
            false => at..at + verity::BLOCK,
        }
    }

    fn describe(&self) -> String {
        format!(
            "the hash tree of {} in the stores",
            self.index.path().display()
        )
    }
}

/// Where the image goes.
pub enum Target {
    /// Mounted read-only at `mountpoint`.
    Attach {
        mountpoint: PathBuf,
        mode: AttachMode,
    },
    /// Only exposed as `DIR/image`, for the user to attach.
    Expose { dir: PathBuf },
}

impl Target {
    /// The mountpoint or the exposing directory: what `blockcast umount` is given.
    pub fn path(&self) -> &Path {
        match self {
            Target::Attach { mountpoint, .. } => mountpoint,
            Target::Expose { dir } => dir,
        }
    }
}

/// What `blockcast umount` needs to know about a mount.
#[derive(Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    /// When that process started ([`crate::sys::process_start`]); absent in records
    /// written before it was kept.
    #[serde(default)]
    pub started: Option<u64>,
    /// The mountpoint, or the directory the file is exposed in.
    pub path: PathBuf,
    pub fuse_dir: PathBuf,
    pub attached: Option<Attached>,
}

pub struct Mounted {
    session: Option<::fuser::BackgroundSession>,
    image: Arc<LazyImage>,
    record: MountRecord,
    record_dir: PathBuf,
}

/// The record directory of a mount at `path`.
pub fn record_dir(path: &Path) -> PathBuf {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(RUN_DIR).join(key)
}

fn record_file(dir: &Path) -> PathBuf {
    dir.join("mount.json")
}

pub fn read_record(path: &Path) -> Result<Option<MountRecord>> {
    let file = record_file(&record_dir(path));
    match std::fs::read(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: file, err: e }),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("mount record {}: {e}", file.display()))),
    }
}

/// Exposes `image` through FUSE and attaches it as `target` says. Whatever was set up
/// is taken down again when a later step fails. The process's allocator then keeps the
/// memory freed by chunks read and dropped ([`crate::sys::keep_freed_memory`]).
pub fn mount(image: LazyImage, target: Target, warn: Warn) -> Result<Mounted> {
    crate::sys::keep_freed_memory();
    let path = target.path().to_path_buf();
    if !path.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    if let Some(old) = read_record(&path)? {
        if running(&old) {
            return Err(Error::Invalid(format!(
                "{} is already mounted by blockcast (process {}); blockcast umount it first",
                path.display(),
                old.pid
            )));
        }
        unmount(&path, &*warn)?;
    }
    if attach::is_mounted(&path)? {
        return Err(Error::Invalid(format!(
            "something is already mounted on {}",
            path.display()
        )));
    }
    let record_dir = record_dir(&path);
    std::fs::create_dir_all(&record_dir).at(&record_dir)?;
    let fuse_dir = match &target {
        Target::Attach { .. } => {
            let d = record_dir.join("fuse");
            std::fs::create_dir_all(&d).at(&d)?;
            d
        }
        Target::Expose { dir } => dir.clone(),
    };
    let image = Arc::new(image);
    let kind = image.index().header().fs_kind;
    let session = match fuse::serve(fuse::ImageFs::new(image.clone(), warn.clone()), &fuse_dir) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&record_dir);
            return Err(e);
        }
    };
    let mut mounted = Mounted {
        session: Some(session),
        image,
        record: MountRecord {
            pid: std::process::id(),
            started: crate::sys::process_start(std::process::id()),
            path: path.clone(),
            fuse_dir: fuse_dir.clone(),
            attached: None,
        },
        record_dir,
    };
    if let Target::Attach { mountpoint, mode } = target {
        let file = fuse_dir.join(fuse::FILE_NAME);
        mounted.record.attached = Some(attach::attach(&file, kind, &mountpoint, mode)?);
    }
    let json = serde_json::to_vec_pretty(&mounted.record)
        .map_err(|e| Error::Internal(format!("writing the mount record: {e}")))?;
    crate::durable::write_file(&record_file(&mounted.record_dir), &json)?;
    Ok(mounted)
}

impl Mounted {
    pub fn record(&self) -> &MountRecord {
        &self.record
    }

    pub fn image(&self) -> &LazyImage {
        &self.image
    }

    /// Whether the mount is still in place (nobody unmounted it behind our back).
    pub fn is_alive(&self) -> bool {
        let at = match self.record.attached {
            Some(_) => &self.record.path,
            None => &self.record.fuse_dir,
        };
        attach::is_mounted(at).unwrap_or(false)
    }

    /// Saves the cache image's state, if there is one.
    pub fn save(&self) -> Result<()> {
        match self.image.cache() {
            Some(c) => c.save(),
            None => Ok(()),
        }
    }

    /// Detaches the filesystem, ends the FUSE session, saves the cache image. A busy
    /// filesystem stays mounted and served, and the error says so.
    pub fn unmount(&mut self) -> Result<()> {
        self.take_down()
    }

    fn take_down(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let detached = match &self.record.attached {
            Some(a) => attach::detach(
                &self.record.path,
                a,
                &self.record.fuse_dir.join(fuse::FILE_NAME),
                false,
            ),
            None => Ok(()),
        };
        if let Err(e) = detached {
            // The filesystem is busy: keep serving it rather than pull the file away.
            self.session = Some(session);
            return Err(e);
        }
        drop(session);
        attach::unmount_fuse(&self.record.fuse_dir)?;
        let saved = self.save();
        let _ = std::fs::remove_dir_all(&self.record_dir);
        saved
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.session.is_some() {
            if let Err(e) = self.take_down() {
                eprintln!(
                    "blockcast: warning: taking down {}: {e}",
                    self.record.path.display()
                );
            }
        }
    }
}

/// Takes down the mount at `path` (a mountpoint or an exposing directory): asks its
/// process to stop and, when that process is gone, detaches everything itself.
pub fn unmount(path: &Path, warn: &(dyn Fn(&str) + Send + Sync)) -> Result<()> {
    let Some(record) = read_record(path)? else {
        return Err(Error::Invalid(format!(
            "{} is not mounted by blockcast (no record in {RUN_DIR})",
            path.display()
        )));
    };
    let alive = running(&record);
    if let Some(a) = &record.attached {
        attach::detach(
            &record.path,
            a,
            &record.fuse_dir.join(fuse::FILE_NAME),
            !alive,
        )?;
    }
    if alive && crate::sys::send_signal(record.pid, libc::SIGTERM) {
        let began = Instant::now();
        while running(&record) && began.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running(&record) {
            warn(&format!(
                "process {} did not stop; unmounting its FUSE file anyway",
                record.pid
            ));
        }
    }
    attach::unmount_fuse(&record.fuse_dir)?;
    let dir = record_dir(path);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path: dir, err: e }),
        _ => Ok(()),
    }
}

/// Whether the process that made `record` still runs: the same pid with the same start
/// time, so neither a renamed executable nor a reused pid misleads, and an exited one
/// counts as gone even before its parent reaps it. Records without a start time fall
/// back to the process's name.
fn running(record: &MountRecord) -> bool {
    let pid = record.pid;
    let Some(started) = crate::sys::process_start(pid) else {
        return false;
    };
    match record.started {
        Some(recorded) => started == recorded,
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "blockcast"),
    }
}
