//! Detached signatures in the formats of the `minisign` tool, so that
//! keys and signatures pass freely between blockcast and `minisign`.
//!
//! Every file is a line `untrusted comment: …` then a base64 line of fixed layout:
//!
//! - public key: `"Ed"`, key id (8 bytes), Ed25519 public key (32);
//! - secret key: `"Ed"`, KDF (`"Sc"` scrypt or two zero bytes for none), `"B2"`, salt
//!   (32), scrypt opslimit and memlimit (8 each, little-endian), then key id (8), Ed25519
//!   seed and public key (64) and a BLAKE2b-256 checksum (32), these three XORed with
//!   the scrypt output when the key is encrypted;
//! - signature: `"ED"`, key id (8), Ed25519 signature of the BLAKE2b-512 of the message
//!   (64); then `trusted comment: …`, then the global signature: Ed25519 over the
//!   signature followed by the trusted comment, so that the comment cannot be altered.
//!
//! Legacy `"Ed"` signatures, over the message itself, are accepted too; `sign` writes
//! only the prehashed form, which `minisign` has written by default since 0.9.

use std::fmt;
use std::path::Path;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use blake2::{Blake2b256, Blake2b512, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::{Error, IoContext, Result};

const COMMENT_PREFIX: &str = "untrusted comment: ";
const TRUSTED_COMMENT_PREFIX: &str = "trusted comment: ";
/// The algorithm of keys, and of legacy signatures over the whole message.
const ALG: [u8; 2] = *b"Ed";
const ALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHECKSUM_BLAKE2B: [u8; 2] = *b"B2";
/// libsodium's "sensitive" scrypt limits: what `minisign -G` writes (1 GiB, a few
/// seconds), and the most we spend on a key file's say-so.
const OPSLIMIT: u64 = 33_554_432;
const MEMLIMIT: u64 = 1_073_741_824;
/// `minisign` reads the trusted comment line, prefix and newline included, into 8192
/// bytes with a terminating zero; a longer comment would break its reading.
const TRUSTED_COMMENT_MAX: usize = 8192 - 1 - TRUSTED_COMMENT_PREFIX.len() - 1;
/// `minisign` reads a password, newline included, into 1024 bytes with a terminating zero.
const PASSWORD_MAX: usize = 1022;
/// Key and signature files are a few hundred bytes; refuse to read anything much larger.
const FILE_MAX: u64 = 16 * 1024;

const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + SECRET_LEN;
/// Key id, seed and public key, checksum: the part of a secret key that is encrypted.
const SECRET_LEN: usize = 8 + 64 + 32;
const SIGNATURE_LEN: usize = 2 + 8 + 64;

type KeyId = [u8; 8];

/// How `minisign` names a key: its id as a little-endian integer in upper-case hex,
/// without leading zeros (`%PRIX64`).
fn hex_id(id: &KeyId) -> String {
    format!("{:X}", u64::from_le_bytes(*id))
}

/// The contents of a new key pair's two files.
pub struct KeyPair {
    pub public_text: String,
    pub secret_text: String,
}

/// Makes a key pair; the secret key is encrypted with `password` if one is given.
pub fn generate(password: Option<&str>) -> Result<KeyPair> {
    let id: KeyId = random()?;
    let signing = SigningKey::from_bytes(&random()?);
    let public = signing.verifying_key().to_bytes();

    let seed = signing.to_bytes();
    let mut secret = Vec::with_capacity(SECRET_LEN);
    for field in [&id[..], &seed, &public, &checksum(&id, &seed, &public)] {
        secret.extend_from_slice(field);
    }

    let (kdf, salt, opslimit, memlimit) = match password {
        None => (KDF_NONE, [0; 32], 0, 0),
        Some(password) => {
            if password.len() > PASSWORD_MAX {
                return Err(Error::Invalid(format!(
                    "the password is {} bytes; minisign reads at most {PASSWORD_MAX}",
                    password.len()
                )));
            }
            let salt = random()?;
            let stream = scrypt_stream(password, &salt, OPSLIMIT, MEMLIMIT).map_err(|reason| {
                Error::Internal(format!("cannot encrypt the secret key: {reason}"))
            })?;
            xor(&mut secret, &stream);
            (KDF_SCRYPT, salt, OPSLIMIT, MEMLIMIT)
        }
    };
    let mut file = Vec::with_capacity(SECRET_KEY_LEN);
    for field in [&ALG[..], &kdf, &CHECKSUM_BLAKE2B, &salt] {
        file.extend_from_slice(field);
    }
    file.extend_from_slice(&opslimit.to_le_bytes());
    file.extend_from_slice(&memlimit.to_le_bytes());
    file.extend_from_slice(&secret);

    let mut public_file = Vec::with_capacity(PUBLIC_KEY_LEN);
    public_file.extend_from_slice(&ALG);
    public_file.extend_from_slice(&id);
    public_file.extend_from_slice(&public);

    let encrypted = if password.is_some() {
        "encrypted"
    } else {
        "unencrypted"
    };
    Ok(KeyPair {
        public_text: format!(
            "{COMMENT_PREFIX}minisign public key {}\n{}\n",
            hex_id(&id),
            BASE64_STANDARD.encode(public_file)
        ),
        secret_text: format!(
            "{COMMENT_PREFIX}minisign {encrypted} secret key\n{}\n",
            BASE64_STANDARD.encode(file)
        ),
    })
}

/// A public key trusted to sign indexes.
#[derive(Clone, Debug)]
pub struct PublicKey {
    id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_small(path).at(path)?;
        Self::parse_text(&text)
            .map_err(|reason| Error::Invalid(format!("public key {}: {reason}", path.display())))
    }

    /// Reads a public key file's contents, or its base64 line alone (`minisign -P`).
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_text(text).map_err(|reason| Error::Invalid(format!("public key: {reason}")))
    }

    pub fn key_id_hex(&self) -> String {
        hex_id(&self.id)
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        let raw = decode(key_line(text)?, PUBLIC_KEY_LEN, "the key")?;
        let mut fields = Fields(&raw);
        if fields.take()? != ALG {
            return Err("not an Ed25519 minisign key".into());
        }
        let id = fields.take()?;
        let key = VerifyingKey::from_bytes(&fields.take()?)
            .map_err(|_| "not a valid Ed25519 public key".to_string())?;
        Ok(PublicKey { id, key })
    }
}

