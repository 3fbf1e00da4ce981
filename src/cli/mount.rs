use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blockcast::mount::attach::{AttachMode, Attached};
use blockcast::mount::cache_image::CacheImage;
use blockcast::mount::reader::{LazyImage, ReaderOptions};
use blockcast::mount::{self, Target};
use clap::{Args, ValueEnum};

use super::{open_sources, print_out, SourceArgs, Ui};

/// Set in the environment of the process `--daemon` starts: it reports on stdout when
/// the image is attached.
const NOTIFY_ENV: &str = "BLOCKCAST_MOUNT_NOTIFY";
const READY: &str = "ready";
/// How the summary a mount prints when it stops begins; found in a `--daemon` log, it
/// tells `blockcast umount` that the mount stopped cleanly.
pub(super) const STOPPED: &str = "blockcast: unmounted ";

/// The log of a `--daemon` mount at `path`.
pub(super) fn log_path(path: &Path) -> PathBuf {
    mount::record_dir(path).with_extension("log")
}

/// Attach an image without extracting it: a lazy FUSE file whose every block is checked
/// against the index's dm-verity tree, mounted read-only. Runs until SIGINT or SIGTERM,
/// or `blockcast umount MOUNTPOINT`.
#[derive(Args)]
pub struct MountArgs {
    /// The index: a file or an http:// or https:// URL.
    index: String,
    /// Where to mount the filesystem.
    #[arg(required_unless_present = "no_attach", conflicts_with = "no_attach")]
    mountpoint: Option<PathBuf>,
    #[command(flatten)]
    sources: SourceArgs,
    /// A sparse copy of the image filled as it is read (state in FILE.state), reused by
    /// the next mount; once everything was read, FILE is the whole image.
    #[arg(long, value_name = "FILE")]
    cache_image: Option<PathBuf>,
    /// How to attach: erofs straight from the file where the kernel can (auto), a loop
    /// device, or the file-backed erofs mount only.
    #[arg(long, value_enum, default_value = "auto")]
    attach: Attach,
    /// Only expose the image as DIR/image, for attaching it yourself.
    #[arg(long, value_name = "DIR")]
    no_attach: Option<PathBuf>,
    /// Chunks fetched ahead of the last one read.
    #[arg(long, default_value_t = ReaderOptions::default().readahead)]
    readahead: usize,
    /// Run in the background once mounted; warnings go to a log file.
    #[arg(long)]
    daemon: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Attach {
    Auto,
    Loop,
    File,
}

pub fn run(mut a: MountArgs, ui: &Ui) -> Result<()> {
    a.sources.stores.default_for(&a.index)?;
    if a.sources.stores.is_empty() && a.sources.seed.is_empty() && a.cache_image.is_none() {
        bail!("give at least one --store (or --seed, or --cache-image) to read chunks from");
    }
    let target = match (&a.no_attach, &a.mountpoint) {
        (Some(dir), _) => Target::Expose { dir: dir.clone() },
        (None, Some(mp)) => Target::Attach {
            mountpoint: mp.clone(),
            mode: match a.attach {
                Attach::Auto => AttachMode::Auto,
                Attach::Loop => AttachMode::Loop,
                Attach::File => AttachMode::File,
            },
        },
        (None, None) => bail!("no mountpoint"),
    };
    let path = target.path().to_path_buf();
    if a.daemon {
        return daemonize(&path, ui);
    }
    let runtime = blockcast::store::runtime()?;
    let (index, stores, seeds) = open_sources(&a.index, &a.sources, runtime.handle(), ui)?;
    let ui_copy = *ui;
    let warn: blockcast::store::Warn = Arc::new(move |m: &str| ui_copy.warn(m));
    let cache = match &a.cache_image {
        Some(p) => Some(
            CacheImage::open(p, &index, warn.clone())
                .with_context(|| format!("opening the cache image {}", p.display()))?,
        ),
        None => None,
    };
    let opts = ReaderOptions {
        readahead: a.readahead,
        ..ReaderOptions::default()
    };
    let image = LazyImage::new(index, stores, seeds, cache, opts, warn.clone())
        .context("checking the hash tree against the index's root")?;
    let mut mounted = mount::mount(image, target, warn)
        .with_context(|| format!("mounting {} on {}", a.index, path.display()))?;
    let how = match &mounted.record().attached {
        Some(Attached::Loop { device }) => format!("through {}", device.display()),
        Some(Attached::File) => "straight from the file".into(),
        None => format!(
            "as {}",
            mounted
                .record()
                .fuse_dir
                .join(mount::fuse::FILE_NAME)
                .display()
        ),
    };
    if std::env::var_os(NOTIFY_ENV).is_some() {
        print_out(READY)?;
    } else if !ui.quiet {
        print_out(&format!("{} mounted on {} {how}", a.index, path.display()))?;
    }
    serve_until_stopped(&mut mounted, runtime.handle(), ui)?;
    let stats = mounted.image().stats();
    // A daemon's log always gets it: `blockcast umount` looks for it there.
    if !ui.quiet || std::env::var_os(NOTIFY_ENV).is_some() {
        eprintln!(
            "{STOPPED}{}: {} reads, {} chunks fetched ({} chunk files rebuilt from deltas), {} from seeds, {} blocks fetched again, {} failed reads",
            path.display(),
            stats.reads,
            stats.chunks_fetched,
            stats.chunk_files_from_deltas,
            stats.chunks_from_seeds,
            stats.blocks_refetched,
            stats.failed_reads
        );
    }
    Ok(())
}

/// Serves until SIGINT or SIGTERM (or until someone unmounts it), then takes the mount
/// down. A busy filesystem is reported and kept.
fn serve_until_stopped(
    mounted: &mut mount::Mounted,
    runtime: &tokio::runtime::Handle,
    ui: &Ui,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    runtime.block_on(async {
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut saved = Instant::now();
        loop {
            let stop = tokio::select! {
                _ = int.recv() => true,
                _ = term.recv() => true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => !mounted.is_alive(),
            };
            if stop {
                match mounted.unmount() {
                    Ok(()) => return Ok(()),
                    Err(e) => ui.warn(&format!("{e}; still mounted")),
                }
            } else if saved.elapsed() > Duration::from_secs(10) {
                if let Err(e) = mounted.save() {
                    ui.warn(&format!("saving the cache image state: {e}"));
                }
                saved = Instant::now();
            }
        }
    })
}

/// Starts this same command in the background and returns once it has mounted the
/// image, or fails with what it logged.
fn daemonize(path: &Path, ui: &Ui) -> Result<()> {
    let log = log_path(path);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let exe = std::env::current_exe().context("finding the blockcast executable")?;
    let mut child = Command::new(exe)
        .args(args)
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("starting the background process")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out)
            .read_line(&mut line)
            .context("waiting for the mount")?;
    }
    if line.trim() == READY {
        if !ui.quiet {
            print_out(&format!(
                "mounted on {} by process {} (log: {}); `blockcast umount {}` takes it down",
                path.display(),
                child.id(),
                log.display(),
                path.display()
            ))?;
        }
        return Ok(());
    }
    let status = child.wait().context("waiting for the background process")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    bail!(
        "the background mount failed ({status}; its log is kept in {}):\n{}",
        log.display(),
        text.trim_end()
    );
}
