//! The library's one error type. Every variant names the file, chunk or offset at fault.

use std::path::{Path, PathBuf};

use crate::chunk::ChunkId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message, not a separate source, so that it is printed once.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("index {path}: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("chunk {id} (image offset {offset}): {reason}")]
    BadChunk {
        id: ChunkId,
        offset: u64,
        reason: String,
    },
    #[error("chunk {id} (image offset {offset}) is not in any store or seed")]
    MissingChunk { id: ChunkId, offset: u64 },
    #[error("{url}: {reason}")]
    Remote { url: String, reason: String },
    #[error("chunk {id} (image offset {offset}) could not be fetched: {reason}")]
    Unavailable {
        id: ChunkId,
        offset: u64,
        reason: String,
    },
    /// Data that fails its check against what the index vouches for (a hash tree that
    /// does not hash to the root, an image whose root differs).
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// An index refused by the trust policy: unsigned, signed by no trusted key, or a
    /// rollback.
    #[error("{0}")]
    Untrusted(String),
    /// Input blockcast understands but cannot handle (a filesystem it cannot read, a kind
    /// it cannot mount).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A failure of blockcast itself (a worker that panicked, a broken invariant).
    #[error("internal error: {0}")]
    Internal(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Another process holds what was asked for (a store being pruned or published to).
    #[error("busy: {0}")]
    Busy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|err| Error::Io {
            path: path.to_path_buf(),
            err,
        })
    }
}

impl Error {
    /// The errno a filesystem call answers with for this error: the I/O error's own, else
    /// EIO (bad or missing data is an I/O error to a reader).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { err, .. } => err.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}
