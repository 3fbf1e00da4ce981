//! Deltas: `make --delta-from` stores, for each new chunk file, a delta against the
//! earlier chunk it most resembles; an update whose seed holds that chunk fetches the
//! delta instead of the chunk file, from a local store or over HTTP, and rebuilds the
//! image exactly. A bad or missing delta costs the whole chunk file, never the update.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockcast::chunk::ChunkId;
use blockcast::index::Index;
use blockcast::store::LocalStore;
use common::faulty::{self, FaultyServer};
use common::*;

const KINDS: [&str; 4] = ["erofs", "erofs-lz4hc", "squashfs", "ext4"];

/// v1 and v2 of `kind` into `DIR/store`: v1's index, v2's index with deltas from v1, and
/// v2's index without (the same chunks), with make's report for v2.
fn publish(dir: &Path, kind: &str) -> (PathBuf, PathBuf, PathBuf, serde_json::Value) {
    let store = dir.join("store");
    let (v1, v2, plain) = (
        dir.join("v1.bcidx"),
        dir.join("v2.bcidx"),
        dir.join("v2-plain.bcidx"),
    );
    make(&image(kind, 1), &store, &v1);
    make(&image(kind, 2), &store, &plain);
    let made = make_with(
        &image(kind, 2),
        &store,
        &v2,
        &["--delta-from", v1.to_str().unwrap()],
    );
    (v1, v2, plain, made)
}

/// The `store` part of `blockcast plan INDEX --store STORE --seed SEED --json`.
fn plan_store(index: &Path, store: &Path, seed: &Path) -> serde_json::Value {
    json(&ok(bin()
        .arg("plan")
        .arg(index)
        .arg("--store")
        .arg(store)
        .arg("--seed")
        .arg(seed)
        .arg("--json")
        .arg("--quiet")))["store"]
        .clone()
}

/// Runs an extract that must succeed without a word about deltas (none missing or bad),
/// and returns its JSON report.
fn extract_quietly(cmd: &mut Command) -> serde_json::Value {
    let run = cmd.arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains("delta"), "{stderr}");
    json(&String::from_utf8_lossy(&run.stdout))
}

#[test]
fn an_update_fetches_deltas_against_its_seed_and_rebuilds_the_image_exactly() {
    for kind in KINDS {
        let t = tempdir();
        let store = t.path().join("store");
        let (v1, v2, plain, made) = publish(t.path(), kind);
        let index = Index::open(&v2).unwrap();
        let deltas: Vec<_> = index.deltas().collect();
        assert!(!deltas.is_empty(), "{kind}: no deltas");
        assert_eq!(made["deltas"], deltas.len() as u64, "{kind}");
        assert_eq!(index.version(), 6, "{kind}");
        assert_eq!(Index::open(&plain).unwrap().version(), 4, "{kind}");
        // Each delta is stored, against a chunk of v1, and stands for a chunk file v1
        // lacks; the plain index names the same chunk files.
        let local = LocalStore::open(&store, false).unwrap();
        let v1_ids = chunk_ids(&v1);
        let v1_units: HashSet<ChunkId> = Index::open(&v1)
            .unwrap()
            .records()
            .map(|r| r.unit().id)
            .collect();
        let by_unit = index.deltas_by_unit();
        for (unit, ds) in &by_unit {
            for d in ds {
                for p in d.run.iter() {
                    assert!(v1_ids.contains(&p.id), "{kind}: base {} not in v1", p.id);
                }
                let file = local.delta_path(unit, &d.base);
                assert_eq!(
                    std::fs::metadata(&file).unwrap().len(),
                    u64::from(d.stored_size),
                    "{kind}: {}",
                    file.display()
                );
            }
            assert!(
                !v1_units.contains(unit),
                "{kind}: a delta for a chunk v1 has"
            );
        }
        assert_eq!(
            index.records().map(|r| r.unit()).collect::<Vec<_>>(),
            Index::open(&plain)
                .unwrap()
                .records()
                .map(|r| r.unit())
                .collect::<Vec<_>>()
        );

        // With v1 as seed, every chunk file with a delta comes as that delta.
        let seed = image(kind, 1);
        let with = plan_store(&v2, &store, &seed);
        let without = plan_store(&plain, &store, &seed);
        assert_eq!(with["chunks"], without["chunks"], "{kind}");
        let fetched: u64 = index
            .records()
            .filter(|r| !r.is_zero() && !v1_ids.contains(&r.id))
            .map(|r| r.unit().id)
            .collect::<HashSet<_>>()
            .iter()
            .filter(|u| by_unit.contains_key(u))
            .count() as u64;
        assert!(fetched > 0, "{kind}");
        assert_eq!(with["deltas"], fetched, "{kind}");
        assert!(
            with["stored_bytes"].as_u64() < without["stored_bytes"].as_u64(),
            "{kind}: {with} vs {without}"
        );

        let out = t.path().join("out.img");
        let report = extract_quietly(extract_cmd(&v2, &store, &out).arg("--seed").arg(&seed));
        assert_eq!(report["chunk_files_from_deltas"], fetched, "{kind}");
        assert!(is_extracted(&out, &image(kind, 2)), "{kind}");
    }
}

