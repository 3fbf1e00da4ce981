use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::Result;
use blockcast::chunker::ChunkParams;
use blockcast::index::Index;
use blockcast::layout::{Cutting, LayoutSummary};
use blockcast::sign::Kind;
use clap::Args;
use serde::Serialize;

use super::{human_bytes, Ui};

/// Show what an index holds.
#[derive(Args)]
pub struct InfoArgs {
    index: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Info {
    format_version: u32,
    image_size: u64,
    filesystem: &'static str,
    layout: &'static str,
    params: ChunkParams,
    align: u32,
    records: u64,
    zero_records: u64,
    zero_bytes: u64,
    data_chunks: u64,
    distinct_chunks: u64,
    /// Distinct chunk files: a gathered chunk is one file for several records.
    chunk_files: u64,
    gathered_chunks: u64,
    /// Records stored only as parts of gathered chunks.
    gathered_parts: u64,
    /// Deltas against chunks of earlier releases, the chunk files they rebuild, and their
    /// bytes.
    deltas: u64,
    delta_chunk_files: u64,
    delta_bytes: u64,
    /// Bytes of the distinct chunk files: what a fetch of everything costs.
    stored_bytes: u64,
    chunk_size: Distribution,
    release: u64,
    verity: Verity,
    regions: LayoutSummary,
}

#[derive(Serialize)]
struct Verity {
    root_hash: String,
    salt: String,
    uuid: String,
    hash_algorithm: &'static str,
    block_size: u64,
    data_blocks: u64,
    /// Bytes of the hash device: superblock block and tree.
    hash_device_size: u64,
    tree_chunks: u64,
    tree_stored_bytes: u64,
    /// Opens `extract --verity HASHDEV` output.
    open_command: String,
    /// Opens `extract --verity-append` output.
    open_appended_command: String,
    /// The kernel's root-hash signature beside the index (INDEX.roothash.p7s), if any:
    /// `extract --trusted-ca` checks it and writes it beside the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    root_hash_signature: Option<PathBuf>,
    /// Opens `extract --verity HASHDEV` output, the kernel checking the root-hash
    /// signature written beside the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_signed_command: Option<String>,
}

#[derive(Serialize, Default)]
struct Distribution {
    min: u32,
    max: u32,
    mean: u64,
    median: u32,
    p10: u32,
    p90: u32,
    /// Chunk counts by size class: the key is the upper bound (a power of two).
    histogram: BTreeMap<u32, u64>,
}

fn distribution(mut sizes: Vec<u32>) -> Distribution {
    if sizes.is_empty() {
        return Distribution::default();
    }
    sizes.sort_unstable();
    let at = |q: usize| sizes[(sizes.len() - 1) * q / 100];
    let mut histogram = BTreeMap::new();
    for &s in &sizes {
        *histogram.entry(s.next_power_of_two()).or_insert(0) += 1;
    }
    Distribution {
        min: sizes[0],
        max: sizes[sizes.len() - 1],
        mean: sizes.iter().map(|&s| u64::from(s)).sum::<u64>() / sizes.len() as u64,
        median: at(50),
        p10: at(10),
        p90: at(90),
        histogram,
    }
}

pub fn run(a: InfoArgs, ui: &Ui) -> Result<()> {
    let index = Index::open(&a.index)?;
    let h = index.header();
    let mut sizes = Vec::new();
    let (mut seen, mut files) = (HashSet::new(), HashSet::new());
    let (mut zero_records, mut zero_bytes, mut stored_bytes, mut parts) = (0, 0, 0, 0);
    for r in index.records() {
        if r.is_zero() {
            zero_records += 1;
            zero_bytes += u64::from(r.size);
            continue;
        }
        sizes.push(r.size);
        parts += u64::from(r.part.is_some());
        seen.insert(r.id);
        let unit = r.unit();
        if files.insert(unit.id) {
            stored_bytes += u64::from(unit.stored_size);
        }
    }
    let v = &h.verity;
    let root = v.root_hex();
    let signature = Kind::RootHash.path(&a.index);
    let root_hash_signature = signature.is_file().then_some(signature);
    let verity = Verity {
        open_signed_command: root_hash_signature.as_ref().map(|_| {
            format!(
                "veritysetup open IMAGE NAME HASHDEV {root} --root-hash-signature=IMAGE{}",
                Kind::RootHash.suffix()
            )
        }),
        root_hash_signature,
        open_command: format!("veritysetup open IMAGE NAME HASHDEV {root}"),
        open_appended_command: format!(
            "veritysetup open IMAGE NAME IMAGE {root} --hash-offset={}",
            v.padded_size()
        ),
        root_hash: root,
        salt: v.salt.iter().map(|b| format!("{b:02x}")).collect(),
        uuid: blockcast::verity::uuid_string(&v.uuid),
        hash_algorithm: "sha256",
        block_size: blockcast::verity::BLOCK,
        data_blocks: v.data_blocks,
        hash_device_size: blockcast::verity::BLOCK + v.tree_size,
        tree_chunks: index.tree_len() as u64,
        tree_stored_bytes: index.tree_records().map(|r| u64::from(r.stored_size)).sum(),
    };
    let info = Info {
        format_version: index.version(),
        image_size: h.image_size,
        filesystem: h.fs_kind.name(),
        layout: match h.layout.cutting {
            Cutting::Filesystem {
                metadata_apart: true,
            } => "filesystem-aware",
            Cutting::Filesystem {
                metadata_apart: false,
            } => "filesystem-aware, metadata grouped with file data (layout 1)",
            Cutting::Aligned => "aligned content-defined",
        },
        params: h.params,
        align: h.align,
        records: index.len() as u64,
        zero_records,
        zero_bytes,
        data_chunks: sizes.len() as u64,
        distinct_chunks: seen.len() as u64,
        chunk_files: files.len() as u64,
        gathered_chunks: index.gathered_len() as u64,
        gathered_parts: parts,
        deltas: index.deltas_len() as u64,
        delta_chunk_files: index.deltas_by_unit().len() as u64,
        delta_bytes: index.deltas().map(|d| u64::from(d.stored_size)).sum(),
        stored_bytes,
        chunk_size: distribution(sizes),
        release: h.release,
        verity,
        regions: h.layout.clone(),
    };
    ui.report(a.json, &info, || {
        let d = &info.chunk_size;
        let mut t = format!(
            "index        {} (format version {})\nimage        {} ({} bytes), filesystem {}\nchunking     {}, min {} avg {} max {}, cuts aligned to {}\nchunks       {} data ({} distinct, in {} chunk files, {} stored), {} zero runs ({})\ngathered     {} chunk files hold {} small metadata chunks\ndeltas       {} against earlier releases, for {} chunk files ({} stored)\nchunk sizes  min {} p10 {} median {} mean {} p90 {} max {}\n",
            a.index.display(),
            info.format_version,
            human_bytes(info.image_size),
            info.image_size,
            info.filesystem,
            info.layout,
            human_bytes(info.params.min.into()),
            human_bytes(info.params.avg.into()),
            human_bytes(info.params.max.into()),
            info.align,
            info.data_chunks,
            info.distinct_chunks,
            info.chunk_files,
            human_bytes(info.stored_bytes),
            info.zero_records,
            human_bytes(info.zero_bytes),
            info.gathered_chunks,
            info.gathered_parts,
            info.deltas,
            info.delta_chunk_files,
            human_bytes(info.delta_bytes),
            d.min, d.p10, d.median, d.mean, d.p90, d.max,
        );
        for (bound, count) in &d.histogram {
            t.push_str(&format!("  <= {:>9}  {count}\n", human_bytes((*bound).into())));
        }
        let r = &info.regions;
        if r.cutting.is_filesystem_aware() {
            t.push_str("regions     ");
            for (name, tally) in [("metadata", &r.metadata), ("data", &r.data), ("compressed", &r.compressed), ("free", &r.free)] {
                t.push_str(&format!(" {name} {} ({})", tally.regions, human_bytes(tally.bytes)));
            }
            t.push('\n');
        }
        let v = &info.verity;
        t.push_str(&format!(
            "release      {}\ndm-verity    root {}\n             salt {} uuid {}\n             {} data blocks, hash device {} ({} tree chunks, {} stored)\n  open with: {}\n  appended:  {}\n",
            info.release,
            v.root_hash,
            v.salt,
            v.uuid,
            v.data_blocks,
            human_bytes(v.hash_device_size),
            v.tree_chunks,
            human_bytes(v.tree_stored_bytes),
            v.open_command,
            v.open_appended_command,
        ));
        if let (Some(file), Some(command)) = (&v.root_hash_signature, &v.open_signed_command) {
            t.push_str(&format!(
                "  signed:    {command}\n             (root-hash signature {}; extract --trusted-ca writes it beside the image)\n",
                file.display()
            ));
        }
        t.trim_end().to_string()
    })
}
