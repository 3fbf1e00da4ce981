use std::path::PathBuf;

use anyhow::Result;
use blockcast::caibx;
use blockcast::index::Index;
use blockcast::store::LocalStore;
use clap::Args;

use super::Ui;

/// Write the chunk list as a casync blob index, for `casync extract --store=STORE`.
#[derive(Args)]
pub struct ExportArgs {
    index: PathBuf,
    /// The .caibx to write.
    #[arg(short, long)]
    output: PathBuf,
    /// The store the index's chunks are in; the chunk files casync needs and blockcast
    /// does not keep (all-zero chunks, parts of gathered chunks) are added.
    #[arg(long)]
    store: PathBuf,
}

pub fn run(a: ExportArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
    let store = LocalStore::open(&a.store, false)?;
    let (bytes, zero_sizes) = caibx::export(&index);
    caibx::store_zero_chunks(&store, &zero_sizes)?;
    caibx::store_gathered_parts(&index, &store)?;
    blockcast::durable::write_file(&a.output, &bytes)?;
    ui.report(false, &(), || {
        format!(
            "{}: casync index of {} chunks; extract with: casync extract --store={} {} IMAGE",
            a.output.display(),
            (bytes.len() - 104) / 40,
            a.store.display(),
            a.output.display()
        )
    })
}
