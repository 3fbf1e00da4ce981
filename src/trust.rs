//! Opening an index under a trust policy. Bytes from anywhere become a [`TrustedIndex`],
//! the only index `extract`, `plan` and `mount` accept, in one of two ways: checked
//! against trusted keys ([`TrustedIndex::open`]), or taken as they are by a caller that
//! has told its user so ([`TrustedIndex::unauthenticated`]). Both refuse rollbacks.
//!
//! There is no third way: the fields are private.
//!
//! ```compile_fail
//! # fn f(index: blockcast::index::Index) {
//! let trusted = blockcast::trust::TrustedIndex { index, authenticated: true };
//! # }
//! ```

use std::ops::Deref;
use std::path::Path;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::sign::{self, PublicKey};
use crate::store::{is_remote, RemoteFiles};

/// What an index must satisfy to be used.
pub struct Policy {
    /// Keys one of which must have signed the index's exact bytes (`INDEX.minisig`).
    pub keys: Vec<PublicKey>,
    /// The lowest release accepted: older ones are rollbacks.
    pub min_release: u64,
}

/// An index opened under a [`Policy`].
pub struct TrustedIndex {
    index: Index,
    authenticated: bool,
}

/// A `.minisig` file is four short lines.
const MAX_SIGNATURE_SIZE: u64 = 64 << 10;

impl TrustedIndex {
    /// Reads the index at `location` (a path, or a URL fetched through `remote`) and
    /// refuses it, before parsing it, unless one of `policy.keys` signed its exact bytes;
    /// then refuses a release below `policy.min_release`. A policy without keys is
    /// refused: see [`TrustedIndex::unauthenticated`].
    pub fn open(
        location: &str,
        policy: &Policy,
        remote: Option<&RemoteFiles>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<TrustedIndex> {
        if policy.keys.is_empty() {
            return Err(Error::Invalid(format!(
                "{location}: no trusted key to check its signature with"
            )));
        }
        let bytes = read(location, remote, warn)?;
        let checked = match remote.filter(|_| is_remote(location)) {
            Some(files) => match files.signature(location, MAX_SIGNATURE_SIZE, warn)? {
                Some(text) => sign::verify(&bytes, &String::from_utf8_lossy(&text), &policy.keys),
                None => Err(Error::Untrusted(format!(
                    "the signature of {location} is missing: the index is not signed"
                ))),
            },
            None => sign::verify_file(
                &bytes,
                &sign::signature_path(Path::new(location)),
                &policy.keys,
            ),
        };
        checked.map_err(|e| Error::Untrusted(format!("refusing {location}: {}", untrusted(e))))?;
        TrustedIndex::release(location, bytes, policy.min_release, true)
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
        })
    }

    /// Whether a trusted key signed the index.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
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
        let policy = |keys: Vec<PublicKey>, min_release| Policy { keys, min_release };

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
