use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use blockcast::progress::Progress;
use blockcast::repair::{self, FecFile, TreeSource};
use blockcast::verity::fec::{self, Roots};
use clap::Args;
use serde::Serialize;

use super::{parse_roots, StoreArgs, TrustArgs, Ui};

/// Restore an image's damaged blocks in place with its forward error correction file
/// (`extract --fec`), finding them with the index's dm-verity tree: only blocks restored
/// and checked against the tree are written, then everything is checked again.
#[derive(Args)]
pub struct RepairArgs {
    /// The image file or block device to repair.
    image: PathBuf,
    /// The index: a file or an http:// or https:// URL.
    #[arg(long)]
    index: String,
    /// The forward error correction file.
    #[arg(long, value_name = "FILE")]
    fec: PathBuf,
    /// Parity bytes per codeword of the FEC file, 2 to 24.
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_roots)]
    fec_roots: Roots,
    /// The hash device (repaired too). Without it, the tree appended to IMAGE
    /// (`extract --verity-append`), or the one in --store.
    #[arg(long, value_name = "FILE")]
    verity: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreArgs,
    #[command(flatten)]
    trust: TrustArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Outcome<'a> {
    verity_root: String,
    authenticated: bool,
    #[serde(flatten)]
    fec: &'a fec::Outcome,
}

pub fn run(a: RepairArgs, ui: &Ui) -> Result<()> {
    let runtime = blockcast::store::runtime()?;
    let index = a
        .trust
        .open(&a.index, &a.stores.http()?, runtime.handle(), ui)?;
    let stores = match (&a.verity, a.stores.is_empty()) {
        (None, false) => {
            let stores = a.stores.open(ui, runtime.handle())?;
            stores.use_pack_maps(&index);
            Some(stores)
        }
        _ => None,
    };
    let tree = match (&a.verity, &stores) {
        (Some(device), _) => TreeSource::Device(device),
        (None, Some(stores)) => TreeSource::Stores(stores),
        (None, None) => TreeSource::Appended,
    };
    let fec = FecFile {
        path: &a.fec,
        roots: a.fec_roots,
    };
    let bar = ui.bar();
    let outcome = repair::repair(&index, &a.image, tree, &fec, &bar)
        .with_context(|| format!("repairing {}", a.image.display()))?;
    bar.finish();
    let shown = Outcome {
        verity_root: index.header().verity.root_hex(),
        authenticated: index.is_authenticated(),
        fec: &outcome,
    };
    if outcome.uncorrectable.count == 0 {
        return ui.report(a.json, &shown, || match outcome.corrected.count {
            0 => format!(
                "{}: nothing to repair: every block matches dm-verity root {}",
                a.image.display(),
                shown.verity_root
            ),
            n => format!(
                "{}: repaired {n} blocks ({}); every block now matches dm-verity root {}",
                a.image.display(),
                outcome.corrected,
                shown.verity_root
            ),
        });
    }
    if a.json {
        super::print_out(&serde_json::to_string_pretty(&shown)?)?;
    }
    let repaired = match outcome.corrected.count {
        0 => "nothing repaired".to_string(),
        _ => format!("repaired {}", outcome.corrected),
    };
    bail!(
        "{}: could not repair blocks {} (more than {} damaged blocks in their interleaved group of {}, or a correction that failed its check); {repaired}",
        a.image.display(),
        outcome.uncorrectable,
        outcome.roots,
        fec::CODEWORD - usize::from(outcome.roots),
    )
}
