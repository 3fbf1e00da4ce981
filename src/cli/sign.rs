use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use blockcast::index::Index;
use blockcast::sign::{self, SecretKey};
use clap::Args;

use super::{key_password, Ui};

/// Sign an index: writes INDEX.minisig (minisign's prehashed Ed25519 format).
#[derive(Args)]
pub struct SignArgs {
    index: PathBuf,
    /// minisign secret key; an encrypted key's password comes from BLOCKCAST_KEY_PASSWORD.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
}

/// Signs the exact bytes of the index file; the trusted comment names the file, the
/// release and the dm-verity root, so they are authenticated even when shown alone.
pub fn sign_index(index_path: &Path, key: &Path) -> Result<PathBuf> {
    let bytes = Index::read_bytes(index_path)?;
    let index = Index::from_bytes(index_path, bytes)?;
    let key = SecretKey::from_file(key, key_password().as_deref())?;
    let name = index_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let h = index.header();
    let comment = format!(
        "file:{name}\trelease:{}\tverity:{}",
        h.release,
        h.verity.root_hex()
    );
    let signature = sign::sign(index.as_bytes(), &key, &comment)?;
    let path = sign::signature_path(index_path);
    blockcast::durable::write_file(&path, signature.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub fn run(a: SignArgs, ui: &Ui) -> Result<()> {
    let path = sign_index(&a.index, &a.key)?;
    ui.report(false, &(), || format!("wrote {}", path.display()))
}
