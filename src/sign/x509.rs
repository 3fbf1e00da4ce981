//! X.509 certificates and their keys. A [`Signer`] is a certificate, the intermediates
//! that lead from it to a CA, and its private key, in a PEM file or on a PKCS#11 token;
//! it signs with SHA-256 and RSA (PKCS#1 v1.5) or ECDSA. A [`Policy`] says which signers
//! a reader accepts: a certificate chaining to one of its CAs, valid at its time, whose
//! key usage allows signatures and whose extended key usage allows code signing (or the
//! purpose it requires). Chains are built and checked by OpenSSL; revocation (CRLs,
//! OCSP) is not checked.

use std::path::{Path, PathBuf};

use cms::cert::IssuerAndSerialNumber;
use der::asn1::{Any, ObjectIdentifier};
use der::oid::db::rfc5280::ANY_EXTENDED_KEY_USAGE;
use der::oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE, ID_KP_CODE_SIGNING, ID_SHA_256,
    RSA_ENCRYPTION,
};
use der::{Decode, Encode};
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509PurposeId, X509Ref, X509StoreContext, X509};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::pkcs11;
use crate::error::{Error, IoContext, Result};

/// A PEM file of certificates or a key: a few of them, a few kilobytes each.
const PEM_MAX: u64 = 1 << 20;

/// The PKCS#11 module used when neither the key's URI nor the caller names one: SoftHSM's.
pub const DEFAULT_PKCS11_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// How a signer's key signs: always over SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// RSA with PKCS#1 v1.5 padding.
    Rsa,
    /// ECDSA on the certificate's curve, the signature DER-encoded as X9.62 has it.
    Ecdsa,
}

impl Algorithm {
    fn of<T: HasPublic>(key: &PKeyRef<T>) -> Result<Algorithm, String> {
        match key.id() {
            Id::RSA => Ok(Algorithm::Rsa),
            Id::EC => Ok(Algorithm::Ecdsa),
            other => Err(format!(
                "its key is of type {other:?}; blockcast signs with RSA and ECDSA keys"
            )),
        }
    }

    /// The signature algorithm as OpenSSL writes it in PKCS#7 and CMS: `rsaEncryption`
    /// with NULL parameters, `ecdsa-with-SHA256` without any.
    pub(crate) fn identifier(self) -> AlgorithmIdentifierOwned {
        match self {
            Algorithm::Rsa => AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            Algorithm::Ecdsa => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA_256,
                parameters: None,
            },
        }
    }
}

/// SHA-256 as OpenSSL names the digest of a PKCS#7 signature: with NULL parameters.
pub(crate) fn sha256_identifier() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ID_SHA_256,
        parameters: Some(Any::null()),
    }
}

enum Key {
    File(PKey<Private>),
    Token(pkcs11::TokenKey),
}

/// A certificate, its intermediates and its private key, ready to sign.
pub struct Signer {
    certificate: X509,
    intermediates: Vec<X509>,
    key: Key,
    algorithm: Algorithm,
}

