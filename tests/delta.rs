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

/// Asserts that a warning in `stderr` names `chunk` and says the whole chunk file was
/// fetched instead of its delta.
fn assert_fell_back(stderr: &str, chunk: &ChunkId) {
    let line = stderr
        .lines()
        .find(|l| l.contains(&chunk.to_hex()))
        .unwrap_or_else(|| panic!("no warning names {chunk}: {stderr}"));
    assert!(
        line.contains("fetching the whole chunk file instead"),
        "{line}"
    );
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
        assert_fell_back(&stderr, &unit);
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

/// The delta files of a store, by name, with their bytes.
fn delta_files(store: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for dir in std::fs::read_dir(store).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "cadelta") {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                out.insert(name, std::fs::read(&f).unwrap());
            }
        }
    }
    out
}

/// The index and every delta file come out byte for byte the same on a second run, in
/// another store, and with the earlier image given (`--delta-from-image`) instead of
/// rebuilt from the store; some runs hold several chunks.
#[test]
fn deltas_are_made_the_same_way_every_time() {
    let mut longest_run = 0;
    for kind in KINDS {
        let t = tempdir();
        let (v1, v2, _, _) = publish(t.path(), kind);
        let again = t.path().join("again.bcidx");
        make_with(
            &image(kind, 2),
            &t.path().join("store"),
            &again,
            &["--delta-from", v1.to_str().unwrap()],
        );
        assert!(same_bytes(&v2, &again), "{kind}");
        let other = t.path().join("other");
        let (o1, o2) = (other.join("v1.bcidx"), other.join("v2.bcidx"));
        make(&image(kind, 1), &other.join("store"), &o1);
        make_with(
            &image(kind, 2),
            &other.join("store"),
            &o2,
            &[
                "--delta-from",
                o1.to_str().unwrap(),
                "--delta-from-image",
                image(kind, 1).to_str().unwrap(),
            ],
        );
        assert!(
            same_bytes(&v2, &o2),
            "{kind}: another store, the image given"
        );
        let files = delta_files(&t.path().join("store"));
        assert!(!files.is_empty(), "{kind}");
        assert!(files == delta_files(&other.join("store")), "{kind}");
        let index = Index::open(&v2).unwrap();
        longest_run = longest_run.max(index.deltas().map(|d| d.run.len()).max().unwrap_or(0));
    }
    assert!(longest_run > 1, "no delta has a base run of several chunks");
}

/// With two earlier releases, each delta's base run is drawn from one of them (a device
/// holds one), and devices on either release take deltas.
#[test]
fn a_base_run_comes_from_one_earlier_release() {
    let t = tempdir();
    let store = t.path().join("store");
    let (v1, v2_alone, _, _) = publish(t.path(), "erofs");
    // Another release: v1 with a byte of each of its largest chunks changed.
    let other_img = t.path().join("other.img");
    let mut bytes = std::fs::read(image("erofs", 1)).unwrap();
    let earlier = Index::open(&v1).unwrap();
    let mut large: Vec<_> = earlier.records().filter(|r| r.part.is_none()).collect();
    large.sort_by_key(|r| std::cmp::Reverse(r.size));
    for r in &large[..4] {
        bytes[(r.offset + u64::from(r.size) / 2) as usize] ^= 0x5a;
    }
    std::fs::write(&other_img, bytes).unwrap();
    let other = t.path().join("other.bcidx");
    make(&other_img, &store, &other);
    let v2 = t.path().join("v2-two.bcidx");
    make_with(
        &image("erofs", 2),
        &store,
        &v2,
        &[
            "--delta-from",
            other.to_str().unwrap(),
            "--delta-from",
            v1.to_str().unwrap(),
        ],
    );
    let (in_v1, in_other) = (chunk_ids(&v1), chunk_ids(&other));
    let index = Index::open(&v2).unwrap();
    assert!(index.deltas().any(|d| d.run.len() > 1));
    for d in index.deltas() {
        let all_in = |ids: &HashSet<ChunkId>| d.run.iter().all(|p| ids.contains(&p.id));
        assert!(
            all_in(&in_v1) || all_in(&in_other),
            "{}: mixed run",
            d.base_name()
        );
    }
    for (i, seed) in [image("erofs", 1), other_img].into_iter().enumerate() {
        let planned = plan_store(&v2, &store, &seed);
        assert!(planned["deltas"].as_u64() > Some(0), "{}", seed.display());
        let out = t.path().join(format!("out-{i}.img"));
        let report = extract_quietly(extract_cmd(&v2, &store, &out).arg("--seed").arg(&seed));
        assert!(is_extracted(&out, &image("erofs", 2)));
        assert_eq!(report["chunk_files_from_deltas"], planned["deltas"]);
    }
    assert_ne!(
        std::fs::read(&v2).unwrap(),
        std::fs::read(&v2_alone).unwrap()
    );
}

