//! Private keys on PKCS#11 tokens (hardware security modules, smart cards, SoftHSM),
//! named by RFC 7512 URIs: `pkcs11:token=blockcast;object=release;type=private?pin-value=1234`.
//!
//! Path attributes select the key: `token`, `manufacturer`, `model`, `serial` and
//! `slot-id` the token, `object` (its label) and `id` the private key; `type`, if given,
//! must be `private`. Query attributes: `pin-value` (the PIN itself), `pin-source` (a
//! file holding it, as a path or a `file:` URI) and `module-path` (the PKCS#11 module to
//! load). Values are percent-encoded. Exactly one private key must match on the first
//! token holding any.
//!
//! RSA keys sign with `CKM_SHA256_RSA_PKCS`; EC keys with `CKM_ECDSA` over the SHA-256
//! digest, the token's `r || s` then DER-encoded as X.509 carries ECDSA signatures.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use super::x509::Algorithm;
use crate::error::{Error, Result};

const SCHEME: &str = "pkcs11:";
/// A PIN file holds a line.
const PIN_FILE_MAX: u64 = 4096;

pub(crate) fn is_uri(key: &str) -> bool {
    key.starts_with(SCHEME)
}

/// What a PKCS#11 URI says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Uri {
    token: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    slot_id: Option<u64>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    pin_value: Option<String>,
    pin_source: Option<String>,
    module_path: Option<PathBuf>,
}

impl Uri {
    fn parse(uri: &str) -> Result<Uri, String> {
        let rest = uri.strip_prefix(SCHEME).ok_or("not a pkcs11: URI")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parsed = Uri::default();
        let mut seen = Vec::new();
        let attributes = path
            .split(';')
            .map(|a| (a, false))
            .chain(query.split('&').map(|a| (a, true)))
            .filter(|(a, _)| !a.is_empty());
        for (attribute, in_query) in attributes {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| format!("{attribute:?} is not NAME=VALUE"))?;
            if seen.contains(&name) {
                return Err(format!("{name} is given twice"));
            }
            seen.push(name);
            let bytes: Vec<u8> = percent_decode_str(value).collect();
            let text =
                || String::from_utf8(bytes.clone()).map_err(|_| format!("{name} is not UTF-8"));
            match (name, in_query) {
                ("token", false) => parsed.token = Some(text()?),
                ("manufacturer", false) => parsed.manufacturer = Some(text()?),
                ("model", false) => parsed.model = Some(text()?),
                ("serial", false) => parsed.serial = Some(text()?),
                ("object", false) => parsed.object = Some(text()?),
                ("id", false) => parsed.id = Some(bytes),
                ("slot-id", false) => {
                    parsed.slot_id = Some(
                        text()?
                            .parse()
                            .map_err(|_| format!("slot-id {value:?} is not a number"))?,
                    )
                }
                ("type", false) if value == "private" => {}
                ("type", false) => {
                    return Err(format!(
                        "type={value}: a signing key is of type private"
                    ))
                }
                ("pin-value", true) => parsed.pin_value = Some(text()?),
                ("pin-source", true) => parsed.pin_source = Some(text()?),
                ("module-path", true) => parsed.module_path = Some(PathBuf::from(text()?)),
                _ => {
                    return Err(format!(
                        "{} attribute {name:?} is not one blockcast knows (path: token, manufacturer, model, serial, slot-id, object, id, type; query: pin-value, pin-source, module-path)",
                        if in_query { "query" } else { "path" }
                    ))
                }
            }
        }
        if parsed.pin_value.is_some() && parsed.pin_source.is_some() {
            return Err("both pin-value and pin-source are given".into());
        }
        Ok(parsed)
    }

    /// The PIN the URI gives, read from its `pin-source` if that is where it is.
    fn pin(&self) -> Result<Option<String>> {
        if let Some(pin) = &self.pin_value {
            return Ok(Some(pin.clone()));
        }
        let Some(source) = &self.pin_source else {
            return Ok(None);
        };
        let path = Path::new(source.strip_prefix("file:").unwrap_or(source));
        let text =
            crate::image::read_text(path, PIN_FILE_MAX, "a PIN file").map_err(|err| Error::Io {
                path: path.to_path_buf(),
                err,
            })?;
        Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
    }

    fn matches_token(&self, info: &cryptoki::slot::TokenInfo) -> bool {
        let same = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|w| w == actual.trim_end())
        };
        same(&self.token, info.label())
            && same(&self.manufacturer, info.manufacturer_id())
            && same(&self.model, info.model())
            && same(&self.serial, info.serial_number())
    }
}

/// The URI without its query, which may hold the PIN: what messages show.
pub(crate) fn shown(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(path, _)| path)
}

fn token_error(what: &str, e: cryptoki::error::Error) -> Error {
    let reason = match e {
        cryptoki::error::Error::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => other.to_string(),
    };
    Error::Invalid(format!("{what}: {reason}"))
}

/// A private key found on a token, in a session logged in to use it.
pub(crate) struct TokenKey {
    session: Session,
    key: ObjectHandle,
    /// How the key signs, by its type; `None` for a type blockcast does not sign with.
    algorithm: Option<Algorithm>,
}

