//! Forward error correction: our FEC files are veritysetup's, byte for byte, and `repair`
//! restores damaged blocks up to what each interleaved group of codewords corrects, and
//! names the ones past it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SALT: &str = "5eed00112233445566778899aabbccddeeff";
const UUID: &str = "0badcafe-1234-4321-8765-0123456789ab";
const B: u64 = 4096;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Where extract puts the tree.
#[derive(Clone, Copy, PartialEq)]
enum Tree {
    /// In a hash device, `--verity img.hash`.
    Device,
    /// After the image, `--verity-append`.
    Appended,
    /// Nowhere: extract writes the FEC alone.
    Aside,
}

/// An image extracted with its tree and FEC file.
struct Extracted {
    dir: tempfile::TempDir,
    index: PathBuf,
    image: PathBuf,
    hash: PathBuf,
    fec: PathBuf,
    root: String,
    roots: u8,
}

impl Extracted {
    /// `img` made into a salted index and extracted with `--fec` and the tree `tree`.
    fn new(img: &Path, roots: u8, tree: Tree) -> Extracted {
        let dir = tempdir();
        let store = dir.path().join("store");
        let index = dir.path().join("img.bcidx");
        let made = make_with(img, &store, &index, &["--salt", SALT, "--uuid", UUID]);
        let root = made["verity_root"].as_str().unwrap().to_string();
        let image = dir.path().join("img.out");
        let hash = dir.path().join("img.hash");
        let fec = dir.path().join("img.fec");
        let mut cmd = extract_cmd(&index, &store, &image);
        cmd.arg("--fec")
            .arg(&fec)
            .args(["--fec-roots", &roots.to_string()]);
        match tree {
            Tree::Device => cmd.arg("--verity").arg(&hash),
            Tree::Appended => cmd.arg("--verity-append"),
            Tree::Aside => &mut cmd,
        };
        ok(&mut cmd);
        Extracted {
            dir,
            index,
            image,
            hash,
            fec,
            root,
            roots,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Interleaved groups of codewords, from the FEC file's size.
    fn rounds(&self) -> u64 {
        std::fs::metadata(&self.fec).unwrap().len() / (B * u64::from(self.roots))
    }

    /// A copy of the image with `blocks` overwritten by noise.
    fn damaged(&self, name: &str, blocks: &[u64]) -> PathBuf {
        let copy = self.path(name);
        std::fs::copy(&self.image, &copy).unwrap();
        damage(&copy, 0, blocks);
        copy
    }

    fn repair(&self, image: &Path, extra: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.arg("repair")
            .arg(image)
            .arg("--index")
            .arg(&self.index)
            .arg("--fec")
            .arg(&self.fec)
            .args(["--fec-roots", &self.roots.to_string()])
            .args(extra);
        cmd
    }

    fn verify_fec(&self, image: &Path, extra: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.arg("verify")
            .arg(&self.index)
            .arg(image)
            .arg("--fec")
            .arg(&self.fec)
            .args(["--fec-roots", &self.roots.to_string()])
            .args(extra);
        cmd
    }

    /// veritysetup's own check of `image` against the hash device, without the FEC.
    fn veritysetup_accepts(&self, image: &Path, hash: &Path) -> bool {
        veritysetup(&["verify", s(image), s(hash), &self.root]).0
    }
}

/// Overwrites `blocks` of the file at `path`, counted from byte `base`, with noise.
fn damage(path: &Path, base: u64, blocks: &[u64]) {
    let mut bytes = std::fs::read(path).unwrap();
    for &b in blocks {
        let at = (base + b * B) as usize;
        bytes[at..at + B as usize].copy_from_slice(&noise(b + 1, B as usize));
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn fec_files_equal_veritysetups() {
    let mut images: Vec<_> = ["erofs", "ext4"].iter().map(|k| image(k, 2)).collect();
    images.push(fixture("tiny.img"));
    for img in images {
        for roots in [2u8, 24] {
            let name = format!("{} at {roots} roots", img.display());
            let e = Extracted::new(&img, roots, Tree::Device);
            let theirs = e.path("theirs.fec");
            let theirs_hash = e.path("theirs.hash");
            let (fine, text) = veritysetup(&[
                "format",
                &format!("--salt={SALT}"),
                &format!("--uuid={UUID}"),
                &format!("--fec-device={}", s(&theirs)),
                &format!("--fec-roots={roots}"),
                s(&e.image),
                s(&theirs_hash),
            ]);
            assert!(fine, "{name}: {text}");
            assert!(text.contains(&e.root), "{name}: {text}");
            assert!(
                same_bytes(&e.hash, &theirs_hash),
                "{name}: hash devices differ"
            );
            assert!(same_bytes(&e.fec, &theirs), "{name}: FEC files differ");

            let standalone = e.path("standalone.fec");
            ok(bin()
                .arg("verity")
                .arg(&e.image)
                .arg(e.path("standalone.hash"))
                .args(["--salt", SALT, "--uuid", UUID])
                .arg("--fec")
                .arg(&standalone)
                .args(["--fec-roots", &roots.to_string()]));
            assert!(
                same_bytes(&standalone, &theirs),
                "{name}: blockcast verity differs"
            );

            // Without a hash device to write, extract keeps the tree aside for the FEC.
            let alone = Extracted::new(&img, roots, Tree::Aside);
            assert!(
                same_bytes(&alone.fec, &theirs),
                "{name}: --fec alone differs"
            );
        }
    }
}

#[test]
fn fec_of_an_appended_tree_equals_veritysetups() {
    let img = image("ext4", 2);
    let roots = 24u8;
    let e = Extracted::new(&img, roots, Tree::Appended);
    let data_blocks = std::fs::metadata(&img).unwrap().len().div_ceil(B);
    let padded = data_blocks * B;
    let end = std::fs::metadata(&e.image).unwrap().len();
    let common = [
        format!("--salt={SALT}"),
        format!("--uuid={UUID}"),
        format!("--data-blocks={data_blocks}"),
        format!("--hash-offset={padded}"),
        format!("--fec-roots={roots}"),
    ];
    let common: Vec<&str> = common.iter().map(String::as_str).collect();

    // The FEC in a file of its own.
    let copy = e.path("copy.img");
    std::fs::copy(&e.image, &copy).unwrap();
    let theirs = e.path("theirs.fec");
    let fec_device = format!("--fec-device={}", s(&theirs));
    let mut args = vec!["format", fec_device.as_str()];
    args.extend(&common);
    args.extend([s(&copy), s(&copy)]);
    let (fine, text) = veritysetup(&args);
    assert!(fine && text.contains(&e.root), "{text}");
    assert!(
        same_bytes(&copy, &e.image),
        "veritysetup wrote another tree"
    );
    assert!(same_bytes(&e.fec, &theirs), "FEC files differ");

    // The FEC after the tree in the same file: it covers the data and the tree alone.
    let shared = e.path("shared.img");
    std::fs::copy(&e.image, &shared).unwrap();
    let fec_device = format!("--fec-device={}", s(&shared));
    let fec_offset = format!("--fec-offset={end}");
    let mut args = vec!["format", fec_device.as_str(), fec_offset.as_str()];
    args.extend(&common);
    args.extend([s(&shared), s(&shared)]);
    let (fine, text) = veritysetup(&args);
    assert!(fine, "{text}");
    let bytes = std::fs::read(&shared).unwrap();
    assert_eq!(
        &bytes[end as usize..],
        &std::fs::read(&e.fec).unwrap()[..],
        "FEC after the tree differs"
    );
}

#[test]
fn repair_restores_one_block_and_a_burst() {
    let e = Extracted::new(&image("erofs", 2), 2, Tree::Device);
    ok(&mut e.verify_fec(&e.image, &["--verity", s(&e.hash)]));
    let bad = e.damaged("bad.img", &[77]);
    assert!(!e.veritysetup_accepts(&bad, &e.hash));
    let err = fails(&mut e.verify_fec(&bad, &["--verity", s(&e.hash)]));
    assert!(
        err.contains("bad blocks (of 4096 bytes): 77;") && err.contains("can restore 77"),
        "{err}"
    );
    let out = ok(&mut e.repair(&bad, &["--verity", s(&e.hash)]));
    assert!(out.contains("repaired 1 blocks (77)"), "{out}");
    assert!(e.veritysetup_accepts(&bad, &e.hash));
    assert!(same_bytes(&bad, &e.image), "the repaired image differs");
    let out = ok(&mut e.repair(&bad, &["--verity", s(&e.hash)]));
    assert!(out.contains("nothing to repair"), "{out}");

    // A run of roots × rounds consecutive blocks takes each group to its limit.
    let run: Vec<u64> = (100..100 + 2 * e.rounds()).collect();
    let burst = e.damaged("burst.img", &run);
    ok(&mut e.repair(&burst, &["--verity", s(&e.hash)]));
    assert!(e.veritysetup_accepts(&burst, &e.hash));
    assert!(same_bytes(&burst, &e.image), "the repaired burst differs");
}

#[test]
fn repair_corrects_up_to_roots_blocks_a_group_and_names_those_past() {
    let roots = 24u64;
    let e = Extracted::new(&image("ext4", 2), roots as u8, Tree::Device);
    let rounds = e.rounds();
    assert!(rounds >= 2, "the test needs two groups");
    // Round 1's blocks are 1, 1 + rounds, 1 + 2·rounds, …
    let group = |n: u64, count: u64| (0..count).map(|i| n + i * rounds).collect::<Vec<u64>>();

    let limit = e.damaged("limit.img", &group(1, roots));
    let out = ok(&mut e.repair(&limit, &["--verity", s(&e.hash)]));
    assert!(out.contains(&format!("repaired {roots} blocks")), "{out}");
    assert!(e.veritysetup_accepts(&limit, &e.hash));
    assert!(same_bytes(&limit, &e.image), "the repaired image differs");

    // One past the limit in round 1, and one block of round 0 that can be restored.
    let past = group(1, roots + 1);
    let other = 20 * rounds;
    let mut blocks = past.clone();
    blocks.push(other);
    let bad = e.damaged("past.img", &blocks);
    let err = fails(&mut e.repair(&bad, &["--verity", s(&e.hash)]));
    let names: Vec<String> = past.iter().map(u64::to_string).collect();
    assert!(
        err.contains(&format!("could not repair blocks {} (", names.join(", "))),
        "{err}"
    );
    assert!(err.contains(&format!("repaired {other}")), "{err}");
    assert!(!e.veritysetup_accepts(&bad, &e.hash));
    let (ours, theirs) = (
        std::fs::read(&bad).unwrap(),
        std::fs::read(&e.image).unwrap(),
    );
    let block = |bytes: &[u8], b: u64| bytes[(b * B) as usize..((b + 1) * B) as usize].to_vec();
    assert_eq!(block(&ours, other), block(&theirs, other));
    for &b in &past {
        assert_ne!(block(&ours, b), block(&theirs, b), "block {b}");
    }
    let err = fails(&mut e.verify_fec(&bad, &["--verity", s(&e.hash)]));
    assert!(err.contains("it cannot restore"), "{err}");
}

#[test]
fn repair_restores_the_tree_and_the_blocks_under_it() {
    let e = Extracted::new(&image("erofs", 2), 24, Tree::Device);
    let original_hash = e.path("original.hash");
    std::fs::copy(&e.hash, &original_hash).unwrap();
    // Hash area block 1 is the first block of level 0: block 5's leaf is in it.
    damage(&e.hash, B, &[1]);
    let bad = e.damaged("bad.img", &[5]);
    let err = fails(&mut e.verify_fec(&bad, &["--verity", s(&e.hash)]));
    assert!(
        err.contains(
            "bad blocks (of 4096 bytes): hash block 1; 128 blocks under them could not be checked;"
        ),
        "{err}"
    );
    let out = ok(&mut e.repair(&bad, &["--verity", s(&e.hash)]));
    assert!(out.contains("5, hash block 1"), "{out}");
    assert!(
        same_bytes(&e.hash, &original_hash),
        "the repaired tree differs"
    );
    assert!(same_bytes(&bad, &e.image), "the repaired image differs");
    assert!(e.veritysetup_accepts(&bad, &e.hash));
}

#[test]
fn repair_finds_an_appended_tree() {
    let img = image("erofs", 2);
    let e = Extracted::new(&img, 2, Tree::Appended);
    let padded = std::fs::metadata(&img).unwrap().len().next_multiple_of(B);
    // The tree's top block (after the superblock) is damaged, so no block can be checked
    // until it is restored; a data block in the other group is too.
    let (data_blocks, rounds) = (padded / B, e.rounds());
    let block = (data_blocks + 1) % rounds;
    let bad = e.damaged("bad.img", &[block]);
    damage(&bad, padded + B, &[0]);
    ok(&mut e.repair(&bad, &[]));
    assert!(same_bytes(&bad, &e.image), "the repaired image differs");
    let (fine, text) = veritysetup(&[
        "verify",
        s(&bad),
        s(&bad),
        &e.root,
        &format!("--hash-offset={padded}"),
    ]);
    assert!(fine, "{text}");
}

#[test]
fn a_damaged_or_mismatched_fec_file_is_noticed() {
    let e = Extracted::new(&image("erofs", 2), 24, Tree::Device);
    let good_fec = e.path("good.fec");
    std::fs::copy(&e.fec, &good_fec).unwrap();
    // One parity byte of round 0 wrong: verify says so (veritysetup's verify would not).
    let mut bytes = std::fs::read(&e.fec).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&e.fec, &bytes).unwrap();
    let err = fails(&mut e.verify_fec(&e.image, &["--verity", s(&e.hash)]));
    assert!(
        err.contains(&format!(
            "does not match the image in 1 of its {} rounds",
            e.rounds()
        )),
        "{err}"
    );
    // It still restores blocks of that round: a wrong parity byte costs two of its roots.
    let bad = e.damaged("bad.img", &[0, 2 * e.rounds()]);
    ok(&mut e.repair(&bad, &["--verity", s(&e.hash)]));
    assert!(same_bytes(&bad, &e.image), "the repaired image differs");

    std::fs::copy(&good_fec, &e.fec).unwrap();
    let err = fails(
        bin()
            .arg("verify")
            .arg(&e.index)
            .arg(&e.image)
            .arg("--verity")
            .arg(&e.hash)
            .arg("--fec")
            .arg(&e.fec)
            .args(["--fec-roots", "20"]),
    );
    assert!(err.contains("another --fec-roots"), "{err}");
    let err = fails(
        bin()
            .arg("repair")
            .arg(&e.image)
            .arg("--index")
            .arg(&e.index)
            .arg("--fec")
            .arg(&e.fec)
            .args(["--fec-roots", "25"]),
    );
    assert!(err.contains("25 FEC roots"), "{err}");
}
