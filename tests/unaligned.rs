//! Nothing in the index, seeds or extract assumes aligned chunks: squashfs will be cut at
//! arbitrary byte offsets.

mod common;

use std::path::Path;

use blockcast::chunker::{ChunkParams, Cuts};
use blockcast::image::Image;
use blockcast::layout::{Cutting, LayoutSummary};
use blockcast::make::{make_with_cuts, MakeOptions};
use blockcast::progress::Silent;
use blockcast::store::LocalStore;
use common::*;

/// Cuts given outright, at any byte offsets.
fn explicit(ends: Vec<u64>) -> Cuts {
    Cuts {
        ends,
        metadata: Vec::new(),
        layout: LayoutSummary {
            cutting: Cutting::Filesystem {
                metadata_apart: false,
            },
            ..LayoutSummary::default()
        },
        align: 1,
        fallback: None,
        files: Vec::new(),
    }
}

fn make_unaligned(img: &Path, store: &Path, idx: &Path, step: u64) {
    let image = Image::open(img).unwrap();
    let mut ends: Vec<u64> = (1..)
        .map(|i| i * step + i % 7)
        .take_while(|&e| e < image.size())
        .collect();
    ends.push(image.size());
    let store = LocalStore::open(store, true).unwrap();
    let opts = MakeOptions::new(ChunkParams::from_avg(64 << 10).unwrap());
    let (bytes, _) = make_with_cuts(&image, &explicit(ends), &store, &opts, &Silent).unwrap();
    blockcast::durable::write_file(idx, &bytes).unwrap();
}

#[test]
fn unaligned_index_round_trips_with_seed_index_and_in_place() {
    let t = tempdir();
    let store = t.path().join("store");
    let old = noise(1, 1_000_003);
    let mut new = noise(2, 777);
    new.extend_from_slice(&old[..900_000]);
    new.extend(vec![0u8; 50_001]);
    let (old_img, new_img) = (t.path().join("old.img"), t.path().join("new.img"));
    std::fs::write(&old_img, &old).unwrap();
    std::fs::write(&new_img, &new).unwrap();
    let (old_idx, new_idx) = (t.path().join("old.bcidx"), t.path().join("new.bcidx"));
    // The new image's cuts sit 777 bytes later, so its middle chunks equal the old ones.
    make_unaligned(&old_img, &store, &old_idx, 33_333);
    let image = Image::open(&new_img).unwrap();
    let mut ends: Vec<u64> = (1..)
        .map(|i| 777 + i * 33_333 + i % 7)
        .take_while(|&e| e < 900_777)
        .collect();
    ends.extend([900_777, image.size()]);
    let opts = MakeOptions::new(ChunkParams::from_avg(64 << 10).unwrap());
    let (bytes, _) = make_with_cuts(
        &image,
        &explicit(ends),
        &LocalStore::open(&store, false).unwrap(),
        &opts,
        &Silent,
    )
    .unwrap();
    blockcast::durable::write_file(&new_idx, &bytes).unwrap();

    let info = json(&ok(bin().arg("info").arg(&new_idx).arg("--json")));
    assert_eq!(info["zero_records"], 1);

    let out = t.path().join("out.img");
    let seeded = extract(
        &new_idx,
        &store,
        &out,
        &[
            "--seed",
            old_img.to_str().unwrap(),
            "--seed-index",
            old_idx.to_str().unwrap(),
        ],
    );
    assert!(is_extracted(&out, &new_img));
    assert!(seeded["plan"]["seed"]["chunks"].as_u64().unwrap() >= 20);

    let dev = t.path().join("dev.img");
    std::fs::write(&dev, &old).unwrap();
    extract(&new_idx, &store, &dev, &[]);
    assert!(is_extracted(&dev, &new_img));

    let caibx = t.path().join("new.caibx");
    ok(bin()
        .arg("export-caibx")
        .arg(&new_idx)
        .arg("--store")
        .arg(&store)
        .arg("-o")
        .arg(&caibx));
    let ca_out = t.path().join("ca.img");
    let st = std::process::Command::new("casync")
        .arg("extract")
        .arg(format!("--store={}", store.display()))
        .arg(&caibx)
        .arg(&ca_out)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(same_bytes(&ca_out, &new_img));
}

/// `make` writes exactly the indexes it wrote when the fixtures were made: the aligned
/// chunker's cuts (`v4-tiny.bcidx`, the same records as `v3-tiny.bcidx`), the
/// filesystem-aware cuts with their gathered chunks (`v4-erofs-v1.bcidx`), and the next
/// release with its deltas against that one (`v6-erofs-v2.bcidx`).
#[test]
fn golden_chunk_boundaries_are_stable() {
    let t = tempdir();
    let v1 = t.path().join("v4-erofs-v1.bcidx");
    let v1 = v1.to_str().unwrap();
    for (image, args, golden) in [
        (
            fixture("tiny.img"),
            &["--chunk-size", "16K"][..],
            "v4-tiny.bcidx",
        ),
        (image("erofs", 1), &[][..], "v4-erofs-v1.bcidx"),
        (
            image("erofs", 2),
            &["--delta-from", v1][..],
            "v6-erofs-v2.bcidx",
        ),
    ] {
        let idx = t.path().join(golden);
        ok(bin()
            .arg("make")
            .arg(image)
            .arg("--store")
            .arg(t.path().join("store"))
            .arg("--index")
            .arg(&idx)
            .args(args));
        assert!(
            same_bytes(&idx, &fixture(golden)),
            "{golden}: the chunker or index writer changed its output: bump the format or fix it"
        );
    }
    let gathered = blockcast::index::Index::open(&fixture("v4-erofs-v1.bcidx")).unwrap();
    assert!(gathered.gathered_len() > 0);
    let deltas = blockcast::index::Index::open(&fixture("v6-erofs-v2.bcidx")).unwrap();
    assert!(deltas.deltas().any(|d| d.run.len() > 1));
    let v3 = std::fs::read(fixture("v3-tiny.bcidx")).unwrap();
    let v4 = std::fs::read(fixture("v4-tiny.bcidx")).unwrap();
    assert_eq!(v3[512..], v4[512..], "the same records in both versions");
}
