use anyhow::{bail, Result};
use blockcast::plan::{self, PlanSummary};
use clap::Args;
use serde::Serialize;

use super::{human_bytes, open_sources, SourceArgs, Ui};

/// Show what an extract would fetch, before fetching anything.
#[derive(Args)]
pub struct PlanArgs {
    /// The index: a file or an http:// or https:// URL.
    index: String,
    #[command(flatten)]
    sources: SourceArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output {
    #[serde(flatten)]
    summary: PlanSummary,
    /// Chunks to fetch that no store holds.
    missing_from_stores: u64,
    /// The requests extract would send to the stores, and the bytes they ask for.
    fetch: blockcast::store::FetchCost,
}

pub fn run(mut a: PlanArgs, ui: &Ui) -> Result<()> {
    a.sources.stores.default_for(&a.index)?;
    if a.sources.stores.is_empty() {
        bail!("give at least one --store to plan against");
    }
    let runtime = blockcast::store::runtime()?;
    let (index, stores, seeds) = open_sources(&a.index, &a.sources, runtime.handle(), ui)?;
    let deltas = stores.offered_deltas(&index);
    let plan = plan::plan(&index, &deltas, &seeds, &[], None, 0);
    let missing = plan::count_missing(&index, &plan, &stores)?;
    let fetch = plan::fetch_cost(&index, &plan, &stores);
    let out = Output {
        summary: plan.summary,
        missing_from_stores: missing,
        fetch,
    };
    ui.report(a.json, &out, || {
        let s = &out.summary;
        let mut text = format!(
            "image {} in {} chunks\nfetch:  {} chunks, {} to transfer ({} uncompressed; {} as deltas)\nseeds:  {} chunks, {}\nzero:   {} chunks, {}\ntree:   {} chunks, {} stored (fetched only by a lazy mount)",
            human_bytes(s.image_size),
            s.chunks,
            s.store.chunks,
            human_bytes(s.store.stored_bytes),
            human_bytes(s.store.bytes),
            s.store.deltas,
            s.seed.chunks,
            human_bytes(s.seed.bytes),
            s.zero.chunks,
            human_bytes(s.zero.bytes),
            s.tree.chunks,
            human_bytes(s.tree.stored_bytes),
        );
        text.push_str(&format!(
            "\nrequests: {}, asking for {}",
            out.fetch.requests,
            human_bytes(out.fetch.bytes)
        ));
        if missing > 0 {
            text.push_str(&format!("\nmissing from every store: {missing} chunks"));
        }
        text
    })
}
