use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::mount::{log_path, STOPPED};
use super::Ui;

/// Take down what `blockcast mount` set up at MOUNTPOINT (or the --no-attach directory):
/// the filesystem, its loop device and the FUSE file, even if the mount process is gone.
/// The log of a `--daemon` mount is removed when the mount stopped cleanly (its summary
/// is shown), and kept otherwise.
#[derive(Args)]
pub struct UmountArgs {
    mountpoint: PathBuf,
}

pub fn run(a: UmountArgs, ui: &Ui) -> Result<()> {
    blockcast::mount::unmount(&a.mountpoint, &|m: &str| ui.warn(m))
        .with_context(|| format!("unmounting {}", a.mountpoint.display()))?;
    let log = log_path(&a.mountpoint);
    let summary = match stopped_summary(&log) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other.with_context(|| format!("reading the mount's log {}", log.display()))?,
    };
    match summary {
        Some(summary) => {
            if !ui.quiet {
                eprintln!("{summary}");
            }
            std::fs::remove_file(&log).with_context(|| format!("removing {}", log.display()))
        }
        None => {
            ui.warn(&format!(
                "the mount process did not stop cleanly; its log is kept in {}",
                log.display()
            ));
            Ok(())
        }
    }
}

/// Bytes of a log's end searched for the summary: more than the summary and whatever a
/// background fetch may still log after it.
const TAIL: u64 = 64 << 10;

/// The summary line the mount process logged when it stopped cleanly, if it did.
fn stopped_summary(log: &Path) -> std::io::Result<Option<String>> {
    let mut file = std::fs::File::open(log)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| l.starts_with(STOPPED))
        .map(String::from))
}
