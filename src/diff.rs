//! What a new index shares with an old one and what an update to it must fetch; given
//! the new image, what kinds of filesystem region the new chunks hold.

use std::collections::HashSet;

use serde::Serialize;

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::index::{ChunkRecord, Index};
use crate::layout::{self, Kind, Region};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Side {
    pub chunks: u64,
    pub bytes: u64,
    /// Bytes of the chunk files that hold these chunks: a gathered chunk counts once, on
    /// the new side when any of its parts is new.
    pub stored_bytes: u64,
}

impl Side {
    fn add(&mut self, size: u32) {
        self.chunks += 1;
        self.bytes += u64::from(size);
    }
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub new_image_size: u64,
    /// Distinct data chunks of the new index also in the old one.
    pub shared: Side,
    /// Distinct data chunks only in the new index: what an update from the old fetches.
    pub new: Side,
    /// Bytes of all-zero records, never fetched.
    pub zero_bytes: u64,
    /// The new chunks by the kind of region they hold, when the new image was given.
    pub new_by_region: Option<ByRegion>,
}

/// New chunks attributed to the regions of the new image's layout. A chunk counts under
/// a kind when all its bytes are of that kind, under `mixed` otherwise; bytes always
/// count under their own kind.
#[derive(Debug, Default, Serialize)]
pub struct ByRegion {
    pub metadata: Tally,
    /// Uncompressed file data.
    pub data: Tally,
    /// Compression units of one file.
    pub compressed: Tally,
    /// Compression units shared by several files (squashfs fragment blocks).
    pub shared_units: Tally,
    pub free: Tally,
    /// Chunks holding more than one kind.
    pub mixed_chunks: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub chunks: u64,
    pub bytes: u64,
}

/// Which tally of [`ByRegion`] a region counts under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Metadata,
    Data,
    Compressed,
    SharedUnits,
    Free,
}

impl Slot {
    fn of(r: &Region) -> Slot {
        match (r.kind, r.file) {
            (Kind::Metadata, _) => Slot::Metadata,
            (Kind::Data, _) => Slot::Data,
            (Kind::Compressed, Some(_)) => Slot::Compressed,
            (Kind::Compressed, None) => Slot::SharedUnits,
            (Kind::Free, _) => Slot::Free,
        }
    }
}

impl ByRegion {
    fn tally(&mut self, slot: Slot) -> &mut Tally {
        match slot {
            Slot::Metadata => &mut self.metadata,
            Slot::Data => &mut self.data,
            Slot::Compressed => &mut self.compressed,
            Slot::SharedUnits => &mut self.shared_units,
            Slot::Free => &mut self.free,
        }
    }
}

/// Compares `new` with `old`; with `image`, the file `new` was made from, also attributes
/// the new chunks to its regions.
pub fn compare(old: &Index, new: &Index, image: Option<&Image>) -> Result<Diff> {
    let old_ids: HashSet<ChunkId> = old
        .records()
        .filter(|r| !r.is_zero())
        .map(|r| r.id)
        .collect();
    let mut seen = HashSet::new();
    let mut d = Diff {
        new_image_size: new.header().image_size,
        shared: Side::default(),
        new: Side::default(),
        zero_bytes: 0,
        new_by_region: None,
    };
    let mut fresh = Vec::new();
    for r in new.records() {
        if r.is_zero() {
            d.zero_bytes += u64::from(r.size);
        } else if seen.insert(r.id) {
            if old_ids.contains(&r.id) {
                d.shared.add(r.size);
            } else {
                d.new.add(r.size);
                fresh.push(r);
            }
        }
    }
    let fetched: HashSet<ChunkId> = fresh.iter().map(|r| r.unit().id).collect();
    let mut files = HashSet::new();
    for r in new.records().filter(|r| !r.is_zero()) {
        let unit = r.unit();
        if files.insert(unit.id) {
            let side = if fetched.contains(&unit.id) {
                &mut d.new
            } else {
                &mut d.shared
            };
            side.stored_bytes += u64::from(unit.stored_size);
        }
    }
    if let Some(image) = image {
        d.new_by_region = Some(attribute(new, image, &fresh)?);
    }
    Ok(d)
}

/// Attributes `records` (in image order) to the regions of `image`, after checking that
/// their bytes there are the chunks the index names.
fn attribute(index: &Index, image: &Image, records: &[ChunkRecord]) -> Result<ByRegion> {
    let path = image.path().display();
    if image.size() != index.header().image_size {
        return Err(Error::Invalid(format!(
            "{path} is {} bytes; the index describes an image of {}",
            image.size(),
            index.header().image_size
        )));
    }
    for r in records {
        if ChunkId::of(&image.read_at(r.offset, r.size as usize)?) != r.id {
            return Err(Error::Invalid(format!(
                "{path} is not the image the index was made from: its {} bytes at offset {} are not chunk {}",
                r.size, r.offset, r.id
            )));
        }
    }
    let analysis =
        layout::analyse(layout::Source::file(image.file(), image.size())).map_err(|e| {
            e.io_error(image.path()).unwrap_or_else(|| {
                Error::Unsupported(format!("{path}: its filesystem cannot be read ({e})"))
            })
        })?;
    let regions = &analysis.layout.regions;
    let mut out = ByRegion::default();
    let mut first = 0;
    for r in records {
        while first < regions.len() && regions[first].end() <= r.offset {
            first += 1;
        }
        let mut slots = Vec::new();
        for g in regions[first..].iter().take_while(|g| g.offset < r.end()) {
            let slot = Slot::of(g);
            out.tally(slot).bytes += g.end().min(r.end()) - g.offset.max(r.offset);
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        match slots.as_slice() {
            [] => {}
            [only] => out.tally(*only).chunks += 1,
            _ => out.mixed_chunks += 1,
        }
    }
    Ok(out)
}
