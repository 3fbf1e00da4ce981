//! Export of an index as a casync blob index (`.caibx`), so that `casync extract` can
//! rebuild the image from a blockcast store (whose layout is casync's).
//!
//! A caibx is little-endian u64s throughout: a 48-byte index header, a table header,
//! one 40-byte item per chunk (end offset, 32-byte id) and a 40-byte tail.

use std::collections::BTreeSet;

use crate::chunk::{ChunkId, VerifiedChunk};
use crate::error::{Error, Result};
use crate::index::{stored_size_bound, Index};
use crate::store::codec::{self, Compressor};
use crate::store::{read_local, LocalStore};

const INDEX_TYPE: u64 = 0x9682_4d9c_7b12_9ff9;
const TABLE_TYPE: u64 = 0xe75b_9e11_2f17_417d;
const TAIL_MARKER: u64 = 0x4b4f_050e_5549_ecd1;
/// EXCLUDE_NODUMP | EXCLUDE_FILE, with the SHA512/256 bit clear: ids are SHA-256. This is
/// what `casync make --digest=sha256` writes.
const FLAGS_SHA256: u64 = 0x9000_0000_0000_0000;
const INDEX_HEADER_SIZE: u64 = 48;
const ITEM_SIZE: u64 = 40;

/// The chunk list as casync sees it: zero runs are split into pieces no larger than the
/// largest real chunk, because casync rejects chunks above the header's maximum.
pub fn chunks(index: &Index) -> (Vec<(u64, ChunkId)>, BTreeSet<u32>, u64) {
    let header = index.header();
    let max = if header.largest_chunk > 0 {
        u64::from(header.largest_chunk)
    } else {
        u64::from(header.params.max)
    };
    let mut items = Vec::with_capacity(index.len());
    let mut zero_sizes = BTreeSet::new();
    for r in index.records() {
        if !r.is_zero() {
            items.push((r.end(), r.id));
            continue;
        }
        let mut pos = r.offset;
        while pos < r.end() {
            let piece = (r.end() - pos).min(max);
            zero_sizes.insert(piece as u32);
            pos += piece;
            items.push((pos, ChunkId::of(&vec![0u8; piece as usize])));
        }
    }
    (items, zero_sizes, max)
}

/// Writes the all-zero chunks the export references into `store`, since casync fails on
/// a missing chunk.
pub fn store_zero_chunks(store: &LocalStore, sizes: &BTreeSet<u32>) -> Result<()> {
    let mut compressor = Compressor::new(codec::DEFAULT_LEVEL)?;
    for &size in sizes {
        let zeros = vec![0u8; size as usize];
        let id = ChunkId::of(&zeros);
        let existing = store.get_chunk(&id, crate::index::stored_size_bound(size))?;
        let good = existing.is_some_and(|s| codec::decompress(&s, size, id, 0).is_ok());
        if !good {
            store.put_chunk(&id, &compressor.compress(&zeros)?)?;
        }
    }
    store.sync()
}

/// Writes each part of a gathered chunk into `store` as a chunk file of its own, since
/// casync fetches one file per chunk; returns how many it wrote.
pub fn store_gathered_parts(index: &Index, store: &LocalStore) -> Result<u64> {
    let mut compressor = Compressor::new(codec::DEFAULT_LEVEL)?;
    let mut unit: Option<VerifiedChunk> = None;
    let mut written = 0;
    for r in index.records() {
        let Some(p) = r.part else {
            continue;
        };
        let existing = store.get_chunk(&r.id, stored_size_bound(r.size))?;
        if existing.is_some_and(|s| codec::decompress(&s, r.size, r.id, r.offset).is_ok()) {
            continue;
        }
        let g = p.gathered;
        let whole = match unit.take() {
            Some(u) if u.id() == g.id => u,
            _ => read_local(store, &g)?.ok_or(Error::MissingChunk {
                id: g.id,
                offset: g.offset,
            })?,
        };
        let part = r.take_from(&whole)?;
        store.put_chunk(&r.id, &compressor.compress(part.data())?)?;
        written += 1;
        unit = Some(whole);
    }
    store.sync()?;
    Ok(written)
}

/// Encodes the caibx for `index`; `zero_sizes` lists the zero chunks it references.
pub fn export(index: &Index) -> (Vec<u8>, BTreeSet<u32>) {
    let (items, zero_sizes, max) = chunks(index);
    let p = index.header().params;
    let avg = u64::from(p.avg).min(max);
    let min = u64::from(p.min).min(avg);
    let n = items.len() as u64;
    let mut out = Vec::with_capacity((INDEX_HEADER_SIZE + 16 + ITEM_SIZE * (n + 1)) as usize);
    for v in [
        INDEX_HEADER_SIZE,
        INDEX_TYPE,
        FLAGS_SHA256,
        min,
        avg,
        max,
        u64::MAX,
        TABLE_TYPE,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (end, id) in &items {
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&id.0);
    }
    let table_size = 16 + ITEM_SIZE * n + ITEM_SIZE;
    for v in [0, 0, INDEX_HEADER_SIZE, table_size, TAIL_MARKER] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    (out, zero_sizes)
}
