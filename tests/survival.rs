//! The point of filesystem-aware cuts: a file that did not change keeps its chunks when
//! other files change around it, on every filesystem.

mod common;

use std::collections::HashSet;

use blockcast::index::Index;
use blockcast::layout::{self, Kind};
use common::layout::content;
use common::*;

#[test]
fn unchanged_files_keep_their_chunks() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        let ([v1, v2], [i1, i2], made) = make_versions(t.path(), &store, kind);
        for made in &made {
            assert!(made["fallback"].is_null(), "{kind}: {}", made["fallback"]);
            assert_eq!(made["layout"]["filesystem_aware"], true);
        }
        let old_ids = chunk_ids(&i1);
        let new = Index::open(&i2).unwrap();
        let (b1, b2) = (std::fs::read(&v1).unwrap(), std::fs::read(&v2).unwrap());
        let (a1, a2) = (layout::analyse(&b1).unwrap(), layout::analyse(&b2).unwrap());
        let old_contents: HashSet<Vec<u8>> =
            a1.files.iter().map(|f| content(&b1, &f.pieces)).collect();
        let mut checked = 0;
        for f in a2.files.iter().filter(|f| f.size >= 64 << 10) {
            if !old_contents.contains(&content(&b2, &f.pieces)) {
                continue;
            }
            // The file's own regions (not shared fragment blocks) and the chunks inside them.
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for r in a2
                .layout
                .regions
                .iter()
                .filter(|r| r.file == Some(f.inode) && r.kind != Kind::Free)
            {
                match runs.last_mut() {
                    Some(last) if last.1 == r.offset => last.1 = r.end(),
                    _ => runs.push((r.offset, r.end())),
                }
            }
            let inside: Vec<_> = new
                .records()
                .filter(|c| runs.iter().any(|&(a, b)| c.offset >= a && c.end() <= b))
                .collect();
            assert!(
                !inside.is_empty(),
                "{kind}: {} has no chunk of its own",
                f.path
            );
            for c in inside {
                assert!(
                    old_ids.contains(&c.id),
                    "{kind}: {} lost chunk at {}",
                    f.path,
                    c.offset
                );
            }
            checked += 1;
        }
        assert!(checked >= 1, "{kind}: no unchanged large file to check");
    }
}
