//! The bytes of an image as the analysers read them. Every read is checked against the
//! image's size before anything is allocated or read, and a file is read with `pread`, not
//! mapped: a file that shrinks under the analysis gives an error, never a SIGBUS.
//!
//! Reads that fit in one aligned block are served from a small cache of such blocks, so
//! the many small field reads of a walk cost a hash lookup, not a system call each.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::LayoutError;
pub use crate::index::format::Field;

/// The file is read in aligned blocks of this size, which the cache keeps.
const BLOCK: u64 = 64 << 10;
/// Blocks the cache keeps at most (16 MiB), the oldest dropped first.
const CACHED_BLOCKS: usize = 256;
/// Stretches checked for zeros are read this much at a time: small enough that the buffer
/// comes from the heap, not from a fresh mapping that faults in on every call.
const SCAN: u64 = 64 << 10;

/// An image to analyse: bytes in memory, or a file read with `pread`.
pub struct Source<'a> {
    backing: Backing<'a>,
    size: u64,
}

enum Backing<'a> {
    Bytes(&'a [u8]),
    File {
        file: &'a File,
        cache: RefCell<Cache>,
    },
}

#[derive(Default)]
struct Cache {
    blocks: HashMap<u64, Arc<Vec<u8>>>,
    /// Block numbers in the order they were read, for eviction.
    order: VecDeque<u64>,
    /// The block read last, checked before the map: walks read one block many times.
    last: Option<(u64, Arc<Vec<u8>>)>,
}

