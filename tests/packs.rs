//! Packed stores (`make --pack`): every test image round trips through one, locally, from
//! `blockcast serve` and from nginx, with the requests the servers log equal to what
//! `plan` predicts; `unpack` gives casync its loose files; and a bad pack or pack map ends
//! byte-identical from loose files or the next store, or in an error naming the chunk.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockcast::pack::format as p;
use common::nginx::Nginx;
use common::served::Served;
use common::*;
use sha2::{Digest, Sha256};

/// A store holding v1 and v2 of `kind` in packs (v2 with deltas against v1); returns the
/// indexes, v1 first.
fn make_packed(dir: &Path, store: &Path, kind: &str, extra: &[&str]) -> [PathBuf; 2] {
    let v1 = dir.join(format!("{kind}-1.bcidx"));
    let v2 = dir.join(format!("{kind}-2.bcidx"));
    make_with(
        &image(kind, 1),
        store,
        &v1,
        &[&["--pack"][..], extra].concat(),
    );
    let delta_from = ["--pack", "--delta-from", v1.to_str().unwrap()];
    make_with(
        &image(kind, 2),
        store,
        &v2,
        &[&delta_from[..], extra].concat(),
    );
    [v1, v2]
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn map_path(store: &Path, index: &Path) -> PathBuf {
    let digest = blockcast::index::Index::open(index).unwrap().digest();
    store.join(blockcast::pack::map_name(&digest))
}

/// Rewrites entry `entry` of a pack map with `edit` and seals it again (a trailer that
/// matches, as a hostile or buggy writer would leave it).
fn edit_map(path: &Path, entry: usize, edit: impl Fn(&mut [u8])) {
    let mut map = zstd::bulk::decompress(&fs::read(path).unwrap(), 64 << 20).unwrap();
    let packs = u32::from_le_bytes(map[12..16].try_into().unwrap()) as usize;
    let at = p::MAP_HEADER_SIZE + 32 * packs + entry * p::MAP_ENTRY_SIZE;
    edit(&mut map[at..at + p::MAP_ENTRY_SIZE]);
    let body = map.len() - 32;
    let digest = Sha256::digest(&map[..body]);
    map[body..].copy_from_slice(&digest);
    fs::write(path, zstd::bulk::compress(&map, 3).unwrap()).unwrap();
}

/// An edit of a pack-map entry.
type EntryEdit = dyn Fn(&mut [u8]);
/// An edit of a table-of-contents entry, given where the table starts.
type TocEdit = dyn Fn(&mut [u8], u64);

fn set_u64(e: &mut [u8], f: &p::Field, v: u64) {
    e[f.offset..f.offset + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(e: &[u8], f: &p::Field) -> u64 {
    u64::from_le_bytes(e[f.offset..f.offset + 8].try_into().unwrap())
}

/// Plan's JSON for `index` against `stores`, with `extra` arguments.
fn plan(index: &str, stores: &[&str], extra: &[&str]) -> serde_json::Value {
    let mut cmd = bin();
    cmd.args(["plan", index, "--json"]);
    for s in stores {
        cmd.args(["--store", s]);
    }
    json(&ok(cmd.args(extra)))
}

#[test]
fn every_image_round_trips_through_a_packed_store() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        let indexes = make_packed(t.path(), &store, kind, &[]);
        for (v, index) in [1, 2].into_iter().zip(&indexes) {
            let out = t.path().join(format!("{kind}-{v}.out"));
            extract(index, &store, &out, &[]);
            assert!(is_extracted(&out, &image(kind, v)), "{kind} v{v}");
            let planned = plan(index.to_str().unwrap(), &[store.to_str().unwrap()], &[]);
            assert_eq!(planned["missing_from_stores"], 0, "{kind} v{v}");
        }
        let seed = image(kind, 1);
        let out = t.path().join(format!("{kind}-seeded.out"));
        let r = extract(
            &indexes[1],
            &store,
            &out,
            &["--seed", seed.to_str().unwrap()],
        );
        assert!(is_extracted(&out, &image(kind, 2)), "{kind} seeded");
        assert!(r["plan"]["store"]["chunks"].as_u64().unwrap() > 0, "{kind}");
    }
    // Everything is in packs: no loose file is left to read from.
    assert!(chunk_files(&store).is_empty(), "{:?}", chunk_files(&store));
    assert!(!files_in(&store.join("packs")).is_empty());
    assert_eq!(files_in(&store.join("packmaps")).len(), 2 * KINDS.len());
}

/// Requests and bytes of pack ranges in the access-log lines `lines`, each giving
/// `(method, status, bytes sent, path)`. Only GETs count: `plan` asks whether packs are
/// there with HEADs, and nginx may log those after `plan` has its answers.
fn pack_requests<'a>(lines: impl Iterator<Item = (&'a str, u16, u64, &'a str)>) -> (u64, u64, u64) {
    let (mut requests, mut bytes, mut other) = (0, 0, 0);
    for (_, status, sent, path) in lines.filter(|(method, ..)| *method == "GET") {
        if path.contains("/store/packs/") {
            assert_eq!(status, 206, "{path}");
            requests += 1;
            bytes += sent;
        } else if !path.ends_with(".bcidx") && !path.contains("/store/packmaps/") {
            other += 1;
        }
    }
    (requests, bytes, other)
}

