//! Releases on OCI registries (`oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`): a release is
//! one image manifest of blockcast's own `artifactType` whose layers are the index, the
//! pack map, the packs and the signatures (see `docs/FORMAT.md`, "On an OCI registry").
//! A pack's name is the SHA-256 of its bytes, so it is its own blob digest; the pack map
//! of an index is found by the tag `bcidx-<first 32 hex digits of the index digest>`.
//!
//! [`Reference`] names a repository and a manifest in it, [`ReleaseManifest`] reads and
//! writes the manifest, [`registry`] speaks the distribution protocol and [`auth`] logs in.

pub mod auth;
pub mod registry;

use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageManifest, ImageManifestBuilder, MediaType};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The `artifactType` of a release's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.blockcast.release.v1";
/// Media types of a release's layers.
pub const INDEX_TYPE: &str = "application/vnd.blockcast.index.v1";
pub const PACK_MAP_TYPE: &str = "application/vnd.blockcast.packmap.v1";
pub const PACK_TYPE: &str = "application/vnd.blockcast.pack.v1";
/// A signature layer's media type is this followed by its kind (see [`signature_kind`]).
pub const SIGNATURE_TYPE_PREFIX: &str = "application/vnd.blockcast.signature.";
pub const MINISIGN: &str = "minisign";
pub const CMS: &str = "cms";
pub const ROOTHASH_P7S: &str = "roothash-p7s";
pub const VERITY_SIG: &str = "verity-sig";
/// The annotation on a release's manifest giving the index digest (64 hex digits).
pub const INDEX_DIGEST_ANNOTATION: &str = "org.blockcast.index.digest";
/// The manifest media type sent and accepted.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The largest manifest read or written: the CNCF distribution registry refuses larger.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The most packs one release's manifest lists. A pack's descriptor takes about 160
/// bytes, so this keeps a manifest near 1.6 MiB, well under [`MAX_MANIFEST`]; a release
/// needing more is refused by `push` (make it again with larger packs).
pub const MAX_PACKS: usize = 10_000;

/// The empty JSON config (`{}`) that artifacts carry, as the image spec defines it; a
/// registry wants it as a blob too.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_DATA: &[u8] = b"{}";

pub fn is_oci(location: &str) -> bool {
    location.starts_with("oci://")
}

/// A repository on a registry, and optionally a manifest in it by tag or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]`, as auth files key it.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:` and 64 hex digits.
    pub digest: Option<String>,
}

impl Reference {
    /// `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
    pub fn parse(location: &str) -> Result<Reference> {
        let invalid = |why: &str| Error::Invalid(format!("{location}: {why}"));
        let rest = location
            .strip_prefix("oci://")
            .ok_or_else(|| invalid("not an oci:// reference"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .filter(|h| is_hex64(h))
                    .ok_or_else(|| invalid("a digest is sha256: and 64 lowercase hex digits"))?;
                (rest, Some(format!("sha256:{hex}")))
            }
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("names no repository (oci://HOST/REPO)"))?;
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(invalid(
                "the registry is not a host name with an optional port",
            ));
        }
        // A tag follows the last ':' after the last '/'.
        let last = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last..].rfind(':') {
            Some(i) => (&path[..last + i], Some(&path[last + i + 1..])),
            None => (path, None),
        };
        if repository.is_empty()
            || repository.len() > 255
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            })
        {
            return Err(invalid(
                "a repository is lowercase letters, digits, '.', '_', '-', in parts split by '/'",
            ));
        }
        if let Some(tag) = tag {
            if !is_tag(tag) {
                return Err(invalid("a tag is up to 128 letters, digits, '_', '.', '-'"));
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(String::from),
            digest,
        })
    }

    /// The manifest this names: its digest, else its tag.
    pub fn manifest(&self) -> Option<&str> {
        self.digest.as_deref().or(self.tag.as_deref())
    }

    /// The repository alone, as a store location: `oci://HOST/REPO`.
    pub fn repository_location(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    /// Whether the registry is on this machine (`localhost`, an address of 127.0.0.0/8,
    /// `[::1]`): reached over plain HTTP, as docker does.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host
            }
            _ => self.registry.as_str(),
        };
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The kind a signature layer of `kind` is named by.
pub fn signature_kind(kind: crate::sign::Kind) -> &'static str {
    use crate::sign::Kind;
    match kind {
        Kind::Minisign => MINISIGN,
        Kind::Cms => CMS,
        Kind::RootHash => ROOTHASH_P7S,
        Kind::VeritySig => VERITY_SIG,
    }
}

