//! `blockcast prune`: what it keeps extracts byte-identical, what it removes is what no
//! kept release needs, on a directory, an S3 prefix (moto) and a registry
//! (docker-registry); while releases are made and pushed at the same time; and when it is
//! killed at any point.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::layout::{gen_tree, run};
use common::moto::Moto;
use common::registry::{Access, Registry};
use common::*;

/// `n` releases of an erofs image, each a week's change from the one before (a few KiB
/// of a large file changed, a file added, an old one removed): their images, release 1
/// first.
fn weekly_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    let tree = dir.join("tree");
    gen_tree(&tree, 1);
    (1..=n as u64)
        .map(|k| {
            let mut weekly = noise(7, 512 << 10);
            let at = (k as usize * 37_000) % (500 << 10);
            weekly[at..at + 3000].copy_from_slice(&noise(k * 31, 3000));
            fs::write(tree.join("weekly.bin"), weekly).unwrap();
            fs::write(tree.join(format!("added-{k}.bin")), noise(k, 64 << 10)).unwrap();
            let _ = fs::remove_file(tree.join(format!("added-{}.bin", k.saturating_sub(3))));
            let img = dir.join(format!("r{k}.img"));
            run(Command::new("mkfs.erofs")
                .arg("--quiet")
                .arg("-T0")
                .arg("-U00000000-0000-0000-0000-000000000001")
                .arg("--all-root")
                .arg("-x-1")
                .arg(&img)
                .arg(&tree));
            img
        })
        .collect()
}

/// Makes release `k` (1-based) of `images` into `store`, with deltas against release
/// `k - 1` when there is one; returns its index.
fn make_release(dir: &Path, store: &Path, images: &[PathBuf], k: usize, extra: &[&str]) -> PathBuf {
    let index = dir.join(format!("r{k}.bcidx"));
    let previous = dir.join(format!("r{}.bcidx", k - 1));
    let release = k.to_string();
    let mut args = vec!["--release", release.as_str()];
    if k > 1 {
        args.extend(["--delta-from", previous.to_str().unwrap()]);
    }
    args.extend(extra);
    make_with(&images[k - 1], store, &index, &args);
    index
}

/// Makes every release of `images` into `store` in packs of 256 KiB, so that pruning
/// the early ones leaves packs mostly dead; returns their indexes.
fn in_small_packs(dir: &Path, store: &Path, images: &[PathBuf]) -> Vec<PathBuf> {
    (1..=images.len())
        .map(|k| make_release(dir, store, images, k, &["--pack", "--pack-size", "256K"]))
        .collect()
}

/// `blockcast prune STORE -q --keep-last 2` and `extra`, to run.
fn keep_two(store: &str, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["prune", store, "-q", "--keep-last", "2"])
        .args(extra);
    cmd
}

fn prune(store: &str, extra: &[&str]) -> serde_json::Value {
    json(&ok(bin().args(["prune", store, "--json"]).args(extra)))
}

/// Bytes of every file under `dir`, and how many there are.
fn bytes_under(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (b, n) = bytes_under(&entry.path());
            total = (total.0 + b, total.1 + n);
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

/// The releases a directory store records, by their release number.
fn recorded(store: &Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = fs::read_dir(store.join("indexes"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    blockcast::index::Index::open(&e.path())
                        .unwrap()
                        .header()
                        .release
                })
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable();
    numbers
}

/// Extracts `index` from `store` (any location) with `extra` arguments, and holds it to
/// `img`; returns extract's stderr.
fn extracts(
    index: &str,
    store: &str,
    img: &Path,
    out: &Path,
    extra: &[&str],
    env: &dyn Fn(&mut Command),
) -> String {
    let _ = fs::remove_file(out);
    let mut cmd = bin();
    cmd.args(["extract", index, "--store", store, "-o"])
        .arg(out)
        .args(extra);
    env(&mut cmd);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "extract {index} from {store}: {stderr}"
    );
    assert!(
        is_extracted(out, img),
        "extract {index} from {store}: wrong bytes"
    );
    stderr
}

fn no_env(_: &mut Command) {}

