//! Indexes signed with X.509 certificates: CMS signatures that `openssl cms` and blockcast
//! both accept, whichever made them; the kernel's root-hash signature, byte for byte
//! what `openssl smime` makes with an RSA key, and systemd's JSON; every refusal before a
//! store is read; minisign beside CMS; keys on a PKCS#11 token (SoftHSM); signatures over
//! HTTP and on a registry. The certificates (a root, an intermediate and leaves of
//! several usages) are made by each test with `openssl`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::registry::{Access, Registry};
use common::served::Served;
use common::*;

/// Runs a tool that must succeed; returns its stdout.
fn tool(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl(dir: &Path) -> Command {
    let mut c = Command::new("openssl");
    c.current_dir(dir);
    c
}

/// Extensions of the certificates the tests make.
const EXTENSIONS: &str = "
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[code]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
[encipher]
basicConstraints = CA:false
keyUsage = critical, keyEncipherment
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
[plain]
basicConstraints = CA:false
subjectKeyIdentifier = hash
";

#[derive(Clone, Copy)]
enum KeyType {
    Rsa,
    Ec,
}

/// A root CA, an intermediate under it, and leaves the intermediate issues, in `dir`.
struct Pki {
    dir: PathBuf,
    root: PathBuf,
    serial: std::cell::Cell<u32>,
}

/// A leaf: its certificate, the PEM chain of it and the intermediate, and its key.
struct Leaf {
    cert: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("ext.cnf"), EXTENSIONS).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
            root: dir.join("root.pem"),
            serial: std::cell::Cell::new(1),
        };
        pki.self_signed("root");
        pki.issue("int", "root", "ca", KeyType::Rsa);
        pki
    }

    /// Another root that vouches for none of this one's certificates.
    fn self_signed(&self, name: &str) -> PathBuf {
        tool(openssl(&self.dir).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN=blockcast test {name}"),
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
        self.dir.join(format!("{name}.pem"))
    }

    fn issue(&self, name: &str, issuer: &str, section: &str, key: KeyType) {
        let algorithm: &[&str] = match key {
            KeyType::Rsa => &["-newkey", "rsa:2048"],
            KeyType::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        };
        tool(
            openssl(&self.dir)
                .args(["req", "-new", "-nodes"])
                .args(algorithm)
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN=blockcast test {name}"),
                ]),
        );
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        tool(openssl(&self.dir).args([
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "3650",
            "-extfile",
            "ext.cnf",
            "-extensions",
            section,
            "-out",
            &format!("{name}.pem"),
        ]));
    }

    /// A leaf issued by the intermediate with the extensions of `section`.
    fn leaf(&self, name: &str, section: &str, key: KeyType) -> Leaf {
        self.issue(name, "int", section, key);
        let cert = self.dir.join(format!("{name}.pem"));
        let chain = self.dir.join(format!("{name}-chain.pem"));
        let mut pem = fs::read(&cert).unwrap();
        pem.extend(fs::read(self.dir.join("int.pem")).unwrap());
        fs::write(&chain, pem).unwrap();
        Leaf {
            cert,
            chain,
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn intermediate(&self) -> PathBuf {
        self.dir.join("int.pem")
    }
}

/// An erofs image made into `dir/store`, its index `dir/NAME.bcidx`, with `extra`
/// arguments (signing options).
fn made(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let index = dir.join(format!("{name}.bcidx"));
    ok(make_cmd(&image("erofs", 1), &dir.join("store"), &index).args(extra));
    index
}

fn signing(leaf: &Leaf) -> Vec<String> {
    vec![
        "--sign-cert".into(),
        leaf.chain.display().to_string(),
        "--sign-key".into(),
        leaf.key.display().to_string(),
    ]
}

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn root_hash(index: &Path) -> String {
    let info = json(&ok(bin().arg("info").arg(index).arg("--json")));
    info["verity"]["root_hash"].as_str().unwrap().to_string()
}

fn openssl_cms_verifies(dir: &Path, index: &Path, ca: &Path) {
    tool(
        openssl(dir)
            .args([
                "cms", "-verify", "-binary", "-purpose", "any", "-inform", "DER",
            ])
            .arg("-CAfile")
            .arg(ca)
            .arg("-content")
            .arg(index)
            .arg("-in")
            .arg(beside(index, ".p7s"))
            .args(["-out", "/dev/null"]),
    );
}

/// `openssl smime -verify` of a root-hash signature, which carries no certificate: the
/// signer's comes from `-certfile`, its chain through `-untrusted` to `-CAfile`.
fn openssl_smime_verifies(pki: &Pki, p7s: &Path, root: &str, leaf: &Leaf) {
    let content = pki.dir.join("roothash.txt");
    fs::write(&content, root).unwrap();
    tool(
        openssl(&pki.dir)
            .args([
                "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
            ])
            .arg("-in")
            .arg(p7s)
            .arg("-content")
            .arg(&content)
            .arg("-certfile")
            .arg(&leaf.cert)
            .arg("-untrusted")
            .arg(pki.intermediate())
            .arg("-CAfile")
            .arg(&pki.root)
            .args(["-out", "/dev/null"]),
    );
}

/// What `openssl smime -sign -nocerts -noattr -binary -outform der` makes of `root`.
fn openssl_smime_signs(pki: &Pki, root: &str, leaf: &Leaf) -> Vec<u8> {
    let content = pki.dir.join("roothash.txt");
    fs::write(&content, root).unwrap();
    tool(
        openssl(&pki.dir)
            .args([
                "smime", "-sign", "-nocerts", "-noattr", "-binary", "-outform", "der",
            ])
            .arg("-in")
            .arg(&content)
            .arg("-inkey")
            .arg(&leaf.key)
            .arg("-signer")
            .arg(&leaf.cert),
    )
}

fn sha256_fingerprint(pki: &Pki, cert: &Path) -> String {
    let out = tool(
        openssl(&pki.dir)
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    );
    let text = String::from_utf8(out).unwrap();
    let (_, hex) = text.trim().split_once('=').unwrap();
    hex.replace(':', "").to_lowercase()
}

/// Checks systemd's verity signature JSON at `path` against the root hash, the
/// root-hash signature and the signer's certificate.
fn check_verity_sig(pki: &Pki, path: &Path, root: &str, p7s: &[u8], leaf: &Leaf) {
    let bytes = fs::read(path).unwrap();
    assert!(
        !bytes.is_empty() && bytes.len().is_multiple_of(4096),
        "{} bytes",
        bytes.len()
    );
    let end = bytes.iter().position(|&b| b == 0).unwrap();
    assert!(bytes[end..].iter().all(|&b| b == 0), "NUL-padded");
    let fields: serde_json::Value = serde_json::from_slice(&bytes[..end]).unwrap();
    assert_eq!(fields["rootHash"], root);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(fields["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(signature, p7s);
    assert_eq!(
        fields["certificateFingerprint"],
        sha256_fingerprint(pki, &leaf.cert)
    );
}

fn extract_trusting(index: &Path, store: &Path, out: &Path, ca: &Path) -> Command {
    let mut c = extract_cmd(index, store, out);
    c.arg("--trusted-ca").arg(ca);
    c
}

#[test]
fn our_signatures_pass_openssl_and_extract_writes_the_kernel_files_beside_the_image() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let leaf = pki.leaf("release", "code", KeyType::Rsa);
    let index = made(
        t.path(),
        "v1",
        &signing(&leaf)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    openssl_cms_verifies(t.path(), &index, &pki.root);

    let root = root_hash(&index);
    let p7s = fs::read(beside(&index, ".roothash.p7s")).unwrap();
    assert_eq!(
        p7s,
        openssl_smime_signs(&pki, &root, &leaf),
        "byte for byte openssl smime's"
    );
    openssl_smime_verifies(&pki, &beside(&index, ".roothash.p7s"), &root, &leaf);
    check_verity_sig(
        &pki,
        &beside(&index, ".verity-sig.json"),
        &root,
        &p7s,
        &leaf,
    );

    let out = t.path().join("out.img");
    let report = json(&ok(extract_trusting(
        &index,
        &t.path().join("store"),
        &out,
        &pki.root,
    )
    .arg("--json")));
    assert!(is_extracted(&out, &image("erofs", 1)));
    let written = beside(&out, ".roothash.p7s");
    assert_eq!(report["root_hash_signature"], written.display().to_string());
    assert_eq!(fs::read(&written).unwrap(), p7s);
    assert_eq!(
        fs::read(beside(&out, ".verity-sig.json")).unwrap(),
        fs::read(beside(&index, ".verity-sig.json")).unwrap()
    );
    let verified = json(&ok(bin()
        .arg("verify")
        .arg(&index)
        .arg(&out)
        .arg("--trusted-ca")
        .arg(&pki.root)
        .arg("--json")));
    assert_eq!(verified["authenticated"], true);
    assert_eq!(verified["signer"], "CN=blockcast test release");

    let info = ok(bin().arg("info").arg(&index));
    assert!(
        info.contains(&format!(
            "veritysetup open IMAGE NAME HASHDEV {root} --root-hash-signature=IMAGE.roothash.p7s"
        )),
        "{info}"
    );

    // Extracted again without the CA, nothing vouches for the files: they go.
    ok(&mut extract_cmd(&index, &t.path().join("store"), &out));
    assert!(!written.exists() && !beside(&out, ".verity-sig.json").exists());
}

#[test]
fn ec_keys_sign_and_openssl_checks_their_signatures() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let leaf = pki.leaf("ec", "code", KeyType::Ec);
    let index = made(t.path(), "v1", &[]);
    let written = ok(bin()
        .arg("sign")
        .arg(&index)
        .arg("--sign-cert")
        .arg(&leaf.chain)
        .arg("--sign-key")
        .arg(&leaf.key));
    assert!(written.contains(".p7s"), "{written}");
    openssl_cms_verifies(t.path(), &index, &pki.root);
    let root = root_hash(&index);
    let p7s = beside(&index, ".roothash.p7s");
    openssl_smime_verifies(&pki, &p7s, &root, &leaf);
    check_verity_sig(
        &pki,
        &beside(&index, ".verity-sig.json"),
        &root,
        &fs::read(&p7s).unwrap(),
        &leaf,
    );
    ok(&mut extract_trusting(
        &index,
        &t.path().join("store"),
        &t.path().join("out.img"),
        &pki.root,
    ));
}

#[test]
fn signatures_openssl_made_are_accepted() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let leaf = pki.leaf("ec", "code", KeyType::Ec);
    let index = made(t.path(), "v1", &[]);
    let root = root_hash(&index);
    let store = t.path().join("store");
    let out = t.path().join("out.img");
    // Named by issuer and serial number (openssl's default), then by subject key id.
    for extra in [&[][..], &["-keyid"][..]] {
        tool(
            openssl(t.path())
                .args(["cms", "-sign", "-binary", "-outform", "DER"])
                .args(extra)
                .arg("-in")
                .arg(&index)
                .arg("-signer")
                .arg(&leaf.cert)
                .arg("-inkey")
                .arg(&leaf.key)
                .arg("-certfile")
                .arg(pki.intermediate())
                .arg("-out")
                .arg(beside(&index, ".p7s")),
        );
        // ECDSA signatures differ each time: not byte-identical, still the signer's.
        fs::write(
            beside(&index, ".roothash.p7s"),
            openssl_smime_signs(&pki, &root, &leaf),
        )
        .unwrap();
        ok(&mut extract_trusting(&index, &store, &out, &pki.root));
        assert_eq!(
            fs::read(beside(&out, ".roothash.p7s")).unwrap(),
            fs::read(beside(&index, ".roothash.p7s")).unwrap()
        );
        // The JSON, not shipped, is made from the signature that came.
        let json_path = beside(&out, ".verity-sig.json");
        check_verity_sig(
            &pki,
            &json_path,
            &root,
            &fs::read(beside(&out, ".roothash.p7s")).unwrap(),
            &leaf,
        );
    }
}

#[test]
fn every_refusal_comes_before_any_store_is_read() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let code = pki.leaf("code", "code", KeyType::Rsa);
    let server = pki.leaf("server", "server", KeyType::Ec);
    let encipher = pki.leaf("encipher", "encipher", KeyType::Ec);
    let plain = pki.leaf("plain", "plain", KeyType::Ec);
    let other_root = pki.self_signed("other");
    let signed_by = |leaf: &Leaf, name: &str| {
        made(
            t.path(),
            name,
            &signing(leaf).iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let good = signed_by(&code, "good");
    // A store that does not exist: any error about it would mean the index got through.
    let nowhere = t.path().join("no-store");
    let out = t.path().join("out.img");
    let refused = |index: &Path, ca: &Path, extra: &[&str], why: &str| {
        let err = fails(extract_trusting(index, &nowhere, &out, ca).args(extra));
        assert!(
            err.contains("refusing") && err.contains(why),
            "{why}: {err}"
        );
        assert!(!err.contains("no-store"), "{err}");
        assert!(!out.exists());
    };

    refused(
        &good,
        &pki.root,
        &["--verify-time", "2100-01-01"],
        "certificate has expired",
    );
    refused(
        &good,
        &pki.root,
        &["--verify-time", "2000-01-01"],
        "certificate is not yet valid",
    );
    refused(
        &good,
        &other_root,
        &[],
        "unable to get local issuer certificate",
    );
    refused(
        &signed_by(&server, "server"),
        &pki.root,
        &[],
        "does not allow codeSigning",
    );
    refused(
        &good,
        &pki.root,
        &["--required-eku", "1.3.6.1.5.5.7.3.1"],
        "does not allow serverAuth",
    );
    refused(
        &signed_by(&encipher, "encipher"),
        &pki.root,
        &[],
        "digitalSignature",
    );
    let plain_index = signed_by(&plain, "plain");
    refused(
        &plain_index,
        &pki.root,
        &["--required-eku", "1.3.6.1.5.5.7.3.3"],
        "no extendedKeyUsage",
    );

    // What the policy accepts: a leaf without usages, a required purpose the leaf has,
    // a time within the validity.
    let store = t.path().join("store");
    ok(&mut extract_trusting(&plain_index, &store, &out, &pki.root));
    let server_index = t.path().join("server.bcidx");
    ok(extract_trusting(&server_index, &store, &out, &pki.root)
        .args(["--required-eku", "1.3.6.1.5.5.7.3.1"]));
    ok(extract_trusting(&good, &store, &out, &pki.root).args(["--verify-time", "@2000000000"]));
    fs::remove_file(&out).unwrap();

    let bytes = fs::read(&good).unwrap();
    for at in [9, 600, bytes.len() - 5] {
        let mut b = bytes.clone();
        b[at] ^= 1;
        fs::write(&good, &b).unwrap();
        refused(&good, &pki.root, &[], "bad signature");
    }
    fs::write(&good, &bytes).unwrap();

    let p7s = beside(&good, ".p7s");
    let signature = fs::read(&p7s).unwrap();
    fs::write(&p7s, &signature[..signature.len() / 2]).unwrap();
    refused(&good, &pki.root, &[], "malformed");
    fs::copy(beside(&plain_index, ".p7s"), &p7s).unwrap();
    refused(&good, &pki.root, &[], "bad signature");
    fs::remove_file(&p7s).unwrap();
    refused(&good, &pki.root, &[], "not signed with a certificate");
    fs::write(&p7s, &signature).unwrap();

    // The kernel's files must be the signer's, of this root hash.
    let roothash = beside(&good, ".roothash.p7s");
    let kernel = fs::read(&roothash).unwrap();
    fs::copy(beside(&plain_index, ".roothash.p7s"), &roothash).unwrap();
    refused(&good, &pki.root, &[], "root-hash signature");
    let other_root_hash = openssl_smime_signs(&pki, &"0".repeat(64), &code);
    fs::write(&roothash, other_root_hash).unwrap();
    refused(&good, &pki.root, &[], "bad signature");
    fs::write(&roothash, &kernel).unwrap();
    let json_path = beside(&good, ".verity-sig.json");
    let json = fs::read(&json_path).unwrap();
    let text = String::from_utf8(json.clone()).unwrap();
    let root = root_hash(&good);
    fs::write(&json_path, text.replace(&root, &"0".repeat(64))).unwrap();
    refused(&good, &pki.root, &[], "rootHash");
    fs::write(&json_path, &json[..json.len() - 1]).unwrap();
    refused(&good, &pki.root, &[], "not a multiple of 4096");
    fs::write(&json_path, &json).unwrap();
    ok(&mut extract_trusting(&good, &store, &out, &pki.root));
}

#[test]
fn an_index_carries_minisign_and_cms_signatures_and_both_are_checked() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let leaf = pki.leaf("release", "code", KeyType::Ec);
    let (secret, public) = keygen(t.path(), "minisign");
    let mut args = signing(&leaf);
    args.extend(["--sign".into(), secret.display().to_string()]);
    let index = made(
        t.path(),
        "v1",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (store, out) = (t.path().join("store"), t.path().join("out.img"));
    let both = || {
        let mut c = extract_trusting(&index, &store, &out, &pki.root);
        c.arg("--trusted-key").arg(&public);
        c
    };
    ok(&mut both());
    for (suffix, why) in [
        (".minisig", "not signed"),
        (".p7s", "not signed with a certificate"),
    ] {
        let path = beside(&index, suffix);
        let kept = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let err = fails(&mut both());
        assert!(err.contains(why), "{err}");
        fs::write(&path, kept).unwrap();
    }
    // Each alone still vouches for it to a reader that trusts only that kind.
    fs::remove_file(beside(&index, ".p7s")).unwrap();
    ok(extract_cmd(&index, &store, &out)
        .arg("--trusted-key")
        .arg(&public));
}

/// A SoftHSM token in `dir`, named `blockcast`, user PIN 1234.
fn softhsm(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    tool(
        Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                "blockcast",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ]),
    );
    conf
}