#[test]
fn over_http_only_the_deltas_are_fetched_and_without_a_seed_only_chunk_files() {
    let t = tempdir();
    let (_, v2, _, _) = publish(t.path(), "ext4");
    let index = Index::open(&v2).unwrap();
    let by_unit = index.deltas_by_unit();
    let server = FaultyServer::start(faulty::Config::new(t.path()));
    let url = format!("{}/v2.bcidx", server.url());
    let stores = format!("{}/store", server.url());
    let seed = image("ext4", 1);
    let v1_ids = chunk_ids(&t.path().join("v1.bcidx"));
    let wanted: HashSet<ChunkId> = index
        .records()
        .filter(|r| !r.is_zero() && !v1_ids.contains(&r.id))
        .map(|r| r.unit().id)
        .collect();

    let out = t.path().join("out.img");
    ok(bin()
        .args(["extract", &url, "--store", &stores, "--quiet", "-o"])
        .arg(&out)
        .arg("--seed")
        .arg(&seed));
    assert!(is_extracted(&out, &image("ext4", 2)));
    let stats = server.stats();
    for unit in &wanted {
        let hex = unit.to_hex();
        let chunk = stats.requests_for(&format!("{hex}.cacnk"));
        match by_unit.get(unit) {
            Some(ds) => {
                let delta = format!("{hex}.{}.cadelta", ds[0].base.to_hex());
                assert_eq!((chunk, stats.requests_for(&delta)), (0, 1), "{hex}");
            }
            None => assert_eq!(chunk, 1, "{hex}"),
        }
    }
    drop(server);

    // No seed: no base at hand, so whole chunk files only.
    let server = FaultyServer::start(faulty::Config::new(t.path()));
    let url = format!("{}/v2.bcidx", server.url());
    let stores = format!("{}/store", server.url());
    let out = t.path().join("full.img");
    ok(bin()
        .args(["extract", &url, "--store", &stores, "--quiet", "-o"])
        .arg(&out));
    assert!(is_extracted(&out, &image("ext4", 2)));
    assert_eq!(server.stats().requests_for(".cadelta"), 0);
}

#[test]
fn a_bad_or_missing_delta_costs_the_whole_chunk_file_and_is_named() {
    let t = tempdir();
    let store = t.path().join("store");
    let (_, v2, _, _) = publish(t.path(), "erofs");
    let index = Index::open(&v2).unwrap();
    let local = LocalStore::open(&store, false).unwrap();
    let mut by_unit: Vec<_> = index.deltas_by_unit().into_iter().collect();
    by_unit.sort_by_key(|(u, _)| *u);
    let (bad_unit, bad) = (by_unit[0].0, by_unit[0].1[0].clone());
    let bad_file = local.delta_path(&bad_unit, &bad.base);
    let mut bytes = std::fs::read(&bad_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&bad_file, bytes).unwrap();
    let (gone_unit, gone) = (by_unit[1].0, by_unit[1].1[0].clone());
    std::fs::remove_file(local.delta_path(&gone_unit, &gone.base)).unwrap();

    let out = t.path().join("out.img");
    let run = extract_cmd(&v2, &store, &out)
        .arg("--seed")
        .arg(image("erofs", 1))
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(is_extracted(&out, &image("erofs", 2)));
    let stderr = String::from_utf8_lossy(&run.stderr);
    for unit in [bad_unit, gone_unit] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&unit.to_hex()))
            .unwrap_or_else(|| panic!("no warning names {unit}: {stderr}"));
        assert!(
            line.contains("fetching the whole chunk file instead"),
            "{line}"
        );
    }
    assert!(stderr.contains("no store has its delta"), "{stderr}");
}

#[test]
fn make_refuses_deltas_from_a_release_whose_chunks_are_not_in_the_store() {
    let t = tempdir();
    let v1 = t.path().join("v1.bcidx");
    make(&image("ext4", 1), &t.path().join("elsewhere"), &v1);
    let err = fails(
        bin()
            .arg("make")
            .arg(image("ext4", 2))
            .arg("--store")
            .arg(t.path().join("store"))
            .arg("--index")
            .arg(t.path().join("v2.bcidx"))
            .arg("--delta-from")
            .arg(&v1),
    );
    assert!(err.contains("missing") || err.contains("not in"), "{err}");
    assert!(!t.path().join("v2.bcidx").exists());
}

#[test]
fn deltas_are_made_the_same_way_every_time() {
    let t = tempdir();
    let (v1, v2, _, _) = publish(t.path(), "erofs");
    let again = t.path().join("again.bcidx");
    make_with(
        &image("erofs", 2),
        &t.path().join("store"),
        &again,
        &["--delta-from", v1.to_str().unwrap()],
    );
    assert!(same_bytes(&v2, &again));
}

