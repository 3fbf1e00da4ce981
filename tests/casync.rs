//! Our store is a casync store: the real `casync extract` rebuilds images from it through
//! an exported `.caibx`.

mod common;

use std::path::Path;

use common::*;

fn export(idx: &Path, store: &Path, caibx: &Path) {
    ok(bin()
        .arg("export-caibx")
        .arg(idx)
        .arg("--store")
        .arg(store)
        .arg("-o")
        .arg(caibx));
}

#[test]
fn casync_extracts_every_test_image_from_our_store() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        let idx = t.path().join(format!("{kind}.bcidx"));
        make(&image(kind, 2), &store, &idx);
        let caibx = t.path().join(format!("{kind}.caibx"));
        export(&idx, &store, &caibx);
        let out = t.path().join(format!("{kind}.img"));
        casync_extract(&caibx, &store, &out);
        assert!(same_bytes(&out, &image(kind, 2)), "{kind}");
    }
}

#[test]
fn casync_gets_the_zero_chunks_it_references() {
    let t = tempdir();
    let store = t.path().join("store");
    let mut data = noise(5, 200_000);
    data.extend(vec![0u8; (3 << 20) + 4096]);
    data.extend(noise(6, 70_000));
    let img = t.path().join("z.img");
    std::fs::write(&img, &data).unwrap();
    let idx = t.path().join("z.bcidx");
    make(&img, &store, &idx);
    let before = chunk_files(&store).len();
    let caibx = t.path().join("z.caibx");
    export(&idx, &store, &caibx);
    assert!(
        chunk_files(&store).len() > before,
        "no zero chunk was added"
    );
    let out = t.path().join("z.out");
    casync_extract(&caibx, &store, &out);
    assert!(same_bytes(&out, &img));
}
