//! Gathered chunks: small metadata chunks stored as one chunk file, fetched once for all
//! the parts an update needs (or a mount asks for at once), and still matched one by one
//! in seeds.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, Arc};

use blockcast::chunk::ChunkId;
use blockcast::index::{ChunkRecord, Index, Unit};
use blockcast::store::{LocalStore, StoreOptions, Stores};
use common::faulty::{self, FaultyServer};
use common::*;

/// The chunk files of the records of `index` whose ids are not in `have`: what an update
/// from a seed holding `have` must fetch.
fn units_for(index: &Index, have: &HashSet<ChunkId>) -> HashMap<ChunkId, Unit> {
    index
        .records()
        .filter(|r| !r.is_zero() && !have.contains(&r.id))
        .map(|r| (r.unit().id, r.unit()))
        .collect()
}

/// `blockcast plan INDEX --store STORE --json EXTRA…`.
fn plan(index: &Path, store: &Path, extra: &[&str]) -> serde_json::Value {
    json(&ok(bin()
        .arg("plan")
        .arg(index)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .args(extra)))
}

#[test]
fn small_metadata_is_stored_gathered_and_fetched_once_per_file() {
    for kind in ["erofs", "ext4"] {
        let t = tempdir();
        let store = t.path().join("store");
        let (images, indexes, made) = make_versions(t.path(), &store, kind);
        let index = Index::open(&indexes[1]).unwrap();
        assert!(index.gathered_len() > 0, "{kind}: nothing gathered");
        assert_eq!(made[1]["gathered_chunks"], index.gathered_len() as u64);
        let local = LocalStore::open(&store, false).unwrap();
        let own: HashSet<ChunkId> = index
            .records()
            .filter(|r| r.part.is_none())
            .map(|r| r.id)
            .collect();
        for r in index.records().filter(|r| !r.is_zero()) {
            assert!(
                local.has_chunk(&r.unit().id).unwrap(),
                "{kind}: {r:?} not stored"
            );
            if r.part.is_some() && !own.contains(&r.id) {
                assert!(
                    !local.has_chunk(&r.id).unwrap(),
                    "{kind}: a part at {} is also stored alone",
                    r.offset
                );
            }
        }

        // Without a seed every chunk file is fetched once.
        let all = units_for(&index, &HashSet::new());
        let p = plan(&indexes[1], &store, &[]);
        assert_eq!(p["store"]["chunks"], all.len() as u64, "{kind}");
        // With v1 as seed, a gathered chunk is fetched when any of its parts is not in
        // the seed, and only then; the seed is cut as v1's index was, so its ids are the
        // seed's chunks.
        let wanted = units_for(&index, &chunk_ids(&indexes[0]));
        let p = plan(
            &indexes[1],
            &store,
            &["--seed", images[0].to_str().unwrap()],
        );
        assert_eq!(p["store"]["chunks"], wanted.len() as u64, "{kind}");
        let stored: u64 = wanted.values().map(|u| u64::from(u.stored_size)).sum();
        assert_eq!(p["store"]["stored_bytes"], stored, "{kind}");
        assert!(wanted.len() < all.len(), "{kind}: the seed saved nothing");

        let out = t.path().join("out.img");
        extract(
            &indexes[1],
            &store,
            &out,
            &["--seed", images[0].to_str().unwrap()],
        );
        assert!(is_extracted(&out, &images[1]), "{kind}");
    }
}

#[test]
fn a_bad_gathered_chunk_is_named_and_a_good_copy_elsewhere_is_used() {
    let t = tempdir();
    let (good, bad) = (t.path().join("good"), t.path().join("bad"));
    let idx = t.path().join("v2.bcidx");
    let img = image("erofs", 2);
    make(&img, &good, &idx);
    make(&img, &bad, &idx);
    let index = Index::open(&idx).unwrap();
    let victim = index.gathered().next().expect("a gathered chunk");
    let file = LocalStore::open(&bad, false)
        .unwrap()
        .chunk_path(&victim.id);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let out = t.path().join("out.img");
    let stderr = fails(&mut extract_cmd(&idx, &bad, &out));
    assert!(
        stderr.contains(&victim.id.to_hex()),
        "the error does not name gathered chunk {}: {stderr}",
        victim.id
    );
    assert!(!out.exists());

    ok(extract_cmd(&idx, &bad, &out)
        .arg("--store")
        .arg(&good)
        .arg("--quiet"));
    assert!(is_extracted(&out, &img));
}