/// An earlier image that is not the release its index describes is refused, naming it.
#[test]
fn make_refuses_an_earlier_image_that_is_not_the_release() {
    let t = tempdir();
    let store = t.path().join("store");
    let v1 = t.path().join("v1.bcidx");
    make(&image("ext4", 1), &store, &v1);
    let other = t.path().join("other.img");
    let mut bytes = std::fs::read(image("ext4", 1)).unwrap();
    let at = Index::open(&v1)
        .unwrap()
        .records()
        .find(|r| !r.is_zero() && r.offset > 0)
        .unwrap()
        .offset;
    bytes[at as usize] ^= 1;
    std::fs::write(&other, bytes).unwrap();
    let flipped = format!(
        "integrity failure: {o} does not hold the release {v} describes: the chunk at offset {at} is not",
        v = v1.display(),
        o = other.display()
    );
    for (wrong, why) in [
        (other.clone(), flipped.as_str()),
        (image("erofs", 1), "bytes, but the release"),
    ] {
        let err = fails(
            make_cmd(&image("ext4", 2), &store, &t.path().join("v2.bcidx"))
                .arg("--delta-from")
                .arg(&v1)
                .arg("--delta-from-image")
                .arg(&wrong),
        );
        assert!(err.contains(why), "{err}");
        assert!(err.contains(&wrong.display().to_string()), "{err}");
    }
    assert!(!t.path().join("v2.bcidx").exists());
}

/// A seed that lacks one chunk of a base run (a byte of it flipped) never has that run's
/// delta chosen, by `plan` or by `extract`: those chunk files are fetched whole, without
/// a word about deltas. Told where the seed's chunks are (`--seed-index`), so that it
/// does not find the chunk missing until it reads it, extract tries the delta, names the
/// bad chunk and fetches the whole chunk file instead.
#[test]
fn a_run_the_seed_lacks_in_part_is_never_chosen() {
    let t = tempdir();
    let store = t.path().join("store");
    let (v1, v2, _, _) = publish(t.path(), "erofs");
    let index = Index::open(&v2).unwrap();
    let earlier = Index::open(&v1).unwrap();
    let count = |id: &ChunkId| earlier.records().filter(|r| r.id == *id).count();
    // A chunk that only runs of several chunks use, once in v1, and not in v2.
    let v2_ids = chunk_ids(&v2);
    let lacking = index
        .deltas()
        .filter(|d| d.run.len() > 1)
        .flat_map(|d| d.run.to_vec())
        .map(|p| p.id)
        .find(|id| count(id) == 1 && !v2_ids.contains(id))
        .expect("a chunk of a base run");
    let at = earlier.records().find(|r| r.id == lacking).unwrap();
    let seed = t.path().join("seed.img");
    let mut bytes = std::fs::read(image("erofs", 1)).unwrap();
    bytes[at.offset as usize + at.size as usize / 2] ^= 0x01;
    std::fs::write(&seed, bytes).unwrap();
    // Chunk files whose every delta needs the flipped chunk.
    let by_unit = index.deltas_by_unit();
    let refused = by_unit
        .values()
        .filter(|ds| ds.iter().all(|d| d.run.iter().any(|p| p.id == lacking)))
        .count() as u64;
    assert!(refused > 0);
    let whole = plan_store(&v2, &store, &image("erofs", 1));
    let planned = plan_store(&v2, &store, &seed);
    assert_eq!(planned["chunks"], whole["chunks"]);
    assert_eq!(
        planned["deltas"].as_u64().unwrap() + refused,
        whole["deltas"].as_u64().unwrap()
    );
    let out = t.path().join("out.img");
    let report = extract_quietly(extract_cmd(&v2, &store, &out).arg("--seed").arg(&seed));
    assert!(is_extracted(&out, &image("erofs", 2)));
    assert_eq!(report["plan"]["store"], planned);
    assert_eq!(report["chunk_files_from_deltas"], planned["deltas"]);

    let out = t.path().join("out-indexed.img");
    let run = extract_cmd(&v2, &store, &out)
        .arg("--seed")
        .arg(&seed)
        .arg("--seed-index")
        .arg(&v1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(is_extracted(&out, &image("erofs", 2)));
    assert_fell_back(&stderr, &lacking);
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

/// The base runs an update in place sets aside stay within `--spill-limit`: past it, the
/// chunk files are fetched whole, as the update's own plan counts them.
#[test]
fn bases_set_aside_stay_within_the_spill_limit() {
    let t = tempdir();
    let store = t.path().join("store");
    let (_, v2, _, _) = publish(t.path(), "erofs");
    let device = t.path().join("device.img");
    let all = plan_store(&v2, &store, &image("erofs", 1))["deltas"]
        .as_u64()
        .unwrap();
    let mut counts = Vec::new();
    for limit in ["0", "40K", "256M"] {
        std::fs::copy(image("erofs", 1), &device).unwrap();
        let report =
            extract_quietly(extract_cmd(&v2, &store, &device).args(["--spill-limit", limit]));
        assert!(is_extracted(&device, &image("erofs", 2)), "{limit}");
        let rebuilt = report["chunk_files_from_deltas"].as_u64().unwrap();
        assert_eq!(report["plan"]["store"]["deltas"], rebuilt, "{limit}");
        counts.push(rebuilt);
    }
    assert_eq!(counts[0], 0);
    assert!(counts[1] > 0 && counts[1] < all, "{counts:?} of {all}");
    assert_eq!(counts[2], all);
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
