//! Opening an index under a trust policy. Bytes from anywhere become a [`TrustedIndex`],
//! the only index `extract`, `plan` and `mount` accept, in one of two ways: checked
//! against trusted keys and CAs ([`TrustedIndex::open`]), or taken as they are by a
//! caller that has told its user so ([`TrustedIndex::unauthenticated`]). Both refuse
//! rollbacks.
//!
//! There is no third way: the fields are private.
//!
//! ```compile_fail
//! # fn f(index: blockcast::index::Index) {
//! let trusted = blockcast::trust::TrustedIndex { index, authenticated: true, signer: None, kernel: None };
//! # }
//! ```

use std::ops::Deref;
use std::path::Path;

use openssl::x509::{X509Ref, X509};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::sign::roothash::KernelSignature;
use crate::sign::{self, cms, x509, Kind, PublicKey};
use crate::store::{is_remote, RemoteFiles};

/// What an index must satisfy to be used. Every kind of trust given must vouch for it:
/// with keys and CAs, both a minisign and a CMS signature must.
pub struct Policy {
    /// Keys one of which must have signed the index's exact bytes (`INDEX.minisig`).
    pub keys: Vec<PublicKey>,
    /// With CAs, a certificate they vouch for must have signed the index's exact bytes
    /// (`INDEX.p7s`); the kernel's root-hash signature and systemd's JSON beside the
    /// index, if there, must then be that signer's too.
    pub certificates: Option<x509::Policy>,
    /// The lowest release accepted: older ones are rollbacks.
    pub min_release: u64,
}

/// An index opened under a [`Policy`].
pub struct TrustedIndex {
    index: Index,
    authenticated: bool,
    signer: Option<X509>,
    kernel: Option<KernelSignature>,
}

