//! Files that appear whole or not at all: write a temporary sibling, fsync, rename, fsync
//! the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A hidden sibling of `path` with the given suffix, in the same directory so that a
/// rename onto `path` is atomic.
pub fn sibling(path: &Path, suffix: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(suffix);
    Ok(path.with_file_name(hidden))
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let new = NewFile::create(path)?;
    let mut file = new.file();
    file.write_all(bytes).at(new.temp())?;
    new.commit()
}

/// A file being written under a temporary sibling name: it takes `path`'s name only
/// when committed, and is removed if dropped before.
pub struct NewFile {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl NewFile {
    pub fn create(path: &Path) -> Result<NewFile> {
        let temp = sibling(path, &format!(".{}.tmp", std::process::id()))?;
        Ok(NewFile {
            file: File::create(&temp).at(&temp)?,
            temp,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temporary name, for messages about writes to it.
    pub fn temp(&self) -> &Path {
        &self.temp
    }

    /// Makes the file durable and gives it its name.
    pub fn commit(mut self) -> Result<()> {
        self.file.sync_all().at(&self.temp)?;
        rename(&self.temp, &self.path)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Renames and makes the rename durable.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).at(to)?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