impl Signer {
    /// The signer whose certificate is the first in the PEM file `certificates` (the rest
    /// are intermediates, carried in CMS signatures so that a reader needs only the CA),
    /// with the private key `key`: a PEM file, or a PKCS#11 URI (RFC 7512:
    /// `pkcs11:token=…;object=…?pin-value=…`, see [`pkcs11`]). `password` decrypts an
    /// encrypted PEM key, or is the token's PIN when the URI gives none; the URI's
    /// `module-path`, else `pkcs11_module`, names the PKCS#11 module.
    pub fn open(
        certificates: &Path,
        key: &str,
        password: Option<&str>,
        pkcs11_module: &Path,
    ) -> Result<Signer> {
        let mut chain = read_certificates(certificates)?.into_iter();
        let certificate = chain.next().ok_or_else(|| {
            Error::Invalid(format!("{}: no certificate in it", certificates.display()))
        })?;
        let intermediates = chain.collect();
        let public = certificate
            .public_key()
            .map_err(|e| invalid_certificate(certificates, &e.to_string()))?;
        let algorithm =
            Algorithm::of(&public).map_err(|reason| invalid_certificate(certificates, &reason))?;
        let key = if pkcs11::is_uri(key) {
            let token = pkcs11::TokenKey::open(key, password, pkcs11_module)?;
            if token.algorithm() != Some(algorithm) {
                return Err(Error::Invalid(format!(
                    "the token's key {} is not the certificate's key ({}): it is of another type",
                    pkcs11::shown(key),
                    certificates.display()
                )));
            }
            Key::Token(token)
        } else {
            let path = Path::new(key);
            let pem = crate::image::read_small(path, PEM_MAX, "a PEM key").at(path)?;
            let private = match password {
                Some(password) => PKey::private_key_from_pem_passphrase(&pem, password.as_bytes()),
                None => PKey::private_key_from_pem(&pem),
            }
            .map_err(|e| {
                Error::Invalid(format!(
                    "{}: not a PEM private key (or a wrong password; an encrypted key's comes from BLOCKCAST_KEY_PASSWORD): {e}",
                    path.display()
                ))
            })?;
            if !private.public_eq(&public) {
                return Err(Error::Invalid(format!(
                    "{} is not the certificate's key ({})",
                    path.display(),
                    certificates.display()
                )));
            }
            Key::File(private)
        };
        let signer = Signer {
            certificate,
            intermediates,
            key,
            algorithm,
        };
        if let Key::Token(_) = signer.key {
            // A token's key of the right type may still be another key: a signature
            // tells, before anything is made with it.
            signer.sign(b"blockcast: is this the certificate's key?")?;
        }
        Ok(signer)
    }

    pub fn certificate(&self) -> &X509Ref {
        &self.certificate
    }

    pub(crate) fn intermediates(&self) -> &[X509] {
        &self.intermediates
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The signature of `message` with SHA-256, as PKCS#7 and CMS carry it; checked
    /// against the certificate before it is returned, so that a token's key that is not
    /// the certificate's is caught here rather than by every reader.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: openssl::error::ErrorStack| Error::Internal(format!("signing: {e}"));
        let signature = match &self.key {
            Key::File(key) => {
                let mut signer =
                    openssl::sign::Signer::new(MessageDigest::sha256(), key).map_err(failed)?;
                signer.update(message).map_err(failed)?;
                signer.sign_to_vec().map_err(failed)?
            }
            Key::Token(key) => key.sign(self.algorithm, message)?,
        };
        let public = self.certificate.public_key().map_err(failed)?;
        let mut verifier =
            openssl::sign::Verifier::new(MessageDigest::sha256(), &public).map_err(failed)?;
        verifier.update(message).map_err(failed)?;
        if !verifier.verify(&signature).unwrap_or(false) {
            return Err(Error::Invalid(format!(
                "the key made a signature that the certificate ({}) does not verify: it is not the certificate's key",
                subject(&self.certificate)
            )));
        }
        Ok(signature)
    }
}

fn invalid_certificate(path: &Path, reason: &str) -> Error {
    Error::Invalid(format!("certificate {}: {reason}", path.display()))
}

/// The certificates of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<X509>> {
    let pem = crate::image::read_small(path, PEM_MAX, "a PEM certificate file").at(path)?;
    let certificates = X509::stack_from_pem(&pem)
        .map_err(|e| invalid_certificate(path, &format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid_certificate(path, "no certificate in it"));
    }
    Ok(certificates)
}

/// A certificate's subject, as `CN=…, O=…`.
pub fn subject(certificate: &X509Ref) -> String {
    let parts: Vec<String> = certificate
        .subject_name()
        .entries()
        .map(|e| {
            let name = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{name}={value}")
        })
        .collect();
    parts.join(", ")
}

/// The SHA-256 of a certificate's DER: its fingerprint.
pub fn fingerprint(certificate: &X509Ref) -> Result<[u8; 32]> {
    let digest = certificate
        .digest(MessageDigest::sha256())
        .map_err(|e| Error::Internal(format!("hashing a certificate: {e}")))?;
    let mut out = [0; 32];
    out.copy_from_slice(&digest);
    Ok(out)
}