impl TrustedIndex {
    /// Reads the index at `location` (a path, or a URL fetched through `remote`) and
    /// refuses it, before parsing it, unless its signatures satisfy `policy`; then
    /// refuses a release below `policy.min_release`, and root-hash signatures that are not
    /// the certificate signer's. A policy without keys or CAs is refused: see
    /// [`TrustedIndex::unauthenticated`].
    pub fn open(
        location: &str,
        policy: &Policy,
        remote: Option<&RemoteFiles>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<TrustedIndex> {
        if policy.keys.is_empty() && policy.certificates.is_none() {
            return Err(Error::Invalid(format!(
                "{location}: no trusted key or CA to check its signature with"
            )));
        }
        let bytes = read(location, remote, warn)?;
        let refuse = |e: Error| Error::Untrusted(format!("refusing {location}: {}", untrusted(e)));
        let missing = |kind: Kind, what: &str| {
            Error::Untrusted(format!(
                "refusing {location}: its {what} {location}{} is missing: the index is not signed{}",
                kind.suffix(),
                if kind == Kind::Cms { " with a certificate" } else { "" }
            ))
        };
        if !policy.keys.is_empty() {
            let text = signature(location, Kind::Minisign, remote, warn)?
                .ok_or_else(|| missing(Kind::Minisign, "signature"))?;
            sign::verify(&bytes, &String::from_utf8_lossy(&text), &policy.keys).map_err(refuse)?;
        }
        let signer = match &policy.certificates {
            Some(certificates) => {
                let der = signature(location, Kind::Cms, remote, warn)?
                    .ok_or_else(|| missing(Kind::Cms, "CMS signature"))?;
                Some(cms::verify(&bytes, &der, certificates).map_err(refuse)?)
            }
            None => None,
        };
        let mut trusted = TrustedIndex::release(location, bytes, policy.min_release, true)?;
        if let Some(certificate) = &signer {
            let root = trusted.header().verity.root_hex();
            trusted.kernel = KernelSignature::check(
                signature(location, Kind::RootHash, remote, warn)?,
                signature(location, Kind::VeritySig, remote, warn)?,
                &root,
                certificate,
            )
            .map_err(|reason| {
                Error::Untrusted(format!(
                    "refusing {location}: its root-hash signature: {reason}"
                ))
            })?;
        }
        trusted.signer = signer;
        Ok(trusted)
    }

    /// Reads the index at `location` without checking who made it, still refusing a
    /// release below `min_release`: for a caller that has said so to its user.
    pub fn unauthenticated(
        location: &str,
        min_release: u64,
        remote: Option<&RemoteFiles>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<TrustedIndex> {
        let bytes = read(location, remote, warn)?;
        TrustedIndex::release(location, bytes, min_release, false)
    }

    fn release(
        location: &str,
        bytes: Vec<u8>,
        min_release: u64,
        authenticated: bool,
    ) -> Result<TrustedIndex> {
        let index = Index::from_bytes(Path::new(location), bytes)?;
        let release = index.header().release;
        if release < min_release {
            return Err(Error::Untrusted(format!(
                "{location} has release {release}, older than --min-release {min_release}: refusing a rollback"
            )));
        }
        Ok(TrustedIndex {
            index,
            authenticated,
            signer: None,
            kernel: None,
        })
    }

    /// Whether a trusted key or certificate signed the index.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The certificate whose CMS signature of the index a trusted CA vouched for.
    pub fn signer(&self) -> Option<&X509Ref> {
        self.signer.as_deref()
    }

    /// The kernel's root-hash signature and systemd's JSON, checked as the signer's.
    pub fn kernel_signature(&self) -> Option<&KernelSignature> {
        self.kernel.as_ref()
    }
}

impl Deref for TrustedIndex {
    type Target = Index;

    fn deref(&self) -> &Index {
        &self.index
    }
}

/// The index's bytes, from a file or through `remote`.
fn read(
    location: &str,
    remote: Option<&RemoteFiles>,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<Vec<u8>> {
    match remote.filter(|_| is_remote(location)) {
        Some(files) => files.index(location, warn)?.ok_or_else(|| Error::Remote {
            url: location.to_string(),
            reason: "the server has no such index".into(),
        }),
        None if is_remote(location) => Err(Error::Invalid(format!(
            "{location}: a URL, but no HTTP client to fetch it with"
        ))),
        None => Index::read_bytes(Path::new(location)),
    }
}

/// The signature of `kind` of the index at `location`: through `remote` for a URL, else
/// the file beside it. `None` when there is none.
fn signature(
    location: &str,
    kind: Kind,
    remote: Option<&RemoteFiles>,
    warn: &(dyn Fn(&str) + Send + Sync),
) -> Result<Option<Vec<u8>>> {
    if let Some(files) = remote.filter(|_| is_remote(location)) {
        return files.signature(location, kind, warn);
    }
    let path = kind.path(Path::new(location));
    match kind.read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io { path, err }),
    }
}

/// A signature check's failure, said without the "invalid argument" of a bad key file.
fn untrusted(e: Error) -> String {
    match e {
        Error::Invalid(reason) | Error::Untrusted(reason) => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    fn keys(dir: &Path, name: &str) -> (SecretKey, PublicKey) {
        let pair = sign::generate(None).unwrap();
        let (secret, public) = (dir.join(name), dir.join(format!("{name}.pub")));
        std::fs::write(&secret, pair.secret_text).unwrap();
        std::fs::write(&public, pair.public_text).unwrap();
        (
            SecretKey::from_file(&secret, None).unwrap(),
            PublicKey::from_file(&public).unwrap(),
        )
    }

    #[test]
    fn an_index_is_trusted_only_as_signed_and_never_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.bcidx");
        std::fs::write(&path, crate::index::sample_bytes()).unwrap();
        let location = path.to_str().unwrap();
        let quiet = |_: &str| {};
        let (secret, public) = keys(dir.path(), "release");
        let (_, other) = keys(dir.path(), "other");
        let policy = |keys: Vec<PublicKey>, min_release| Policy {
            keys,
            certificates: None,
            min_release,
        };

        let unsigned = TrustedIndex::open(location, &policy(vec![public.clone()], 0), None, &quiet);
        assert!(
            matches!(unsigned, Err(Error::Untrusted(_))),
            "{:?}",
            unsigned.err()
        );
        assert!(TrustedIndex::open(location, &policy(vec![], 0), None, &quiet).is_err());

        let signature = sign::sign(&std::fs::read(&path).unwrap(), &secret, "test").unwrap();
        std::fs::write(sign::signature_path(&path), signature).unwrap();
        let good = TrustedIndex::open(location, &policy(vec![public.clone()], 0), None, &quiet);
        assert!(good.unwrap().is_authenticated());
        let wrong = TrustedIndex::open(location, &policy(vec![other], 0), None, &quiet);
        assert!(matches!(wrong, Err(Error::Untrusted(_))));

        let bare = TrustedIndex::unauthenticated(location, 0, None, &quiet).unwrap();
        assert!(!bare.is_authenticated());
        let release = bare.header().release;
        for rollback in [
            TrustedIndex::unauthenticated(location, release + 1, None, &quiet).err(),
            TrustedIndex::open(location, &policy(vec![public], release + 1), None, &quiet).err(),
        ] {
            assert!(matches!(rollback, Some(Error::Untrusted(ref r)) if r.contains("rollback")));
        }
    }
}