fn import(conf: &Path, key: &Path, label: &str, id: &str) {
    tool(
        Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", conf)
            .arg("--import")
            .arg(key)
            .args([
                "--token",
                "blockcast",
                "--label",
                label,
                "--id",
                id,
                "--pin",
                "1234",
            ]),
    );
}

#[test]
fn keys_on_a_pkcs11_token_sign_through_softhsm() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let rsa = pki.leaf("rsa", "code", KeyType::Rsa);
    let ec = pki.leaf("ec", "code", KeyType::Ec);
    let conf = softhsm(&t.path().join("hsm"));
    import(&conf, &rsa.key, "release", "01");
    import(&conf, &ec.key, "release-ec", "02");
    import(&conf, &pki.dir.join("root.key"), "another", "03");
    let index = made(t.path(), "v1", &[]);
    let root = root_hash(&index);
    let sign = |cert: &Path, uri: &str| {
        let mut c = bin();
        c.env("SOFTHSM2_CONF", &conf)
            .env_remove("BLOCKCAST_KEY_PASSWORD")
            .arg("sign")
            .arg(&index)
            .arg("--sign-cert")
            .arg(cert)
            .arg("--sign-key")
            .arg(uri);
        c
    };

    ok(&mut sign(
        &rsa.chain,
        "pkcs11:token=blockcast;object=release;type=private?pin-value=1234",
    ));
    openssl_cms_verifies(t.path(), &index, &pki.root);
    // The token's RSA key signs exactly as the same key in a file does.
    let p7s = fs::read(beside(&index, ".roothash.p7s")).unwrap();
    assert_eq!(p7s, openssl_smime_signs(&pki, &root, &rsa));
    ok(&mut extract_trusting(
        &index,
        &t.path().join("store"),
        &t.path().join("out.img"),
        &pki.root,
    ));

    let pin = t.path().join("pin");
    fs::write(&pin, "1234\n").unwrap();
    let uri = format!(
        "pkcs11:token=blockcast;id=%02?pin-source=file:{}",
        pin.display()
    );
    ok(&mut sign(&ec.chain, &uri));
    openssl_cms_verifies(t.path(), &index, &pki.root);
    openssl_smime_verifies(&pki, &beside(&index, ".roothash.p7s"), &root, &ec);
    // The PIN may come from the environment, the module from the URI.
    ok(sign(
        &ec.chain,
        "pkcs11:object=release-ec?module-path=/usr/lib/softhsm/libsofthsm2.so",
    )
    .env("BLOCKCAST_KEY_PASSWORD", "1234"));
    openssl_cms_verifies(t.path(), &index, &pki.root);

    let err = fails(&mut sign(
        &ec.chain,
        "pkcs11:token=blockcast;object=release-ec?pin-value=9999",
    ));
    assert!(
        err.contains("PinIncorrect") && !err.contains("9999"),
        "{err}"
    );
    let err = fails(&mut sign(
        &ec.chain,
        "pkcs11:token=blockcast;object=release-ec",
    ));
    assert!(err.contains("no PIN was given"), "{err}");
    for (cert, object) in [(&ec.chain, "release"), (&rsa.chain, "another")] {
        let uri = format!("pkcs11:token=blockcast;object={object}?pin-value=1234");
        let err = fails(&mut sign(cert, &uri));
        assert!(err.contains("not the certificate's key"), "{err}");
    }
    // A PEM key that is not the certificate's.
    let err = fails(&mut sign(
        &rsa.chain,
        pki.dir.join("root.key").to_str().unwrap(),
    ));
    assert!(err.contains("not the certificate's key"), "{err}");
    let err = fails(
        sign(&ec.chain, "pkcs11:object=release-ec?pin-value=1234")
            .args(["--pkcs11-module", "/nonexistent.so"]),
    );
    assert!(err.contains("/nonexistent.so"), "{err}");
    let err = fails(&mut sign(&ec.chain, "pkcs11:token=blockcast;colour=blue"));
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn signatures_come_over_http_and_travel_to_a_registry() {
    let t = tempdir();
    let pki = Pki::new(&t.path().join("pki"));
    let leaf = pki.leaf("release", "code", KeyType::Rsa);
    let www = t.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let mut args = signing(&leaf);
    args.push("--pack".into());
    let index = made(
        &www,
        "v1",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let server = Served::start(&www, &[]);
    let url = format!("{}/v1.bcidx", server.url);
    let store = format!("{}/store", server.url);
    let out = t.path().join("out.img");
    ok(bin()
        .args(["extract", &url, "--store", &store, "--trusted-ca"])
        .arg(&pki.root)
        .arg("-o")
        .arg(&out));
    assert_eq!(
        fs::read(beside(&out, ".roothash.p7s")).unwrap(),
        fs::read(beside(&index, ".roothash.p7s")).unwrap()
    );
    let p7s = beside(&index, ".p7s");
    let kept = fs::read(&p7s).unwrap();
    fs::remove_file(&p7s).unwrap();
    let err = fails(
        bin()
            .args([
                "plan",
                &url,
                "--store",
                &format!("{}/nowhere", server.url),
                "--trusted-ca",
            ])
            .arg(&pki.root),
    );
    assert!(err.contains("not signed with a certificate"), "{err}");
    fs::write(&p7s, kept).unwrap();
    drop(server);

    let registry = Registry::start(&t.path().join("registry"), Access::Open);
    let reference = registry.oci("os/erofs:v1");
    let report = json(&ok(bin()
        .env("HOME", t.path())
        .arg("push")
        .arg(&index)
        .arg("--store")
        .arg(www.join("store"))
        .arg(&reference)
        .arg("--json")));
    assert_eq!(report["signed"], true, "{report}");
    let manifest = tool(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/os/erofs:v1", registry.host)),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let kinds: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l["mediaType"]
                .as_str()?
                .strip_prefix("application/vnd.blockcast.signature.")
        })
        .collect();
    assert_eq!(kinds, ["cms", "roothash-p7s", "verity-sig"]);
    let out = t.path().join("from-registry.img");
    ok(bin()
        .env("HOME", t.path())
        .args(["extract", &reference, "--trusted-ca"])
        .arg(&pki.root)
        .arg("-o")
        .arg(&out));
    assert_eq!(
        fs::read(beside(&out, ".verity-sig.json")).unwrap(),
        fs::read(beside(&index, ".verity-sig.json")).unwrap()
    );
}