/// How a signer is named in PKCS#7 and CMS: its certificate's issuer and serial number,
/// as encoded in the certificate.
pub(crate) fn issuer_and_serial(certificate: &X509Ref) -> Result<IssuerAndSerialNumber> {
    let decoded = decode(certificate)?;
    Ok(IssuerAndSerialNumber {
        issuer: decoded.tbs_certificate.issuer,
        serial_number: decoded.tbs_certificate.serial_number,
    })
}

pub(crate) fn decode(certificate: &X509Ref) -> Result<x509_cert::Certificate> {
    let der = certificate
        .to_der()
        .map_err(|e| Error::Internal(format!("encoding a certificate: {e}")))?;
    x509_cert::Certificate::from_der(&der)
        .map_err(|e| Error::Invalid(format!("certificate {}: {e}", subject(certificate))))
}

/// When certificates must be valid: now, or at a given time (a device without a
/// real-time clock knows the time only roughly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyTime {
    Now,
    /// Seconds since the Unix epoch.
    At(i64),
}

impl VerifyTime {
    fn seconds(self) -> i64 {
        match self {
            VerifyTime::Now => jiff::Timestamp::now().as_second(),
            VerifyTime::At(t) => t,
        }
    }
}

/// Which certificates' signatures are accepted.
pub struct Policy {
    cas: Vec<X509>,
    time: VerifyTime,
    required_eku: Option<ObjectIdentifier>,
}

impl Policy {
    /// Trusts the CAs of the PEM files `ca_files` (each certificate in them a trust
    /// anchor, self-signed or not); certificates must be valid at `time`; with
    /// `required_eku` (a dotted OID), the signer's extended key usage must list it,
    /// else it must allow code signing if it says anything.
    pub fn new(
        ca_files: &[PathBuf],
        time: VerifyTime,
        required_eku: Option<&str>,
    ) -> Result<Policy> {
        let mut cas = Vec::new();
        for file in ca_files {
            cas.extend(read_certificates(file)?);
        }
        if cas.is_empty() {
            return Err(Error::Invalid("no trusted CA certificate given".into()));
        }
        let required_eku = required_eku
            .map(|oid| {
                ObjectIdentifier::new(oid).map_err(|_| {
                    Error::Invalid(format!(
                        "{oid:?} is not an object identifier (dotted numbers, e.g. 1.3.6.1.5.5.7.3.3)"
                    ))
                })
            })
            .transpose()?;
        Ok(Policy {
            cas,
            time,
            required_eku,
        })
    }

    /// The CAs as OpenSSL's trust store, judging validity at the policy's time and for
    /// any purpose (the key usages are checked by [`Policy::check_usage`]).
    fn store(&self, at: i64) -> Result<X509Store, String> {
        let build = || -> Result<X509Store, openssl::error::ErrorStack> {
            let mut builder = X509StoreBuilder::new()?;
            for ca in &self.cas {
                builder.add_cert(ca.clone())?;
            }
            let mut param = X509VerifyParam::new()?;
            param.set_time(at as libc::time_t);
            param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
            param.set_purpose(X509PurposeId::ANY)?;
            builder.set_param(&param)?;
            Ok(builder.build())
        };
        build().map_err(|e| format!("building the trust store: {e}"))
    }