#[test]
fn pruning_ten_releases_to_two_keeps_them_whole_and_leaves_what_two_alone_would() {
    let t = tempdir();
    let images = weekly_images(t.path(), 10);
    for packed in [false, true] {
        let dir = t.path().join(if packed { "packed" } else { "loose" });
        fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        let extra: &[&str] = if packed { &["--pack"] } else { &[] };
        let indexes: Vec<PathBuf> = (1..=10)
            .map(|k| make_release(&dir, &store, &images, k, extra))
            .collect();
        assert_eq!(recorded(&store), (1..=10).collect::<Vec<_>>());
        let before = bytes_under(&store);

        let s = store.to_str().unwrap();
        let dry = prune(s, &["--keep-last", "2", "--grace", "0", "--dry-run"]);
        assert_eq!(bytes_under(&store), before, "a dry run changed the store");
        let done = prune(s, &["--keep-last", "2", "--grace", "0"]);
        assert_eq!(
            done["deleted_bytes"], dry["deleted_bytes"],
            "{packed}: {done} {dry}"
        );
        assert_eq!(done["deleted_objects"], dry["deleted_objects"]);
        let kept: Vec<u64> = done["kept_releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["release"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, [9, 10]);
        assert_eq!(recorded(&store), [9, 10]);
        assert_eq!(done["removed_releases"], 8);
        // The store shrank by what prune says it deleted, less what a repack wrote (new
        // packs, and rewritten maps).
        let after = bytes_under(&store);
        let (deleted, written) = (
            done["deleted_bytes"].as_u64().unwrap(),
            done["written_bytes"].as_u64().unwrap(),
        );
        let freed = before.0 - after.0;
        match packed {
            false => assert_eq!(freed, deleted, "{done}"),
            true => assert!(
                freed <= deleted && deleted <= freed + written + (64 << 10),
                "freed {freed}: {done}"
            ),
        }

        // Both kept releases extract whole, from nothing and from the release before; a
        // delta against release 8 (pruned) is not asked for, and nothing warns.
        for k in [9usize, 10] {
            let out = dir.join(format!("r{k}.out"));
            let index = indexes[k - 1].to_str().unwrap();
            let stderr = extracts(index, s, &images[k - 1], &out, &[], &no_env);
            assert!(
                !stderr.contains("lacks") && !stderr.contains("delta"),
                "{stderr}"
            );
            // A packed store's rewritten map no longer offers a delta against release 8;
            // a loose store can only answer that it lacks it (a warning).
            let seed = images[k - 2].to_str().unwrap();
            let stderr = extracts(index, s, &images[k - 1], &out, &["--seed", seed], &no_env);
            assert!(
                !packed || (!stderr.contains("lacks") && !stderr.contains("delta")),
                "r{k} seeded by r{}: {stderr}",
                k - 1
            );
        }
        let gone = dir.join("r8.out");
        let mut cmd = extract_cmd(&indexes[7], &store, &gone);
        assert!(fails(&mut cmd).contains("not in any store"));

        // A store made from releases 9 and 10 alone holds the same objects (the repack
        // threshold lets a pack keep up to a quarter of dead bytes).
        let fresh_dir = dir.join("fresh");
        fs::create_dir_all(&fresh_dir).unwrap();
        let fresh = fresh_dir.join("store");
        let i9 = fresh_dir.join("r9.bcidx");
        make_with(
            &images[8],
            &fresh,
            &i9,
            &[&["--release", "9"], extra].concat(),
        );
        let mut args = vec!["--release", "10", "--delta-from", i9.to_str().unwrap()];
        args.extend(extra);
        make_with(&images[9], &fresh, &fresh_dir.join("r10.bcidx"), &args);
        // Chunk files, deltas, packs and maps; the records are the releases' indexes,
        // which differ (release 9 was made with deltas against release 8).
        let objects = |store: &Path| bytes_under(store).0 - bytes_under(&store.join("indexes")).0;
        let (pruned, alone) = (objects(&store), objects(&fresh));
        let allowed = if packed { alone * 4 / 3 + 4096 } else { alone };
        assert!(
            pruned <= allowed,
            "{packed}: pruned {pruned} bytes, alone {alone}"
        );
        if !packed {
            assert_eq!(chunk_files(&store).len(), chunk_files(&fresh).len());
        }

        // Pruning again changes nothing.
        let again = prune(s, &["--keep-last", "2", "--grace", "0"]);
        assert_eq!(again["deleted_objects"], 0, "{again}");
        assert_eq!(again["repacked_packs"], 0, "{again}");
    }
}

#[test]
fn keep_and_keep_bases_choose_what_stays_and_grace_spares_young_objects() {
    let t = tempdir();
    let images = weekly_images(t.path(), 4);
    let store = t.path().join("store");
    let indexes: Vec<PathBuf> = (1..=4)
        .map(|k| make_release(t.path(), &store, &images, k, &["--pack"]))
        .collect();
    let s = store.to_str().unwrap();
    // Everything is younger than an hour: every release is kept, nothing goes.
    let young = prune(s, &["--keep-last", "1"]);
    assert_eq!(young["deleted_objects"], 0, "{young}");
    assert_eq!(
        young["kept_releases"].as_array().unwrap().len(),
        4,
        "{young}"
    );
    assert_eq!(recorded(&store), [1, 2, 3, 4]);

    // The last two kept, and release 2 as the base of release 3's deltas.
    let done = prune(
        s,
        &["--keep-last", "2", "--keep-bases", "1", "--grace", "0"],
    );
    assert_eq!(recorded(&store), [2, 3, 4], "{done}");
    assert_eq!(done["base_releases"], 1);
    let out = t.path().join("out");
    let seed = images[1].to_str().unwrap();
    let seeded = json(&ok(
        extract_cmd(&indexes[2], &store, &out).args(["--json", "--seed", seed])
    ));
    assert!(
        seeded["plan"]["store"]["deltas"].as_u64().unwrap() > 0,
        "r3 seeded by r2: {seeded}"
    );
    assert!(is_extracted(&out, &images[2]));

    // Release 3 named and the last one kept; release 2 goes, and with it the deltas of
    // release 3 against it: a device on release 2 fetches whole chunk files, no warning.
    let done = prune(
        s,
        &[
            "--keep",
            indexes[2].to_str().unwrap(),
            "--keep-last",
            "1",
            "--grace",
            "0",
        ],
    );
    assert_eq!(recorded(&store), [3, 4], "{done}");
    assert!(done["dropped_deltas"].as_u64().unwrap() > 0, "{done}");
    extracts(
        indexes[3].to_str().unwrap(),
        s,
        &images[3],
        &out,
        &[],
        &no_env,
    );
    let seed = images[1].to_str().unwrap();
    let _ = fs::remove_file(&out);
    let seeded = extract_cmd(&indexes[2], &store, &out)
        .args(["--json", "--seed", seed])
        .output()
        .unwrap();
    assert!(seeded.status.success());
    let stderr = String::from_utf8_lossy(&seeded.stderr);
    assert!(
        !stderr.contains("delta") && !stderr.contains("lacks"),
        "{stderr}"
    );
    let seeded = json(&String::from_utf8_lossy(&seeded.stdout));
    assert_eq!(seeded["plan"]["store"]["deltas"], 0, "{seeded}");
    assert!(is_extracted(&out, &images[2]));

    // A chunk file no release names, written just now (by a writer that holds no lease,
    // or one that is still to write its index), is spared by the grace period only.
    let stray = blockcast::chunk::ChunkId::of(b"stray");
    let stray_path = store.join(blockcast::store::local::place(&stray, None));
    fs::create_dir_all(stray_path.parent().unwrap()).unwrap();
    fs::write(&stray_path, zstd::bulk::compress(b"stray", 3).unwrap()).unwrap();
    let spared = prune(s, &["--keep-last", "2", "--grace", "1h"]);
    assert_eq!(spared["young_objects"], 1, "{spared}");
    assert!(stray_path.exists());
    prune(s, &["--keep-last", "2", "--grace", "0"]);
    assert!(!stray_path.exists());

    // A store that records no release is not emptied.
    let bare = t.path().join("bare");
    make(&images[0], &bare, &t.path().join("bare.bcidx"));
    fs::remove_dir_all(bare.join("indexes")).unwrap();
    let err = fails(bin().args(["prune", bare.to_str().unwrap(), "--grace", "0"]));
    assert!(err.contains("no release to keep"), "{err}");
    assert!(!chunk_files(&bare).is_empty());
}

/// Runs `make` of releases 2.. into `store` while a prune keeping the last two runs
/// against it, `rounds` times; after each round every release recorded extracts whole.
#[test]
fn prune_racing_make_on_a_directory_loses_nothing_even_without_a_grace_period() {
    let t = tempdir();
    let rounds = 6;
    let images = weekly_images(t.path(), rounds + 1);
    for packed in [false, true] {
        let dir = t.path().join(if packed { "packed" } else { "loose" });
        fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        let extra: &[&str] = if packed { &["--pack"] } else { &[] };
        make_release(&dir, &store, &images, 1, extra);
        for k in 2..=rounds + 1 {
            let index = dir.join(format!("r{k}.bcidx"));
            let previous = dir.join(format!("r{}.bcidx", k - 1));
            let mut maker = make_cmd(&images[k - 1], &store, &index);
            maker
                .args(["-q", "--release", &k.to_string(), "--delta-from"])
                .arg(&previous)
                .args(extra);
            let mut maker = maker.spawn().unwrap();
            // Without a grace period, and with a short one.
            let grace = if k % 2 == 0 { "0" } else { "1s" };
            let mut pruner = keep_two(store.to_str().unwrap(), &["--grace", grace])
                .spawn()
                .unwrap();
            assert!(maker.wait().unwrap().success(), "make r{k}");
            assert!(pruner.wait().unwrap().success(), "prune during r{k}");
            let kept = recorded(&store);
            assert!(kept.contains(&(k as u64)), "r{k} was made: {kept:?}");
            for r in kept {
                let out = dir.join("out");
                let index = dir.join(format!("r{r}.bcidx"));
                extracts(
                    index.to_str().unwrap(),
                    store.to_str().unwrap(),
                    &images[r as usize - 1],
                    &out,
                    &[],
                    &no_env,
                );
            }
        }
    }
}

/// Kills prune with SIGKILL at points spread over its run, 20 times; a second prune
/// finishes the job and every kept release extracts whole.
#[test]
fn prune_killed_anywhere_is_finished_by_the_next() {
    let t = tempdir();
    let images = weekly_images(t.path(), 6);
    let pristine = t.path().join("pristine");
    let indexes = in_small_packs(t.path(), &pristine, &images);
    let store = t.path().join("store");
    let copy = |to: &Path| {
        let _ = fs::remove_dir_all(to);
        run(Command::new("cp").arg("-a").arg(&pristine).arg(to));
    };
    // How long an undisturbed prune takes, to spread the kills over it.
    copy(&store);
    let began = Instant::now();
    let whole = prune(
        store.to_str().unwrap(),
        &["--keep-last", "2", "--grace", "0"],
    );
    let took = began.elapsed();
    assert!(whole["repacked_packs"].as_u64().unwrap() > 0, "{whole}");
    let settled = bytes_under(&store);
    let mut killed = 0;
    for i in 0..20u32 {
        copy(&store);
        let mut child = keep_two(store.to_str().unwrap(), &["--grace", "0"])
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(f64::from(i) / 20.0));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        prune(
            store.to_str().unwrap(),
            &["--keep-last", "2", "--grace", "0"],
        );
        for k in [5usize, 6] {
            extracts(
                indexes[k - 1].to_str().unwrap(),
                store.to_str().unwrap(),
                &images[k - 1],
                &t.path().join("out"),
                &[],
                &no_env,
            );
        }
        assert_eq!(
            bytes_under(&store),
            settled,
            "kill {i}: the second prune did not finish the job"
        );
        // Every release the store still records is whole, object by object.
        ok(bin().args(["check", store.to_str().unwrap()]));
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 prunes were still running when killed"
    );
}

