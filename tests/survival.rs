//! The point of filesystem-aware cuts: a file that did not change keeps its chunks when
//! other files change around it, on every filesystem.
//!
//! Which files did not change comes from the generator of the test images
//! (`tools/gentree.py`), not from the analyser under test; where such a file lies comes
//! from the analyser, but only after its pieces decode to the generator's bytes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use blockcast::index::Index;
use blockcast::layout::{self, Analysis, Piece};
use common::layout::{content, gen_tree};
use common::*;

/// Regular files under `root` by path (without a leading slash), with their bytes.
fn tree_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .into();
                files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    files
}

/// The image ranges that hold a file's pieces: plain bytes or a whole compression unit.
fn stored_ranges(pieces: &[Piece]) -> Vec<(u64, u64)> {
    pieces
        .iter()
        .filter_map(|p| match *p {
            Piece::Plain { offset, len } | Piece::Compressed { offset, len, .. } => {
                Some((offset, offset + len))
            }
            Piece::Zero { .. } => None,
        })
        .collect()
}

/// The merged image ranges holding `path`'s data and nobody else's. A unit another file
/// also reads (a squashfs fragment block) is not the file's own. A piece owns the rest of
/// the filesystem blocks it lies in when the rest is zeros no other file reads: the slack
/// after a file's last byte, or before a compressed unit padded to a whole block, which
/// the chunker keeps with the file.
fn own_runs(a: &Analysis, image: &[u8], path: &str) -> Vec<(u64, u64)> {
    let others: Vec<(u64, u64)> = a
        .files
        .iter()
        .filter(|f| f.path != path)
        .flat_map(|f| stored_ranges(&f.pieces))
        .collect();
    let overlaps_others = |s: u64, e: u64| others.iter().any(|&(os, oe)| os < e && s < oe);
    let is_slack = |s: u64, e: u64| {
        image[s as usize..e as usize].iter().all(|&b| b == 0) && !overlaps_others(s, e)
    };
    let block = u64::from(a.layout.block_size);
    let file = a.files.iter().find(|f| f.path == path).unwrap();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (s, e) in stored_ranges(&file.pieces) {
        if overlaps_others(s, e) {
            continue;
        }
        let (before, after) = (
            s - s % block,
            e.next_multiple_of(block).min(image.len() as u64),
        );
        let s = if is_slack(before, s) { before } else { s };
        let e = if is_slack(e, after) { after } else { e };
        ranges.push((s, e));
    }
    ranges.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match runs.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => runs.push((s, e)),
        }
    }
    runs
}

#[test]
fn unchanged_files_keep_their_chunks() {
    let t = tempdir();
    let (tree1, tree2) = (t.path().join("tree-v1"), t.path().join("tree-v2"));
    gen_tree(&tree1, 1);
    gen_tree(&tree2, 2);
    let old_contents: HashSet<Vec<u8>> = tree_files(&tree1).into_values().collect();
    // Unchanged: the same bytes somewhere in v1, under the same path or a moved one.
    let unchanged: BTreeMap<String, Vec<u8>> = tree_files(&tree2)
        .into_iter()
        .filter(|(_, bytes)| old_contents.contains(bytes))
        .collect();
    let store = t.path().join("store");
    for kind in KINDS {
        let ([_, v2], [i1, i2], made) = make_versions(t.path(), &store, kind);
        for made in &made {
            assert!(made["fallback"].is_null(), "{kind}: {}", made["fallback"]);
            assert_eq!(made["layout"]["filesystem_aware"], true);
        }
        let old_ids = chunk_ids(&i1);
        let new = Index::open(&i2).unwrap();
        // A file with at least this much data of its own starts and ends chunks.
        let large = u64::from(new.header().params.min);
        let b2 = std::fs::read(&v2).unwrap();
        let a2 = layout::analyse(&b2).unwrap();
        let mut checked = Vec::new();
        for (path, bytes) in unchanged.iter().filter(|(_, b)| b.len() as u64 >= large) {
            let f = a2
                .files
                .iter()
                .find(|f| &f.path == path)
                .unwrap_or_else(|| panic!("{kind}: the analysis lacks {path}"));
            assert!(
                &content(&b2, &f.pieces) == bytes,
                "{kind}: {path} as the analysis locates it is not the generated file"
            );
            let runs = own_runs(&a2, &b2, path);
            if runs.iter().map(|(s, e)| e - s).sum::<u64>() < large {
                continue;
            }
            let inside: Vec<_> = new
                .records()
                .filter(|c| runs.iter().any(|&(s, e)| c.offset >= s && c.end() <= e))
                .collect();
            assert!(!inside.is_empty(), "{kind}: {path} has no chunk of its own");
            for c in inside {
                assert!(
                    old_ids.contains(&c.id),
                    "{kind}: {path} lost its chunk at {}",
                    c.offset
                );
            }
            checked.push(path.as_str());
        }
        assert!(
            !checked.is_empty(),
            "{kind}: no unchanged file with {large} bytes of its own"
        );
        eprintln!("{kind}: unchanged files checked: {checked:?}");
    }
}
