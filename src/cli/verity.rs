use std::path::PathBuf;

use anyhow::Result;
use blockcast::chunk::ChunkId;
use blockcast::image::Image;
use blockcast::progress::Progress;
use blockcast::verity::{self, VerityParams};
use clap::Args;
use serde::Serialize;

use super::make::{parse_salt, parse_uuid, Salt};
use super::Ui;

/// Write the dm-verity hash device of any image, as `veritysetup format` does.
#[derive(Args)]
pub struct VerityArgs {
    image: PathBuf,
    /// The hash device file to write.
    hash_device: PathBuf,
    /// Salt in hex [default: derived from the image, as `make` derives it].
    #[arg(long, value_parser = parse_salt)]
    salt: Option<Salt>,
    /// Superblock uuid [default: derived from the salt].
    #[arg(long, value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Outcome {
    root_hash: String,
    salt: String,
    uuid: String,
    data_blocks: u64,
}

pub fn run(a: VerityArgs, ui: &Ui) -> Result<()> {
    let image = Image::open(&a.image)?;
    let head = image.read_at(0, image.size().min(verity::BLOCK) as usize)?;
    let params = VerityParams::derive(image.size(), &head, a.salt.map(|s| s.0), a.uuid);
    let bar = ui.bar();
    bar.start("hash tree", image.size());
    let leaves = verity::leaf_digests(&image, image.size(), &params.salt, &bar)?;
    let tree = verity::build(&leaves, &params.salt)?;
    bar.finish();
    blockcast::durable::write_file(&a.hash_device, &verity::hash_device(&tree, &params))?;
    let out = Outcome {
        root_hash: ChunkId(tree.root).to_hex(),
        salt: params.salt.iter().map(|b| format!("{b:02x}")).collect(),
        uuid: verity::uuid_string(&params.uuid),
        data_blocks: tree.geometry.data_blocks,
    };
    ui.report(a.json, &out, || {
        format!(
            "root hash {}\nsalt      {}\nuuid      {}\nblocks    {}",
            out.root_hash, out.salt, out.uuid, out.data_blocks
        )
    })
}