/// Extracts each release of each kind from `base` (indexes at `<base>/<kind>-<v>.bcidx`,
/// the store at `<base>/store`), v2 also with v1 as seed, and holds the pack requests the
/// server logged (`logged`, given the log's length before) to `plan`'s prediction.
fn extract_all_and_count(
    dir: &Path,
    base: &str,
    log_len: &dyn Fn() -> usize,
    logged: &dyn Fn(usize, u64) -> (u64, u64, u64),
) {
    let store = format!("{base}/store");
    for kind in KINDS {
        let seed = image(kind, 1);
        let seeded = ["--seed", seed.to_str().unwrap()];
        for (v, extra) in [(1, &[][..]), (2, &[][..]), (2, &seeded[..])] {
            let index = format!("{base}/{kind}-{v}.bcidx");
            let predicted = plan(&index, &[&store], extra)["fetch"].clone();
            let requests = predicted["requests"].as_u64().unwrap();
            assert!(requests > 0, "{kind} v{v} {extra:?}");
            let out = dir.join(format!("{kind}-{v}-{}.out", extra.len()));
            let before = log_len();
            let _ = fs::remove_file(&out);
            let mut cmd = bin();
            cmd.args(["extract", &index, "--store", &store, "-o"])
                .arg(&out)
                .args(extra);
            ok(&mut cmd);
            assert!(is_extracted(&out, &image(kind, v)), "{kind} v{v} {extra:?}");
            let (got, bytes, other) = logged(before, requests);
            assert_eq!(got, requests, "{kind} v{v} {extra:?}: requests");
            // The ranges' bytes, and the part headers of multipart answers: a boundary
            // and two header lines, about 100 bytes a range.
            let ranged = predicted["bytes"].as_u64().unwrap();
            let ranges = predicted["ranges"].as_u64().unwrap();
            assert!(
                (ranged..=ranged + 200 * ranges).contains(&bytes),
                "{kind} v{v} {extra:?}: {bytes} bytes sent for {ranged} in {ranges} ranges"
            );
            assert_eq!(other, 0, "{kind} v{v} {extra:?}: loose files asked for");
        }
    }
}

/// A served directory: one packed store holding every kind's two releases, and their
/// indexes beside it.
fn publish_packed(www: &Path) {
    for kind in KINDS {
        make_packed(www, &www.join("store"), kind, &[]);
    }
    assert!(chunk_files(&www.join("store")).is_empty());
}

