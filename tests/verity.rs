//! Our dm-verity trees are veritysetup's, byte for byte, and both tools catch damage.

mod common;

use std::path::Path;

use common::*;

const SALT: &str = "5eed00112233445566778899aabbccddeeff";
const UUID: &str = "0badcafe-1234-4321-8765-0123456789ab";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn make_salted(img: &Path, store: &Path, idx: &Path) -> serde_json::Value {
    make_with(img, store, idx, &["--salt", SALT, "--uuid", UUID])
}

#[test]
fn hash_devices_match_veritysetup_format() {
    let t = tempdir();
    let store = t.path().join("store");
    let mut images: Vec<_> = KINDS.iter().map(|k| image(k, 2)).collect();
    images.push(fixture("tiny.img"));
    for img in images {
        let name = img.file_name().unwrap().to_string_lossy().to_string();
        let idx = t.path().join(format!("{name}.bcidx"));
        let made = make_salted(&img, &store, &idx);
        let root = made["verity_root"].as_str().unwrap().to_string();
        let out = t.path().join(format!("{name}.out"));
        let ours = t.path().join(format!("{name}.hash"));
        ok(extract_cmd(&idx, &store, &out).arg("--verity").arg(&ours));
        assert!(is_extracted(&out, &img), "{name}");
        // veritysetup hashes the padded image, as extract writes it.
        let theirs = t.path().join(format!("{name}.ref"));
        let (fine, text) = veritysetup(&[
            "format",
            &format!("--salt={SALT}"),
            &format!("--uuid={UUID}"),
            s(&out),
            s(&theirs),
        ]);
        assert!(fine, "{text}");
        assert!(
            text.contains(&root),
            "{name}: veritysetup says {text}, we say {root}"
        );
        assert!(same_bytes(&ours, &theirs), "{name}: hash devices differ");
        let (fine, text) = veritysetup(&["verify", s(&out), s(&ours), &root]);
        assert!(fine, "{name}: {text}");

        let standalone = t.path().join(format!("{name}.standalone"));
        ok(bin()
            .arg("verity")
            .arg(&out)
            .arg(&standalone)
            .args(["--salt", SALT, "--uuid", UUID]));
        assert!(
            same_bytes(&standalone, &theirs),
            "{name}: blockcast verity differs"
        );
    }
}

#[test]
fn appended_tree_opens_with_hash_offset() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("tiny.bcidx");
    let made = make(&fixture("tiny.img"), &store, &idx);
    let root = made["verity_root"].as_str().unwrap().to_string();
    let out = t.path().join("tiny.out");
    ok(extract_cmd(&idx, &store, &out).arg("--verity-append"));
    let padded = 196345u64.next_multiple_of(4096);
    let (fine, text) = veritysetup(&[
        "verify",
        s(&out),
        s(&out),
        &root,
        &format!("--hash-offset={padded}"),
    ]);
    assert!(fine, "{text}");
    let info = ok(bin().arg("info").arg(&idx));
    assert!(
        info.contains(&format!("--hash-offset={padded}")) && info.contains(&root),
        "{info}"
    );
    // Extracting again over it (in place) keeps it valid.
    ok(extract_cmd(&idx, &store, &out).arg("--verity-append"));
    let (fine, _) = veritysetup(&[
        "verify",
        s(&out),
        s(&out),
        &root,
        &format!("--hash-offset={padded}"),
    ]);
    assert!(fine);
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn one_flipped_byte_is_caught_by_both_tools() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v2.bcidx");
    let made = make_salted(&image("erofs", 2), &store, &idx);
    let root = made["verity_root"].as_str().unwrap().to_string();
    let out = t.path().join("v2.img");
    let hash = t.path().join("v2.hash");
    ok(extract_cmd(&idx, &store, &out).arg("--verity").arg(&hash));
    ok(bin()
        .arg("verify")
        .arg(&idx)
        .arg(&out)
        .arg("--verity")
        .arg(&hash));
    ok(bin().arg("verify").arg(&idx).arg(&out));
    ok(bin()
        .arg("verify")
        .arg(&idx)
        .arg(&out)
        .arg("--store")
        .arg(&store));

    let bad = t.path().join("bad.img");
    std::fs::copy(&out, &bad).unwrap();
    flip(&bad, 77 * 4096 + 123);
    let (fine, _) = veritysetup(&["verify", s(&bad), s(&hash), &root]);
    assert!(!fine, "veritysetup missed a flipped data byte");
    for extra in [vec!["--verity", s(&hash)], vec!["--store", s(&store)]] {
        let err = fails(bin().arg("verify").arg(&idx).arg(&bad).args(&extra));
        assert!(
            err.contains("bad blocks") && err.contains(": 77"),
            "{extra:?}: {err}"
        );
    }
    let err = fails(bin().arg("verify").arg(&idx).arg(&bad));
    assert!(err.contains("bad blocks") && err.contains("77"), "{err}");

    let bad_hash = t.path().join("bad.hash");
    std::fs::copy(&hash, &bad_hash).unwrap();
    flip(&bad_hash, 4096 + 2 * 4096 + 9);
    let (fine, _) = veritysetup(&["verify", s(&out), s(&bad_hash), &root]);
    assert!(!fine, "veritysetup missed a flipped tree byte");
    let err = fails(
        bin()
            .arg("verify")
            .arg(&idx)
            .arg(&out)
            .arg("--verity")
            .arg(&bad_hash),
    );
    assert!(err.contains("does not hash to the index's root"), "{err}");
}

/// An index whose recorded root is wrong (digest recomputed, so only the root check can
/// notice) must not produce an output.
#[test]
fn root_mismatch_refuses_to_complete_the_output() {
    use sha2::{Digest, Sha256};
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v2.bcidx");
    make(&image("erofs", 2), &store, &idx);
    let mut b = std::fs::read(&idx).unwrap();
    b[112] ^= 1;
    b[480..512].fill(0);
    let d = Sha256::digest(&b);
    b[480..512].copy_from_slice(&d);
    std::fs::write(&idx, &b).unwrap();
    let out = t.path().join("out.img");
    let err = fails(&mut extract_cmd(&idx, &store, &out));
    assert!(
        err.contains("root hash") && err.contains("differs"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn rollback_is_refused() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v1.bcidx");
    ok(bin()
        .arg("make")
        .arg(image("ext4", 1))
        .arg("--store")
        .arg(&store)
        .arg("--index")
        .arg(&idx)
        .args(["--release", "5"]));
    let out = t.path().join("out.img");
    let err = fails(extract_cmd(&idx, &store, &out).args(["--min-release", "6"]));
    assert!(
        err.contains("release 5") && err.contains("rollback"),
        "{err}"
    );
    assert!(!out.exists());
    ok(extract_cmd(&idx, &store, &out).args(["--min-release", "5"]));
    let info = json(&ok(bin().arg("info").arg(&idx).arg("--json")));
    assert_eq!(info["release"], 5);
}