/// A part is matched in a seed by its own id even when the gathered chunk around it
/// changed, so an update never fetches what the device already has (beyond the gathered
/// chunk of the part that did change).
#[test]
fn parts_come_from_the_seed_one_by_one() {
    let t = tempdir();
    let store = t.path().join("store");
    let img = image("erofs", 2);
    let idx = t.path().join("v2.bcidx");
    make(&img, &store, &idx);
    let old = Index::open(&idx).unwrap();
    let old_ids = chunk_ids(&idx);
    let bytes = std::fs::read(&img).unwrap();
    let changed = t.path().join("changed.img");
    let new_idx = t.path().join("changed.bcidx");
    // Change one byte at the end of a part, until the change leaves the image's cuts
    // where they were (the byte may be one the filesystem reads).
    let candidates = old.records().filter(|r| r.part.is_some()).take(20);
    let (victim, new) = candidates
        .filter_map(|victim| {
            let mut b = bytes.clone();
            b[victim.end() as usize - 1] ^= 1;
            std::fs::write(&changed, &b).unwrap();
            make(&changed, &store, &new_idx);
            let new = Index::open(&new_idx).unwrap();
            let same_cuts = new
                .records()
                .map(|r| (r.offset, r.part.is_some()))
                .eq(old.records().map(|r| (r.offset, r.part.is_some())));
            same_cuts.then_some((victim, new))
        })
        .next()
        .expect("a part whose change keeps the cuts");
    let unit = new.record(new.find(victim.offset).unwrap()).unit();
    assert_ne!(unit.id, victim.unit().id, "the gathered chunk changed");
    let siblings: Vec<_> = new
        .records()
        .filter(|r| r.unit().id == unit.id && r.offset != victim.offset)
        .collect();
    assert!(!siblings.is_empty());
    assert!(siblings.iter().all(|r| old_ids.contains(&r.id)));

    let p = plan(&new_idx, &store, &["--seed", img.to_str().unwrap()]);
    let from_seed = new
        .records()
        .filter(|r| !r.is_zero() && old_ids.contains(&r.id))
        .count();
    assert_eq!(p["seed"]["chunks"], from_seed as u64);
    assert_eq!(p["store"]["chunks"], 1, "only the changed gathered chunk");
    assert_eq!(p["store"]["stored_bytes"], u64::from(unit.stored_size));

    let out = t.path().join("out.img");
    extract(&new_idx, &store, &out, &["--seed", img.to_str().unwrap()]);
    assert!(is_extracted(&out, &changed));
}

/// A lazy mount asks for many parts of one gathered chunk at once (readahead, readers side
/// by side): the chunk file is fetched once, and every part is cut from it and checked.
#[test]
fn parts_asked_for_at_once_share_one_fetch_of_their_gathered_chunk() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v2.bcidx");
    make(&image("ext4", 2), &store, &idx);
    let index = Index::open(&idx).unwrap();
    let server = FaultyServer::start(faulty::Config::new(&store));
    let runtime = blockcast::store::runtime().unwrap();
    let stores = Stores::open(
        &[server.url()],
        &StoreOptions::default(),
        Arc::new(|_: &str| {}),
        runtime.handle().clone(),
    )
    .unwrap();
    let parts: Vec<ChunkRecord> = index.records().filter(|r| r.part.is_some()).collect();
    assert!(parts.len() > 2 * index.gathered_len());
    let (done, arrived) = mpsc::channel();
    for r in &parts {
        let (done, r) = (done.clone(), *r);
        stores.spawn_fetch(r, move |got| done.send((r, got)).unwrap());
    }
    drop(done);
    let mut count = 0;
    for (r, got) in arrived {
        let chunk = got.unwrap_or_else(|e| panic!("part at {}: {e}", r.offset));
        assert_eq!((chunk.id(), chunk.data().len()), (r.id, r.size as usize));
        count += 1;
    }
    assert_eq!(count, parts.len());
    let stats = server.stats();
    for unit in index.gathered() {
        let file = format!("{}.cacnk", unit.id.to_hex());
        assert_eq!(stats.requests_for(&file), 1, "{file}");
    }
}
