//! Argument parsing, progress bars and output formats; the work is the library's.

mod check;
mod diff;
mod export_caibx;
mod extract;
mod info;
mod keygen;
mod make;
mod mount;
mod pack;
mod plan;
mod prune;
mod push;
mod repair;
mod serve;
mod sign;
mod umount;
mod unpack;
mod verify;
mod verity;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use blockcast::chunk::ChunkId;
use blockcast::index::Index;
use blockcast::progress::Progress;
use blockcast::seed::Seed;
use blockcast::sign::x509::VerifyTime;
use blockcast::store::{HttpOptions, RemoteFiles, StoreOptions, Stores};
use blockcast::trust::{Policy, TrustedIndex};
use blockcast::verity::fec::Roots;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Handle;

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
    Check(check::CheckArgs),
    Verity(verity::VerityArgs),
    Serve(serve::ServeArgs),
    Mount(mount::MountArgs),
    Umount(umount::UmountArgs),
    Unpack(unpack::UnpackArgs),
    Pack(pack::PackArgs),
    Push(push::PushArgs),
    Prune(prune::PruneArgs),
    Repair(repair::RepairArgs),
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
        Command::Check(a) => check::run(a, &ui),
        Command::Verity(a) => verity::run(a, &ui),
        Command::Serve(a) => serve::run(a),
        Command::Mount(a) => mount::run(a, &ui),
        Command::Umount(a) => umount::run(a, &ui),
        Command::Unpack(a) => unpack::run(a, &ui),
        Command::Pack(a) => pack::run(a, &ui),
        Command::Push(a) => push::run(a, &ui),
        Command::Prune(a) => prune::run(a, &ui),
        Command::Repair(a) => repair::run(a, &ui),
    }
}

#[derive(Clone, Copy)]
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

    /// [`Ui::warn`] as the library takes it.
    pub fn warner(&self) -> blockcast::store::Warn {
        let ui = *self;
        std::sync::Arc::new(move |m: &str| ui.warn(m))
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

/// Opens an index from a path or URL under the library's trust policy: with trusted keys
/// or CAs, refused unless they vouch for its exact bytes (INDEX.minisig, INDEX.p7s beside
/// it), before it is even parsed; without, taken after a warning that it is
/// unauthenticated. Either way a release older than `--min-release` is refused.
fn open_index(
    location: &str,
    trust: &TrustArgs,
    http: &HttpOptions,
    runtime: &Handle,
    ui: &Ui,
) -> Result<TrustedIndex> {
    let remote = blockcast::store::is_remote(location)
        .then(|| RemoteFiles::new(http, runtime.clone()))
        .transpose()?;
    let warn = |m: &str| ui.warn(m);
    let index = if trust.trusted_key.is_empty() && trust.trusted_ca.is_empty() {
        ui.warn(&format!(
            "{location} is not authenticated: pass --trusted-key or --trusted-ca to check its signature"
        ));
        TrustedIndex::unauthenticated(location, trust.min_release, remote.as_ref(), &warn)?
    } else {
        let certificates = (!trust.trusted_ca.is_empty())
            .then(|| {
                blockcast::sign::x509::Policy::new(
                    &trust.trusted_ca,
                    trust.verify_time,
                    trust.required_eku.as_deref(),
                )
            })
            .transpose()?;
        let policy = Policy {
            keys: trust
                .trusted_key
                .iter()
                .map(|k| blockcast::sign::PublicKey::from_file(k))
                .collect::<Result<Vec<_>, _>>()?,
            certificates,
            min_release: trust.min_release,
        };
        TrustedIndex::open(location, &policy, remote.as_ref(), &warn)?
    };
    Ok(index)
}

/// Where chunks come from, and how remote ones are fetched: shared by the commands that
/// read stores.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Chunk store: a directory, an http:// or https:// URL, s3://BUCKET/PREFIX or
    /// oci://HOST/REPO; repeat to try several in order for each chunk. With an oci://
    /// index and no store, the index's repository.
    #[arg(long, value_name = "DIR|URL")]
    store: Vec<String>,
    /// Keep fetched chunks in this local store, and take chunks from it first.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Seconds an HTTP request may go without progress (connecting, or between bytes of
    /// the answer); in all it may take this plus its bytes at 16 KiB/s.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
    /// Pieces of a pack at most this far apart are fetched as one range, the bytes between
    /// included (fewer ranges, more bytes).
    #[arg(long, default_value = "8KiB", value_name = "SIZE", value_parser = parse_size)]
    coalesce_gap: u64,
    /// Further attempts after a failed request (with backoff), per store.
    #[arg(long, default_value_t = 4)]
    retries: u32,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// Who a remote store or registry is reached as: TLS and plain-HTTP registries; shared
/// by the commands that fetch and `push`.
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// PEM file of a certificate authority to trust besides the system's; repeatable.
    #[arg(long, value_name = "PEM")]
    ca_cert: Vec<PathBuf>,
    /// PEM client certificate for servers that ask for one (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// A registry (HOST[:PORT]) reached over plain HTTP; those on loopback always are.
    /// Repeatable.
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
}

impl ConnectionArgs {
    /// The HTTP options with `timeout` and `retries`.
    pub fn http(&self, timeout_seconds: f64, retries: u32) -> Result<HttpOptions> {
        Ok(HttpOptions {
            timeout: timeout(timeout_seconds)?,
            retries,
            ca_certs: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            insecure_registries: self.insecure_registry.clone(),
        })
    }
}

impl StoreArgs {
    pub fn http(&self) -> Result<HttpOptions> {
        self.connection.http(self.timeout, self.retries)
    }

