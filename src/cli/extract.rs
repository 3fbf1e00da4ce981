use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::assemble::{self, ExtractOptions};
use blockcast::index::Index;
use clap::Args;

use super::{human_bytes, open_seeds, open_stores, parse_size, Ui};

/// Rebuild an image from seeds and stores, verifying every chunk. An existing OUTPUT is
/// updated in place; rerun after an interruption to finish.
#[derive(Args)]
pub struct ExtractArgs {
    index: PathBuf,
    /// Chunk store directory; repeat to try several in order.
    #[arg(long, required = true)]
    store: Vec<PathBuf>,
    /// The image to write (file or block device).
    #[arg(short, long)]
    output: PathBuf,
    /// A local file or device whose chunks may be reused; repeatable.
    #[arg(long)]
    seed: Vec<PathBuf>,
    /// Index the corresponding --seed was made from (the i-th for the i-th seed), so the
    /// seed need not be re-chunked.
    #[arg(long)]
    seed_index: Vec<PathBuf>,
    /// Most bytes saved aside to reorder copies within an updated OUTPUT.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    spill_limit: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExtractArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
    let stores = open_stores(&a.store)?;
    let seeds = open_seeds(&index, &a.seed, &a.seed_index, ui)?;
    let opts = ExtractOptions {
        spill_limit: a.spill_limit,
    };
    let warn = |m: &str| ui.warn(m);
    let report = assemble::extract(&index, &stores, seeds, &a.output, &opts, &ui.bar(), &warn)
        .with_context(|| format!("extracting {} to {}", a.index.display(), a.output.display()))?;
    ui.report(a.json, &report, || {
        let p = &report.plan;
        format!(
            "{}: {} image written; fetched {} chunks ({} transferred); reused from seeds {}, moved within the output {}, already in place {}; zeros {}",
            a.output.display(),
            human_bytes(p.image_size),
            p.store.chunks,
            human_bytes(p.store.stored_bytes),
            human_bytes(p.seed.bytes),
            human_bytes(p.output.bytes),
            human_bytes(p.in_place.bytes),
            human_bytes(p.zero.bytes),
        )
    })
}
