//! Signed indexes from the command line: a tampered, unsigned or foreign-signed index is
//! refused before anything is fetched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Signed {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    index: PathBuf,
    public: PathBuf,
}

fn signed() -> Signed {
    let t = tempdir();
    let dir = t.path().to_path_buf();
    let (sk, pk) = keygen(&dir, "release");
    let store = dir.join("store");
    let index = dir.join("v2.bcidx");
    ok(bin()
        .arg("make")
        .arg(image("erofs", 2))
        .arg("--store")
        .arg(&store)
        .arg("--index")
        .arg(&index)
        .arg("--sign")
        .arg(&sk)
        .args(["--release", "3"]));
    Signed {
        _t: t,
        dir,
        store,
        index,
        public: pk,
    }
}

fn extract_trusting(s: &Signed, store: &Path, key: &Path) -> Command {
    let mut c = extract_cmd(&s.index, store, &s.dir.join("out.img"));
    c.arg("--trusted-key").arg(key);
    c
}

#[test]
fn good_signature_is_accepted_and_minisign_agrees() {
    let s = signed();
    ok(&mut extract_trusting(&s, &s.store, &s.public));
    assert!(is_extracted(&s.dir.join("out.img"), &image("erofs", 2)));
    let st = Command::new("minisign")
        .arg("-Vm")
        .arg(&s.index)
        .arg("-p")
        .arg(&s.public)
        .output()
        .expect("minisign is installed (tools/test installs it)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(String::from_utf8_lossy(&st.stdout).contains("release:3"));
    ok(bin()
        .arg("plan")
        .arg(&s.index)
        .arg("--store")
        .arg(&s.store)
        .arg("--trusted-key")
        .arg(&s.public));
}

#[test]
fn refusals_happen_before_any_store_is_touched() {
    let s = signed();
    // A store that does not exist: any error about it would mean the index got through.
    let nowhere = s.dir.join("no-store");
    let (_, other) = keygen(&s.dir, "other");
    let err = fails(&mut extract_trusting(&s, &nowhere, &other));
    assert!(err.contains("not trusted"), "{err}");

    let sig = blockcast::sign::signature_path(&s.index);
    let good_sig = std::fs::read(&sig).unwrap();
    let good_index = std::fs::read(&s.index).unwrap();
    for at in [9, 600, good_index.len() - 5] {
        let mut b = good_index.clone();
        b[at] ^= 1;
        std::fs::write(&s.index, &b).unwrap();
        let err = fails(&mut extract_trusting(&s, &nowhere, &s.public));
        assert!(err.contains("bad signature"), "byte {at}: {err}");
    }
    std::fs::write(&s.index, &good_index).unwrap();

    let text = String::from_utf8(good_sig.clone()).unwrap();
    let cut = &text[..text.len() / 2];
    std::fs::write(&sig, cut).unwrap();
    let err = fails(&mut extract_trusting(&s, &nowhere, &s.public));
    assert!(err.contains("malformed"), "{err}");

    // The signature of another index, by the same key.
    let other_index = s.dir.join("v1.bcidx");
    ok(bin()
        .arg("make")
        .arg(image("erofs", 1))
        .arg("--store")
        .arg(&s.store)
        .arg("--index")
        .arg(&other_index)
        .arg("--sign")
        .arg(s.dir.join("release.key")));
    std::fs::copy(blockcast::sign::signature_path(&other_index), &sig).unwrap();
    let err = fails(&mut extract_trusting(&s, &nowhere, &s.public));
    assert!(err.contains("bad signature"), "{err}");

    std::fs::remove_file(&sig).unwrap();
    let err = fails(&mut extract_trusting(&s, &nowhere, &s.public));
    assert!(err.contains("not signed"), "{err}");
    let err = fails(
        bin()
            .arg("plan")
            .arg(&s.index)
            .arg("--store")
            .arg(&nowhere)
            .arg("--trusted-key")
            .arg(&s.public),
    );
    assert!(err.contains("not signed"), "{err}");
    assert!(!s.dir.join("out.img").exists());
}

#[test]
fn unauthenticated_index_is_warned_about() {
    let s = signed();
    let out = bin()
        .arg("plan")
        .arg(&s.index)
        .arg("--store")
        .arg(&s.store)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authenticated"));
}

#[test]
fn keys_made_by_minisign_sign_indexes() {
    let s = signed();
    let (sk, pk) = (s.dir.join("m.key"), s.dir.join("m.pub"));
    let st = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    ok(bin().arg("sign").arg(&s.index).arg("--key").arg(&sk));
    ok(&mut extract_trusting(&s, &s.store, &pk));
    // Either of several trusted keys will do.
    ok(extract_trusting(&s, &s.store, &s.public)
        .arg("--trusted-key")
        .arg(&pk));
}