    /// With no store given, the repository of an `oci://` index is the store.
    pub fn default_for(&mut self, index: &str) -> Result<()> {
        if self.store.is_empty() && blockcast::oci::is_oci(index) {
            let reference = blockcast::oci::Reference::parse(index)?;
            self.store.push(reference.repository_location());
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn open(&self, ui: &Ui, runtime: &Handle) -> Result<Stores> {
        let opts = StoreOptions {
            http: self.http()?,
            concurrency: usize::from(self.concurrency),
            cache: self.cache.clone(),
            coalesce_gap: self.coalesce_gap,
        };
        Stores::open(&self.store, &opts, ui.warner(), runtime.clone()).context("opening the stores")
    }
}

/// A duration: a number of seconds, or a number followed by `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => s.split_at(at),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: a duration is a number and s, m, h or d")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: a duration is a number and s, m, h or d"))
}

/// `--timeout SECONDS` as a duration: a positive number of seconds.
pub fn timeout(seconds: f64) -> Result<std::time::Duration> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--timeout {seconds} is not a positive number of seconds");
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `--fec-roots N`: parity bytes per FEC codeword, as veritysetup takes them.
pub fn parse_roots(s: &str) -> Result<Roots, String> {
    let n: u8 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of FEC roots"))?;
    Roots::new(n).map_err(|e| e.to_string())
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

/// Which indexes are trusted: shared by the commands that read one.
#[derive(clap::Args)]
pub struct TrustArgs {
    /// Public key (minisign) whose signature INDEX.minisig must cover the index;
    /// repeatable. The index is refused before anything is fetched or attached unless one
    /// of them signed it; without any (and without --trusted-ca), it is used with a
    /// warning that it is not authenticated.
    #[arg(long, value_name = "PUB")]
    pub trusted_key: Vec<PathBuf>,
    /// PEM file of CA certificates (repeatable): the CMS signature INDEX.p7s must then
    /// cover the index, by a certificate chaining to one of them, valid at --verify-time,
    /// whose key usage allows digitalSignature and extended key usage codeSigning (where
    /// it says any). With --trusted-key too, both signatures must. CRLs are not checked.
    #[arg(long, value_name = "PEM")]
    pub trusted_ca: Vec<PathBuf>,
    /// When certificates must be valid: `now`, a date (2030-01-31), a time
    /// (2030-01-31T12:00:00Z) or @SECONDS since the epoch; for devices without a
    /// real-time clock.
    #[arg(long, default_value = "now", value_name = "now|DATE", value_parser = parse_verify_time)]
    pub verify_time: VerifyTime,
    /// Object identifier that the signer's extended key usage must list, instead of
    /// codeSigning where it has one.
    #[arg(long, value_name = "OID")]
    pub required_eku: Option<String>,
    /// Refuse an index whose release number is lower (a rollback).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_release: u64,
}

/// `--verify-time`: `now`, `@SECONDS`, an RFC 3339 time or a date (midnight UTC).
pub fn parse_verify_time(s: &str) -> Result<VerifyTime, String> {
    if s == "now" {
        return Ok(VerifyTime::Now);
    }
    let bad = || {
        format!("{s:?} is not now, a date (2030-01-31), a time (2030-01-31T12:00:00Z) or @SECONDS")
    };
    if let Some(seconds) = s.strip_prefix('@') {
        return seconds.parse().map(VerifyTime::At).map_err(|_| bad());
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(VerifyTime::At(t.as_second()));
    }
    let date: jiff::civil::Date = s.parse().map_err(|_| bad())?;
    let t = date
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|_| bad())?
        .timestamp();
    Ok(VerifyTime::At(t.as_second()))
}

impl TrustArgs {
    /// The index at `location`, opened as [`open_index`] opens it.
    pub fn open(
        &self,
        location: &str,
        http: &HttpOptions,
        runtime: &Handle,
        ui: &Ui,
    ) -> Result<TrustedIndex> {
        open_index(location, self, http, runtime, ui)
    }
}

/// Everything extract, plan and mount read from: the trusted index, the stores and the
/// seeds.
#[derive(clap::Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub stores: StoreArgs,
    /// A local file or block device whose chunks may be reused (typically the installed
    /// release); repeatable.
    #[arg(long, value_name = "FILE")]
    pub seed: Vec<PathBuf>,
    /// The index the i-th --seed was made from, so that seed need not be chunked again.
    #[arg(long, value_name = "INDEX")]
    pub seed_index: Vec<PathBuf>,
}

/// What extract, plan and mount read from: the index (opened as [`open_index`] opens
/// it), then the stores, then the seeds.
pub fn open_sources(
    location: &str,
    sources: &SourceArgs,
    runtime: &Handle,
    ui: &Ui,
) -> Result<(TrustedIndex, Stores, Vec<Seed>)> {
    let stores = &sources.stores;
    let index = sources.trust.open(location, &stores.http()?, runtime, ui)?;
    let (seeds, seed_indexes) = (&sources.seed, &sources.seed_index);
    let stores = stores.open(ui, runtime)?;
    stores.use_pack_maps(&index);
    let seeds = open_seeds(&index, seeds, seed_indexes, ui)?;
    Ok((index, stores, seeds))
}

/// Seeds from `--seed` files; the i-th `--seed-index` describes the i-th seed.
fn open_seeds(
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
    let wanted: HashSet<ChunkId> =
        blockcast::seed::lendable(target, &blockcast::plan::wanted(target, &[]));
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
                    Seed::scan(path, h.params, h.layout.cutting, &wanted, &bar)
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
