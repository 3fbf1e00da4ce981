use std::path::PathBuf;

use anyhow::{bail, Result};
use blockcast::chunk::ChunkId;
use blockcast::image::Image;
use blockcast::index::Index;
use blockcast::mount::StoredTree;
use blockcast::progress::Progress;
use blockcast::repair::{self, FecFile, TreeSource};
use blockcast::store::Stores;
use blockcast::trust::TrustedIndex;
use blockcast::verity::fec::{self, Roots};
use blockcast::verity::{self, FileArea, Geometry, HashArea, Leaves};
use clap::Args;
use serde::Serialize;

use super::{parse_roots, StoreArgs, TrustArgs, Ui};

/// Check an image or partition block by block against an index's dm-verity tree.
#[derive(Args)]
pub struct VerifyArgs {
    /// The index: a file or an http:// or https:// URL.
    index: String,
    /// The image file or block device to check.
    image: PathBuf,
    /// The hash device to check against (and check itself against the index).
    #[arg(long, value_name = "FILE")]
    verity: Option<PathBuf>,
    /// Take the tree from these stores instead (--store).
    #[command(flatten)]
    stores: StoreArgs,
    /// Check the image and its tree (from --verity, the stores, or appended to the image)
    /// with this forward error correction file too: whether it can restore every bad
    /// block, and whether it matches the image.
    #[arg(long, value_name = "FILE")]
    fec: Option<PathBuf>,
    /// Parity bytes per codeword of the FEC file, 2 to 24.
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_roots)]
    fec_roots: Roots,
    #[command(flatten)]
    trust: TrustArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Outcome {
    verity_root: String,
    /// Where the reference tree came from.
    tree: String,
    /// Whether the index's signature was checked against a trusted key or CA.
    authenticated: bool,
    /// The subject of the certificate whose CMS signature a trusted CA vouched for.
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<String>,
    data_blocks: u64,
    /// The first bad 4096-byte blocks (at most 16).
    bad_blocks: Vec<u64>,
}

const SHOWN: usize = 16;

/// The first bad data blocks of the first `len` bytes of `image`, against the hash area
/// `area`, which is first checked against the index's root.
fn compare(
    index: &Index,
    image: &Image,
    len: u64,
    area: &dyn HashArea,
    bar: &dyn Progress,
) -> Result<Vec<u64>> {
    let v = &index.header().verity;
    let geometry = Geometry::new(v.data_blocks);
    if let Some(block) = verity::check_area(&geometry, &v.salt, &v.root, area)? {
        bail!(
            "{}: its hash tree does not hash to the index's root {} (hash block {block})",
            area.describe(),
            v.root_hex()
        );
    }
    let mut leaves = Leaves::new(&geometry, v.root, area);
    let mut bad = Vec::new();
    verity::digest_blocks(image, 0, len, &v.salt, bar, |block, digest| {
        if bad.len() < SHOWN && leaves.get(block)? != digest {
            bad.push(block);
        }
        Ok(())
    })?;
    Ok(bad)
}

