use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blockcast::sign;
use clap::Args;

use super::{key_password, Ui, PASSWORD_ENV};

/// Make a minisign key pair for signing indexes.
#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    secret_key: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
    /// Encrypt the secret key with the password in BLOCKCAST_KEY_PASSWORD.
    #[arg(long)]
    encrypt: bool,
}

fn create(path: &Path, mode: u32, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(a: KeygenArgs, ui: &Ui) -> Result<()> {
    let password = if a.encrypt {
        match key_password() {
            Some(p) => Some(p),
            None => bail!("--encrypt takes the password from {PASSWORD_ENV}, which is not set"),
        }
    } else {
        None
    };
    let pair = sign::generate(password.as_deref())?;
    create(&a.secret_key, 0o600, &pair.secret_text)?;
    create(&a.public_key, 0o644, &pair.public_text)?;
    let id = sign::PublicKey::parse(&pair.public_text)?.key_id_hex();
    ui.report(false, &(), || {
        format!(
            "key {id}: secret {} public {}",
            a.secret_key.display(),
            a.public_key.display()
        )
    })
}
