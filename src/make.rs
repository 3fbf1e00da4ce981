//! `make`: cut an image into chunks, store each new chunk once, describe it in an index.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use serde::Serialize;

use crate::chunk::{is_zero, ChunkId};
use crate::chunker::{self, ChunkParams, Cuts, ALIGN};
use crate::delta;
use crate::error::{Error, IoContext, Result};
use crate::gather;
use crate::image::Image;
use crate::index::format::TREE_PIECE;
use crate::index::Index;
use crate::index::{self, ChunkRecord, Header, Unit, VerityInfo, MAX_CHUNK};
use crate::layout::{Cutting, FsKind, LayoutSummary};
use crate::pack::{self, Object, PackReport};
use crate::progress::Progress;
use crate::store::codec::{self, Compressor};
use crate::store::lease::Hold;
use crate::store::{LocalStore, Warn};
use crate::verity::{self, VerityParams};

/// Longest run of zero bytes one record describes.
const MAX_ZERO_RUN: u64 = (u32::MAX as u64 / ALIGN) * ALIGN;

#[derive(Clone, Debug)]
pub struct MakeOptions {
    pub params: ChunkParams,
    pub level: i32,
    /// dm-verity salt; derived from the image when absent (see `VerityParams::derive`).
    pub salt: Option<Vec<u8>>,
    /// dm-verity superblock uuid; derived from the salt when absent.
    pub uuid: Option<[u8; 16]>,
    pub release: u64,
    /// Cut along the filesystem's regions when it can be read (else, and when false, the
    /// 4 KiB-aligned content-defined chunker).
    pub filesystem_aware: bool,
    /// Indexes of earlier releases, their chunks in the same store: each new chunk file
    /// also gets a delta against the run of earlier chunks it most resembles (see
    /// [`delta`]).
    pub delta_from: Vec<PathBuf>,
    /// The images of the first `delta_from` releases, in the same order; the others are
    /// rebuilt from the store.
    pub delta_from_image: Vec<PathBuf>,
    /// Put the release's new chunk files and deltas into packs of at most this many
    /// bytes and write its pack map (see [`pack::pack_release`]).
    pub pack: Option<u64>,
}

impl MakeOptions {
    pub fn new(params: ChunkParams) -> MakeOptions {
        MakeOptions {
            params,
            level: codec::DEFAULT_LEVEL,
            salt: None,
            uuid: None,
            release: 0,
            filesystem_aware: true,
            delta_from: Vec::new(),
            delta_from_image: Vec::new(),
            pack: None,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct MakeReport {
    pub image_size: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// Chunks this run wrote to the store (new, or replacing a corrupt file).
    pub written_chunks: u64,
    pub written_bytes: u64,
    /// Chunk files found corrupt and rewritten.
    pub repaired_chunks: u64,
    /// Chunks stored as one file gathered from several small metadata chunks, and how
    /// many such parts they hold.
    pub gathered_chunks: u64,
    pub gathered_parts: u64,
    pub tree_chunks: u64,
    /// Deltas stored against chunks of the `--delta-from` releases, their bytes, and the
    /// bytes of the chunk files they stand in for.
    pub deltas: u64,
    pub delta_bytes: u64,
    pub delta_replaced_bytes: u64,
    pub verity_root: String,
    pub layout: LayoutSummary,
    /// Why the filesystem-aware chunker was not used, when it was asked for.
    pub fallback: Option<String>,
    /// Temporary files of killed writers removed from the directories this run wrote to.
    pub stale_temps_removed: u64,
    /// What `--pack` did, when asked.
    pub pack: Option<PackReport>,
    /// The chunk files this run wrote.
    #[serde(skip)]
    written: HashSet<ChunkId>,
}

impl MakeReport {
    fn count_stored(&mut self, c: &StoredChunk) {
        if c.written {
            self.written.insert(c.id);
            self.written_chunks += 1;
            self.written_bytes += u64::from(c.stored_size);
        }
        self.repaired_chunks += u64::from(c.repaired);
    }
}

/// Chunks `image` into `store` and returns the encoded index, which the store records
/// (`indexes/<digest>.bcidx`). The store is held as a publisher's throughout (see
/// [`crate::store::lease`]): no prune removes what this run finds there and reuses.
pub fn make(
    image: &Path,
    store: &LocalStore,
    opts: &MakeOptions,
    progress: &dyn Progress,
    warn: &Warn,
) -> Result<(Vec<u8>, MakeReport)> {
    let hold = Hold::publish(Arc::new(store.clone()), warn)?;
    let (bytes, report) = make_held(image, store, opts, progress)?;
    crate::prune::releases::record(store, &bytes)?;
    hold.release()?;
    Ok((bytes, report))
}

fn make_held(
    image: &Path,
    store: &LocalStore,
    opts: &MakeOptions,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, MakeReport)> {
    let image = Image::open(image)?;
    progress.start("chunking", image.size());
    let cutting = if opts.filesystem_aware {
        Cutting::Filesystem {
            metadata_apart: true,
        }
    } else {
        Cutting::Aligned
    };
    let cuts = chunker::cut_image(&image, opts.params, cutting, progress)?;
    progress.finish();
    let Some(cap) = opts.pack else {
        return make_with_cuts(&image, &cuts, store, opts, progress);
    };
    // Chunk files the store's packs hold already are not written again.
    let store = store.clone().with_packed(pack::packed_chunks(store)?);
    let (bytes, mut report) = make_with_cuts(&image, &cuts, &store, opts, progress)?;
    let index = Index::from_bytes(Path::new("the new index"), bytes)?;
    let mut written: HashSet<Object> = report.written.iter().map(|&id| Object::Chunk(id)).collect();
    written.extend(pack::objects(&index).1);
    progress.start("packing", 0);
    report.pack = Some(pack::pack_release(&store, &index, &written, cap)?);
    progress.finish();
    Ok((index.into_bytes(), report))
}

fn check_cuts(image: &Image, ends: &[u64]) -> Result<()> {
    let mut prev = 0;
    for &end in ends {
        if end <= prev || end - prev > u64::from(MAX_CHUNK) {
            return Err(Error::Internal(format!(
                "{}: chunk [{prev}, {end}) is empty or larger than {MAX_CHUNK} bytes",
                image.path().display()
            )));
        }
        prev = end;
    }
    if prev != image.size() {
        return Err(Error::Internal(format!(
            "{}: chunks end at {prev}, the image at {}",
            image.path().display(),
            image.size()
        )));
    }
    Ok(())
}

/// Stores one chunk unless the store already holds a good copy; a corrupt copy is replaced.
fn store_chunk(store: &LocalStore, data: &[u8], offset: u64, level: i32) -> Result<StoredChunk> {
    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
    }
    let id = ChunkId::of(data);
    let size = data.len() as u32;
    let existing = store.get_chunk(&id, index::stored_size_bound(size))?;
    let mut repaired = false;
    if let Some(stored) = existing {
        let good =
            codec::decompress(&stored, size, id, offset).is_ok_and(|d| ChunkId::of(&d) == id);
        if good {
            return Ok(StoredChunk {
                id,
                stored_size: stored.len() as u32,
                written: false,
                repaired: false,
            });
        }
        repaired = true;
    }
    let compressed = COMPRESSOR.with(|cell| -> Result<Vec<u8>> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress(data),
            None => Compressor::new(level)?.compress(data),
        }
    })?;
    store.put_chunk(&id, &compressed)?;
    Ok(StoredChunk {
        id,
        stored_size: compressed.len() as u32,
        written: true,
        repaired,
    })
}