/// A lazy mount with the earlier release as seed takes deltas too: the exposed file is
/// the new image, every block verified.
#[test]
fn a_mount_with_a_seed_rebuilds_chunks_from_deltas() {
    let t = tempdir();
    let (_, v2, _, _) = publish(t.path(), "ext4");
    let dir = t.path().join("exposed");
    std::fs::create_dir_all(&dir).unwrap();
    ok(bin()
        .arg("mount")
        .arg(&v2)
        .arg("--no-attach")
        .arg(&dir)
        .arg("--daemon")
        .arg("--store")
        .arg(t.path().join("store"))
        .arg("--seed")
        .arg(image("ext4", 1)));
    let read = std::fs::read(dir.join("image"));
    // The warnings are in the mount's log; umount shows its summary and removes the log.
    let mut log =
        std::fs::read_to_string(blockcast::mount::record_dir(&dir).with_extension("log")).unwrap();
    let umount = bin().arg("umount").arg(&dir).output().unwrap();
    assert!(umount.status.success(), "{umount:?}");
    log.push_str(&String::from_utf8_lossy(&umount.stderr));
    let mut want = std::fs::read(image("ext4", 2)).unwrap();
    want.resize(want.len().next_multiple_of(4096), 0);
    assert!(read.unwrap() == want, "the mounted image differs from v2");
    assert!(!log.contains("delta against"), "{log}");
    let rebuilt: u64 = log
        .split(" chunk files rebuilt from deltas")
        .next()
        .and_then(|l| l.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of deltas in {log}"));
    assert!(rebuilt > 0, "{log}");
}

/// Updated in place, the output is the only copy of the bases: they are set aside before
/// anything is overwritten, and the update costs what `plan` said with the output as seed.
#[test]
fn an_update_in_place_takes_its_bases_from_the_output_before_overwriting_them() {
    for kind in KINDS {
        let t = tempdir();
        let store = t.path().join("store");
        let (_, v2, _, _) = publish(t.path(), kind);
        let device = t.path().join("device.img");
        std::fs::copy(image(kind, 1), &device).unwrap();
        let planned = plan_store(&v2, &store, &device);
        assert!(planned["deltas"].as_u64() > Some(0), "{kind}: {planned}");
        let report = extract_quietly(&mut extract_cmd(&v2, &store, &device));
        assert_eq!(report["plan"]["store"], planned, "{kind}");
        assert_eq!(
            report["chunk_files_from_deltas"], planned["deltas"],
            "{kind}"
        );
        assert!(is_extracted(&device, &image(kind, 2)), "{kind}");
    }
}

/// From packs over `blockcast serve`, an update takes its deltas from the release's delta
/// pack in one request, its chunk files from the chunk pack in one more (the server
/// answers several ranges at once), and rebuilds the image exactly: the requests are
/// those in serve's log.
#[test]
fn from_packs_an_updates_deltas_come_in_one_request() {
    for kind in ["erofs", "ext4"] {
        let t = tempdir();
        let www = t.path().join("www");
        let store = www.join("store");
        let (v1, v2) = (www.join("v1.bcidx"), www.join("v2.bcidx"));
        make_with(&image(kind, 1), &store, &v1, &["--pack"]);
        let v1_arg = v1.to_str().unwrap();
        make_with(
            &image(kind, 2),
            &store,
            &v2,
            &["--pack", "--delta-from", v1_arg],
        );
        let seed = image(kind, 1);
        let planned = plan_store(&v2, &store, &seed);
        let deltas = planned["deltas"].as_u64().unwrap();
        assert!(deltas >= 2, "{kind}: {planned}");

        let served = common::served::Served::start(&www, &["--verbose"]);
        let out = t.path().join("out.img");
        let report = extract_quietly(
            bin()
                .arg("extract")
                .arg(format!("{}/v2.bcidx", served.url))
                .arg("--store")
                .arg(format!("{}/store", served.url))
                .arg("--seed")
                .arg(&seed)
                .arg("-o")
                .arg(&out),
        );
        assert!(is_extracted(&out, &image(kind, 2)), "{kind}");
        assert_eq!(
            report["chunk_files_from_deltas"], deltas,
            "{kind}: {report}"
        );
        let log = served.log();
        let packs: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"GET /store/packs/"))
            .collect();
        // One request to the delta pack, and to the chunk pack (if any chunk file is
        // fetched whole) one, or two when some of them lie under the output's first 4 KiB,
        // which extract holds back and fetches apart: far fewer than the objects fetched.
        let whole = planned["chunks"].as_u64().unwrap() - deltas;
        let distinct: HashSet<&str> = packs
            .iter()
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        assert_eq!(distinct.len(), 1 + usize::from(whole > 0), "{kind}: {log}");
        assert!(
            packs.len() <= 1 + 2 * usize::from(whole > 0),
            "{kind}: {log}"
        );
        assert!((packs.len() as u64) < deltas + whole, "{kind}: {log}");
        assert!(packs.iter().all(|l| l.contains("\" 206 ")), "{kind}: {log}");
    }
}
