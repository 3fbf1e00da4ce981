//! `--cache-image FILE`: a sparse copy of the image, filled as chunks are read, with a
//! state file (`FILE.state`) recording which chunks it holds. The next mount of the same
//! index starts from it; once every chunk has been read, FILE is the whole image and
//! mounts without blockcast (a chunk skipped while the writer was behind, see
//! `QUEUED_BYTES`, is written when next fetched).
//!
//! The state is only a hint of where to look: every block read from FILE is checked
//! against the hash tree like any other, so a torn write or a stale state costs a
//! re-fetch, never a wrong byte.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::chunk::VerifiedChunk;
use crate::durable;
use crate::error::{IoContext, Result};
use crate::index::Index;
use crate::store::Warn;

const MAGIC: &[u8; 8] = b"BCCACHE1";
/// Magic, index digest, record count.
const HEADER: usize = 8 + 32 + 8;

pub struct CacheImage {
    inner: Arc<Inner>,
    /// Writes go to a thread of their own, off the path of the read that fetched them.
    queue: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    warn: Warn,
    /// Whether a write was skipped for the writer being behind (and that was logged).
    behind: AtomicBool,
}

enum Job {
    Put {
        record: usize,
        offset: u64,
        chunk: Arc<VerifiedChunk>,
    },
    Flush(std::sync::mpsc::Sender<()>),
}

/// Bytes of chunks waiting to be written at most. Fetches hand chunks over from the
/// fetch runtime's workers and must never wait for the cache image's disk: a chunk that
/// would take the queue past this is not written, so not held, and costs only a fetch
/// again when it is next read.
const QUEUED_BYTES: u64 = 32 << 20;

struct Inner {
    path: PathBuf,
    state_path: PathBuf,
    file: File,
    /// Ties the state to one index: its whole-file digest.
    digest: [u8; 32],
    records: usize,
    held: Vec<AtomicU64>,
    dirty: AtomicBool,
    /// Bytes of the chunks queued and not yet written.
    queued: AtomicU64,
    /// Run by the writer before each chunk it writes.
    #[cfg(test)]
    before_write: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl CacheImage {
    /// Opens or creates the cache image for `index`. A state written for another index is
    /// discarded, and the image emptied.
    pub fn open(path: &Path, index: &Index, warn: Warn) -> Result<CacheImage> {
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
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            state_path,
            file,
            digest,
            records,
            held,
            dirty: AtomicBool::new(!reused),
            queued: AtomicU64::new(0),
            #[cfg(test)]
            before_write: Mutex::new(None),
        });
        for (i, r) in index.records().enumerate() {
            if r.is_zero() {
                inner.mark(i);
            }
        }
        let (queue, jobs) = std::sync::mpsc::channel();
        let worker = inner.clone();
        let writer_warn = warn.clone();
        let writer = std::thread::Builder::new()
            .name("blockcast-cache".into())
            .spawn(move || {
                for job in jobs {
                    match job {
                        Job::Put {
                            record,
                            offset,
                            chunk,
                        } => {
                            #[cfg(test)]
                            if let Some(hook) = worker.before_write.lock().unwrap().as_mut() {
                                hook();
                            }
                            if let Err(e) = worker.put(record, offset, chunk.data()) {
                                writer_warn(&format!(
                                    "{e}; the chunk is not kept in the cache image"
                                ));
                            }
                            worker
                                .queued
                                .fetch_sub(chunk.data().len() as u64, Ordering::Relaxed);
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .at(path)?;
        Ok(CacheImage {
            inner,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            warn,
            behind: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn holds(&self, record: usize) -> bool {
        self.inner.holds(record)
    }

    pub fn forget(&self, record: usize) {
        self.inner.forget(record)
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read(offset, buf)
    }

    /// Queues a verified chunk's bytes for their place in the image, or skips them when
    /// the writer is too far behind (see `QUEUED_BYTES`); never waits. The chunk
    /// counts as held once written.
    pub fn put(&self, record: usize, offset: u64, chunk: Arc<VerifiedChunk>) {
        let size = chunk.data().len() as u64;
        let queued = &self.inner.queued;
        if queued.fetch_add(size, Ordering::Relaxed) + size > QUEUED_BYTES {
            queued.fetch_sub(size, Ordering::Relaxed);
            if !self.behind.swap(true, Ordering::Relaxed) {
                (self.warn)(&format!(
                    "writes to the cache image {} are behind; chunks not written to it are fetched again when next read (further skips are not logged)",
                    self.inner.path.display()
                ));
            }
            return;
        }
        let job = Job::Put {
            record,
            offset,
            chunk,
        };
        if !self.send(job) {
            queued.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Waits for the queued writes, then makes the image durable and saves its state.
    pub fn save(&self) -> Result<()> {
        let (done, finished) = std::sync::mpsc::channel();
        if self.send(Job::Flush(done)) {
            let _ = finished.recv();
        }
        self.inner.save()
    }

    /// Hands `job` to the writer, without holding the lock while sending; false once the
    /// writer is gone.
    fn send(&self, job: Job) -> bool {
        let queue = self.queue.lock().ok().and_then(|q| q.clone());
        queue.is_some_and(|q| q.send(job).is_ok())
    }
}

impl Drop for CacheImage {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

impl Inner {
    fn holds(&self, record: usize) -> bool {
        self.held[record / 64].load(Ordering::Relaxed) & (1 << (record % 64)) != 0
    }

    fn mark(&self, record: usize) {
        self.held[record / 64].fetch_or(1 << (record % 64), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Forgets a chunk whose bytes in the file failed verification.
    fn forget(&self, record: usize) {
        self.held[record / 64].fetch_and(!(1 << (record % 64)), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    fn put(&self, record: usize, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).at(&self.path)?;
        self.mark(record);
        Ok(())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("reading {} bytes at offset {offset}: {e}", buf.len()),
                )
            })
            .at(&self.path)
    }

    /// Makes the image's bytes durable, then the state that describes them.
    fn save(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::chunk::ChunkId;
    use crate::mount::reader::tests::sample;

    #[test]
    fn a_blocked_writer_never_holds_up_a_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let (_, index, _) = sample(dir.path());
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let log = warnings.clone();
        let warn: Warn = Arc::new(move |m: &str| log.lock().unwrap().push(m.to_string()));
        let cache =
            Arc::new(CacheImage::open(&dir.path().join("cache.img"), &index, warn).unwrap());
        let (open_gate, gate) = mpsc::channel::<()>();
        *cache.inner.before_write.lock().unwrap() = Some(Box::new(move || {
            let _ = gate.recv();
        }));
        let data = vec![1u8; 1 << 20];
        let chunk = Arc::new(VerifiedChunk::verify(ChunkId::of(&data), 0, data).unwrap());
        // Far more than the queue takes, in chunks and in bytes, from a fetch's thread.
        let (done, finished) = mpsc::channel();
        let putter = cache.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                putter.put(0, 0, chunk.clone());
            }
            putter.put(1, 0, chunk);
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a fetch waited for the blocked writer");
        let warned = warnings.lock().unwrap().clone();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("are behind"), "{warned:?}");

        drop(open_gate);
        cache.save().unwrap();
        // The first chunk was written; the one that came when the queue was full was not.
        assert!(cache.holds(0));
        assert!(!cache.holds(1));
        assert_eq!(cache.inner.queued.load(Ordering::Relaxed), 0);
    }
}