#[test]
fn a_served_packed_store_serves_every_release_with_the_requests_plan_predicts() {
    let t = tempdir();
    let www = t.path().join("www");
    publish_packed(&www);
    let server = Served::start(&www, &["--verbose"]);
    // serve logs a request before sending its body: the client has seen every line once
    // it exits.
    let lines = |from: usize| -> Vec<(String, u16, u64, String)> {
        server.log()[from..]
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("\" ")?;
                let mut f = rest.split_whitespace();
                let status = f.next()?.parse().ok()?;
                let sent = f.next()?.parse().ok()?;
                let mut request = l.split('"').nth(1)?.split_whitespace();
                let method = request.next()?;
                let path = request.next()?;
                Some((method.to_string(), status, sent, path.to_string()))
            })
            .collect()
    };
    let log_len = || server.log().len();
    let logged = |from: usize, _: u64| {
        let lines = lines(from);
        pack_requests(
            lines
                .iter()
                .map(|(m, s, b, p)| (m.as_str(), *s, *b, p.as_str())),
        )
    };
    extract_all_and_count(t.path(), &server.url, &log_len, &logged);
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn nginx_serves_a_packed_store_with_the_requests_plan_predicts() {
    let t = tempdir();
    let www = t.path().join("www");
    publish_packed(&www);
    let nginx = Nginx::start(t.path(), &www);
    let read = || nginx.access_log();
    let parse = |from: usize| -> Vec<(String, u16, u64, String)> {
        read()[from..]
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                    f.next()?.to_string(),
                ))
            })
            .collect()
    };
    let log_len = || read().len();
    // nginx logs a request after answering it: wait, up to a deadline, for the lines of
    // as many pack requests as predicted, then count every line there is.
    let logged = |from: usize, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = parse(from);
            let counted = pack_requests(
                lines
                    .iter()
                    .map(|(m, s, b, p)| (m.as_str(), *s, *b, p.as_str())),
            );
            if counted.0 >= want || Instant::now() > deadline {
                return counted;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    extract_all_and_count(t.path(), &nginx.url, &log_len, &logged);
}

#[test]
fn unpack_gives_casync_the_loose_files_it_reads() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        let [_, v2] = make_packed(t.path(), &store, kind, &[]);
        let report = ok(bin().arg("unpack").arg(&store).arg("--index").arg(&v2));
        assert!(report.contains("wrote"), "{report}");
        let caibx = t.path().join(format!("{kind}.caibx"));
        ok(bin()
            .arg("export-caibx")
            .arg(&v2)
            .arg("--store")
            .arg(&store)
            .arg("-o")
            .arg(&caibx));
        let out = t.path().join(format!("{kind}.img"));
        casync_extract(&caibx, &store, &out);
        assert!(same_bytes(&out, &image(kind, 2)), "{kind}");
        // A second unpack finds every loose file there already.
        let again = ok(bin().arg("unpack").arg(&store).arg("--index").arg(&v2));
        assert!(again.contains("wrote 0 loose files"), "{kind}: {again}");
    }
}

