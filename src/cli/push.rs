use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::push::PushOptions;
use blockcast::store::LocalStore;
use clap::Args;

use super::Ui;

/// Publish a packed release (its packs, pack map, signature and index) to an s3://
/// location or an OCI registry, sending only what the destination lacks.
#[derive(Args)]
pub struct PushArgs {
    /// The release's index; its signature INDEX.minisig goes with it when there is one.
    index: PathBuf,
    /// The local store holding the release in packs (`make --pack`, or `blockcast pack`).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// Where to: s3://BUCKET/PREFIX (endpoint, region and credentials from the AWS_*
    /// environment variables), or oci://HOST[:PORT]/REPO[:TAG] (a login from the
    /// container tools' auth files or BLOCKCAST_REGISTRY_USERNAME/PASSWORD).
    destination: String,
    /// Seconds a request may go without progress.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Further attempts after a failed request (with backoff).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// On S3, a pack larger than this is sent in parts of this size (at least 5 MiB); a
    /// push cut short resumes from the parts already there.
    #[arg(long, default_value = "16MiB", value_name = "SIZE", value_parser = super::parse_size)]
    part_size: u64,
    /// On a registry: a repository of the same registry to mount packs from (without
    /// sending them) when the destination lacks them; repeatable.
    #[arg(long, value_name = "REPO")]
    mount_from: Vec<String>,
    #[command(flatten)]
    connection: super::ConnectionArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PushArgs, ui: &Ui) -> Result<()> {
    let opts = PushOptions {
        http: a.connection.http(a.timeout, a.retries)?,
        part_size: a.part_size,
        mount_from: a.mount_from,
    };
    let store = LocalStore::open(&a.store, false)?;
    let runtime = blockcast::store::runtime()?;
    let report = blockcast::push::push(
        &a.index,
        &store,
        &a.destination,
        &opts,
        runtime.handle(),
        &ui.bar(),
        &ui.warner(),
    )
    .with_context(|| format!("pushing {} to {}", a.index.display(), a.destination))?;
    ui.report(a.json, &report, || {
        format!(
            "{}: {} packs sent, {} there already, {} mounted, {} bytes sent{}{}",
            report.destination,
            report.packs_uploaded,
            report.packs_present,
            report.packs_mounted,
            report.bytes_uploaded,
            if report.signed { ", signed" } else { "" },
            match &report.manifest {
                Some(digest) => format!("; manifest {digest} tagged {}", report.tags.join(", ")),
                None => String::new(),
            }
        )
    })
}
