use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use blockcast::check::{CheckReport, Problem, RepairReport, Sources};
use blockcast::store::Warn;
use clap::Args;

use super::{ConnectionArgs, Ui};

/// Read every chunk file, delta and pack the releases need, check each against its id and
/// name what is missing or corrupt; with --repair, mend it from other stores.
#[derive(Args)]
pub struct CheckArgs {
    /// The store: a directory or s3://BUCKET/PREFIX.
    store: String,
    /// A release to check, by its index file; repeatable. Without it, every release the
    /// store records.
    #[arg(long, value_name = "INDEX")]
    index: Vec<PathBuf>,
    /// Fetch good copies of what is missing or corrupt from the --from stores: loose files
    /// are written again, a damaged pack's objects go into new packs and the pack maps
    /// naming them are written again (never the index).
    #[arg(long, requires = "from")]
    repair: bool,
    /// A store to repair from: a directory, an http:// or https:// URL, s3://BUCKET/PREFIX
    /// or oci://HOST/REPO; repeatable, tried in order.
    #[arg(long, value_name = "DIR|URL", requires = "repair")]
    from: Vec<String>,
    /// Seconds a request may go without progress.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Further attempts after a failed request (with backoff).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CheckArgs, ui: &Ui) -> Result<()> {
    let http = a.connection.http(a.timeout, a.retries)?;
    let runtime = blockcast::store::runtime()?;
    let ui_copy = *ui;
    let warn: Warn = Arc::new(move |m: &str| ui_copy.warn(m));
    let store =
        blockcast::store::open_prunable(&a.store, &http, runtime.handle().clone(), warn.clone())?;
    let bar = ui.bar();
    if !a.repair {
        let report = blockcast::check::check(store.as_ref(), &a.index, &bar)
            .with_context(|| format!("checking {}", a.store))?;
        ui.report(a.json, &report, || human(&report))?;
        return outcome(&report);
    }
    let sources = Sources::open(&a.from, &http, runtime.handle().clone(), warn.clone())
        .context("opening the stores to repair from")?;
    let report = blockcast::check::repair(store, &a.index, &sources, &bar, &warn)
        .with_context(|| format!("repairing {}", a.store))?;
    ui.report(a.json, &report, || human_repair(&report))?;
    outcome(&report.after)
}

fn outcome(report: &CheckReport) -> Result<()> {
    if report.is_clean() {
        return Ok(());
    }
    bail!(
        "{}: {} missing, {} corrupt",
        report.store,
        report.missing.len(),
        report.corrupt.len()
    )
}

fn lines(out: &mut Vec<String>, label: &str, problems: &[Problem]) {
    out.extend(problems.iter().map(|p| format!("{label} {}", p.describe())));
}

/// The problems, one a line, then the summary.
fn human(report: &CheckReport) -> String {
    let mut out = Vec::new();
    lines(&mut out, "missing", &report.missing);
    lines(&mut out, "corrupt", &report.corrupt);
    out.push(report.summary());
    out.join("\n")
}

fn human_repair(report: &RepairReport) -> String {
    let mut out = Vec::new();
    lines(&mut out, "missing", &report.found.missing);
    lines(&mut out, "corrupt", &report.found.corrupt);
    out.extend(report.mended.iter().map(|m| {
        format!(
            "repaired {} ({}) from {} into {}",
            m.object,
            m.kind.as_str(),
            m.from,
            m.to
        )
    }));
    lines(&mut out, "not repaired", &report.not_repaired);
    out.push(format!(
        "repair: {} objects mended, {} loose files and {} packs written ({} bytes), {} pack maps written again",
        report.mended.len(),
        report.loose_written,
        report.packs_written,
        report.bytes_written,
        report.maps_rewritten
    ));
    lines(&mut out, "still missing", &report.after.missing);
    lines(&mut out, "still corrupt", &report.after.corrupt);
    out.push(format!("after the repair: {}", report.after.summary()));
    out.join("\n")
}
