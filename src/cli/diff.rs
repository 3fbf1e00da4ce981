use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Result;
use blockcast::chunk::ChunkId;
use blockcast::index::Index;
use clap::Args;
use serde::Serialize;

use super::{human_bytes, Ui};

/// Compare two indexes: what the new one shares with the old one and what is new.
#[derive(Args)]
pub struct DiffArgs {
    old: PathBuf,
    new: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
struct Side {
    chunks: u64,
    bytes: u64,
    stored_bytes: u64,
}

#[derive(Serialize)]
struct Diff {
    new_image_size: u64,
    /// Distinct data chunks of the new index also in the old one.
    shared: Side,
    /// Distinct data chunks only in the new index: what an update from the old fetches.
    new: Side,
    /// Bytes of all-zero records, never fetched.
    zero_bytes: u64,
}

pub fn run(a: DiffArgs, ui: &Ui) -> Result<()> {
    let old = Index::open(&a.old)?;
    let new = Index::open(&a.new)?;
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
    };
    for r in new.records() {
        if r.is_zero() {
            d.zero_bytes += u64::from(r.size);
            continue;
        }
        if !seen.insert(r.id) {
            continue;
        }
        let side = if old_ids.contains(&r.id) {
            &mut d.shared
        } else {
            &mut d.new
        };
        side.chunks += 1;
        side.bytes += u64::from(r.size);
        side.stored_bytes += u64::from(r.stored_size);
    }
    ui.report(a.json, &d, || {
        format!(
            "shared: {} chunks, {} ({} stored)\nnew:    {} chunks, {} ({} stored)\nzero:   {}",
            d.shared.chunks,
            human_bytes(d.shared.bytes),
            human_bytes(d.shared.stored_bytes),
            d.new.chunks,
            human_bytes(d.new.bytes),
            human_bytes(d.new.stored_bytes),
            human_bytes(d.zero_bytes)
        )
    })
}