/// A secret key, decrypted and ready to sign.
pub struct SecretKey {
    id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", hex_id(&self.id))
    }
}

impl SecretKey {
    /// Reads a secret key file; `password` is needed only if the key is encrypted.
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<Self> {
        let text = read_small(path).at(path)?;
        Self::parse_text(&text, password)
            .map_err(|reason| Error::Invalid(format!("secret key {}: {reason}", path.display())))
    }

    fn parse_text(text: &str, password: Option<&str>) -> Result<Self, String> {
        let raw = decode(key_line(text)?, SECRET_KEY_LEN, "the key")?;
        let mut fields = Fields(&raw);
        let alg: [u8; 2] = fields.take()?;
        let kdf: [u8; 2] = fields.take()?;
        let checksum_alg: [u8; 2] = fields.take()?;
        let salt: [u8; 32] = fields.take()?;
        let opslimit = u64::from_le_bytes(fields.take()?);
        let memlimit = u64::from_le_bytes(fields.take()?);
        let mut secret: [u8; SECRET_LEN] = fields.take()?;
        if alg != ALG {
            return Err("not an Ed25519 minisign key".into());
        }
        if checksum_alg != CHECKSUM_BLAKE2B {
            return Err("unsupported checksum algorithm".into());
        }
        match kdf {
            // `minisign -G -W` leaves the checksum of an unencrypted key zero: the
            // seed/public key match below is what catches a damaged one.
            KDF_NONE => {}
            KDF_SCRYPT => {
                let password =
                    password.ok_or("the key is encrypted with a password, and none was given")?;
                xor(
                    &mut secret,
                    &scrypt_stream(password, &salt, opslimit, memlimit)?,
                );
            }
            _ => return Err("unsupported key derivation function".into()),
        }
        let mut fields = Fields(&secret);
        let id: KeyId = fields.take()?;
        let seed: [u8; 32] = fields.take()?;
        let public: [u8; 32] = fields.take()?;
        let sum: [u8; 32] = fields.take()?;
        if kdf == KDF_SCRYPT && sum != checksum(&id, &seed, &public) {
            return Err("wrong password".into());
        }
        let signing = SigningKey::from_bytes(&seed);
        if signing.verifying_key().to_bytes() != public {
            return Err("damaged: its public half does not match its seed".into());
        }
        Ok(SecretKey { id, signing })
    }
}

