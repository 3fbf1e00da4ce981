use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blockcast::chunk::ChunkId;
use blockcast::image::Image;
use blockcast::index::Index;
use blockcast::progress::Progress;
use blockcast::verity::{self, HashTree};
use clap::Args;
use serde::Serialize;

use super::{StoreArgs, Ui};

/// Check an image or partition block by block against an index's dm-verity tree.
#[derive(Args)]
pub struct VerifyArgs {
    index: PathBuf,
    /// The image file or block device to check.
    image: PathBuf,
    /// The hash device to check against (and check itself against the index).
    #[arg(long, value_name = "FILE")]
    verity: Option<PathBuf>,
    /// Take the tree from these stores instead (--store).
    #[command(flatten)]
    stores: StoreArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Outcome {
    verity_root: String,
    /// Where the reference tree came from.
    tree: String,
    data_blocks: u64,
    /// The first bad 4096-byte blocks (at most 16).
    bad_blocks: Vec<u64>,
}

const SHOWN: usize = 16;

fn tree_from_device(index: &Index, path: &Path) -> Result<HashTree> {
    let v = &index.header().verity;
    let device = Image::open(path)?;
    let need = verity::BLOCK + v.tree_size;
    if device.size() < need {
        bail!(
            "hash device {} is shorter than the {need} bytes of the tree",
            path.display()
        );
    }
    let sb = device.read_at(0, verity::BLOCK as usize)?;
    let Some((uuid, blocks, salt)) = verity::parse_superblock(&sb) else {
        bail!(
            "{}: not a dm-verity hash device (bad superblock)",
            path.display()
        );
    };
    if blocks != v.data_blocks || salt != v.salt || uuid != v.uuid {
        bail!(
            "{}: its superblock (data blocks, salt or uuid) differs from the index",
            path.display()
        );
    }
    let tree = device.read_at(verity::BLOCK, v.tree_size as usize)?;
    verity::tree_from_bytes(v.data_blocks, tree, &v.salt, v.root).with_context(|| {
        format!(
            "{}: its hash tree does not hash to the index's root {}",
            path.display(),
            v.root_hex()
        )
    })
}

pub fn run(a: VerifyArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
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
    let leaves = verity::leaf_digests(&image, len, &v.salt, &bar)?;
    bar.finish();
    let (reference, source) = match (&a.verity, a.stores.is_empty()) {
        (Some(path), _) => (
            Some(tree_from_device(&index, path)?),
            path.display().to_string(),
        ),
        (None, false) => (
            Some(blockcast::mount::fetch_tree(&index, &a.stores.open(ui)?)?),
            "store".to_string(),
        ),
        (None, true) => (None, "computed from the image".to_string()),
    };
    let bad_blocks = match &reference {
        Some(tree) => verity::bad_blocks(&leaves, tree, SHOWN),
        None => {
            let computed = verity::build(&leaves, &v.salt)?;
            if computed.root == v.root {
                Vec::new()
            } else {
                bad_chunk_blocks(&index, &image)?
            }
        }
    };
    let outcome = Outcome {
        verity_root: v.root_hex(),
        tree: source,
        data_blocks: v.data_blocks,
        bad_blocks,
    };
    if outcome.bad_blocks.is_empty() {
        return ui.report(a.json, &outcome, || {
            format!(
                "{}: all {} blocks match dm-verity root {}",
                a.image.display(),
                outcome.data_blocks,
                outcome.verity_root
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