struct StoredChunk {
    id: ChunkId,
    stored_size: u32,
    written: bool,
    repaired: bool,
}

enum Stored {
    Zero,
    Chunk(StoredChunk),
    /// Small metadata, to be stored gathered with others.
    Part(ChunkId),
}

/// Stores the chunks ending at `cuts.ends` (any byte offsets, in order, the last at the
/// image size) and returns the encoded index.
pub fn make_with_cuts(
    image: &Image,
    cuts: &Cuts,
    store: &LocalStore,
    opts: &MakeOptions,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, MakeReport)> {
    let ends = &cuts.ends;
    check_cuts(image, ends)?;
    // Opened first, so that a bad --delta-from fails before anything is stored.
    let earlier = opts
        .delta_from
        .iter()
        .map(|p| Index::open(p))
        .collect::<Result<Vec<_>>>()?;
    let head = image.read_at(0, image.size().min(4096) as usize)?;
    let small = gather::small_metadata(cuts, opts.params);
    progress.start("storing", image.size());
    let outcomes = image.par_map_chunks(ends, progress, |offset, data| {
        if is_zero(data) {
            return Ok(Stored::Zero);
        }
        if small.contains(&offset) {
            return Ok(Stored::Part(ChunkId::of(data)));
        }
        store_chunk(store, data, offset, opts.level).map(Stored::Chunk)
    })?;
    let pieces: Vec<gather::Piece> = outcomes
        .iter()
        .zip(std::iter::once(0).chain(ends.iter().copied()))
        .zip(ends)
        .filter_map(|((o, start), &end)| match o {
            Stored::Part(id) => Some(gather::Piece {
                offset: start,
                size: (end - start) as u32,
                id: *id,
            }),
            _ => None,
        })
        .collect();
    progress.finish();
    let mut report = MakeReport {
        image_size: image.size(),
        layout: cuts.layout.clone(),
        fallback: cuts.fallback.clone(),
        ..MakeReport::default()
    };
    let (gathered, placed) = store_gathered(image, store, &pieces, opts, &mut report)?;

    let mut records: Vec<ChunkRecord> = Vec::with_capacity(outcomes.len());
    let mut start = 0u64;
    for (outcome, &end) in outcomes.into_iter().zip(ends) {
        let size = end - start;
        match outcome {
            Stored::Zero => {
                report.zero_chunks += 1;
                match records.last_mut() {
                    Some(last) if last.is_zero() && u64::from(last.size) + size <= MAX_ZERO_RUN => {
                        last.size += size as u32;
                    }
                    _ => records.push(ChunkRecord::zero(start, size as u32)),
                }
            }
            Stored::Part(_) => records.push(placed[&start]),
            Stored::Chunk(c) => {
                report.count_stored(&c);
                records.push(ChunkRecord::stored(start, size as u32, c.stored_size, c.id));
            }
        }
        start = end;
    }
    report.chunks = ends.len() as u64;
    let (deltas, made) = delta::make(
        image,
        &records,
        &cuts.files,
        earlier,
        &opts.delta_from_image,
        store,
        opts.level,
        progress,
    )?;
    report.deltas = made.deltas;
    report.delta_bytes = made.stored_bytes;
    report.delta_replaced_bytes = made.replaced_bytes;

    let verity_params = VerityParams::derive(image.size(), &head, opts.salt.clone(), opts.uuid);
    progress.start("hash tree", image.size());
    // The hash area goes to an unnamed file beside the store, never whole into memory.
    let area = tempfile::tempfile_in(store.dir()).at(store.dir())?;
    let (root, geometry) = verity::hash_image(
        image,
        image.size(),
        &verity_params.salt,
        Some(&mut verity::FileSink {
            file: &area,
            path: store.dir(),
            base: 0,
        }),
        progress,
    )?;
    progress.finish();
    let pieces = geometry.tree_size().div_ceil(TREE_PIECE);
    let mut tree_records = Vec::with_capacity(usize::try_from(pieces).unwrap_or(0));
    for i in 0..pieces {
        let offset = i * TREE_PIECE;
        let len = TREE_PIECE.min(geometry.tree_size() - offset) as usize;
        let mut piece = vec![0u8; len];
        area.read_exact_at(&mut piece, offset).at(store.dir())?;
        let c = store_chunk(store, &piece, offset, opts.level)?;
        report.count_stored(&c);
        tree_records.push(ChunkRecord::stored(offset, len as u32, c.stored_size, c.id));
    }
    report.tree_chunks = tree_records.len() as u64;
    report.verity_root = ChunkId(root).to_hex();
    let header = Header {
        image_size: image.size(),
        chunk_count: records.len() as u64,
        params: opts.params,
        align: cuts.align,
        largest_chunk: records
            .iter()
            .filter(|r| !r.is_zero())
            .map(|r| r.size)
            .chain(gathered.iter().map(|u| u.size))
            .max()
            .unwrap_or(0),
        fs_kind: FsKind::detect(&head),
        layout: cuts.layout.clone(),
        release: opts.release,
        verity: VerityInfo {
            data_blocks: geometry.data_blocks,
            tree_size: geometry.tree_size(),
            root,
            uuid: verity_params.uuid,
            salt: verity_params.salt,
        },
    };
    let dirs: std::collections::BTreeSet<String> = records
        .iter()
        .chain(&tree_records)
        .filter(|r| !r.is_zero())
        .map(|r| r.id.to_hex()[..4].to_string())
        .chain(gathered.iter().map(|u| u.id.to_hex()[..4].to_string()))
        .chain(["packs".to_string()])
        .collect();
    report.stale_temps_removed = store.remove_stale_temps(dirs.iter().map(String::as_str))?;
    // The chunks must be durable before an index that names them exists.
    store.sync()?;
    Ok((
        index::encode(&header, &records, &tree_records, &gathered, &deltas),
        report,
    ))
}