#[test]
fn pack_packs_a_loose_release_and_rebuilds_a_lost_map_from_the_packs() {
    let t = tempdir();
    let store = t.path().join("store");
    let [v1, v2] = [1, 2].map(|v| t.path().join(format!("v{v}.bcidx")));
    make(&image("ext4", 1), &store, &v1);
    make_with(
        &image("ext4", 2),
        &store,
        &v2,
        &["--delta-from", v1.to_str().unwrap()],
    );
    let loose = chunk_files(&store).len();
    let pack = |index: &Path, extra: &[&str]| {
        json(&ok(bin()
            .arg("pack")
            .arg(&store)
            .arg("--index")
            .arg(index)
            .arg("--json")
            .args(extra)))
    };
    let first = pack(&v1, &["--remove-loose"]);
    assert!(first["packs_written"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["reused_objects"], 0, "{first}");
    let second = pack(&v2, &["--remove-loose"]);
    assert!(second["reused_objects"].as_u64().unwrap() > 0, "{second}");
    assert!(chunk_files(&store).len() < loose);
    for (v, index) in [(1, &v1), (2, &v2)] {
        let planned = plan(index.to_str().unwrap(), &[store.to_str().unwrap()], &[]);
        // From packs, many chunk files a request; loose, one each.
        let requests = planned["fetch"]["requests"].as_u64().unwrap();
        let chunks = planned["store"]["chunks"].as_u64().unwrap();
        assert!(requests * 4 < chunks, "{planned}");
        let out = t.path().join(format!("v{v}.img"));
        extract(index, &store, &out, &[]);
        assert!(is_extracted(&out, &image("ext4", v)), "v{v}");
    }
    // The maps lost: rebuilt from the packs' tables of contents, no pack written.
    fs::remove_dir_all(store.join("packmaps")).unwrap();
    for index in [&v1, &v2] {
        let again = pack(index, &[]);
        assert_eq!(again["packs_written"], 0, "{again}");
        assert!(map_path(&store, index).exists());
    }
    let out = t.path().join("again.img");
    let r = extract(
        &v2,
        &store,
        &out,
        &["--seed", image("ext4", 1).to_str().unwrap()],
    );
    assert!(is_extracted(&out, &image("ext4", 2)));
    assert!(r["chunk_files_from_deltas"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn two_makes_packing_into_one_store_at_once_both_end_correct() {
    let t = tempdir();
    // Releases that share most chunk files, made at the same time into a new store, a few
    // times over.
    for round in 0..3 {
        let store = t.path().join(format!("store-{round}"));
        let jobs: Vec<_> = [("ext4", 1), ("ext4", 2), ("erofs", 2)]
            .into_iter()
            .map(|(kind, v)| {
                let index = t.path().join(format!("{kind}-{v}-{round}.bcidx"));
                let child = make_cmd(&image(kind, v), &store, &index)
                    .args(["--pack", "--pack-size", "256K", "-q"])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (kind, v, index, child)
            })
            .collect();
        for (kind, v, index, child) in jobs {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{kind} v{v}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let img = t.path().join(format!("{kind}-{v}-{round}.img"));
            extract(&index, &store, &img, &[]);
            assert!(is_extracted(&img, &image(kind, v)), "{kind} v{v}");
        }
        assert!(chunk_files(&store).is_empty(), "{:?}", chunk_files(&store));
    }
}

/// A packed store of ext4 v2 and a loose one of the same image, for the bad-input tests.
fn packed_and_loose(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (packed, loose) = (dir.join("packed"), dir.join("loose"));
    let index = dir.join("x.bcidx");
    make_with(&image("ext4", 2), &packed, &index, &["--pack"]);
    make(&image("ext4", 2), &loose, &index);
    (packed, loose, index)
}

/// Extract from `stores` in order: identical to ext4 v2 when `fine`, else an error that
/// names a chunk and its offset, with no output written.
fn extract_from(dir: &Path, index: &Path, stores: &[&Path], name: &str) -> Result<(), String> {
    let out = dir.join(format!("{name}.img"));
    let mut cmd = bin();
    cmd.arg("extract").arg(index).arg("-o").arg(&out);
    for s in stores {
        cmd.arg("--store").arg(s);
    }
    let run = within(&mut cmd, 120);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    if run.status.success() {
        assert!(is_extracted(&out, &image("ext4", 2)), "{name}");
        Ok(())
    } else {
        assert_eq!(run.status.code(), Some(1), "{name}: {stderr}");
        assert!(!out.exists(), "{name}: an output was left");
        Err(stderr)
    }
}

/// Names an error about a chunk: its id and its offset in the image.
fn names_a_chunk(stderr: &str) -> bool {
    stderr.contains("chunk ") && stderr.contains("offset")
}

#[test]
fn a_truncated_or_missing_pack_is_read_from_the_next_store() {
    let t = tempdir();
    let (packed, loose, index) = packed_and_loose(t.path());
    let packs = files_in(&packed.join("packs"));
    assert!(!packs.is_empty());
    // Truncated: the first pack loses its second half, table of contents and all.
    let len = fs::metadata(&packs[0]).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&packs[0])
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    extract_from(t.path(), &index, &[&packed, &loose], "truncated").unwrap();
    let err = extract_from(t.path(), &index, &[&packed], "truncated-alone").unwrap_err();
    assert!(names_a_chunk(&err), "{err}");
    // Missing: the map names a pack the store no longer has.
    fs::remove_file(&packs[0]).unwrap();
    extract_from(t.path(), &index, &[&packed, &loose], "missing").unwrap();
    let err = extract_from(t.path(), &index, &[&packed], "missing-alone").unwrap_err();
    assert!(names_a_chunk(&err), "{err}");
    let planned = plan(index.to_str().unwrap(), &[packed.to_str().unwrap()], &[]);
    assert!(planned["missing_from_stores"].as_u64().unwrap() > 0);
}

#[test]
fn a_bad_pack_copy_is_read_from_the_same_stores_loose_file() {
    let t = tempdir();
    let store = t.path().join("store");
    let index = t.path().join("x.bcidx");
    // Loose files first, then packs holding the same chunk files.
    make(&image("ext4", 2), &store, &index);
    make_with(&image("ext4", 2), &store, &index, &["--pack"]);
    assert!(!chunk_files(&store).is_empty());
    for pack in files_in(&store.join("packs")) {
        let mut bytes = fs::read(&pack).unwrap();
        let toc = get_u64(&bytes, &p::P_TOC_OFFSET) as usize;
        for b in bytes[p::PACK_HEADER_SIZE..toc].iter_mut().step_by(997) {
            *b ^= 0x5a;
        }
        fs::write(&pack, bytes).unwrap();
    }
    extract_from(t.path(), &index, &[&store], "corrupt-pack").unwrap();
}

#[test]
fn a_pack_map_with_wrong_ranges_or_sizes_admits_no_wrong_byte() {
    let t = tempdir();
    let (packed, loose, index) = packed_and_loose(t.path());
    let map = map_path(&packed, &index);
    let good = fs::read(&map).unwrap();
    let cases: [(&str, &EntryEdit); 4] = [
        ("shifted", &|e| {
            let at = get_u64(e, &p::E_OFFSET);
            set_u64(e, &p::E_OFFSET, at + 1)
        }),
        ("past-the-end", &|e| set_u64(e, &p::E_OFFSET, 1 << 40)),
        ("overflowing", &|e| set_u64(e, &p::E_OFFSET, u64::MAX - 10)),
        ("resized", &|e| {
            let f = &p::E_SIZE;
            let size = u32::from_le_bytes(e[f.offset..f.offset + 4].try_into().unwrap());
            e[f.offset..f.offset + 4].copy_from_slice(&(size - 1).to_le_bytes());
        }),
    ];
    for (name, edit) in cases {
        fs::write(&map, &good).unwrap();
        for entry in [0, 3] {
            edit_map(&map, entry, edit);
        }
        extract_from(t.path(), &index, &[&packed, &loose], name).unwrap();
        let err = extract_from(t.path(), &index, &[&packed], &format!("{name}-alone")).unwrap_err();
        assert!(names_a_chunk(&err), "{name}: {err}");
    }
    // A map whose stored size differs from the index's is refused as a whole, saying why.
    let run = within(
        bin()
            .arg("plan")
            .arg(&index)
            .arg("--store")
            .arg(&packed)
            .arg("--json"),
        60,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("not the stored size the index gives"),
        "{stderr}"
    );
    // A map cut short is refused too.
    fs::write(&map, &good[..good.len() - 1]).unwrap();
    extract_from(t.path(), &index, &[&packed, &loose], "short-map").unwrap();
    // A small frame that would decompress to 1 MiB is refused at the bound the index
    // gives, before it is decompressed beyond it; a file larger than a map of the index
    // can be is not read.
    let plan_warnings = || {
        let run = within(
            bin()
                .arg("plan")
                .arg(&index)
                .arg("--store")
                .arg(&packed)
                .arg("--json"),
            60,
        );
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap();
    fs::write(&map, bomb).unwrap();
    let stderr = plan_warnings();
    assert!(stderr.contains("not a zstd frame of at most"), "{stderr}");
    extract_from(t.path(), &index, &[&packed, &loose], "map-bomb").unwrap();
    fs::write(&map, noise(9, 1 << 20)).unwrap();
    let stderr = plan_warnings();
    let name = map.display().to_string();
    assert!(
        stderr.contains(&format!("{name} is larger than")),
        "{stderr}"
    );
    assert!(!stderr.contains("chunk 0000"), "{stderr}");
    extract_from(t.path(), &index, &[&packed, &loose], "map-oversized").unwrap();
}

/// Rewrites a pack's table-of-contents entry `entry` with `edit`.
fn edit_toc(pack: &Path, entry: usize, edit: impl Fn(&mut [u8], u64)) {
    let mut bytes = fs::read(pack).unwrap();
    let toc = get_u64(&bytes, &p::P_TOC_OFFSET);
    let at = toc as usize + entry * p::TOC_ENTRY_SIZE;
    edit(&mut bytes[at..at + p::TOC_ENTRY_SIZE], toc);
    fs::write(pack, bytes).unwrap();
}

#[test]
fn a_lying_table_of_contents_is_refused_naming_the_pack() {
    let t = tempdir();
    let cases: [(&str, &TocEdit); 4] = [
        ("overlapping", &|e, _| {
            let at = get_u64(e, &p::T_OFFSET);
            set_u64(e, &p::T_OFFSET, at - 1)
        }),
        ("past-the-end", &|e, toc| set_u64(e, &p::T_OFFSET, toc)),
        ("over-the-cap", &|e, _| {
            e[p::T_SIZE.offset..p::T_SIZE.offset + 4].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("unknown-kind", &|e, _| e[p::T_KIND.offset] = 9),
    ];
    for (name, edit) in cases {
        let dir = t.path().join(name);
        let store = dir.join("store");
        let index = dir.join("x.bcidx");
        make_with(&image("ext4", 2), &store, &index, &["--pack"]);
        let pack = files_in(&store.join("packs"))[0].clone();
        let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
        edit_toc(&pack, 1, edit);
        // unpack reads the tables of contents: it refuses, naming the pack, and writes
        // nothing.
        let err = fails(bin().arg("unpack").arg(&store).arg("--index").arg(&index));
        assert!(err.contains(&pack_name), "{name}: {err}");
        assert!(chunk_files(&store).is_empty(), "{name}");
        // make --pack reads them too, to reuse what packs hold.
        let again = dir.join("y.bcidx");
        let err = fails(
            bin()
                .arg("make")
                .arg(image("ext4", 1))
                .arg("--pack")
                .arg("--store")
                .arg(&store)
                .arg("--index")
                .arg(&again),
        );
        assert!(err.contains(&pack_name), "{name}: {err}");
        assert!(!again.exists(), "{name}");
        // Extract reads by the map, and checks every byte: the release still reads.
        extract_from(&dir, &index, &[&store], name).unwrap();
    }
    // A truncated pack's table of contents is refused as well.
    let store = t.path().join("overlapping/store");
    let pack = files_in(&store.join("packs"))[0].clone();
    let len = fs::metadata(&pack).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = fails(
        bin()
            .arg("unpack")
            .arg(&store)
            .arg("--index")
            .arg(t.path().join("overlapping/x.bcidx")),
    );
    assert!(err.contains("do not fit a pack"), "{err}");
}

/// A pack that is a symbolic link out of the store, or a FIFO, is refused without hanging
/// and without reading what it points to: from a store that also has the loose files the
/// extract is byte-identical, from the packed store alone it fails naming a chunk.
#[test]
fn a_pack_that_is_a_symlink_out_or_a_fifo_is_refused() {
    let t = tempdir();
    let (packed, loose, index) = packed_and_loose(t.path());
    let outside = t.path().join("outside.bcpack");
    let pack = files_in(&packed.join("packs")).remove(0);
    fs::rename(&pack, &outside).unwrap();
    for case in ["symlink", "fifo"] {
        let _ = fs::remove_file(&pack);
        match case {
            "symlink" => std::os::unix::fs::symlink(&outside, &pack).unwrap(),
            _ => mkfifo(&pack),
        }
        let err = extract_from(t.path(), &index, &[&packed], &format!("{case}-alone")).unwrap_err();
        assert!(names_a_chunk(&err), "{case}: {err}");
        if case == "symlink" {
            assert!(err.contains("leads out of the store"), "{err}");
        }
        extract_from(t.path(), &index, &[&packed, &loose], case).unwrap();
    }
}
