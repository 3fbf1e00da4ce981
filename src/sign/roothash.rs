//! The signatures the kernel and systemd check when dm-verity opens an image.
//!
//! - `.roothash.p7s`: a detached PKCS#7 signature (DER) of the root hash as lowercase hex
//!   without a newline, with no certificates and no signed attributes: what
//!   `veritysetup open --root-hash-signature` hands the kernel, which checks it with
//!   `verify_pkcs7_signature` against a certificate in its keyring. With an RSA key it is
//!   byte for byte `openssl smime -sign -nocerts -noattr -binary -outform der`.
//! - `.verity-sig.json`: the contents of systemd's verity signature partition: a JSON
//!   object with `rootHash`, `signature` (base64 of the `.roothash.p7s` bytes) and
//!   `certificateFingerprint` (SHA-256 of the signer's certificate), NUL-padded to a
//!   multiple of 4096 bytes.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509Ref;
use serde::{Deserialize, Serialize};

use super::x509::{fingerprint, Signer};
use crate::error::{Error, Result};

/// What follows an index's (or an image's) name in the name of its `.roothash.p7s`:
/// systemd looks for `IMAGE.roothash.p7s` beside an image.
pub const SUFFIX: &str = ".roothash.p7s";
/// What follows an index's (or an image's) name in the name of its verity signature JSON.
pub const JSON_SUFFIX: &str = ".verity-sig.json";
/// systemd's verity signature partition is NUL-padded to a multiple of this.
pub const JSON_ALIGN: usize = 4096;

/// The PKCS#7 signature of `root_hex` by `signer`, DER.
pub fn sign(root_hex: &str, signer: &Signer) -> Result<Vec<u8>> {
    let signature = signer.sign(root_hex.as_bytes())?;
    super::cms::signed_data(signer, None, signature, None)
}

/// Checks that `p7s` is `certificate`'s PKCS#7 signature of `root_hex` (the certificate
/// itself having been checked with the index's CMS signature).
pub fn verify(root_hex: &str, p7s: &[u8], certificate: &X509Ref) -> Result<(), String> {
    let pkcs7 = Pkcs7::from_der(p7s).map_err(|e| format!("malformed: not DER PKCS#7 ({e})"))?;
    let internal = |e: openssl::error::ErrorStack| e.to_string();
    let mut certs = Stack::new().map_err(internal)?;
    certs.push(certificate.to_owned()).map_err(internal)?;
    let store = X509StoreBuilder::new().map_err(internal)?.build();
    pkcs7
        .verify(
            &certs,
            &store,
            Some(root_hex.as_bytes()),
            None,
            Pkcs7Flags::BINARY | Pkcs7Flags::NOINTERN | Pkcs7Flags::NOVERIFY,
        )
        .map_err(|_| {
            format!(
                "bad signature: not a signature of the root hash {root_hex} by the index's signer"
            )
        })
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VeritySig {
    root_hash: String,
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_fingerprint: Option<String>,
}

/// systemd's verity signature partition for `root_hex` and its signature `p7s` by
/// `certificate`.
pub fn verity_sig(root_hex: &str, p7s: &[u8], certificate: &X509Ref) -> Result<Vec<u8>> {
    let fields = VeritySig {
        root_hash: root_hex.to_string(),
        signature: BASE64_STANDARD.encode(p7s),
        certificate_fingerprint: Some(crate::pack::hex(&fingerprint(certificate)?)),
    };
    let mut json = serde_json::to_vec(&fields)
        .map_err(|e| Error::Internal(format!("writing the verity signature JSON: {e}")))?;
    json.resize(json.len().div_ceil(JSON_ALIGN) * JSON_ALIGN, 0);
    Ok(json)
}

/// Checks a verity signature partition's contents against `root_hex` and the signer's
/// `certificate`; returns the signature it carries, itself checked.
pub fn check_verity_sig(
    json: &[u8],
    root_hex: &str,
    certificate: &X509Ref,
) -> Result<Vec<u8>, String> {
    if json.is_empty() || !json.len().is_multiple_of(JSON_ALIGN) {
        return Err(format!(
            "malformed: {} bytes, not a multiple of {JSON_ALIGN}",
            json.len()
        ));
    }
    let end = json.iter().position(|&b| b == 0).unwrap_or(json.len());
    if json[end..].iter().any(|&b| b != 0) {
        return Err("malformed: bytes other than NUL after the JSON".into());
    }
    let fields: VeritySig = serde_json::from_slice(&json[..end])
        .map_err(|e| format!("malformed: not the JSON of a verity signature ({e})"))?;
    if !fields.root_hash.eq_ignore_ascii_case(root_hex) {
        return Err(format!(
            "its rootHash {} is not the index's root hash {root_hex}",
            fields.root_hash
        ));
    }
    if let Some(claimed) = &fields.certificate_fingerprint {
        let actual = crate::pack::hex(&fingerprint(certificate).map_err(|e| e.to_string())?);
        if !claimed.eq_ignore_ascii_case(&actual) {
            return Err(format!(
                "its certificateFingerprint {claimed} is not the index signer's {actual}"
            ));
        }
    }
    let p7s = BASE64_STANDARD
        .decode(&fields.signature)
        .map_err(|_| "malformed: its signature is not base64".to_string())?;
    verify(root_hex, &p7s, certificate)?;
    Ok(p7s)
}

/// The kernel's signature of an index's root hash and systemd's JSON carrying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSignature {
    /// `.roothash.p7s`.
    pub p7s: Vec<u8>,
    /// `.verity-sig.json`.
    pub verity_sig: Vec<u8>,
}

impl KernelSignature {
    /// Both files for `root_hex`, signed by `signer`.
    pub fn make(root_hex: &str, signer: &Signer) -> Result<KernelSignature> {
        let p7s = sign(root_hex, signer)?;
        let verity_sig = verity_sig(root_hex, &p7s, signer.certificate())?;
        Ok(KernelSignature { p7s, verity_sig })
    }

    /// Checks what came with an index whose CMS signature `certificate` made: either file
    /// may be missing (the other is then made from it), both must be that signer's
    /// signatures of `root_hex`. `None` when neither came.
    pub fn check(
        p7s: Option<Vec<u8>>,
        verity_sig: Option<Vec<u8>>,
        root_hex: &str,
        certificate: &X509Ref,
    ) -> Result<Option<KernelSignature>, String> {
        if let Some(p7s) = &p7s {
            verify(root_hex, p7s, certificate).map_err(|reason| format!("{SUFFIX}: {reason}"))?;
        }
        let carried = match &verity_sig {
            Some(json) => Some(
                check_verity_sig(json, root_hex, certificate)
                    .map_err(|reason| format!("{JSON_SUFFIX}: {reason}"))?,
            ),
            None => None,
        };
        let Some(p7s) = p7s.or(carried) else {
            return Ok(None);
        };
        let verity_sig = match verity_sig {
            Some(json) => json,
            None => self::verity_sig(root_hex, &p7s, certificate).map_err(|e| e.to_string())?,
        };
        Ok(Some(KernelSignature { p7s, verity_sig }))
    }
}
