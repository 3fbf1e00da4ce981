use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Ui;

/// Take down what `blockcast mount` set up at MOUNTPOINT (or the --no-attach directory):
/// the filesystem, its loop device and the FUSE file, even if the mount process is gone.
#[derive(Args)]
pub struct UmountArgs {
    mountpoint: PathBuf,
}

pub fn run(a: UmountArgs, ui: &Ui) -> Result<()> {
    blockcast::mount::unmount(&a.mountpoint, &|m: &str| ui.warn(m))
        .with_context(|| format!("unmounting {}", a.mountpoint.display()))
}