pub fn run(a: VerifyArgs, ui: &Ui) -> Result<()> {
    let runtime = blockcast::store::runtime()?;
    let index = a
        .trust
        .open(&a.index, &a.stores.http()?, runtime.handle(), ui)?;
    if let Some(fec) = &a.fec {
        let stores = match a.stores.is_empty() {
            true => None,
            false => Some(a.stores.open(ui, runtime.handle())?),
        };
        return check_fec(&a, &index, stores.as_ref(), fec, ui);
    }
    let v = &index.header().verity;
    let image = Image::open(&a.image)?;
    let bar = ui.bar();
    bar.start("verifying", v.padded_size());
    // A partition may be larger than the image, an unpadded image file shorter than the
    // padded size: the tree covers the image zero-padded to whole blocks either way.
    let len = v
        .padded_size()
        .min(image.size())
        .max(index.header().image_size);
    let (bad_blocks, source) = match (&a.verity, a.stores.is_empty()) {
        (Some(path), _) => {
            let device = repair::open_hash_device(&index, path)?;
            let area = FileArea {
                image: &device,
                base: verity::BLOCK,
            };
            let bad = compare(&index, &image, len, &area, &bar)?;
            (bad, path.display().to_string())
        }
        (None, false) => {
            let stores = a.stores.open(ui, runtime.handle())?;
            stores.use_pack_maps(&index);
            let area = StoredTree {
                index: &index,
                stores: &stores,
            };
            (
                compare(&index, &image, len, &area, &bar)?,
                "store".to_string(),
            )
        }
        (None, true) => {
            let (root, _) = verity::hash_image(&image, len, &v.salt, None, &bar)?;
            let bad = if root == v.root {
                Vec::new()
            } else {
                bad_chunk_blocks(&index, &image)?
            };
            (bad, "computed from the image".to_string())
        }
    };
    bar.finish();
    let outcome = Outcome {
        verity_root: v.root_hex(),
        tree: source,
        authenticated: index.is_authenticated(),
        signer: index.signer().map(blockcast::sign::x509::subject),
        data_blocks: v.data_blocks,
        bad_blocks,
    };
    if outcome.bad_blocks.is_empty() {
        return ui.report(a.json, &outcome, || {
            format!(
                "{}: all {} blocks match dm-verity root {}{}",
                a.image.display(),
                outcome.data_blocks,
                outcome.verity_root,
                match (&outcome.signer, outcome.authenticated) {
                    (Some(signer), _) => format!(", from an index signed by {signer}"),
                    (None, true) => ", from an index whose signature was checked".to_string(),
                    (None, false) => "; the index was NOT authenticated (no --trusted-key or --trusted-ca), so this root proves nothing about who built it".to_string(),
                }
            )
        });
    }
    if a.json {
        super::print_out(&serde_json::to_string_pretty(&outcome)?)?;
    }
    bail!(
        "{}: bad blocks (of 4096 bytes): {}",
        a.image.display(),
        outcome
            .bad_blocks
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[derive(Serialize)]
struct FecOutcome<'a> {
    verity_root: String,
    authenticated: bool,
    data_blocks: u64,
    fec: &'a fec::Outcome,
}

/// `verify --fec`: every block of the image and of its tree checked against the root, the
/// bad ones against what the FEC file can restore, the FEC file against the image.
fn check_fec(
    a: &VerifyArgs,
    index: &TrustedIndex,
    stores: Option<&Stores>,
    path: &std::path::Path,
    ui: &Ui,
) -> Result<()> {
    let v = &index.header().verity;
    let tree = match (&a.verity, stores) {
        (Some(device), _) => TreeSource::Device(device),
        (None, Some(stores)) => {
            stores.use_pack_maps(index);
            TreeSource::Stores(stores)
        }
        (None, None) => TreeSource::Appended,
    };
    let fec_file = FecFile {
        path,
        roots: a.fec_roots,
    };
    let bar = ui.bar();
    let outcome = repair::check(index, &a.image, tree, &fec_file, &bar)?;
    bar.finish();
    let shown = FecOutcome {
        verity_root: v.root_hex(),
        authenticated: index.is_authenticated(),
        data_blocks: v.data_blocks,
        fec: &outcome,
    };
    let mismatched = outcome.mismatched_rounds.unwrap_or(0);
    if outcome.bad.count + outcome.unchecked.count == 0 && mismatched == 0 {
        return ui.report(a.json, &shown, || {
            format!(
                "{}: all {} blocks and the tree match dm-verity root {}, and {} (roots {}) matches them{}",
                a.image.display(),
                v.data_blocks,
                shown.verity_root,
                path.display(),
                outcome.roots,
                if shown.authenticated {
                    ", from an index whose signature was checked"
                } else {
                    "; the index was NOT authenticated (no --trusted-key), so this root proves nothing about who built it"
                }
            )
        });
    }
    if a.json {
        super::print_out(&serde_json::to_string_pretty(&shown)?)?;
    }
    let mut problems = Vec::new();
    if outcome.bad.count > 0 {
        problems.push(format!("bad blocks (of 4096 bytes): {}", outcome.bad));
    }
    if outcome.unchecked.count > 0 {
        problems.push(format!(
            "{} blocks under them could not be checked",
            outcome.unchecked.count
        ));
    }
    if outcome.corrected.count > 0 {
        problems.push(format!(
            "{} can restore {}: run blockcast repair",
            path.display(),
            outcome.corrected
        ));
    }
    if outcome.uncorrectable.count > 0 {
        problems.push(format!(
            "it cannot restore {} (more than {} damaged blocks in their interleaved group)",
            outcome.uncorrectable, outcome.roots
        ));
    }
    if mismatched > 0 {
        problems.push(format!(
            "{} does not match the image in {mismatched} of its {} rounds (damaged, stale, or made for another image or --fec-roots)",
            path.display(),
            outcome.rounds
        ));
    }
    bail!("{}: {}", a.image.display(), problems.join("; "))
}

/// Without a tree, the chunk ids still locate damage: the blocks of the first bad chunks.
fn bad_chunk_blocks(index: &Index, image: &Image) -> Result<Vec<u64>> {
    let mut bad = Vec::new();
    for r in index.records() {
        let data = image.read_at(r.offset, r.size as usize)?;
        let good = if r.is_zero() {
            blockcast::chunk::is_zero(&data)
        } else {
            ChunkId::of(&data) == r.id
        };
        if !good {
            bad.extend(r.offset / verity::BLOCK..r.end().div_ceil(verity::BLOCK));
            if bad.len() >= SHOWN {
                break;
            }
        }
    }
    bad.truncate(SHOWN);
    if bad.is_empty() {
        // Every chunk matches, so the difference lies in the zero padding after the image.
        bad.push(index.header().image_size / verity::BLOCK);
    }
    Ok(bad)
}
