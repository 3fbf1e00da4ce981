//! The earlier releases deltas are made against, as images: the publisher's own copy
//! (`make --delta-from-image`), whose every chunk is checked against its id when it is
//! read, or one rebuilt from the store into an unnamed temporary file, from chunk files
//! checked as they are decompressed.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::chunk::ChunkId;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::index::{ChunkRecord, Index};
use crate::layout::{self, FileMap, Piece};
use crate::store::{self, LocalStore};

/// Where a file's stored bytes lie in an image: (offset in the file, offset in the image,
/// length), sorted by offset in the file.
pub type Placed = Vec<(u64, u64, u64)>;

/// The stored (uncompressed, not sparse) stretches of each file, by path.
pub fn placed_files(files: &[FileMap]) -> HashMap<&str, Placed> {
    files
        .iter()
        .map(|f| {
            let mut at = 0u64;
            let mut placed = Vec::new();
            for p in &f.pieces {
                let len = match *p {
                    Piece::Plain { offset, len } => {
                        placed.push((at, offset, len));
                        len
                    }
                    Piece::Zero { len } => len,
                    Piece::Compressed { take, .. } => take,
                };
                at += len;
            }
            (f.path.as_str(), placed)
        })
        .collect()
}

/// Where byte `at` of a file placed as `placed` lies in the image: the stretch holding it,
/// else the end of the last stretch before it (a file that grew resembles its old end).
pub fn image_offset(placed: &Placed, at: u64) -> Option<u64> {
    let i = placed.partition_point(|&(file_at, _, _)| file_at <= at);
    let &(file_at, image_at, len) = placed.get(i.checked_sub(1)?)?;
    Some(image_at + (at - file_at).min(len.saturating_sub(1)))
}

/// An earlier release: its index and its image.
pub struct Earlier {
    pub index: Index,
    pub image: Image,
    /// Its filesystem's files (none when it cannot be analysed).
    pub files: Vec<FileMap>,
    /// Whether its chunks must be checked as they are read: those of an image rebuilt
    /// here were checked as they were written.
    check: bool,
}

impl Earlier {
    /// The release of `index`, its image read from `image` when given, else rebuilt from
    /// `store`.
    pub fn open(index: Index, image: Option<&Path>, store: &LocalStore) -> Result<Earlier> {
        let check = image.is_some();
        let image = match image {
            Some(path) => {
                let image = Image::open(path)?;
                if image.size() != index.header().image_size {
                    return Err(Error::Invalid(format!(
                        "{} has {} bytes, but the release {} describes has {}",
                        path.display(),
                        image.size(),
                        index.path().display(),
                        index.header().image_size
                    )));
                }
                image
            }
            None => rebuild(&index, store)?,
        };
        let files = layout::analyse(layout::Source::file(image.file(), image.size()))
            .map(|a| a.files)
            .unwrap_or_default();
        Ok(Earlier {
            index,
            image,
            files,
            check,
        })
    }

    /// Record `r`'s bytes, checked against its id when the image was given.
    pub fn read(&self, r: &ChunkRecord) -> Result<Vec<u8>> {
        let data = self.image.read_at(r.offset, r.size as usize)?;
        if self.check && ChunkId::of(&data) != r.id {
            return Err(Error::Integrity(format!(
                "{} does not hold the release {} describes: the chunk at offset {} is not {}",
                self.image.path().display(),
                self.index.path().display(),
                r.offset,
                r.id
            )));
        }
        Ok(data)
    }

    /// The record holding image byte `offset`, unless it is all zero.
    pub fn record_at(&self, offset: u64) -> Option<ChunkRecord> {
        let r = self.index.record(self.index.find(offset)?);
        (!r.is_zero()).then_some(r)
    }
}

/// The image `index` describes, rebuilt from the chunk files in `store` into an unnamed
/// temporary file beside it (zero records left as holes).
fn rebuild(index: &Index, store: &LocalStore) -> Result<Image> {
    let dir = store.dir();
    let file = tempfile::tempfile_in(dir).at(dir)?;
    file.set_len(index.header().image_size).at(dir)?;
    let mut units: HashMap<ChunkId, Vec<ChunkRecord>> = HashMap::new();
    let mut order = Vec::new();
    for r in index.records().filter(|r| !r.is_zero()) {
        let unit = r.unit();
        let records = units.entry(unit.id).or_default();
        if records.is_empty() {
            order.push(unit);
        }
        records.push(r);
    }
    order.par_iter().try_for_each(|unit| -> Result<()> {
        let chunk = store::read_local(store, unit)?.ok_or(Error::MissingChunk {
            id: unit.id,
            offset: unit.offset,
        })?;
        for r in &units[&unit.id] {
            file.write_all_at(r.take_from(&chunk)?.data(), r.offset)
                .at(dir)?;
        }
        Ok(())
    })?;
    Image::from_file(&dir.join("rebuilt earlier release"), file)
}