    /// Checks that `signer` chains to a trusted CA through `untrusted` (the other
    /// certificates a signature carries), every certificate valid at the policy's time,
    /// and that its key usages allow signing code; returns the store the chain was
    /// checked with, to verify the signature itself under the same terms.
    pub(crate) fn check(&self, signer: &X509Ref, untrusted: &[X509]) -> Result<X509Store, String> {
        let at = self.time.seconds();
        let store = self.store(at)?;
        let mut chain = Stack::new().map_err(|e| e.to_string())?;
        for cert in untrusted {
            chain.push(cert.clone()).map_err(|e| e.to_string())?;
        }
        let mut context = X509StoreContext::new().map_err(|e| e.to_string())?;
        let failure = context
            .init(&store, signer, &chain, |ctx| {
                if ctx.verify_cert()? {
                    return Ok(None);
                }
                let at_fault = ctx
                    .current_cert()
                    .map(|c| {
                        format!(
                            "{} (valid from {} to {})",
                            subject(c),
                            c.not_before(),
                            c.not_after()
                        )
                    })
                    .unwrap_or_else(|| subject(signer));
                Ok(Some(format!(
                    "certificate {at_fault}, at depth {} of the chain from the signer: {} (checked at {})",
                    ctx.error_depth(),
                    ctx.error().error_string(),
                    show_time(at)
                )))
            })
            .map_err(|e| format!("checking the certificate chain: {e}"))?;
        if let Some(reason) = failure {
            return Err(reason);
        }
        self.check_usage(signer)?;
        Ok(store)
    }

    /// keyUsage, if present, must allow digitalSignature; extendedKeyUsage must list
    /// the required purpose, or when none is required allow codeSigning if present.
    fn check_usage(&self, signer: &X509Ref) -> Result<(), String> {
        let decoded = decode(signer).map_err(|e| e.to_string())?;
        let who = subject(signer);
        let mut eku_seen = false;
        for ext in decoded.tbs_certificate.extensions.iter().flatten() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == ID_CE_KEY_USAGE {
                let usage = KeyUsage::from_der(value)
                    .map_err(|e| format!("the signer {who}: unreadable keyUsage: {e}"))?;
                if !usage.digital_signature() {
                    return Err(format!(
                        "the signer {who}: its keyUsage does not allow digitalSignature"
                    ));
                }
            } else if ext.extn_id == ID_CE_EXT_KEY_USAGE {
                eku_seen = true;
                let usages = ExtendedKeyUsage::from_der(value)
                    .map_err(|e| format!("the signer {who}: unreadable extendedKeyUsage: {e}"))?;
                let wanted = self.required_eku.unwrap_or(ID_KP_CODE_SIGNING);
                if !usages
                    .0
                    .iter()
                    .any(|u| *u == wanted || *u == ANY_EXTENDED_KEY_USAGE)
                {
                    let listed: Vec<String> = usages.0.iter().map(|u| eku_name(*u)).collect();
                    return Err(format!(
                        "the signer {who}: its extendedKeyUsage ({}) does not allow {}",
                        listed.join(", "),
                        eku_name(wanted)
                    ));
                }
            }
        }
        match self.required_eku {
            Some(wanted) if !eku_seen => Err(format!(
                "the signer {who}: it has no extendedKeyUsage, and {} is required",
                eku_name(wanted)
            )),
            _ => Ok(()),
        }
    }
}

/// An extended key usage by name where it has a common one.
fn eku_name(oid: ObjectIdentifier) -> String {
    use der::oid::db::rfc5912::{
        ID_KP_CLIENT_AUTH, ID_KP_EMAIL_PROTECTION, ID_KP_SERVER_AUTH, ID_KP_TIME_STAMPING,
    };
    let name = match oid {
        ID_KP_CODE_SIGNING => "codeSigning",
        ID_KP_SERVER_AUTH => "serverAuth",
        ID_KP_CLIENT_AUTH => "clientAuth",
        ID_KP_EMAIL_PROTECTION => "emailProtection",
        ID_KP_TIME_STAMPING => "timeStamping",
        ANY_EXTENDED_KEY_USAGE => "anyExtendedKeyUsage",
        _ => return oid.to_string(),
    };
    format!("{name} ({oid})")
}

fn show_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{seconds} s after the epoch"))
}

/// DER of a value of the `cms`/`x509-cert` types.
pub(crate) fn to_der<T: Encode>(value: &T) -> Result<Vec<u8>> {
    value
        .to_der()
        .map_err(|e| Error::Internal(format!("encoding a signature: {e}")))
}
