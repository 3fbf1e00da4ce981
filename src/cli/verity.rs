use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::chunk::ChunkId;
use blockcast::durable::NewFile;
use blockcast::image::Image;
use blockcast::progress::Progress;
use blockcast::verity::fec::{self, Roots, Stream};
use blockcast::verity::{self, FileArea, VerityParams};
use clap::Args;
use serde::Serialize;

use super::make::{parse_salt, parse_uuid, Salt};
use super::{parse_roots, Ui};

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
    /// Also write forward error correction data for the image and its tree to FILE, as
    /// `veritysetup format --fec-device FILE` does.
    #[arg(long, value_name = "FILE")]
    fec: Option<PathBuf>,
    /// Parity bytes per FEC codeword, 2 to 24.
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_roots)]
    fec_roots: Roots,
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
    let device = NewFile::create(&a.hash_device)?;
    let mut sink = verity::FileSink {
        file: device.file(),
        path: device.temp(),
        base: verity::BLOCK,
    };
    let (root, geometry) =
        verity::hash_image(&image, image.size(), &params.salt, Some(&mut sink), &bar)?;
    bar.finish();
    let superblock = verity::superblock(&geometry, &params);
    device
        .file()
        .write_all_at(&superblock, 0)
        .with_context(|| device.temp().display().to_string())?;
    device.commit()?;
    if let Some(path) = &a.fec {
        let device = Image::open(&a.hash_device)?;
        let area = FileArea {
            image: &device,
            base: verity::BLOCK,
        };
        let file = NewFile::create(path)?;
        fec::encode(
            &Stream::new(&image, &area, &geometry),
            a.fec_roots,
            file.file(),
            file.temp(),
            &bar,
        )?;
        file.commit()?;
    }
    let out = Outcome {
        root_hash: ChunkId(root).to_hex(),
        salt: params.salt.iter().map(|b| format!("{b:02x}")).collect(),
        uuid: verity::uuid_string(&params.uuid),
        data_blocks: geometry.data_blocks,
    };
    ui.report(a.json, &out, || {
        format!(
            "root hash {}\nsalt      {}\nuuid      {}\nblocks    {}",
            out.root_hash, out.salt, out.uuid, out.data_blocks
        )
    })
}
