//! Shared helpers for the integration tests: run the real binary on real images.

#![allow(dead_code)]

pub mod acceptor;
pub mod faulty;
pub mod layout;
pub mod moto;
pub mod nginx;
pub mod proxy;
pub mod registry;
pub mod served;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const KINDS: [&str; 4] = ["erofs", "erofs-lz4hc", "squashfs", "ext4"];

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blockcast"))
}

pub fn image(kind: &str, version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testimages")
        .join(format!("{kind}-v{version}.img"))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("blockcast-test")
        .tempdir()
        .expect("temp dir")
}

/// Runs and requires success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run blockcast");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs and requires failure; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("run blockcast");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed"
    );
    // 1: the command failed; 2: clap refused the arguments. A panic would be 101.
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{cmd:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{cmd:?} panicked: {stderr}");
    stderr
}

pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).expect("JSON output")
}

pub fn make(img: &Path, store: &Path, index: &Path) -> serde_json::Value {
    make_with(img, store, index, &[])
}

/// `blockcast make` with extra arguments; returns its JSON report.
pub fn make_with(img: &Path, store: &Path, index: &Path, extra: &[&str]) -> serde_json::Value {
    json(&ok(make_cmd(img, store, index).arg("--json").args(extra)))
}

/// The command `blockcast make IMG --store STORE --index INDEX`, to add to and run.
pub fn make_cmd(img: &Path, store: &Path, index: &Path) -> Command {
    let mut cmd = bin();
    cmd.arg("make")
        .arg(img)
        .arg("--store")
        .arg(store)
        .arg("--index")
        .arg(index);
    cmd
}

/// Makes `kind`'s v1 and v2 test images into `store`, their indexes in `dir`: returns the
/// images, the indexes and make's reports, v1 first.
pub fn make_versions(
    dir: &Path,
    store: &Path,
    kind: &str,
) -> ([PathBuf; 2], [PathBuf; 2], [serde_json::Value; 2]) {
    let images = [image(kind, 1), image(kind, 2)];
    let indexes = [1, 2].map(|v| dir.join(format!("{kind}-{v}.bcidx")));
    let made = [0, 1].map(|i| make(&images[i], store, &indexes[i]));
    (images, indexes, made)
}

/// The distinct chunk ids an index names.
pub fn chunk_ids(index: &Path) -> std::collections::HashSet<blockcast::chunk::ChunkId> {
    blockcast::index::Index::open(index)
        .unwrap()
        .records()
        .map(|r| r.id)
        .collect()
}

/// `blockcast extract INDEX --store STORE -o OUT`, to add to and run.
pub fn extract_cmd(index: &Path, store: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("extract")
        .arg(index)
        .arg("--store")
        .arg(store)
        .arg("-o")
        .arg(out);
    c
}

pub fn extract(index: &Path, store: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    json(&ok(extract_cmd(index, store, out)
        .arg("--json")
        .args(extra)))
}

/// Runs `veritysetup` with `args`: whether it succeeded, and what it printed.
pub fn veritysetup(args: &[&str]) -> (bool, String) {
    let out = Command::new("veritysetup")
        .args(args)
        .output()
        .expect("veritysetup is installed (tools/test installs cryptsetup-bin)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

/// True when `out` is the image `img` zero-padded to whole 4096-byte blocks, as extract
/// writes it.
pub fn is_extracted(out: &Path, img: &Path) -> bool {
    let mut want = std::fs::read(img).expect("read image");
    want.resize(want.len().next_multiple_of(4096), 0);
    std::fs::read(out).expect("read output") == want
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Number of chunk files in a store.
pub fn chunk_files(store: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(store).expect("store dir").flatten() {
        if dir.path().is_dir() {
            for f in std::fs::read_dir(dir.path()).expect("chunk dir").flatten() {
                if f.path().extension().is_some_and(|e| e == "cacnk") {
                    files.push(f.path());
                }
            }
        }
    }
    files.sort();
    files
}

/// Two signed releases of one kind in one packed store: their indexes (v1, v2) and the
/// public key that checks them.
pub struct SignedReleases {
    pub store: PathBuf,
    pub indexes: [PathBuf; 2],
    pub public: PathBuf,
}

/// v1 and v2 of `kind` made in `dir` with `make --pack --sign`, v2 with deltas against v1.
pub fn signed_releases(dir: &Path, kind: &str) -> SignedReleases {
    std::fs::create_dir_all(dir).unwrap();
    let (secret, public) = keygen(dir, "release");
    let store = dir.join("store");
    let indexes = [1, 2].map(|v| dir.join(format!("v{v}.bcidx")));
    for (v, index) in [1, 2].into_iter().zip(&indexes) {
        let mut args = vec!["--pack", "--sign", secret.to_str().unwrap()];
        let previous = indexes[0].to_str().unwrap();
        if v == 2 {
            args.extend(["--delta-from", previous]);
        }
        make_with(&image(kind, v), &store, index, &args);
    }
    SignedReleases {
        store,
        indexes,
        public,
    }
}

/// A minisign key pair `DIR/NAME.key` and `DIR/NAME.pub`, made by `blockcast keygen`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (sk, pk) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    ok(bin()
        .arg("keygen")
        .arg("--secret-key")
        .arg(&sk)
        .arg("--public-key")
        .arg(&pk));
    (sk, pk)
}

/// Runs `cmd` to its end, or kills it and fails the test when it is still running after
/// `seconds`: for inputs that once made blockcast hang.
pub fn within(cmd: &mut Command, seconds: u64) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run blockcast");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {seconds} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// The real `casync extract` of `caibx` from `store` into `out`, which must succeed.
pub fn casync_extract(caibx: &Path, store: &Path, out: &Path) {
    let st = Command::new("casync")
        .arg("extract")
        .arg(format!("--store={}", store.display()))
        .arg(caibx)
        .arg(out)
        .output()
        .expect("casync is installed (tools/test installs it)");
    assert!(
        st.status.success(),
        "casync: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}
