use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use blockcast::assemble::{self, ExtractOptions};
use clap::Args;

use super::{human_bytes, open_sources, parse_roots, parse_size, SourceArgs, Ui};
use blockcast::verity::fec::Roots;

/// Rebuild an image from seeds and stores, verifying every chunk. An existing OUTPUT is
/// updated in place; rerun after an interruption to finish.
#[derive(Args)]
pub struct ExtractArgs {
    /// The index: a file or an http:// or https:// URL.
    index: String,
    #[command(flatten)]
    sources: SourceArgs,
    /// The image to write (file or block device).
    #[arg(short, long)]
    output: PathBuf,
    /// Most bytes saved aside when OUTPUT is updated in place: the base runs of deltas that
    /// only OUTPUT holds (past the limit their chunk files are fetched whole), then copies
    /// within OUTPUT reordered.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    spill_limit: u64,
    /// Also write the dm-verity hash device (superblock and tree) to FILE, as
    /// `veritysetup format` would.
    #[arg(long, value_name = "FILE")]
    verity: Option<PathBuf>,
    /// Append the hash device to OUTPUT after the image, at a 4 KiB boundary (for
    /// `veritysetup --hash-offset`).
    #[arg(long)]
    verity_append: bool,
    /// With an index signed by a certificate (--trusted-ca), write its root-hash
    /// signature to BASE.roothash.p7s and systemd's verity signature JSON to
    /// BASE.verity-sig.json [default: OUTPUT, when not a block device].
    #[arg(long, value_name = "BASE")]
    kernel_signature: Option<PathBuf>,
    /// Also write forward error correction data for the image and its tree to FILE, as
    /// `veritysetup format --fec-device FILE` would (`blockcast repair` uses it).
    #[arg(long, value_name = "FILE")]
    fec: Option<PathBuf>,
    /// Parity bytes per FEC codeword, 2 to 24: each interleaved group of blocks survives
    /// that many damaged blocks; the file takes about N/(255-N) of the image.
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_roots)]
    fec_roots: Roots,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(mut a: ExtractArgs, ui: &Ui) -> Result<()> {
    a.sources.stores.default_for(&a.index)?;
    if a.sources.stores.is_empty() && a.sources.seed.is_empty() {
        bail!("give at least one --store (or --seed) to take chunks from");
    }
    let runtime = blockcast::store::runtime()?;
    let (index, stores, seeds) = open_sources(&a.index, &a.sources, runtime.handle(), ui)?;
    let kernel_signature = match &a.kernel_signature {
        Some(base) => Some(base.clone()),
        None if is_block_device(&a.output) => {
            if index.kernel_signature().is_some() {
                ui.warn(&format!(
                    "{} is a block device: its root-hash signature is not written beside it (give --kernel-signature BASE)",
                    a.output.display()
                ));
            }
            None
        }
        None => Some(a.output.clone()),
    };
    let opts = ExtractOptions {
        spill_limit: a.spill_limit,
        verity_append: a.verity_append,
        verity: a.verity.clone(),
        kernel_signature,
        fec: a.fec.clone().map(|path| (path, a.fec_roots)),
    };
    let warn = |m: &str| ui.warn(m);
    let report = assemble::extract(&index, &stores, seeds, &a.output, &opts, &ui.bar(), &warn)
        .with_context(|| format!("extracting {} to {}", a.index, a.output.display()))?;
    ui.report(a.json, &report, || {
        let p = &report.plan;
        let fec = a.fec.as_ref().map_or(String::new(), |f| {
            format!(
                "; forward error correction (roots {}) in {}",
                a.fec_roots.get(),
                f.display()
            )
        });
        format!(
            "{}: {} image written and verified (dm-verity root {}); fetched {} chunks ({} stored, {} received in {} requests, {} rebuilt from deltas); reused from seeds {}, moved within the output {}, already in place {}; zeros {}{fec}",
            a.output.display(),
            human_bytes(p.image_size),
            report.verity_root,
            p.store.chunks,
            human_bytes(p.store.stored_bytes),
            human_bytes(report.traffic.bytes),
            report.traffic.requests,
            report.chunk_files_from_deltas,
            human_bytes(p.seed.bytes),
            human_bytes(p.output.bytes),
            human_bytes(p.in_place.bytes),
            human_bytes(p.zero.bytes),
        ) + &report
            .root_hash_signature
            .as_ref()
            .map(|p| format!("; root-hash signature {}", p.display()))
            .unwrap_or_default()
    })
}

fn is_block_device(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}
