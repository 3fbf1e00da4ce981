use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::index::Index;
use blockcast::pack;
use blockcast::store::LocalStore;
use clap::Args;

use super::{parse_size, Ui};

/// Put a release already in a store into packs and write its pack map again: the objects
/// it needs that packs hold are placed where their tables of contents say (a lost or
/// damaged map is rebuilt so), the loose ones go into new packs.
#[derive(Args)]
pub struct PackArgs {
    /// The store directory.
    store: PathBuf,
    /// The release's index.
    #[arg(long)]
    index: PathBuf,
    /// The most bytes one new pack holds.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pack_size: u64,
    /// Remove the loose files of what went into new packs (`blockcast unpack` writes them
    /// again).
    #[arg(long)]
    remove_loose: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PackArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
    let store = LocalStore::open(&a.store, false)?;
    let loose: HashSet<pack::Object> = match a.remove_loose {
        true => {
            let (chunks, deltas, tree) = pack::objects(&index);
            chunks.into_iter().chain(deltas).chain(tree).collect()
        }
        false => HashSet::new(),
    };
    let report = pack::pack_stored_release(&store, &index, &loose, a.pack_size, &ui.warner())
        .with_context(|| format!("packing {} in {}", a.index.display(), a.store.display()))?;
    ui.report(a.json, &report, || {
        format!(
            "{}: {} objects placed from packs, {} new packs ({} bytes), {} loose files removed; pack map of {} written",
            a.store.display(),
            report.reused_objects,
            report.packs_written,
            report.packed_bytes,
            report.loose_removed,
            a.index.display()
        )
    })
}