/// The text of a `.minisig` file for `message`, signed with `key`.
pub fn sign(message: &[u8], key: &SecretKey, trusted_comment: &str) -> Result<String> {
    check_trusted_comment(trusted_comment).map_err(Error::Invalid)?;
    let signature = key.signing.sign(&Blake2b512::digest(message)).to_bytes();
    let global = key
        .signing
        .sign(&[&signature[..], trusted_comment.as_bytes()].concat())
        .to_bytes();
    let mut line = Vec::with_capacity(SIGNATURE_LEN);
    line.extend_from_slice(&ALG_PREHASHED);
    line.extend_from_slice(&key.id);
    line.extend_from_slice(&signature);
    Ok(format!(
        "{COMMENT_PREFIX}signature from blockcast secret key {}\n{}\n\
         {TRUSTED_COMMENT_PREFIX}{trusted_comment}\n{}\n",
        hex_id(&key.id),
        BASE64_STANDARD.encode(line),
        BASE64_STANDARD.encode(global)
    ))
}

/// What a good signature vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key_id_hex: String,
    pub trusted_comment: String,
}

/// Checks `signature_text`, a `.minisig` file's contents, against `message` and the
/// `trusted` keys.
pub fn verify(message: &[u8], signature_text: &str, trusted: &[PublicKey]) -> Result<Verified> {
    check(message, signature_text, trusted)
        .map_err(|reason| Error::Untrusted(format!("signature: {reason}")))
}

/// Like [`verify`], reading the signature from `path` (see [`super::signature_path`]).
pub fn verify_file(message: &[u8], path: &Path, trusted: &[PublicKey]) -> Result<Verified> {
    let text = match read_small(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Untrusted(format!(
                "signature {} is missing: the index is not signed",
                path.display()
            )))
        }
        text => text.at(path)?,
    };
    check(message, &text, trusted)
        .map_err(|reason| Error::Untrusted(format!("signature {}: {reason}", path.display())))
}

fn check(message: &[u8], text: &str, trusted: &[PublicKey]) -> Result<Verified, String> {
    let malformed = |what: &str| format!("malformed: {what}");
    // `minisign` reads four lines and ignores anything after them.
    let lines: Vec<&str> = text.lines().take(4).collect();
    let [untrusted_comment, signature_line, trusted_comment_line, global_line] = lines[..] else {
        return Err(malformed(&format!(
            "truncated: {} of its 4 lines",
            lines.len()
        )));
    };
    if lines.iter().any(|l| l.contains('\r')) {
        return Err(malformed("a carriage return inside a line"));
    }
    if !untrusted_comment.starts_with(COMMENT_PREFIX) {
        return Err(malformed(&format!(
            "the first line does not start with {COMMENT_PREFIX:?}"
        )));
    }
    let trusted_comment = trusted_comment_line
        .strip_prefix(TRUSTED_COMMENT_PREFIX)
        .ok_or_else(|| {
            malformed(&format!(
                "the third line does not start with {TRUSTED_COMMENT_PREFIX:?}"
            ))
        })?;
    check_trusted_comment(trusted_comment).map_err(|reason| malformed(&reason))?;
    let raw = decode(signature_line, SIGNATURE_LEN, "the signature line")
        .map_err(|reason| malformed(&reason))?;
    let global = decode(global_line, 64, "the global signature line")
        .map_err(|reason| malformed(&reason))?;
    let mut fields = Fields(&raw);
    let alg: [u8; 2] = fields.take()?;
    let id: KeyId = fields.take()?;
    let signature: [u8; 64] = fields.take()?;
    let global: [u8; 64] = Fields(&global).take()?;

    let prehashed = match alg {
        ALG_PREHASHED => true,
        ALG => false,
        _ => return Err(malformed("unsupported signature algorithm")),
    };
    let key = trusted.iter().find(|k| k.id == id).ok_or_else(|| {
        let ids: Vec<String> = trusted.iter().map(PublicKey::key_id_hex).collect();
        format!(
            "made by key {}, which is not trusted (trusted: {})",
            hex_id(&id),
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        )
    })?;
    let digest;
    let signed = if prehashed {
        digest = Blake2b512::digest(message);
        &digest[..]
    } else {
        message
    };
    key.key
        .verify_strict(signed, &Signature::from_bytes(&signature))
        .map_err(|_| {
            "bad signature: the index or the signature was altered, \
             or the signature is another file's"
                .to_string()
        })?;
    key.key
        .verify_strict(
            &[&signature[..], trusted_comment.as_bytes()].concat(),
            &Signature::from_bytes(&global),
        )
        .map_err(|_| {
            "bad global signature: the trusted comment or the global signature was altered"
                .to_string()
        })?;
    Ok(Verified {
        key_id_hex: hex_id(&id),
        trusted_comment: trusted_comment.to_string(),
    })
}