/// A bucket: releases pushed while a prune keeping the last two runs, round after round;
/// each kept release extracts from the bucket.
#[test]
fn prune_racing_push_on_s3_loses_nothing() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rounds = 4;
    let images = weekly_images(t.path(), rounds + 1);
    let store = t.path().join("store");
    let bucket = "s3://releases/weekly";
    let push = |k: usize| {
        let mut cmd = bin();
        cmd.args(["push", "-q", "--store", store.to_str().unwrap()])
            .arg(t.path().join(format!("r{k}.bcidx")))
            .arg(bucket);
        moto.env(&mut cmd);
        cmd
    };
    make_release(t.path(), &store, &images, 1, &["--pack"]);
    assert!(push(1).status().unwrap().success());
    for k in 2..=rounds + 1 {
        make_release(t.path(), &store, &images, k, &["--pack"]);
        let mut pusher = push(k).spawn().unwrap();
        // Without a grace period, and with a short one.
        let grace = if k % 2 == 0 { "0" } else { "1s" };
        let mut pruner = keep_two(bucket, &["--grace", grace]);
        moto.env(&mut pruner);
        let mut pruner = pruner.spawn().unwrap();
        assert!(pusher.wait().unwrap().success(), "push r{k}");
        assert!(pruner.wait().unwrap().success(), "prune during r{k}");
        for r in [k - 1, k] {
            let index = format!("{bucket}/r{r}.bcidx");
            extracts(
                &index,
                bucket,
                &images[r - 1],
                &t.path().join("out"),
                &[],
                &|c| {
                    moto.env(c);
                },
            );
        }
    }
    // The bucket keeps the last two releases; the leases are gone.
    let mut last = bin();
    last.args([
        "prune",
        bucket,
        "--json",
        "--keep-last",
        "2",
        "--grace",
        "0",
    ]);
    let report = json(&ok(moto.env(&mut last)));
    let kept: Vec<u64> = report["kept_releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["release"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [rounds as u64, rounds as u64 + 1]);
    let old = format!("{bucket}/r1.bcidx");
    let mut cmd = bin();
    cmd.args(["extract", &old, "--store", bucket, "-o"])
        .arg(t.path().join("gone"));
    fails(moto.env(&mut cmd));
}

