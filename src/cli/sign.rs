use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blockcast::index::Index;
use blockcast::sign::roothash::KernelSignature;
use blockcast::sign::x509::{Signer, DEFAULT_PKCS11_MODULE};
use blockcast::sign::{self, Kind, SecretKey};
use clap::Args;

use super::{key_password, Ui};

/// Sign an index: with a minisign key, writes INDEX.minisig; with a certificate, writes
/// INDEX.p7s (CMS), INDEX.roothash.p7s (the kernel's root-hash signature) and
/// INDEX.verity-sig.json (systemd's verity signature partition).
#[derive(Args)]
pub struct SignArgs {
    index: PathBuf,
    /// minisign secret key; an encrypted key's password comes from BLOCKCAST_KEY_PASSWORD.
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    #[command(flatten)]
    certificate: CertificateArgs,
}

/// Environment variable naming the PKCS#11 module when neither the key's URI nor
/// --pkcs11-module does.
pub const PKCS11_MODULE_ENV: &str = "BLOCKCAST_PKCS11_MODULE";

/// Signing with an X.509 certificate: shared by make and sign.
#[derive(Args)]
pub struct CertificateArgs {
    /// Sign with this certificate (PEM: the signer's, then any intermediates, which the
    /// CMS signature carries): writes INDEX.p7s, INDEX.roothash.p7s and
    /// INDEX.verity-sig.json.
    #[arg(long, value_name = "PEM", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// The certificate's private key: a PEM file or a PKCS#11 URI
    /// (pkcs11:token=…;object=…?pin-value=…); an encrypted key's password, or the
    /// token's PIN when the URI gives none, comes from BLOCKCAST_KEY_PASSWORD.
    #[arg(long, value_name = "KEY|URI", requires = "sign_cert")]
    sign_key: Option<String>,
    /// PKCS#11 module of a key URI without module-path [default: $BLOCKCAST_PKCS11_MODULE,
    /// else SoftHSM's].
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pkcs11_module: Option<PathBuf>,
}

impl CertificateArgs {
    /// The signer, when a certificate was given.
    pub fn signer(&self) -> Result<Option<Signer>> {
        let (Some(cert), Some(key)) = (&self.sign_cert, &self.sign_key) else {
            return Ok(None);
        };
        let module = self
            .pkcs11_module
            .clone()
            .or_else(|| std::env::var_os(PKCS11_MODULE_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PKCS11_MODULE));
        let signer = Signer::open(cert, key, key_password().as_deref(), &module)
            .with_context(|| format!("opening the signer {}", cert.display()))?;
        Ok(Some(signer))
    }
}

/// Signs the exact bytes of the index file with the minisign `key` and the certificate
/// `signer`, whichever are given; returns the files written. The minisign trusted
/// comment names the file, the release and the dm-verity root, so they are authenticated
/// even when shown alone.
pub fn sign_index(
    index_path: &Path,
    key: Option<&Path>,
    signer: Option<&Signer>,
) -> Result<Vec<PathBuf>> {
    if key.is_none() && signer.is_none() {
        return Ok(Vec::new());
    }
    let bytes = Index::read_bytes(index_path)?;
    let index = Index::from_bytes(index_path, bytes)?;
    let h = index.header();
    let root = h.verity.root_hex();
    let mut files = Vec::new();
    if let Some(key) = key {
        let key = SecretKey::from_file(key, key_password().as_deref())?;
        let name = index_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let comment = format!("file:{name}\trelease:{}\tverity:{root}", h.release);
        let signature = sign::sign(index.as_bytes(), &key, &comment)?;
        files.push((Kind::Minisign, signature.into_bytes()));
    }
    if let Some(signer) = signer {
        files.push((Kind::Cms, sign::cms::sign(index.as_bytes(), signer)?));
        let kernel = KernelSignature::make(&root, signer)?;
        files.push((Kind::RootHash, kernel.p7s));
        files.push((Kind::VeritySig, kernel.verity_sig));
    }
    files
        .into_iter()
        .map(|(kind, bytes)| {
            let path = kind.path(index_path);
            blockcast::durable::write_file(&path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

pub fn run(a: SignArgs, ui: &Ui) -> Result<()> {
    let signer = a.certificate.signer()?;
    if a.key.is_none() && signer.is_none() {
        bail!("give a minisign --key, or a certificate (--sign-cert and --sign-key), to sign with");
    }
    let paths = sign_index(&a.index, a.key.as_deref(), signer.as_ref())?;
    ui.report(false, &(), || {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("wrote {}", names.join(", "))
    })
}
