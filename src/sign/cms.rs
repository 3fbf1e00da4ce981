//! Detached CMS signatures (RFC 5652 SignedData, DER) over an index's exact bytes, by an
//! X.509 certificate's key: what `openssl cms -sign -binary -outform DER` writes and
//! `openssl cms -verify -binary` checks. A signature carries the signer's certificate and
//! its intermediates, so a reader needs only the CAs it trusts.
//!
//! blockcast writes one SignerInfo named by issuer and serial number, SHA-256, and two
//! signed attributes (content type and message digest; no signing time, so that the
//! same index signed again gives the same signature with an RSA key). It reads any DER
//! signature with one SignerInfo whose certificate the signature carries.

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{Any, OctetString, SetOfVec};
use der::oid::db::rfc5911::{ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use der::{Decode, Encode};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::{X509Ref, X509};
use sha2::{Digest, Sha256};
use x509_cert::attr::Attribute;

use super::x509::{self, issuer_and_serial, sha256_identifier, to_der, Policy, Signer};
use crate::error::{Error, Result};

/// The DER of a detached CMS signature of `message` by `signer`.
pub fn sign(message: &[u8], signer: &Signer) -> Result<Vec<u8>> {
    let digest = Sha256::digest(message);
    let der_error = |e: der::Error| Error::Internal(format!("building a CMS signature: {e}"));
    let attribute = |oid, value: Any| -> Result<Attribute> {
        Ok(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).map_err(der_error)?,
        })
    };
    let attributes: SignedAttributes = SetOfVec::try_from(vec![
        attribute(
            ID_CONTENT_TYPE,
            Any::encode_from(&ID_DATA).map_err(der_error)?,
        )?,
        attribute(
            ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(digest.to_vec()).map_err(der_error)?)
                .map_err(der_error)?,
        )?,
    ])
    .map_err(der_error)?;
    // The signature covers the attributes' DER as a SET OF (RFC 5652, 5.4).
    let signature = signer.sign(&to_der(&attributes)?)?;
    let mut certificates = Vec::new();
    for cert in
        std::iter::once(signer.certificate()).chain(signer.intermediates().iter().map(|c| &**c))
    {
        certificates.push(CertificateChoices::Certificate(x509::decode(cert)?));
    }
    signed_data(
        signer,
        Some(attributes),
        signature,
        Some(CertificateSet(
            SetOfVec::try_from(certificates).map_err(der_error)?,
        )),
    )
}

/// The DER of a ContentInfo holding SignedData of detached `id-data` content, with one
/// SignerInfo by `signer` (version 1: named by issuer and serial number).
pub(crate) fn signed_data(
    signer: &Signer,
    signed_attrs: Option<SignedAttributes>,
    signature: Vec<u8>,
    certificates: Option<CertificateSet>,
) -> Result<Vec<u8>> {
    let der_error = |e: der::Error| Error::Internal(format!("building a signature: {e}"));
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(signer.certificate())?),
        digest_alg: sha256_identifier(),
        signed_attrs,
        signature_algorithm: signer.algorithm().identifier(),
        signature: OctetString::new(signature).map_err(der_error)?,
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256_identifier()]).map_err(der_error)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates,
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(der_error)?),
    };
    to_der(&ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(der_error)?,
    })
}

/// Checks the DER CMS signature `signature` of `message`: its signer must satisfy
/// `policy` and have signed these exact bytes. Returns the signer's certificate.
pub fn verify(message: &[u8], signature: &[u8], policy: &Policy) -> Result<X509> {
    check(message, signature, policy)
        .map_err(|reason| Error::Untrusted(format!("CMS signature: {reason}")))
}

fn check(message: &[u8], signature: &[u8], policy: &Policy) -> Result<X509, String> {
    let malformed = |what: String| format!("malformed: {what}");
    let info = ContentInfo::from_der(signature)
        .map_err(|e| malformed(format!("not a DER CMS structure ({e})")))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(malformed(format!(
            "its content is {}, not signed data",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| malformed(format!("unreadable signed data ({e})")))?;
    if signed.encap_content_info.econtent.is_some() {
        return Err(malformed(
            "it carries content of its own: a detached signature is expected".into(),
        ));
    }
    let [signer_info] = signed.signer_infos.0.as_slice() else {
        return Err(malformed(format!(
            "{} signers, where one is expected",
            signed.signer_infos.0.len()
        )));
    };
    let mut certificates = Vec::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            let der = cert
                .to_der()
                .map_err(|e| malformed(format!("a certificate ({e})")))?;
            let parsed = X509::from_der(&der)
                .map_err(|e| malformed(format!("a certificate OpenSSL cannot read ({e})")))?;
            certificates.push((cert, parsed));
        }
    }
    let at = certificates
        .iter()
        .position(|(decoded, parsed)| names(&signer_info.sid, decoded, parsed))
        .ok_or("it does not carry the signer's certificate")?;
    let (_, signer) = certificates.remove(at);
    let others: Vec<X509> = certificates.into_iter().map(|(_, c)| c).collect();
    let store = policy.check(&signer, &others)?;

    // OpenSSL checks the signature with exactly this certificate (NOINTERN: no other it
    // might find in the signature), whose chain and usages were checked above.
    let mut cms = CmsContentInfo::from_der(signature)
        .map_err(|e| malformed(format!("OpenSSL cannot read it ({e})")))?;
    let mut only = Stack::new().map_err(|e| e.to_string())?;
    only.push(signer.clone()).map_err(|e| e.to_string())?;
    cms.verify(
        Some(&only),
        Some(&store),
        Some(message),
        None,
        CMSOptions::BINARY
            | CMSOptions::NOINTERN
            | CMSOptions::NO_SIGNER_CERT_VERIFY
            | CMSOptions::NOCRL,
    )
    .map_err(|_| {
        "bad signature: the index or the signature was altered, or the signature is another file's"
            .to_string()
    })?;
    Ok(signer)
}

/// Whether `sid` names the certificate (`decoded` and `parsed` are the same one).
fn names(sid: &SignerIdentifier, decoded: &x509_cert::Certificate, parsed: &X509Ref) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            id.issuer == decoded.tbs_certificate.issuer
                && id.serial_number == decoded.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(key_id) => parsed
            .subject_key_id()
            .is_some_and(|k| k.as_slice() == key_id.0.as_bytes()),
    }
}
