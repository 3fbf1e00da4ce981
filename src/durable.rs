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
    let temp = sibling(path, &format!(".{}.tmp", std::process::id()))?;
    let result = (|| {
        let mut f = File::create(&temp).at(&temp)?;
        f.write_all(bytes).at(&temp)?;
        f.sync_all().at(&temp)?;
        rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
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
