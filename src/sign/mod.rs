//! Signatures over an index, each a file beside it (see [`Kind`]):
//!
//! - [`minisign`]: Ed25519 keys and signatures in the formats of the `minisign` tool;
//! - [`cms`]: a detached CMS signature by an X.509 certificate's key ([`x509`] loads
//!   certificates and keys, from PEM files or PKCS#11 tokens, and holds the policy that
//!   checks certificates);
//! - [`roothash`]: the signature the kernel checks when dm-verity opens the image (a
//!   PKCS#7 signature of the root hash), and the JSON of systemd's verity signature
//!   partition that carries it.

pub mod cms;
pub mod minisign;
pub mod pkcs11;
pub mod roothash;
pub mod x509;

use std::path::{Path, PathBuf};

pub use minisign::*;

/// The signature files that travel with an index, named after it (`INDEX` + suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `INDEX.minisig`: minisign's signature of the index.
    Minisign,
    /// `INDEX.p7s`: a detached CMS signature of the index, DER.
    Cms,
    /// `INDEX.roothash.p7s`: the kernel's PKCS#7 signature of the root hash, DER.
    RootHash,
    /// `INDEX.verity-sig.json`: systemd's verity signature partition.
    VeritySig,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Minisign, Kind::Cms, Kind::RootHash, Kind::VeritySig];

    /// What follows the index's file name.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Minisign => ".minisig",
            Kind::Cms => ".p7s",
            Kind::RootHash => roothash::SUFFIX,
            Kind::VeritySig => roothash::JSON_SUFFIX,
        }
    }

    /// The file of this kind beside `index` (or beside an image).
    pub fn path(self, index: &Path) -> PathBuf {
        let mut name = index.as_os_str().to_os_string();
        name.push(self.suffix());
        PathBuf::from(name)
    }

    /// The most bytes a file of this kind is read with: a certificate chain fits in a
    /// CMS signature many times over.
    pub fn max_len(self) -> u64 {
        match self {
            Kind::Minisign => 64 << 10,
            Kind::Cms | Kind::RootHash | Kind::VeritySig => 256 << 10,
        }
    }

    /// A file of this kind: a regular file of at most [`Kind::max_len`] bytes.
    pub fn read(self, path: &Path) -> std::io::Result<Vec<u8>> {
        crate::image::read_small(path, self.max_len(), "a signature file")
    }
}

/// Where the minisign signature of `index` lives: beside it, named as `minisign` names it.
pub fn signature_path(index: &Path) -> PathBuf {
    Kind::Minisign.path(index)
}
