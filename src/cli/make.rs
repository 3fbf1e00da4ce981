use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::chunker::ChunkParams;
use blockcast::make::{self, MakeOptions};
use blockcast::store::LocalStore;
use clap::Args;
use serde::Serialize;

use super::{human_bytes, parse_size, Ui};

/// Chunk an image into a store and write its index.
#[derive(Args)]
pub struct MakeArgs {
    /// The filesystem image (file or block device).
    image: PathBuf,
    /// Chunk store directory (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// Where to write the index [default: IMAGE.bcidx].
    #[arg(long)]
    index: Option<PathBuf>,
    /// Average chunk size (power of two, 16K to 1M); min is a quarter, max four times.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    chunk_size: u64,
    /// zstd compression level of the chunk files.
    #[arg(long, default_value_t = blockcast::store::codec::DEFAULT_LEVEL)]
    level: i32,
    /// dm-verity salt, in hex [default: derived from the image, see docs/FORMAT.md].
    #[arg(long, value_parser = parse_salt)]
    salt: Option<Salt>,
    /// dm-verity superblock uuid [default: derived from the salt].
    #[arg(long, value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,
    /// Release number recorded in the index; `extract --min-release` refuses older ones.
    #[arg(long, default_value_t = 0)]
    release: u64,
    /// Cut with the plain 4 KiB-aligned content-defined chunker even when the filesystem
    /// can be read.
    #[arg(long)]
    aligned: bool,
    /// Index of an earlier release whose chunks are in the same store (repeatable): each
    /// new chunk file also gets a delta against the run of earlier chunks it most
    /// resembles, which a device holding that release fetches instead.
    #[arg(long, value_name = "INDEX")]
    delta_from: Vec<PathBuf>,
    /// The image of the --delta-from release in the same place (repeatable, in order),
    /// checked against its index as it is read; without it the earlier image is rebuilt
    /// from the store.
    #[arg(long, value_name = "IMAGE", requires = "delta_from")]
    delta_from_image: Vec<PathBuf>,
    /// Put the release's new chunk files and deltas into packs (`STORE/packs/`) and write
    /// its pack map (`STORE/packmaps/`), instead of one file per chunk.
    #[arg(long)]
    pack: bool,
    /// The most bytes one pack holds.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size, requires = "pack")]
    pack_size: u64,
    /// Sign the index with this minisign secret key (writes INDEX.minisig); an encrypted
    /// key's password comes from BLOCKCAST_KEY_PASSWORD.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    certificate: super::sign::CertificateArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone)]
pub struct Salt(pub Vec<u8>);

pub fn parse_salt(s: &str) -> Result<Salt, String> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) || s.len() > 2 * blockcast::verity::MAX_SALT {
        return Err(format!(
            "a salt is an even number of hex digits, at most {}",
            2 * blockcast::verity::MAX_SALT
        ));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect::<Result<_, _>>()
        .map(Salt)
}

pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    blockcast::verity::parse_uuid(s).ok_or_else(|| format!("{s:?} is not a uuid"))
}

#[derive(Serialize)]
struct Output<'a> {
    index: &'a std::path::Path,
    /// The signature files written beside the index.
    signatures: &'a [PathBuf],
    #[serde(flatten)]
    report: &'a make::MakeReport,
}

pub fn run(a: MakeArgs, ui: &Ui) -> Result<()> {
    let avg = u32::try_from(a.chunk_size).unwrap_or(u32::MAX);
    let params = ChunkParams::from_avg(avg)?;
    // A key that cannot sign is found before the image is chunked.
    let signer = a.certificate.signer()?;
    let store = LocalStore::open(&a.store, true)?;
    let index_path = a.index.unwrap_or_else(|| {
        let mut p = a.image.clone().into_os_string();
        p.push(".bcidx");
        PathBuf::from(p)
    });
    let opts = MakeOptions {
        params,
        level: a.level,
        salt: a.salt.map(|s| s.0),
        uuid: a.uuid,
        release: a.release,
        filesystem_aware: !a.aligned,
        delta_from: a.delta_from,
        delta_from_image: a.delta_from_image,
        pack: a.pack.then_some(a.pack_size),
    };
    let (bytes, report) = make::make(&a.image, &store, &opts, &ui.bar(), &ui.warner())
        .with_context(|| format!("making {}", a.image.display()))?;
    if let Some(reason) = &report.fallback {
        ui.warn(&format!(
            "{}: cannot follow the filesystem ({reason}); cut with the aligned chunker",
            a.image.display()
        ));
    }
    blockcast::durable::write_file(&index_path, &bytes)?;
    let signatures = super::sign::sign_index(&index_path, a.sign.as_deref(), signer.as_ref())?;
    let out = Output {
        index: &index_path,
        signatures: &signatures,
        report: &report,
    };
    ui.report(a.json, &out, || {
        let deltas = if report.deltas > 0 {
            format!(
                "; {} deltas ({}, standing in for {})",
                report.deltas,
                human_bytes(report.delta_bytes),
                human_bytes(report.delta_replaced_bytes)
            )
        } else {
            String::new()
        };
        format!(
            "{}: {} in {} chunks ({} all zero); wrote {} chunk files ({}){deltas}; index {}",
            a.image.display(),
            human_bytes(report.image_size),
            report.chunks,
            report.zero_chunks,
            report.written_chunks,
            human_bytes(report.written_bytes),
            index_path.display()
        )
    })
}