/// The tag that finds a release by its index digest.
pub fn index_tag(index_digest: &[u8; 32]) -> String {
    format!("bcidx-{}", &crate::pack::hex(index_digest)[..32])
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::pack::hex(&Sha256::digest(bytes).into()))
}

/// A blob a manifest lists: its digest (`sha256:<hex>`) and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

impl Blob {
    pub fn of(bytes: &[u8]) -> Blob {
        Blob {
            digest: digest_of(bytes),
            size: bytes.len() as u64,
        }
    }

    /// The blob of a pack: its name is its digest.
    pub fn pack(digest: &[u8; 32], size: u64) -> Blob {
        Blob {
            digest: format!("sha256:{}", crate::pack::hex(digest)),
            size,
        }
    }
}

/// What a release's manifest lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseManifest {
    pub index_digest: [u8; 32],
    pub index: Blob,
    pub pack_map: Option<Blob>,
    pub packs: Vec<Blob>,
    /// Each signature with its kind (`minisign`, `cms`, …).
    pub signatures: Vec<(String, Blob)>,
}

impl ReleaseManifest {
    /// The manifest's JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        if self.packs.len() > MAX_PACKS {
            return Err(Error::Unsupported(format!(
                "the release needs {} packs, more than the {MAX_PACKS} one manifest may list: make it with larger packs (--pack-size)",
                self.packs.len()
            )));
        }
        let bad = |e: oci_spec::OciSpecError| Error::Internal(format!("building a manifest: {e}"));
        let layer = |media: &str, blob: &Blob| -> Result<Descriptor> {
            let digest = Digest::from_str(&blob.digest).map_err(bad)?;
            Ok(Descriptor::new(
                MediaType::Other(media.into()),
                blob.size,
                digest,
            ))
        };
        let mut layers = vec![layer(INDEX_TYPE, &self.index)?];
        if let Some(map) = &self.pack_map {
            layers.push(layer(PACK_MAP_TYPE, map)?);
        }
        for pack in &self.packs {
            layers.push(layer(PACK_TYPE, pack)?);
        }
        for (kind, blob) in &self.signatures {
            layers.push(layer(&format!("{SIGNATURE_TYPE_PREFIX}{kind}"), blob)?);
        }
        let empty = Blob::of(EMPTY_DATA);
        let mut config = layer(EMPTY_TYPE, &empty)?;
        config.set_data(Some(base64_of(EMPTY_DATA)));
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
            .config(config)
            .layers(layers)
            .annotations(HashMap::from([(
                INDEX_DIGEST_ANNOTATION.to_string(),
                crate::pack::hex(&self.index_digest),
            )]))
            .build()
            .map_err(bad)?;
        let json = manifest.to_string().map_err(bad)?.into_bytes();
        if json.len() as u64 > MAX_MANIFEST {
            return Err(Error::Unsupported(format!(
                "the release's manifest would take {} bytes, over the {MAX_MANIFEST} a registry takes",
                json.len()
            )));
        }
        Ok(json)
    }

    /// Reads a manifest (`what` names it in messages), refusing one that is not a
    /// blockcast release: another artifact type, no index layer or several, a layer of a
    /// type it does not know.
    pub fn parse(what: &str, json: &[u8]) -> Result<ReleaseManifest> {
        let invalid = |why: String| Error::Remote {
            url: what.to_string(),
            reason: why,
        };
        let manifest = ImageManifest::from_reader(json)
            .map_err(|e| invalid(format!("not an OCI image manifest: {e}")))?;
        match manifest.artifact_type() {
            Some(MediaType::Other(t)) if t == ARTIFACT_TYPE => {}
            other => {
                return Err(invalid(format!(
                    "not a blockcast release: its artifactType is {}, not {ARTIFACT_TYPE}",
                    other.as_ref().map_or("absent".into(), |t| t.to_string())
                )))
            }
        }
        let index_digest = manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(INDEX_DIGEST_ANNOTATION))
            .and_then(|h| crate::chunk::ChunkId::from_hex(h))
            .map(|id| id.0)
            .ok_or_else(|| {
                invalid(format!(
                    "no {INDEX_DIGEST_ANNOTATION} annotation of 64 hex digits"
                ))
            })?;
        let (mut index, mut pack_map, mut packs, mut signatures) =
            (None, None, Vec::new(), Vec::new());
        for layer in manifest.layers() {
            let digest = layer
                .as_digest_sha256()
                .filter(|h| is_hex64(h))
                .ok_or_else(|| {
                    invalid(format!("layer {} is not a sha256 digest", layer.digest()))
                })?;
            let blob = Blob {
                digest: format!("sha256:{digest}"),
                size: layer.size(),
            };
            match layer.media_type().to_string().as_str() {
                INDEX_TYPE if index.is_none() => index = Some(blob),
                PACK_MAP_TYPE if pack_map.is_none() => pack_map = Some(blob),
                PACK_TYPE => packs.push(blob),
                t => match t.strip_prefix(SIGNATURE_TYPE_PREFIX) {
                    Some(kind) => signatures.push((kind.to_string(), blob)),
                    None => {
                        return Err(invalid(format!(
                            "a layer of type {t}, which a blockcast release does not have (or has once)"
                        )))
                    }
                },
            }
        }
        if packs.len() > MAX_PACKS {
            return Err(invalid(format!(
                "{} packs, more than the {MAX_PACKS} a release lists",
                packs.len()
            )));
        }
        Ok(ReleaseManifest {
            index_digest,
            index: index.ok_or_else(|| invalid("no index layer".into()))?,
            pack_map,
            packs,
            signatures,
        })
    }

    /// The first signature of `kind`.
    pub fn signature(&self, kind: &str) -> Option<&Blob> {
        self.signatures
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, b)| b)
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_ports_tags_and_digests() {
        let r = Reference::parse("oci://127.0.0.1:5000/os/base:v2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "os/base");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/os/base:v2");
        let hex = "ab".repeat(32);
        let r = Reference::parse(&format!("oci://ghcr.io/a/b@sha256:{hex}")).unwrap();
        assert_eq!(r.manifest(), Some(format!("sha256:{hex}").as_str()));
        assert!(!r.is_loopback());
        assert_eq!(r.repository_location(), "oci://ghcr.io/a/b");
        for (host, loopback) in [
            ("localhost:5000", true),
            ("127.0.0.1", true),
            ("127.8.9.10:80", true),
            ("[::1]:5000", true),
            ("127.example.com", false),
            ("127.0.0.1.example.com:5000", false),
        ] {
            let r = Reference::parse(&format!("oci://{host}/repo")).unwrap();
            assert_eq!(r.is_loopback(), loopback, "{host}");
        }
        let r = Reference::parse("oci://localhost:5000/repo").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
        for bad in [
            "oci://host",
            "oci:///repo",
            "oci://host/Repo",
            "oci://host/a//b",
            "oci://host/repo:",
            "oci://host/repo:-x",
            "oci://host/repo@sha256:abc",
            "oci://ho st/repo",
            "http://host/repo",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    fn sample() -> ReleaseManifest {
        ReleaseManifest {
            index_digest: [7; 32],
            index: Blob::of(b"index"),
            pack_map: Some(Blob::of(b"map")),
            packs: vec![Blob::pack(&[1; 32], 10), Blob::pack(&[2; 32], 20)],
            signatures: vec![(MINISIGN.into(), Blob::of(b"sig"))],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written_with_the_empty_config() {
        let m = sample();
        let json = m.to_json().unwrap();
        assert_eq!(ReleaseManifest::parse("m", &json).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], EMPTY_TYPE);
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["config"]["data"], "e30=");
        assert_eq!(m.signature(MINISIGN), Some(&Blob::of(b"sig")));
    }

    #[test]
    fn manifests_that_are_not_releases_are_refused() {
        let json = String::from_utf8(sample().to_json().unwrap()).unwrap();
        for (from, to) in [
            (ARTIFACT_TYPE, "application/vnd.other"),
            (INDEX_TYPE, "application/vnd.oci.image.layer.v1.tar"),
            (INDEX_DIGEST_ANNOTATION, "other.annotation"),
            (PACK_MAP_TYPE, INDEX_TYPE),
        ] {
            let bad = json.replacen(from, to, 1);
            assert!(ReleaseManifest::parse("m", bad.as_bytes()).is_err(), "{to}");
        }
        assert!(ReleaseManifest::parse("m", b"{}").is_err());
        assert!(ReleaseManifest::parse("m", b"\xff").is_err());
    }

    #[test]
    fn too_many_packs_are_refused_before_anything_is_sent() {
        let mut m = sample();
        m.packs = (0..=MAX_PACKS)
            .map(|i| Blob::pack(&[(i % 251) as u8; 32], 1))
            .collect();
        let e = m.to_json().unwrap_err().to_string();
        assert!(e.contains("--pack-size"), "{e}");
    }
}
