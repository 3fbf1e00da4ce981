//! The FUSE face of a [`LazyImage`]: a read-only directory holding one file, `image`.
//! Callbacks are thin: each read is one call to [`LazyImage::read`], and several
//! session threads serve concurrent readers at once.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    Request,
};

use crate::error::{Error, Result};
use crate::mount::reader::LazyImage;
use crate::store::Warn;

/// The file's name in the FUSE directory.
pub const FILE_NAME: &str = "image";
const FILE_INO: INodeNo = INodeNo(2);
/// Nothing here ever changes.
const TTL: Duration = Duration::from_secs(3600);
/// Session threads: readers served at once.
const THREADS: usize = 8;

pub struct ImageFs {
    image: Arc<LazyImage>,
    created: SystemTime,
    warn: Warn,
}

impl ImageFs {
    pub fn new(image: Arc<LazyImage>, warn: Warn) -> ImageFs {
        ImageFs {
            image,
            created: SystemTime::now(),
            warn,
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o555, 0, 2),
            FILE_INO => (FileType::RegularFile, 0o444, self.image.size(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.attr(FILE_INO) {
            Some(attr) if parent == INodeNo::ROOT && name == FILE_NAME => {
                reply.entry(&TTL, &attr, Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // The kernel may cache what it read: every byte it got was verified, and the
        // image never changes.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        match self.image.read(offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                (self.warn)(&format!("read of {size} bytes at {offset} failed: {e}"));
                reply.error(Errno::from_i32(e.errno()));
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Mounts `fs` on `dir` and serves it from background threads until the session is
/// dropped or unmounted.
pub fn serve(fs: ImageFs, dir: &Path) -> Result<fuser::BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("blockcast".into()),
        MountOption::Subtype("blockcast".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    fuser::spawn_mount(fs, dir, &config).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        err: e,
    })
}