impl TokenKey {
    /// Opens the key `uri` names. `password` is the PIN when the URI gives none;
    /// `default_module` is loaded when the URI names no `module-path`.
    pub(crate) fn open(
        uri: &str,
        password: Option<&str>,
        default_module: &Path,
    ) -> Result<TokenKey> {
        let named = shown(uri);
        let parsed =
            Uri::parse(uri).map_err(|reason| Error::Invalid(format!("{named}: {reason}")))?;
        let module = parsed
            .module_path
            .clone()
            .unwrap_or_else(|| default_module.to_path_buf());
        let context = Pkcs11::new(&module).map_err(|e| {
            token_error(
                &format!("loading the PKCS#11 module {}", module.display()),
                e,
            )
        })?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _))
            | Ok(()) => {}
            Err(e) => {
                return Err(token_error(
                    &format!("initializing {}", module.display()),
                    e,
                ))
            }
        }
        let pin = parsed.pin()?.or_else(|| password.map(String::from));
        let slots = context
            .get_slots_with_token()
            .map_err(|e| token_error("listing the tokens", e))?;
        let mut tokens = 0;
        for slot in slots {
            if parsed.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let info = context
                .get_token_info(slot)
                .map_err(|e| token_error("reading a token's description", e))?;
            if !parsed.matches_token(&info) {
                continue;
            }
            tokens += 1;
            let session = context
                .open_ro_session(slot)
                .map_err(|e| token_error(&format!("opening token {:?}", info.label()), e))?;
            if let Some(pin) = &pin {
                match session.login(UserType::User, Some(&AuthPin::from(pin.clone()))) {
                    Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _))
                    | Ok(()) => {}
                    Err(e) => {
                        return Err(token_error(
                            &format!("logging in to token {:?}", info.label()),
                            e,
                        ))
                    }
                }
            }
            let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
            if let Some(label) = &parsed.object {
                template.push(Attribute::Label(label.as_bytes().to_vec()));
            }
            if let Some(id) = &parsed.id {
                template.push(Attribute::Id(id.clone()));
            }
            let keys = session
                .find_objects(&template)
                .map_err(|e| token_error(&format!("searching token {:?}", info.label()), e))?;
            match keys[..] {
                [] => continue,
                [key] => {
                    let algorithm = match session
                        .get_attributes(key, &[AttributeType::KeyType])
                        .map_err(|e| token_error("reading the key's type", e))?[..]
                    {
                        [Attribute::KeyType(KeyType::RSA)] => Some(Algorithm::Rsa),
                        [Attribute::KeyType(KeyType::EC)] => Some(Algorithm::Ecdsa),
                        _ => None,
                    };
                    return Ok(TokenKey {
                        session,
                        key,
                        algorithm,
                    });
                }
                _ => {
                    return Err(Error::Invalid(format!(
                    "{named}: {} private keys on token {:?} match; name one with object= or id=",
                    keys.len(),
                    info.label()
                )))
                }
            }
        }
        let hint = if pin.is_none() {
            " (no PIN was given: a token shows its private keys only after a login; add pin-value or pin-source to the URI, or set BLOCKCAST_KEY_PASSWORD)"
        } else {
            ""
        };
        Err(Error::Invalid(format!(
            "{named}: no private key matches on the {tokens} matching token(s) of {}{hint}",
            module.display()
        )))
    }

    /// How the key signs, by its type: `None` for one neither RSA nor EC.
    pub(crate) fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    /// The signature of `message` with SHA-256, as X.509 carries it.
    pub(crate) fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        let signing = |mechanism: &Mechanism, data: &[u8]| {
            self.session
                .sign(mechanism, self.key, data)
                .map_err(|e| token_error("signing on the token", e))
        };
        match algorithm {
            Algorithm::Rsa => signing(&Mechanism::Sha256RsaPkcs, message),
            Algorithm::Ecdsa => {
                let raw = signing(&Mechanism::Ecdsa, &Sha256::digest(message))?;
                if raw.is_empty() || !raw.len().is_multiple_of(2) {
                    return Err(Error::Invalid(format!(
                        "the token's ECDSA signature is {} bytes, not r and s of equal length",
                        raw.len()
                    )));
                }
                let (r, s) = raw.split_at(raw.len() / 2);
                let encode = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
                    EcdsaSig::from_private_components(
                        BigNum::from_slice(r)?,
                        BigNum::from_slice(s)?,
                    )?
                    .to_der()
                };
                encode().map_err(|e| Error::Internal(format!("encoding an ECDSA signature: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_read_as_rfc_7512_writes_them() {
        let uri = Uri::parse(
            "pkcs11:token=My%20Token;object=release;id=%01%02;type=private;slot-id=7?pin-source=file:/run/pin&module-path=/usr/lib/x.so",
        )
        .unwrap();
        assert_eq!(
            uri,
            Uri {
                token: Some("My Token".into()),
                object: Some("release".into()),
                id: Some(vec![1, 2]),
                slot_id: Some(7),
                pin_source: Some("file:/run/pin".into()),
                module_path: Some("/usr/lib/x.so".into()),
                ..Uri::default()
            }
        );
        assert_eq!(
            Uri::parse("pkcs11:?pin-value=12%2634")
                .unwrap()
                .pin_value
                .as_deref(),
            Some("12&34")
        );
        for bad in [
            "pkcs11:type=public",
            "pkcs11:object=a;object=b",
            "pkcs11:colour=blue",
            "pkcs11:pin-value=1234",
            "pkcs11:token",
            "pkcs11:?pin-value=1&pin-source=/x",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(shown("pkcs11:token=t?pin-value=1234"), "pkcs11:token=t");
    }
}
