//! Argument parsing, progress bars and output formats; the work is the library's.

mod diff;
mod export_caibx;
mod extract;
mod info;
mod keygen;
mod make;
mod plan;
mod sign;
mod verify;
mod verity;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blockcast::chunk::ChunkId;
use blockcast::index::Index;
use blockcast::progress::Progress;
use blockcast::seed::Seed;
use blockcast::store::{ChunkStore, LocalStore};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "blockcast",
    version,
    about = "Ship filesystem images as verified, content-addressed chunks"
)]
pub struct Args {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(keygen::KeygenArgs),
    Make(make::MakeArgs),
    Sign(sign::SignArgs),
    Extract(extract::ExtractArgs),
    Plan(plan::PlanArgs),
    Info(info::InfoArgs),
    Diff(diff::DiffArgs),
    ExportCaibx(export_caibx::ExportArgs),
    Verify(verify::VerifyArgs),
    Verity(verity::VerityArgs),
}

pub fn run(args: Args) -> Result<()> {
    let ui = Ui { quiet: args.quiet };
    match args.command {
        Command::Keygen(a) => keygen::run(a, &ui),
        Command::Make(a) => make::run(a, &ui),
        Command::Sign(a) => sign::run(a, &ui),
        Command::Extract(a) => extract::run(a, &ui),
        Command::Plan(a) => plan::run(a, &ui),
        Command::Info(a) => info::run(a, &ui),
        Command::Diff(a) => diff::run(a, &ui),
        Command::ExportCaibx(a) => export_caibx::run(a, &ui),
        Command::Verify(a) => verify::run(a, &ui),
        Command::Verity(a) => verity::run(a, &ui),
    }
}

pub struct Ui {
    quiet: bool,
}

impl Ui {
    pub fn bar(&self) -> Bar {
        let visible = !self.quiet && std::io::stderr().is_terminal();
        Bar(visible.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        }))
    }

    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("blockcast: warning: {msg}");
        }
    }

    /// Prints a human summary unless quiet, or JSON when asked (JSON is printed even when
    /// quiet: a program asked for it).
    pub fn report<T: serde::Serialize>(
        &self,
        json: bool,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> Result<()> {
        if json {
            print_out(&serde_json::to_string_pretty(value)?)
        } else if !self.quiet {
            print_out(&human())
        } else {
            Ok(())
        }
    }
}

/// Prints a line on stdout. A reader that went away (`blockcast info | head`) is not an
/// error worth reporting, and never a panic.
pub fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        if let Some(b) = &self.0 {
            b.reset();
            b.set_length(total);
            b.set_position(0);
            b.set_message(phase.to_string());
        }
    }

    fn advance(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.inc(done);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Environment variable holding the password of an encrypted secret key.
pub const PASSWORD_ENV: &str = "BLOCKCAST_KEY_PASSWORD";

pub fn key_password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok()
}

/// Reads an index; with trusted keys, refuses it unless one of them signed its exact
/// bytes, before the index is even parsed. Without, warns that it is unauthenticated.
pub fn open_index(path: &Path, trusted: &[PathBuf], ui: &Ui) -> Result<Index> {
    let bytes = Index::read_bytes(path)?;
    if trusted.is_empty() {
        ui.warn(&format!(
            "{} is not authenticated: pass --trusted-key to check its signature",
            path.display()
        ));
    } else {
        let keys = trusted
            .iter()
            .map(|k| blockcast::sign::PublicKey::from_file(k))
            .collect::<Result<Vec<_>, _>>()?;
        let sig = blockcast::sign::signature_path(path);
        blockcast::sign::verify_file(&bytes, &sig, &keys)
            .with_context(|| format!("refusing {}", path.display()))?;
    }
    Ok(Index::from_bytes(path, bytes)?)
}

/// Parses sizes such as `65536`, `64K`, `64KiB`, `1M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn open_stores(dirs: &[PathBuf]) -> Result<Vec<Box<dyn ChunkStore>>> {
    dirs.iter()
        .map(|d| -> Result<Box<dyn ChunkStore>> {
            Ok(Box::new(LocalStore::open(d, false).with_context(|| {
                format!("opening store {}", d.display())
            })?))
        })
        .collect()
}

/// Seeds from `--seed` files; the i-th `--seed-index` describes the i-th seed.
pub fn open_seeds(
    target: &Index,
    seeds: &[PathBuf],
    seed_indexes: &[PathBuf],
    ui: &Ui,
) -> Result<Vec<Seed>> {
    if seed_indexes.len() > seeds.len() {
        bail!(
            "{} --seed-index given for {} --seed",
            seed_indexes.len(),
            seeds.len()
        );
    }
    let wanted: HashSet<ChunkId> = blockcast::plan::wanted(target, &[]);
    let bar = ui.bar();
    seeds
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let seed = match seed_indexes.get(i) {
                Some(ix) => {
                    let index = Index::open(ix)?;
                    Seed::from_index(path, &index, &wanted)
                }
                None => {
                    let h = target.header();
                    Seed::scan(path, h.params, h.layout.filesystem_aware, &wanted, &bar)
                }
            };
            seed.with_context(|| format!("opening seed {}", path.display()))
        })
        .collect()
}

/// Bytes as a short human figure.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
