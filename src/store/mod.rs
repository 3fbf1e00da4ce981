//! Chunk stores: where chunk files live, addressed by chunk id.

pub mod codec;
pub mod local;

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::error::{Error, Result};
use crate::index::{stored_size_bound, ChunkRecord};

pub use local::LocalStore;

pub trait ChunkStore: Send + Sync {
    /// The stored (compressed) bytes of a chunk, or `None` when the store lacks it. A chunk
    /// file longer than `max_len` is an error, never a large allocation.
    fn get(&self, id: &ChunkId, max_len: u64) -> Result<Option<Vec<u8>>>;
    fn has(&self, id: &ChunkId) -> Result<bool>;
    /// Names the store in messages.
    fn describe(&self) -> String;
}

/// Fetches a chunk from the first store that has a good copy. A corrupt copy is reported
/// and the next store is tried; the last failure is returned when none has it.
pub fn fetch_verified(
    stores: &[Box<dyn ChunkStore>],
    record: &ChunkRecord,
    on_bad: &dyn Fn(&Error),
) -> Result<VerifiedChunk> {
    let mut failure = Error::MissingChunk {
        id: record.id,
        offset: record.offset,
    };
    for store in stores {
        let attempt = store
            .get(&record.id, stored_size_bound(record.size))
            .and_then(|stored| match stored {
                None => Ok(None),
                Some(stored) => {
                    let data = codec::decompress(&stored, record.size, record.id, record.offset)?;
                    VerifiedChunk::verify(record.id, record.offset, data).map(Some)
                }
            });
        match attempt {
            Ok(Some(chunk)) => return Ok(chunk),
            Ok(None) => {}
            Err(e) => {
                let e = in_store(e, store.as_ref(), record.offset);
                on_bad(&e);
                failure = e;
            }
        }
    }
    Err(failure)
}

fn in_store(e: Error, store: &dyn ChunkStore, offset: u64) -> Error {
    match e {
        Error::BadChunk { id, reason, .. } => Error::BadChunk {
            id,
            offset,
            reason: format!("{reason} (in store {})", store.describe()),
        },
        other => other,
    }
}