/// `minisign` refuses to read comments with control characters (they could forge
/// terminal output when shown) and longer ones than its buffer holds.
fn check_trusted_comment(comment: &str) -> Result<(), String> {
    if comment.len() > TRUSTED_COMMENT_MAX {
        return Err(format!(
            "the trusted comment is {} bytes; minisign reads at most {TRUSTED_COMMENT_MAX}",
            comment.len()
        ));
    }
    if comment.chars().any(|c| c.is_control() && c != '\t') {
        return Err("the trusted comment contains a control character".into());
    }
    Ok(())
}

/// The base64 line of a key file, or a key given as that line alone.
fn key_line(text: &str) -> Result<&str, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().ok_or("empty")?;
    let line = if first.starts_with(COMMENT_PREFIX.trim_end()) {
        lines.next().ok_or("no key after the comment line")?
    } else {
        first
    };
    match lines.next() {
        Some(_) => Err("more lines than a minisign key has".into()),
        None => Ok(line),
    }
}

fn decode(line: &str, len: usize, what: &str) -> Result<Vec<u8>, String> {
    let raw = BASE64_STANDARD
        .decode(line)
        .map_err(|_| format!("{what} is not base64"))?;
    if raw.len() != len {
        return Err(format!("{what} is {} bytes, not {len}", raw.len()));
    }
    Ok(raw)
}

/// Fixed-size fields split off the front of a decoded key or signature.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("too short")?;
        self.0 = rest;
        Ok(*head)
    }
}

fn checksum(id: &KeyId, seed: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(ALG);
    h.update(id);
    h.update(seed);
    h.update(public);
    h.finalize().into()
}

/// The key stream that encrypts a secret key: libsodium's
/// `crypto_pwhash_scryptsalsa208sha256`, whose (opslimit, memlimit) pick scrypt's
/// (N, r, p) as below.
fn scrypt_stream(
    password: &str,
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
) -> Result<[u8; SECRET_LEN], String> {
    if opslimit > OPSLIMIT || memlimit > MEMLIMIT {
        return Err(format!(
            "scrypt limits (opslimit {opslimit}, memlimit {memlimit}) above minisign's"
        ));
    }
    const R: u32 = 8;
    let opslimit = opslimit.max(32_768);
    let log_n_below = |max_n: u64| (1u8..63).find(|&n| 1u64 << n > max_n / 2).unwrap_or(63);
    let (log_n, p) = if opslimit < memlimit / 32 {
        (log_n_below(opslimit / (4 * u64::from(R))), 1)
    } else {
        let log_n = log_n_below(memlimit / (128 * u64::from(R)));
        // At most 0x3fff_ffff: fits in u32.
        let max_rp = ((opslimit / 4) >> log_n).min(0x3fff_ffff) as u32;
        (log_n, max_rp / R)
    };
    let params = scrypt::Params::new(log_n, R, p)
        .map_err(|_| format!("unsupported scrypt parameters (log2 N {log_n}, r {R}, p {p})"))?;
    let mut stream = [0; SECRET_LEN];
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut stream)
        .map_err(|_| "scrypt failed".to_string())?;
    Ok(stream)
}

fn xor(data: &mut [u8], stream: &[u8]) {
    data.iter_mut().zip(stream).for_each(|(d, s)| *d ^= s);
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no randomness from the system: {e}")))?;
    Ok(bytes)
}

/// A key or signature file: a regular file of at most `FILE_MAX` bytes, as text.
fn read_small(path: &Path) -> std::io::Result<String> {
    crate::image::read_text(path, FILE_MAX, "a minisign key or signature")
}