impl<'a> From<&'a [u8]> for Source<'a> {
    fn from(bytes: &'a [u8]) -> Source<'a> {
        Source::bytes(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Source<'a> {
    fn from(bytes: &'a Vec<u8>) -> Source<'a> {
        Source::bytes(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Source<'a> {
    fn from(bytes: &'a [u8; N]) -> Source<'a> {
        Source::bytes(bytes)
    }
}

impl<'a> Source<'a> {
    /// An image held in memory (tests, fuzzing).
    pub fn bytes(bytes: &'a [u8]) -> Source<'a> {
        Source {
            backing: Backing::Bytes(bytes),
            size: bytes.len() as u64,
        }
    }

    /// The first `size` bytes of an open file, read with `pread`. A file shorter than
    /// `size` when a read comes gives an I/O error for that read.
    pub fn file(file: &'a File, size: u64) -> Source<'a> {
        Source {
            backing: Backing::File {
                file,
                cache: RefCell::new(Cache::default()),
            },
            size,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// `[offset, offset + len)` checked against the image; an error names `what`.
    pub(super) fn check(
        &self,
        fs: &'static str,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<(), LayoutError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(LayoutError::new(
                fs,
                offset,
                format!(
                    "{what}: {len} bytes here run past the end of the image ({} bytes)",
                    self.size
                ),
            )),
        }
    }

    /// Reads `[offset, offset + len)`, checked against the image first.
    pub(super) fn read(
        &self,
        fs: &'static str,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<Bytes<'a>, LayoutError> {
        self.check(fs, offset, len, what)?;
        // The image's size bounds `len`; on 32-bit hosts it may still not fit a slice.
        let n = usize::try_from(len).map_err(|_| {
            LayoutError::new(
                fs,
                offset,
                format!("{what}: {len} bytes do not fit in memory"),
            )
        })?;
        let data = match &self.backing {
            Backing::Bytes(bytes) => Data::Borrowed(&bytes[offset as usize..offset as usize + n]),
            Backing::File { file, cache } => {
                let block = offset / BLOCK;
                let within = offset % BLOCK;
                if n == 0 {
                    Data::Borrowed(&[])
                } else if within + len <= BLOCK {
                    let buf = self
                        .block(file, cache, block)
                        .map_err(|e| self.read_error(e, fs, offset, len, what))?;
                    let start = within as usize;
                    Data::Shared {
                        buf,
                        start,
                        end: start + n,
                    }
                } else {
                    let mut buf = vec![0u8; n];
                    pread(file, &mut buf, offset)
                        .map_err(|e| self.read_error(e, fs, offset, len, what))?;
                    Data::Shared {
                        buf: Arc::new(buf),
                        start: 0,
                        end: n,
                    }
                }
            }
        };
        Ok(Bytes {
            fs,
            at: offset,
            data,
        })
    }

    /// Whether `[offset, offset + len)` is all zeros; read a piece at a time, not cached.
    pub(super) fn is_zero(
        &self,
        fs: &'static str,
        offset: u64,
        len: u64,
        what: &str,
    ) -> Result<bool, LayoutError> {
        self.check(fs, offset, len, what)?;
        match &self.backing {
            Backing::Bytes(bytes) => Ok(crate::chunk::is_zero(
                &bytes[offset as usize..(offset + len) as usize],
            )),
            Backing::File { file, .. } => {
                let mut buf = vec![0u8; SCAN.min(len) as usize];
                let mut pos = offset;
                let end = offset + len;
                while pos < end {
                    let n = (end - pos).min(SCAN) as usize;
                    pread(file, &mut buf[..n], pos)
                        .map_err(|e| self.read_error(e, fs, pos, n as u64, what))?;
                    if !crate::chunk::is_zero(&buf[..n]) {
                        return Ok(false);
                    }
                    pos += n as u64;
                }
                Ok(true)
            }
        }
    }

    /// The error for a read of `[offset, offset + len)` that the file did not answer.
    fn read_error(
        &self,
        e: std::io::Error,
        fs: &'static str,
        offset: u64,
        len: u64,
        what: &str,
    ) -> LayoutError {
        let reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "{what}: short read of {len} bytes: the image file is shorter than the {} bytes it had when opened",
                self.size
            )
        } else {
            format!("{what}: reading {len} bytes: {e}")
        };
        LayoutError::io(fs, offset, reason, e.kind())
    }

    /// The cached block `block`, read now if it is not kept.
    fn block(
        &self,
        file: &File,
        cache: &RefCell<Cache>,
        block: u64,
    ) -> std::io::Result<Arc<Vec<u8>>> {
        let mut c = cache.borrow_mut();
        if let Some((b, buf)) = &c.last {
            if *b == block {
                return Ok(buf.clone());
            }
        }
        let buf = match c.blocks.get(&block) {
            Some(buf) => buf.clone(),
            None => {
                let start = block * BLOCK;
                let len = BLOCK.min(self.size - start) as usize;
                let mut buf = vec![0u8; len];
                pread(file, &mut buf, start)?;
                let buf = Arc::new(buf);
                if c.order.len() == CACHED_BLOCKS {
                    if let Some(old) = c.order.pop_front() {
                        c.blocks.remove(&old);
                    }
                }
                c.order.push_back(block);
                c.blocks.insert(block, buf.clone());
                buf
            }
        };
        c.last = Some((block, buf.clone()));
        Ok(buf)
    }
}

fn pread(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(test)]
    hook::before_read(offset, buf.len() as u64);
    file.read_exact_at(buf, offset)
}

/// A field of an on-disk structure: the filesystems' format modules declare each
/// structure as a list of these, read through [`Bytes::get_u32`] and its siblings.
pub(super) const fn field(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

/// Where field `f` of a structure at `base` is in the image, for errors.
pub(super) fn field_at(base: u64, f: &Field) -> u64 {
    base.saturating_add(f.offset as u64)
}

/// Whether `fields`, in order, cover a `size`-byte structure: each field starts where the
/// ones before end, or lies within them (another member of a union).
pub(super) const fn tiles(fields: &[&Field], size: usize) -> bool {
    let mut end = 0;
    let mut start = 0;
    let mut i = 0;
    while i < fields.len() {
        let f = fields[i];
        let f_end = f.offset + f.size;
        if f.size == 0 || f.offset < start || (f.offset != end && f_end > end) {
            return false;
        }
        if f_end > end {
            end = f_end;
        }
        start = f.offset;
        i += 1;
    }
    end == size
}

/// A checked stretch of the image; every read inside it is checked again.
#[derive(Clone)]
pub(super) struct Bytes<'a> {
    fs: &'static str,
    /// Offset of the first byte in the image, for errors.
    at: u64,
    data: Data<'a>,
}

#[derive(Clone)]
enum Data<'a> {
    Borrowed(&'a [u8]),
    Shared {
        buf: Arc<Vec<u8>>,
        start: usize,
        end: usize,
    },
}

impl Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.data {
            Data::Borrowed(b) => b,
            Data::Shared { buf, start, end } => &buf[*start..*end],
        }
    }
}

impl<'a> Bytes<'a> {
    /// Bytes decoded from the image (a directory's content, say), read like the image's
    /// own; errors name `at`, where they came from.
    pub(super) fn decoded(fs: &'static str, at: u64, bytes: &'a [u8]) -> Bytes<'a> {
        Bytes {
            fs,
            at,
            data: Data::Borrowed(bytes),
        }
    }

    /// Where these bytes are in the image.
    pub(super) fn at(&self) -> u64 {
        self.at
    }

    pub(super) fn sub(&self, off: usize, len: usize) -> Result<Bytes<'a>, LayoutError> {
        let end = off.checked_add(len).filter(|&end| end <= self.len());
        let Some(end) = end else {
            return Err(LayoutError::new(
                self.fs,
                self.at.saturating_add(off as u64),
                format!(
                    "{len} bytes here run past the {} bytes read at {}",
                    self.len(),
                    self.at
                ),
            ));
        };
        let data = match &self.data {
            Data::Borrowed(b) => Data::Borrowed(&b[off..end]),
            Data::Shared { buf, start, .. } => Data::Shared {
                buf: buf.clone(),
                start: start + off,
                end: start + end,
            },
        };
        Ok(Bytes {
            fs: self.fs,
            at: self.at + off as u64,
            data,
        })
    }

    pub(super) fn array<const N: usize>(&self, off: usize) -> Result<[u8; N], LayoutError> {
        match off.checked_add(N).and_then(|end| self.get(off..end)) {
            Some(b) => {
                let mut a = [0u8; N];
                a.copy_from_slice(b);
                Ok(a)
            }
            None => Err(LayoutError::new(
                self.fs,
                self.at.saturating_add(off as u64),
                format!(
                    "a {N}-byte field here runs past the {} bytes read at {}",
                    self.len(),
                    self.at
                ),
            )),
        }
    }

    /// A little-endian field of a structure these bytes start with.
    pub(super) fn get_u8(&self, f: &Field) -> Result<u8, LayoutError> {
        debug_assert_eq!(f.size, 1, "{}", f.name);
        self.u8(f.offset)
    }

    pub(super) fn get_u16(&self, f: &Field) -> Result<u16, LayoutError> {
        debug_assert_eq!(f.size, 2, "{}", f.name);
        self.u16(f.offset)
    }

    pub(super) fn get_u32(&self, f: &Field) -> Result<u32, LayoutError> {
        debug_assert_eq!(f.size, 4, "{}", f.name);
        self.u32(f.offset)
    }

    pub(super) fn get_u64(&self, f: &Field) -> Result<u64, LayoutError> {
        debug_assert_eq!(f.size, 8, "{}", f.name);
        self.u64(f.offset)
    }

    /// Element `i` of a field that is an array of little-endian 32-bit words.
    pub(super) fn get_u32_item(&self, f: &Field, i: usize) -> Result<u32, LayoutError> {
        debug_assert!(
            f.size.is_multiple_of(4) && i < f.size / 4,
            "{}[{i}]",
            f.name
        );
        self.u32(f.offset + 4 * i)
    }

    pub(super) fn u8(&self, off: usize) -> Result<u8, LayoutError> {
        Ok(self.array::<1>(off)?[0])
    }

    pub(super) fn u16(&self, off: usize) -> Result<u16, LayoutError> {
        Ok(u16::from_le_bytes(self.array(off)?))
    }

    pub(super) fn u32(&self, off: usize) -> Result<u32, LayoutError> {
        Ok(u32::from_le_bytes(self.array(off)?))
    }

    pub(super) fn u64(&self, off: usize) -> Result<u64, LayoutError> {
        Ok(u64::from_le_bytes(self.array(off)?))
    }
}

/// A test-only hook run before every `pread` of the calling thread, so that a test can
/// change the file (truncate it) at an exact point of an analysis.
#[cfg(test)]
pub(super) mod hook {
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut(u64, u64)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `f(offset, len)` before each read of this thread until `clear`.
    pub(crate) fn set(f: impl FnMut(u64, u64) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(crate) fn clear() {
        HOOK.with(|h| *h.borrow_mut() = None);
    }

    pub(super) fn before_read(offset: u64, len: u64) {
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(offset, len);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    /// Counts this thread's preads until dropped.
    struct Count(std::rc::Rc<std::cell::Cell<u32>>);

    impl Count {
        fn start() -> Count {
            let n = std::rc::Rc::new(std::cell::Cell::new(0));
            let seen = n.clone();
            hook::set(move |_, _| seen.set(seen.get() + 1));
            Count(n)
        }
    }

    impl Drop for Count {
        fn drop(&mut self) {
            hook::clear();
        }
    }

    #[test]
    fn tiles_wants_every_byte_covered_once_but_for_unions() {
        let (a, b, c) = (field("a", 0, 4), field("b", 4, 4), field("c", 4, 2));
        assert!(tiles(&[&a, &b], 8));
        assert!(tiles(&[&a, &b, &c], 8), "c is a union member of b");
        assert!(!tiles(&[&a, &b], 9), "short of the size");
        assert!(!tiles(&[&a, &field("gap", 5, 3)], 8));
        assert!(!tiles(&[&a, &field("across", 2, 4)], 6));
        assert!(!tiles(&[&b, &a], 8), "out of order");
    }

    #[test]
    fn out_of_bounds_reads_name_the_offset_and_what() {
        let bytes = noise(5000);
        let f = file_of(&bytes);
        let file = Source::file(f.as_file(), 5000);
        for src in [Source::bytes(&bytes), file] {
            let e = src.read("test", 4990, 16, "a widget").err().unwrap();
            assert_eq!(e.offset, 4990);
            assert!(e.reason.contains("a widget"), "{e}");
            assert!(e.io.is_none());
            let e = src.read("test", u64::MAX - 2, 8, "a gadget").err().unwrap();
            assert_eq!(e.offset, u64::MAX - 2);
            assert!(e.reason.contains("a gadget"), "{e}");
            assert!(src.check("test", 4000, 1001, "x").is_err());
            assert!(src.is_zero("test", 4000, 1001, "x").is_err());

            let b = src.read("test", 4000, 100, "a record").unwrap();
            assert_eq!(b.at(), 4000);
            assert_eq!(
                b.u32(96).unwrap(),
                u32::from_le_bytes(bytes[4096..4100].try_into().unwrap())
            );
            assert_eq!(b.u32(97).err().unwrap().offset, 4097);
            assert_eq!(b.u64(usize::MAX).err().unwrap().offset, u64::MAX);
            assert_eq!(b.sub(90, 11).err().unwrap().offset, 4090);
            let s = b.sub(10, 20).unwrap();
            assert_eq!((s.at(), &*s), (4010, &bytes[4010..4030]));
            assert_eq!(s.sub(20, 1).err().unwrap().offset, 4030);
        }
    }

    #[test]
    fn file_reads_match_the_bytes() {
        let mut bytes = noise(3 * BLOCK as usize + 1234);
        bytes[BLOCK as usize..2 * BLOCK as usize].fill(0);
        let f = file_of(&bytes);
        let file = Source::file(f.as_file(), bytes.len() as u64);
        let size = bytes.len() as u64;
        for (offset, len) in [
            (0, 0),
            (0, 1),
            (17, 4096),
            (BLOCK - 3, 6),
            (BLOCK - 3, 3),
            (BLOCK, BLOCK),
            (100, 2 * BLOCK + 7),
            (size - 1, 1),
            (size - 1234, 1234),
            (size, 0),
            (0, size),
        ] {
            let got = file.read("test", offset, len, "bytes").unwrap();
            assert_eq!(&*got, &bytes[offset as usize..(offset + len) as usize]);
            assert_eq!(
                file.is_zero("test", offset, len, "bytes").unwrap(),
                crate::chunk::is_zero(&got),
                "{offset}+{len}"
            );
        }
        assert!(file.is_zero("test", BLOCK, BLOCK, "zeros").unwrap());
    }

    #[test]
    fn small_reads_of_one_block_read_the_file_once() {
        let bytes = noise(2 * BLOCK as usize);
        let f = file_of(&bytes);
        let src = Source::file(f.as_file(), bytes.len() as u64);
        let count = Count::start();
        for off in (0..BLOCK - 8).step_by(13) {
            src.read("test", off, 8, "field").unwrap();
        }
        assert_eq!(count.0.get(), 1);
        src.read("test", BLOCK + 5, 8, "field").unwrap();
        src.read("test", 5, 8, "field").unwrap();
        assert_eq!(count.0.get(), 2);
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_blocks() {
        let blocks = CACHED_BLOCKS as u64 + 10;
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(blocks * BLOCK).unwrap();
        let src = Source::file(f.as_file(), blocks * BLOCK);
        for b in 0..blocks {
            src.read("test", b * BLOCK, 4, "field").unwrap();
        }
        let Backing::File { cache, .. } = &src.backing else {
            unreachable!()
        };
        let c = cache.borrow();
        assert_eq!(c.blocks.len(), CACHED_BLOCKS);
        assert_eq!(c.order.len(), CACHED_BLOCKS);
        assert!(!c.blocks.contains_key(&0));
    }

    #[test]
    fn a_file_that_shrank_gives_an_io_error_naming_the_offset() {
        let bytes = noise(4 * BLOCK as usize);
        let f = file_of(&bytes);
        let src = Source::file(f.as_file(), bytes.len() as u64);
        src.read("test", 10, 4, "field").unwrap();
        f.as_file().set_len(BLOCK + 100).unwrap();
        // Kept from before the file shrank.
        src.read("test", 20, 4, "field").unwrap();
        for (offset, len) in [
            (2 * BLOCK + 4, 4),
            (BLOCK + 50, 100),
            (BLOCK - 10, 3 * BLOCK),
        ] {
            let e = src.read("test", offset, len, "a field").err().unwrap();
            assert_eq!(e.io, Some(std::io::ErrorKind::UnexpectedEof), "{e}");
            assert_eq!(e.offset, offset);
            assert!(
                e.reason.contains("a field") && e.reason.contains("shorter"),
                "{e}"
            );
        }
        let e = src
            .is_zero("test", BLOCK + 200, 2 * BLOCK, "a gap")
            .err()
            .unwrap();
        assert_eq!(e.io, Some(std::io::ErrorKind::UnexpectedEof), "{e}");
    }
}
