use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::index::Index;
use blockcast::store::LocalStore;
use clap::Args;

use super::Ui;

/// Write, from a store's packs, the loose chunk files and deltas a release needs (the
/// casync layout), for readers that do not read packs.
#[derive(Args)]
pub struct UnpackArgs {
    /// The store directory.
    store: PathBuf,
    /// The release's index.
    #[arg(long)]
    index: PathBuf,
}

pub fn run(a: UnpackArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
    let store = LocalStore::open(&a.store, false)?;
    let written = blockcast::pack::unpack(&store, &index)
        .with_context(|| format!("unpacking {} in {}", a.index.display(), a.store.display()))?;
    ui.report(false, &(), || {
        format!(
            "{}: wrote {written} loose files for {}",
            a.store.display(),
            a.index.display()
        )
    })
}