/// Stores the small metadata `pieces` in groups (see [`gather`]): returns the gathered
/// chunks and, by offset, each piece's record: a part of a gathered chunk, or a record of
/// its own when its group is just itself.
fn store_gathered(
    image: &Image,
    store: &LocalStore,
    pieces: &[gather::Piece],
    opts: &MakeOptions,
    report: &mut MakeReport,
) -> Result<(Vec<Unit>, HashMap<u64, ChunkRecord>)> {
    let groups = gather::group(pieces, opts.params);
    let stored = groups
        .par_iter()
        .map(|g| -> Result<StoredChunk> {
            let mut data = Vec::with_capacity(g.size as usize);
            for p in &pieces[g.parts.clone()] {
                data.extend_from_slice(&image.read_at(p.offset, p.size as usize)?);
            }
            store_chunk(store, &data, pieces[g.parts.start].offset, opts.level)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut gathered = Vec::new();
    let mut placed = HashMap::new();
    for (g, c) in groups.iter().zip(&stored) {
        report.count_stored(c);
        let parts = &pieces[g.parts.clone()];
        if let [p] = parts {
            placed.insert(
                p.offset,
                ChunkRecord::stored(p.offset, p.size, c.stored_size, c.id),
            );
            continue;
        }
        let unit = Unit {
            offset: parts[0].offset,
            size: g.size,
            stored_size: c.stored_size,
            id: c.id,
        };
        let mut at = 0;
        for p in parts {
            placed.insert(
                p.offset,
                ChunkRecord::gathered(p.offset, p.size, p.id, unit, at),
            );
            at += p.size;
        }
        gathered.push(unit);
        report.gathered_parts += parts.len() as u64;
    }
    report.gathered_chunks = gathered.len() as u64;
    Ok((gathered, placed))
}
