use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::prune::{self, PruneOptions};
use clap::Args;

use super::{human_bytes, parse_duration, Ui};

/// Remove from a store what no kept release needs: loose chunk files, deltas, packs, pack
/// maps and the records of releases not kept; repack packs mostly dead. Safe while
/// releases are published to the store and read from it.
#[derive(Args)]
pub struct PruneArgs {
    /// The store: a directory, s3://BUCKET/PREFIX, or oci://HOST[:PORT]/REPO.
    store: String,
    /// Keep this release (its index file); repeatable.
    #[arg(long, value_name = "INDEX")]
    keep: Vec<PathBuf>,
    /// Keep the releases the store records with the N highest release numbers (the
    /// index's `release`). Without it and --keep, every release recorded is kept.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Also keep the deltas that devices on the N releases before the oldest kept one
    /// need (their records stay); other deltas against pruned releases are dropped.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_bases: usize,
    /// Delete nothing written more recently than this, and keep packs a repack replaced
    /// this long for readers that read the old pack maps (e.g. 0, 90s, 10m, 1h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    grace: std::time::Duration,
    /// How long to wait for publishers holding the store to finish.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    wait: std::time::Duration,
    /// Say what would be deleted and repacked, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds a request may go without progress (remote stores).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Further attempts after a failed request (with backoff).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    #[command(flatten)]
    connection: super::ConnectionArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PruneArgs, ui: &Ui) -> Result<()> {
    let opts = PruneOptions {
        keep: a.keep,
        keep_last: a.keep_last,
        keep_bases: a.keep_bases,
        grace: a.grace,
        dry_run: a.dry_run,
        wait: a.wait,
    };
    let http = a.connection.http(a.timeout, a.retries)?;
    let runtime = blockcast::store::runtime()?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    if blockcast::oci::is_oci(&a.store) {
        let warn = |m: &str| ui.warn(m);
        let report = prune::registry::prune(&a.store, &opts, &http, runtime.handle(), &warn)
            .with_context(|| format!("pruning {}", a.store))?;
        return ui.report(a.json, &report, || {
            format!(
                "{}: kept {} releases; {verb} {} manifests (tags {}) and unlinked {} blobs ({}); {}",
                report.repository,
                report.kept_releases.len(),
                report.deleted_manifests,
                report.deleted_tags.join(", "),
                report.deleted_blobs,
                human_bytes(report.deleted_bytes),
                report.note
            )
        });
    }
    let store =
        blockcast::store::open_prunable(&a.store, &http, runtime.handle().clone(), ui.warner())?;
    let report = prune::prune(store, &opts, &ui.bar(), &ui.warner())
        .with_context(|| format!("pruning {}", a.store))?;
    ui.report(a.json, &report, || {
        let kept: Vec<String> = report
            .kept_releases
            .iter()
            .map(|r| format!("{} (release {})", r.name, r.release))
            .collect();
        format!(
            "{}: kept {}; {verb} {} objects ({}) and {} release records; repacked {} packs into {} ({}), rewrote {} pack maps, dropped {} deltas; {} objects ({}) younger than the grace period left",
            report.store,
            kept.join(", "),
            report.deleted_objects,
            human_bytes(report.deleted_bytes),
            report.removed_releases,
            report.repacked_packs,
            report.written_packs,
            human_bytes(report.written_bytes),
            report.rewritten_maps,
            report.dropped_deltas,
            report.young_objects,
            human_bytes(report.young_bytes),
        )
    })
}
