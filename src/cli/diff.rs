use std::path::PathBuf;

use anyhow::{Context, Result};
use blockcast::diff::{self, ByRegion, Tally};
use blockcast::image::Image;
use blockcast::index::Index;
use clap::Args;

use super::{human_bytes, Ui};

/// Compare two indexes: what the new one shares with the old one and what is new.
#[derive(Args)]
pub struct DiffArgs {
    old: PathBuf,
    new: PathBuf,
    /// The image NEW was made from: break the new chunks down by the kind of filesystem
    /// region they hold (metadata, file data, compression units, free space).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DiffArgs, ui: &Ui) -> Result<()> {
    let old = Index::open(&a.old)?;
    let new = Index::open(&a.new)?;
    let image = a.image.as_deref().map(Image::open).transpose()?;
    let d = diff::compare(&old, &new, image.as_ref())
        .with_context(|| format!("comparing {} with {}", a.new.display(), a.old.display()))?;
    ui.report(a.json, &d, || {
        let mut t = format!(
            "shared: {} chunks, {} ({} stored)\nnew:    {} chunks, {} ({} stored)\nzero:   {}",
            d.shared.chunks,
            human_bytes(d.shared.bytes),
            human_bytes(d.shared.stored_bytes),
            d.new.chunks,
            human_bytes(d.new.bytes),
            human_bytes(d.new.stored_bytes),
            human_bytes(d.zero_bytes)
        );
        if let Some(b) = &d.new_by_region {
            t.push_str(&by_region(b));
        }
        t
    })
}

fn by_region(b: &ByRegion) -> String {
    let row = |name: &str, t: &Tally| {
        format!(
            "\n  {name:<13} {:>10} in new chunks; {} chunks of it alone",
            human_bytes(t.bytes),
            t.chunks
        )
    };
    let mut s = String::from("new, by region of the new image:");
    for (name, t) in [
        ("metadata", &b.metadata),
        ("file data", &b.data),
        ("compressed", &b.compressed),
        ("shared units", &b.shared_units),
        ("free", &b.free),
    ] {
        s.push_str(&row(name, t));
    }
    s.push_str(&format!(
        "\n  {} chunks hold more than one kind",
        b.mixed_chunks
    ));
    format!("\n{s}")
}
