//! `blockcast diff`: what an update shares and fetches, and with the new image, what
//! kinds of filesystem region the new chunks hold.

mod common;

use std::collections::HashSet;

use blockcast::index::Index;
use common::*;

#[test]
fn diff_counts_and_attributes_new_chunks() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        let ([_, v2], [i1, i2], _) = make_versions(t.path(), &store, kind);
        let old = chunk_ids(&i1);
        let new = Index::open(&i2).unwrap();
        let mut seen = HashSet::new();
        let (mut fresh, mut fresh_bytes, mut shared) = (0u64, 0u64, 0u64);
        for r in new.records().filter(|r| !r.is_zero()) {
            if seen.insert(r.id) {
                if old.contains(&r.id) {
                    shared += 1;
                } else {
                    fresh += 1;
                    fresh_bytes += u64::from(r.size);
                }
            }
        }

        let d = json(&ok(bin()
            .arg("diff")
            .arg(&i1)
            .arg(&i2)
            .arg("--image")
            .arg(&v2)
            .arg("--json")));
        assert_eq!(d["shared"]["chunks"], shared, "{kind}");
        assert_eq!(d["new"]["chunks"], fresh, "{kind}");
        assert_eq!(d["new"]["bytes"], fresh_bytes, "{kind}");
        let b = &d["new_by_region"];
        let kinds = ["metadata", "data", "compressed", "shared_units", "free"];
        let sum =
            |field: &str| -> u64 { kinds.iter().map(|k| b[k][field].as_u64().unwrap()).sum() };
        assert_eq!(sum("bytes"), fresh_bytes, "{kind}: {b}");
        assert_eq!(
            sum("chunks") + b["mixed_chunks"].as_u64().unwrap(),
            fresh,
            "{kind}: {b}"
        );
        // Every update here rewrites some metadata; on uncompressed erofs and on ext4
        // metadata and file data never share a chunk (layout 2).
        assert!(b["metadata"]["bytes"].as_u64().unwrap() > 0, "{kind}: {b}");
        if kind == "erofs" || kind == "ext4" {
            assert_eq!(b["mixed_chunks"], 0, "{kind}: {b}");
        }

        // Without --image there is no breakdown.
        let plain = json(&ok(bin().arg("diff").arg(&i1).arg(&i2).arg("--json")));
        assert!(plain["new_by_region"].is_null());
    }
}

#[test]
fn diff_refuses_an_image_the_index_was_not_made_from() {
    let t = tempdir();
    let store = t.path().join("store");
    let (_, [i1, i2], _) = make_versions(t.path(), &store, "erofs");
    let diff =
        |img: &std::path::Path| fails(bin().arg("diff").arg(&i1).arg(&i2).arg("--image").arg(img));

    // Another image altogether: its size gives it away.
    let err = diff(&image("ext4", 2));
    assert!(err.contains("the index describes an image of"), "{err}");

    // The right size, one new chunk's byte changed: named by its offset.
    let old = chunk_ids(&i1);
    let r = Index::open(&i2)
        .unwrap()
        .records()
        .find(|r| !r.is_zero() && !old.contains(&r.id))
        .unwrap();
    let mut bytes = std::fs::read(image("erofs", 2)).unwrap();
    bytes[r.offset as usize] ^= 1;
    let bad = t.path().join("bad.img");
    std::fs::write(&bad, bytes).unwrap();
    let err = diff(&bad);
    assert!(
        err.contains(&format!("at offset {} are not chunk {}", r.offset, r.id)),
        "{err}"
    );
}