/// A registry: releases pushed while prune runs; kept releases extract; the registry's
/// own garbage collection (registry stopped) then frees the blobs prune unlinked, with
/// and without --delete-untagged, and the kept releases still extract.
#[test]
fn prune_racing_push_on_a_registry_then_garbage_collection() {
    let t = tempdir();
    let rounds = 4;
    let images = weekly_images(t.path(), rounds + 1);
    let store = t.path().join("store");
    let mut registry = Registry::start(&t.path().join("registry"), Access::Open);
    let repo = registry.oci("weekly");
    let push = |registry: &Registry, k: usize| {
        let mut cmd = bin();
        cmd.args(["push", "-q", "--store", store.to_str().unwrap()])
            .arg(t.path().join(format!("r{k}.bcidx")))
            .arg(registry.oci(&format!("weekly:r{k}")));
        cmd
    };
    make_release(t.path(), &store, &images, 1, &["--pack"]);
    assert!(push(&registry, 1).status().unwrap().success());
    for k in 2..=rounds + 1 {
        make_release(t.path(), &store, &images, k, &["--pack"]);
        let mut pusher = push(&registry, k).spawn().unwrap();
        let mut pruner = keep_two(&repo, &[]).spawn().unwrap();
        assert!(pusher.wait().unwrap().success(), "push r{k}");
        assert!(pruner.wait().unwrap().success(), "prune during r{k}");
        extracts(
            &registry.oci(&format!("weekly:r{k}")),
            &repo,
            &images[k - 1],
            &t.path().join("out"),
            &[],
            &no_env,
        );
    }
    let report = json(&ok(bin().args([
        "prune",
        &repo,
        "--json",
        "--keep-last",
        "2",
    ])));
    assert!(report["note"].as_str().unwrap().contains("garbage-collect"));
    let blobs = registry.data().join("docker/registry/v2/blobs");
    for delete_untagged in [false, true] {
        let before = bytes_under(&blobs).0;
        registry.garbage_collect(delete_untagged);
        let after = bytes_under(&blobs).0;
        assert!(after <= before, "{delete_untagged}: {before} -> {after}");
        if !delete_untagged {
            assert!(after < before, "garbage-collect freed nothing after prune");
        }
        for k in [rounds, rounds + 1] {
            extracts(
                &registry.oci(&format!("weekly:r{k}")),
                &repo,
                &images[k - 1],
                &t.path().join("out"),
                &[],
                &no_env,
            );
        }
        let mut gone = bin();
        gone.args(["extract", &registry.oci("weekly:r1"), "-o"])
            .arg(t.path().join("gone"));
        fails(&mut gone);
    }
}

/// A mount of a kept release, exposed before a prune repacks the packs it reads, reads
/// its image whole afterwards through the rewritten pack map.
#[test]
fn a_mount_reads_on_through_a_prune_that_repacks_without_grace() {
    let t = tempdir();
    let images = weekly_images(t.path(), 4);
    let store = t.path().join("store");
    let indexes = in_small_packs(t.path(), &store, &images);
    let mp = t.path().join("mp");
    fs::create_dir_all(&mp).unwrap();
    ok(bin()
        .arg("mount")
        .arg(&indexes[3])
        .arg("--no-attach")
        .arg(&mp)
        .arg("--store")
        .arg(&store)
        .arg("--daemon"));
    let done = prune(
        store.to_str().unwrap(),
        &["--keep-last", "1", "--grace", "0"],
    );
    assert!(done["repacked_packs"].as_u64().unwrap() > 0, "{done}");
    let whole = is_extracted(&mp.join("image"), &images[3]);
    ok(bin().arg("umount").arg(&mp));
    assert!(whole, "the mounted image differs after the prune");
}
