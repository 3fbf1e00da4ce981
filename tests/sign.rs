//! Index signatures are minisign signatures: the real `minisign` tool checks ours, ours
//! check its, keys pass both ways, and every kind of tampering is refused by name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use blockcast::sign::{self, PublicKey, SecretKey, Verified};

const INDEX: &[u8] = b"an index: header, chunk table, verity root hash\n";
const COMMENT: &str = "blockcast index v2\troot 0123abcd";

/// Runs `minisign` with `stdin` as its input (passwords are read from it, one a line).
fn minisign(args: &[&str], dir: &Path, stdin: &str) -> Output {
    let mut child = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("minisign is installed (tools/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn minisign_ok(args: &[&str], dir: &Path, stdin: &str) -> String {
    let out = minisign(args, dir, stdin);
    assert!(
        out.status.success(),
        "minisign {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory holding the index file `INDEX`.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("INDEX");
    fs::write(&index, INDEX).unwrap();
    (dir, index)
}

/// Writes a key pair of ours as `NAME.pub` and `NAME.key`.
fn our_keys(dir: &Path, name: &str, password: Option<&str>) -> (PathBuf, PathBuf) {
    let pair = sign::generate(password).unwrap();
    let (public, secret) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    fs::write(&public, pair.public_text).unwrap();
    fs::write(&secret, pair.secret_text).unwrap();
    (public, secret)
}

fn trusted(public: &Path) -> Vec<PublicKey> {
    vec![PublicKey::from_file(public).unwrap()]
}

/// Lines 2 to 4 of a signature file: all but the free-form untrusted comment.
fn signed_lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

#[test]
fn minisign_accepts_our_signature_as_prehashed() {
    let (dir, index) = workdir();
    let (public, secret) = our_keys(dir.path(), "ours", None);
    let key = SecretKey::from_file(&secret, None).unwrap();
    let text = sign::sign(INDEX, &key, COMMENT).unwrap();
    fs::write(sign::signature_path(&index), &text).unwrap();
    assert_eq!(
        sign::signature_path(&index),
        dir.path().join("INDEX.minisig")
    );

    // -H: refuse anything but the prehashed format.
    let out = minisign_ok(
        &["-V", "-H", "-m", "INDEX", "-p", public.to_str().unwrap()],
        dir.path(),
        "",
    );
    assert!(
        out.contains(&format!("Trusted comment: {COMMENT}")),
        "{out}"
    );

    let pasted = fs::read_to_string(&public).unwrap();
    let line = pasted.lines().nth(1).unwrap();
    minisign_ok(&["-V", "-m", "INDEX", "-P", line], dir.path(), "");
    assert_eq!(
        PublicKey::parse(line).unwrap().key_id_hex(),
        PublicKey::parse(&pasted).unwrap().key_id_hex()
    );
}

#[test]
fn we_accept_minisign_signatures_and_keys_unencrypted() {
    let (dir, index) = workdir();
    minisign_ok(&["-G", "-W", "-p", "m.pub", "-s", "m.key"], dir.path(), "");
    minisign_ok(
        &["-S", "-s", "m.key", "-m", "INDEX", "-t", COMMENT],
        dir.path(),
        "",
    );
    let public = PublicKey::from_file(&dir.path().join("m.pub")).unwrap();
    let key_id = public.key_id_hex();
    // minisign names its keys the way we do.
    let pub_file = fs::read_to_string(dir.path().join("m.pub")).unwrap();
    assert!(pub_file.contains(&key_id), "{pub_file}");

    let verified = sign::verify_file(INDEX, &sign::signature_path(&index), &[public]).unwrap();
    assert_eq!(
        verified,
        Verified {
            key_id_hex: key_id,
            trusted_comment: COMMENT.to_string(),
        }
    );

    // Ed25519 is deterministic: with minisign's key, ours is its signature, byte for byte.
    let key = SecretKey::from_file(&dir.path().join("m.key"), None).unwrap();
    let theirs = fs::read_to_string(sign::signature_path(&index)).unwrap();
    let ours = sign::sign(INDEX, &key, COMMENT).unwrap();
    assert_eq!(signed_lines(&ours), signed_lines(&theirs));
}

#[test]
fn we_accept_minisign_signatures_and_keys_encrypted() {
    let (dir, index) = workdir();
    // minisign reads passwords from standard input when it is not a terminal.
    minisign_ok(
        &["-G", "-p", "m.pub", "-s", "m.key"],
        dir.path(),
        "pw\npw\n",
    );
    minisign_ok(
        &["-S", "-s", "m.key", "-m", "INDEX", "-t", COMMENT],
        dir.path(),
        "pw\n",
    );
    let theirs = fs::read_to_string(sign::signature_path(&index)).unwrap();
    let public = trusted(&dir.path().join("m.pub"));
    sign::verify(INDEX, &theirs, &public).unwrap();

    let secret = dir.path().join("m.key");
    let key = SecretKey::from_file(&secret, Some("pw")).unwrap();
    let ours = sign::sign(INDEX, &key, COMMENT).unwrap();
    assert_eq!(signed_lines(&ours), signed_lines(&theirs));

    let err = SecretKey::from_file(&secret, None).unwrap_err().to_string();
    assert!(
        err.contains("encrypted with a password, and none was given"),
        "{err}"
    );
}

#[test]
fn our_encrypted_key_signs_and_minisign_can_use_it() {
    let (dir, index) = workdir();
    let (public, secret) = our_keys(dir.path(), "ours", Some("correct horse"));
    let key = SecretKey::from_file(&secret, Some("correct horse")).unwrap();
    let text = sign::sign(INDEX, &key, COMMENT).unwrap();
    let verified = sign::verify(INDEX, &text, &trusted(&public)).unwrap();
    assert_eq!(verified.trusted_comment, COMMENT);

    let err = SecretKey::from_file(&secret, Some("wrong horse"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong password"), "{err}");
    assert!(err.contains("ours.key"), "{err}");

    // minisign decrypts our key (same scrypt parameters, same checksum) and signs alike.
    let secret = secret.to_str().unwrap();
    minisign_ok(
        &["-S", "-s", secret, "-m", "INDEX", "-t", COMMENT],
        dir.path(),
        "correct horse\n",
    );
    let theirs = fs::read_to_string(sign::signature_path(&index)).unwrap();
    assert_eq!(signed_lines(&text), signed_lines(&theirs));
}

#[test]
fn legacy_signatures_are_accepted() {
    let (dir, index) = workdir();
    minisign_ok(&["-G", "-W", "-p", "m.pub", "-s", "m.key"], dir.path(), "");
    minisign_ok(&["-S", "-l", "-s", "m.key", "-m", "INDEX"], dir.path(), "");
    let text = fs::read_to_string(sign::signature_path(&index)).unwrap();
    assert_eq!(&decode_line(&text, 1)[..2], b"Ed");
    let public = trusted(&dir.path().join("m.pub"));
    sign::verify(INDEX, &text, &public).unwrap();
    let err = sign::verify(b"another index", &text, &public).unwrap_err();
    assert!(err.to_string().contains("bad signature"), "{err}");
}

fn decode_line(text: &str, line: usize) -> Vec<u8> {
    BASE64_STANDARD
        .decode(text.lines().nth(line).unwrap())
        .unwrap()
}

/// `text` with byte `at` of base64 line `line` flipped.
fn flip(text: &str, line: usize, at: usize) -> String {
    let mut raw = decode_line(text, line);
    raw[at] ^= 1;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[line] = BASE64_STANDARD.encode(raw);
    lines.join("\n") + "\n"
}

#[test]
fn tampering_is_refused_by_name() {
    let (dir, index) = workdir();
    let (public, secret) = our_keys(dir.path(), "ours", None);
    let (other_public, other_secret) = our_keys(dir.path(), "other", None);
    let key = SecretKey::from_file(&secret, None).unwrap();
    let trusted = trusted(&public);
    let good = sign::sign(INDEX, &key, COMMENT).unwrap();
    let refused = |message: &[u8], text: &str, expected: &str| {
        let err = sign::verify(message, text, &trusted)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?}, got {err:?}");
    };

    // Signed by a key that is not trusted, or that claims another key's id.
    let other = SecretKey::from_file(&other_secret, None).unwrap();
    let other_id = PublicKey::from_file(&other_public).unwrap().key_id_hex();
    let by_other = sign::sign(INDEX, &other, COMMENT).unwrap();
    refused(
        INDEX,
        &by_other,
        &format!("made by key {other_id}, which is not trusted"),
    );
    refused(INDEX, &flip(&good, 1, 2), "which is not trusted");
    // Trusting several keys: the one that signed is picked out.
    let both = [
        trusted[0].clone(),
        PublicKey::from_file(&other_public).unwrap(),
    ];
    assert_eq!(
        sign::verify(INDEX, &by_other, &both).unwrap().key_id_hex,
        other_id
    );

    let mut index_flipped = INDEX.to_vec();
    index_flipped[7] ^= 0x20;
    refused(&index_flipped, &good, "bad signature");
    refused(INDEX, &flip(&good, 1, 10), "bad signature");
    refused(INDEX, &flip(&good, 1, 73), "bad signature");
    let another = sign::sign(b"another index", &key, COMMENT).unwrap();
    refused(INDEX, &another, "bad signature");

    let comment_changed = good.replace("index v2", "index v3");
    refused(INDEX, &comment_changed, "bad global signature");
    refused(INDEX, &flip(&good, 3, 0), "bad global signature");
    refused(INDEX, &flip(&good, 3, 63), "bad global signature");
    // Lines of two good signatures mixed: the global signature binds them.
    let mixed: Vec<&str> = another
        .lines()
        .take(2)
        .chain(good.lines().skip(2))
        .collect();
    let mixed = mixed.join("\n");
    refused(INDEX, &mixed, "bad signature");
    refused(b"another index", &mixed, "bad global signature");

    refused(
        INDEX,
        &flip(&good, 1, 0),
        "malformed: unsupported signature algorithm",
    );
    refused(
        INDEX,
        &good.replace("trusted comment: ", "comment: "),
        "malformed",
    );
    refused(
        INDEX,
        &good.replace(COMMENT, "a\x1b[2Jforged"),
        "control character",
    );
    // Only the final newline may go, as for minisign.
    sign::verify(INDEX, &good[..good.len() - 1], &trusted).unwrap();
    for cut in [0, 10, good.len() / 2, good.len() - 30, good.len() - 2] {
        let err = sign::verify(INDEX, &good[..cut], &trusted)
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "cut at {cut}: {err}");
    }
    // Cut just after the trusted comment: the global signature line is missing.
    let third_line_end = good.match_indices('\n').nth(2).unwrap().0 + 1;
    refused(
        INDEX,
        &good[..third_line_end],
        "truncated: 3 of its 4 lines",
    );

    // The file-level check names the file, and a missing one is its own error.
    let path = sign::signature_path(&index);
    let err = sign::verify_file(INDEX, &path, &trusted)
        .unwrap_err()
        .to_string();
    assert!(err.contains("INDEX.minisig is missing"), "{err}");
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = sign::verify_file(INDEX, &path, &trusted)
        .unwrap_err()
        .to_string();
    assert!(err.contains("INDEX.minisig: malformed"), "{err}");
    fs::write(&path, &good).unwrap();
    sign::verify_file(INDEX, &path, &trusted).unwrap();
}

#[test]
fn bad_keys_and_comments_are_refused() {
    let (dir, _) = workdir();
    let (public, secret) = our_keys(dir.path(), "ours", None);
    // A secret key where a public key belongs, and the reverse.
    let err = PublicKey::from_file(&secret).unwrap_err().to_string();
    assert!(err.contains("is 158 bytes, not 42"), "{err}");
    let err = SecretKey::from_file(&public, None).unwrap_err().to_string();
    assert!(err.contains("is 42 bytes, not 158"), "{err}");
    assert!(PublicKey::parse("RWQ not base64").is_err());

    // A key file asking for more scrypt memory than minisign ever uses is refused
    // before any is allocated.
    let (_, encrypted) = our_keys(dir.path(), "encrypted", Some("pw"));
    let text = fs::read_to_string(&encrypted).unwrap();
    let mut raw = decode_line(&text, 1);
    raw[46..54].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fs::write(
        &encrypted,
        format!("untrusted comment: x\n{}\n", BASE64_STANDARD.encode(raw)),
    )
    .unwrap();
    let err = SecretKey::from_file(&encrypted, Some("pw"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("memlimit 1099511627776) above minisign's"),
        "{err}"
    );

    let key = SecretKey::from_file(&secret, None).unwrap();
    assert!(sign::sign(INDEX, &key, "two\nlines").is_err());
    assert!(sign::sign(INDEX, &key, &"x".repeat(8174)).is_err());
    sign::sign(INDEX, &key, &"x".repeat(8173)).unwrap();
}
