//! Opening a requested file without leaving the served directory: every component is
//! opened relative to the one before with `O_NOFOLLOW`, so no symlink is ever followed
//! (not even one pointing inside), and the file itself with `O_NONBLOCK`, so a FIFO
//! answers at once instead of waiting for a writer; only a regular file is kept.

use std::ffi::OsStr;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a request names no file that may be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Missing, or not a regular file reached without symlinks: answered 404.
    NotFound,
    /// There, but the server may not read it: answered 403.
    Unreadable,
}

/// Opens `relative` (plain, non-hidden names only, as `super::local_path` gives) under
/// `root`.
pub fn open_beneath(root: &Path, relative: &Path) -> Result<File, Refused> {
    let names: Vec<&OsStr> = relative
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Refused::NotFound),
        })
        .collect::<Result<_, _>>()?;
    let (last, dirs) = names.split_last().ok_or(Refused::NotFound)?;
    let mut dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(refusal)?;
    for name in dirs {
        // On a symlink, O_NOFOLLOW with O_DIRECTORY fails with ENOTDIR.
        dir = rustix::fs::openat(
            &dir,
            *name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(refusal)?;
    }
    let fd = rustix::fs::openat(
        &dir,
        *last,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(refusal)?;
    let stat = rustix::fs::fstat(&fd).map_err(refusal)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Refused::NotFound);
    }
    // Local filesystems ignore O_NONBLOCK on regular files, but FUSE passes it on to
    // its daemon: drop it now that the type is known.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(refusal)?;
    Ok(File::from(fd))
}

fn refusal(e: Errno) -> Refused {
    match e {
        // ELOOP: the last component is a symlink; ENXIO: a socket; ENOTDIR: a component
        // that should be a directory is a file or a symlink.
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NXIO => Refused::NotFound,
        _ if std::io::Error::from(e).kind() == ErrorKind::NotFound => Refused::NotFound,
        _ => Refused::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(root: &Path, rel: &str) -> Result<String, Refused> {
        let mut s = String::new();
        open_beneath(root, Path::new(rel))?
            .read_to_string(&mut s)
            .expect("read");
        Ok(s)
    }

    #[test]
    fn only_regular_files_reached_without_symlinks_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("store/ab12")).unwrap();
        std::fs::write(root.join("store/ab12/ab12.cacnk"), "chunk").unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        symlink("../../secret", root.join("store/evil.cacnk")).unwrap();
        symlink(dir.path(), root.join("out")).unwrap();
        symlink("ab12/ab12.cacnk", root.join("store/inside.cacnk")).unwrap();
        symlink("ab12", root.join("store/linked")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo"), Mode::RUSR | Mode::WUSR).unwrap();
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();

        assert_eq!(read(&root, "store/ab12/ab12.cacnk"), Ok("chunk".into()));
        for refused in [
            "store/evil.cacnk",
            "out/secret",
            "store/inside.cacnk",
            "store/linked/ab12.cacnk",
            "fifo",
            "sock",
            "store",
            "store/ab12/ab12.cacnk/x",
            "missing",
        ] {
            assert_eq!(read(&root, refused), Err(Refused::NotFound), "{refused}");
        }
    }
}
