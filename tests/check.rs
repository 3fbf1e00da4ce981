//! `blockcast check`: every chunk file, delta and pack the releases need is read and
//! checked against its id; a flipped byte (in a loose chunk file, inside a pack), a
//! truncated pack and a missing delta are each named, and `--repair` mends them from a
//! second store made from the same images (a directory, `blockcast serve`, into an S3
//! prefix), after which every release extracts byte-identical to its image.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockcast::index::Index;
use blockcast::pack::{self, Object, PackMap, Place};
use common::moto::Moto;
use common::served::Served;
use common::*;
use serde_json::Value;

const KIND: &str = "erofs";

/// v1 and v2 of [`KIND`] made into `store` (v2 with deltas against v1), packed or loose;
/// their indexes in `dir`, v1 first.
fn releases(dir: &Path, store: &Path, packed: bool) -> [PathBuf; 2] {
    let indexes = [1, 2].map(|v| dir.join(format!("v{v}.bcidx")));
    let v1 = indexes[0].to_str().unwrap().to_string();
    for (v, index) in [1, 2].into_iter().zip(&indexes) {
        let mut extra = Vec::new();
        if packed {
            extra.push("--pack");
        }
        if v == 2 {
            extra.extend(["--delta-from", &v1]);
        }
        make_with(&image(KIND, v), store, index, &extra);
    }
    indexes
}

/// Records `index` in `store` as make does: a copy named by its digest under `indexes/`.
fn record(store: &Path, index: &Path) -> PathBuf {
    let digest = Index::open(index).unwrap().digest();
    let path = store.join(format!("indexes/{}.bcidx", pack::hex(&digest)));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::copy(index, &path).unwrap();
    path
}

fn check_cmd(store: &str, indexes: &[&PathBuf]) -> Command {
    let mut cmd = bin();
    cmd.arg("check").arg(store);
    for index in indexes {
        cmd.arg("--index").arg(index);
    }
    cmd
}

/// `check STORE [--index INDEX]... --repair --from FROM`, to run.
fn repair_cmd(store: &str, indexes: &[&PathBuf], from: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = check_cmd(store, indexes);
    cmd.args(["--repair", "--from"]).arg(from);
    cmd
}

/// `check --json` that must fail (problems remain); its report.
fn check_fails(cmd: &mut Command) -> Value {
    let out = cmd.arg("--json").output().expect("run blockcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    json(&String::from_utf8(out.stdout).unwrap())
}

/// `check --json` that must succeed; its report.
fn check_ok(cmd: &mut Command) -> Value {
    json(&ok(cmd.arg("--json")))
}

fn objects_in(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {report}"))
        .iter()
        .map(|p| p["object"].as_str().unwrap().to_string())
        .collect()
}

/// The problem in `report[list]` about `object`.
fn problem<'a>(report: &'a Value, list: &str, object: &str) -> &'a Value {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"] == object)
        .unwrap_or_else(|| panic!("{object} not in {list}: {report:#}"))
}

fn assert_clean(report: &Value) {
    assert_eq!(report["missing"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["corrupt"], serde_json::json!([]), "{report:#}");
    assert!(report["objects_checked"].as_u64().unwrap() > 0, "{report}");
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn map_of(store: &Path, index: &Path) -> PackMap {
    let index = Index::open(index).unwrap();
    let name = pack::map_name(&index.digest());
    PackMap::read(&name, &fs::read(store.join(&name)).unwrap(), &index).unwrap()
}

/// Every object `index` needs: chunk files (image and tree), then deltas.
fn needs(index: &Path) -> (Vec<Object>, Vec<Object>) {
    let (chunks, deltas, tree) = pack::objects(&Index::open(index).unwrap());
    (chunks.into_iter().chain(tree).collect(), deltas)
}

fn packs_in(store: &Path) -> HashSet<String> {
    fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bcpack"))
        .collect()
}

fn extracts_both(indexes: &[PathBuf; 2], store: &Path, dir: &Path) {
    for (v, index) in [1, 2].into_iter().zip(indexes) {
        let out = dir.join(format!("out-{v}.img"));
        let _ = fs::remove_file(&out);
        extract(index, store, &out, &[]);
        assert!(is_extracted(&out, &image(KIND, v)), "v{v}");
    }
}

#[test]
fn a_loose_store_has_a_flipped_byte_and_a_missing_delta_named_and_mended() {
    let t = tempdir();
    let store = t.path().join("store");
    let indexes = releases(t.path(), &store, false);
    let pristine_dir = t.path().join("pristine");
    fs::create_dir(&pristine_dir).unwrap();
    let pristine = pristine_dir.join("store");
    let again = releases(&pristine_dir, &pristine, true);
    for (a, b) in indexes.iter().zip(&again) {
        assert!(same_bytes(a, b), "same images, same indexes");
    }
    let records = indexes.each_ref().map(|i| record(&store, i));
    let store_arg = store.to_str().unwrap();
    let clean = check_ok(&mut check_cmd(store_arg, &[]));
    assert_clean(&clean);
    assert_eq!(clean["releases"].as_array().unwrap().len(), 2, "{clean}");
    // Every delta's base is in the store: each is rebuilt and checked.
    assert_eq!(clean["deltas_unverified"], 0, "{clean}");

    let (v1_chunks, _) = needs(&indexes[0]);
    let (v2_chunks, v2_deltas) = needs(&indexes[1]);
    let only_v1 = v1_chunks
        .iter()
        .find(|o| !v2_chunks.contains(o))
        .expect("a chunk file only v1 needs");
    let flipped = only_v1.loose_name();
    let len = fs::metadata(store.join(&flipped)).unwrap().len();
    flip(&store.join(&flipped), len / 2);
    let gone = v2_deltas.first().expect("v2 has deltas").loose_name();
    fs::remove_file(store.join(&gone)).unwrap();

    let found = check_fails(&mut check_cmd(store_arg, &[]));
    assert_eq!(
        objects_in(&found, "corrupt"),
        [flipped.as_str()],
        "{found:#}"
    );
    assert_eq!(objects_in(&found, "missing"), [gone.as_str()], "{found:#}");
    let bad = problem(&found, "corrupt", &flipped);
    assert_eq!(bad["kind"], "chunk");
    let v1_record = format!(
        "indexes/{}",
        records[0].file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(bad["releases"], serde_json::json!([v1_record]), "{bad}");
    assert_eq!(problem(&found, "missing", &gone)["kind"], "delta");
    // For people: one line a problem, and an error.
    let out = bin().arg("check").arg(&store).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("corrupt {flipped} (chunk)"))),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("missing {gone} (delta)"))),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 missing, 1 corrupt"));
    // Naming the releases checks the same.
    let named = check_fails(&mut check_cmd(store_arg, &[&indexes[0], &indexes[1]]));
    assert_eq!(objects_in(&named, "corrupt"), [flipped.as_str()]);
    assert_eq!(objects_in(&named, "missing"), [gone.as_str()]);

    // --repair needs --from.
    fails(check_cmd(store_arg, &[]).arg("--repair"));
    let repaired = check_ok(&mut repair_cmd(store_arg, &[], &pristine));
    assert_clean(&repaired["after"]);
    assert_eq!(
        objects_in(&repaired["found"], "corrupt"),
        [flipped.as_str()]
    );
    let mended: Vec<&str> = repaired["mended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["object"].as_str().unwrap())
        .collect();
    assert_eq!(mended.len(), 2, "{repaired:#}");
    assert!(mended.contains(&flipped.as_str()) && mended.contains(&gone.as_str()));
    assert_eq!(repaired["loose_written"], 2, "{repaired:#}");
    assert_eq!(repaired["not_repaired"], serde_json::json!([]));
    assert_clean(&check_ok(&mut check_cmd(store_arg, &[])));
    for (index, copy) in indexes.iter().zip(&records) {
        assert!(same_bytes(index, copy), "the records are left as they were");
    }
    extracts_both(&indexes, &store, t.path());

    // A record cut short is named, and mended from a store that records the release.
    for index in &again {
        record(&pristine, index);
    }
    let cut = fs::read(&records[1]).unwrap();
    fs::write(&records[1], &cut[..cut.len() - 7]).unwrap();
    let record_name = format!(
        "indexes/{}",
        records[1].file_name().unwrap().to_str().unwrap()
    );
    let found = check_fails(&mut check_cmd(store_arg, &[]));
    assert_eq!(
        objects_in(&found, "corrupt"),
        [record_name.as_str()],
        "{found:#}"
    );
    assert_eq!(problem(&found, "corrupt", &record_name)["kind"], "record");
    let repaired = check_ok(&mut repair_cmd(store_arg, &[], &pristine));
    assert_clean(&repaired["after"]);
    assert_eq!(repaired["after"]["releases"].as_array().unwrap().len(), 2);
    assert!(same_bytes(&records[1], &indexes[1]));
}

#[test]
fn a_packed_store_has_a_flipped_byte_and_a_truncated_pack_named_and_mended() {
    let t = tempdir();
    let store = t.path().join("store");
    let indexes = releases(t.path(), &store, true);
    let index_bytes = indexes.each_ref().map(|i| fs::read(i).unwrap());
    let pristine_dir = t.path().join("pristine");
    fs::create_dir(&pristine_dir).unwrap();
    let loose = pristine_dir.join("loose");
    releases(&pristine_dir, &loose, false);
    let served = Served::start(&loose, &[]);
    let packed_dir = t.path().join("packed-pristine");
    fs::create_dir(&packed_dir).unwrap();
    let packed = packed_dir.join("store");
    releases(&packed_dir, &packed, true);
    let store_arg = store.to_str().unwrap();
    let both = [&indexes[0], &indexes[1]];
    assert_clean(&check_ok(&mut check_cmd(store_arg, &both)));
    let original = packs_in(&store);

    // A byte flipped inside a chunk file both releases need, in v1's pack.
    let (v1_chunks, _) = needs(&indexes[0]);
    let (v2_chunks, v2_deltas) = needs(&indexes[1]);
    let v1_map = map_of(&store, &indexes[0]);
    let shared = v1_chunks
        .iter()
        .filter(|o| v2_chunks.contains(o))
        .max_by_key(|o| v1_map.find(o).unwrap().size)
        .copied()
        .expect("a chunk file both need");
    let at: Place = v1_map.find(&shared).unwrap();
    let v1_pack = store.join(pack::pack_name(&at.pack));
    flip(&v1_pack, at.offset + u64::from(at.size) / 2);

    let found = check_fails(&mut check_cmd(store_arg, &both));
    let name = shared.loose_name();
    assert!(objects_in(&found, "corrupt").contains(&name), "{found:#}");
    let bad = problem(&found, "corrupt", &name);
    assert_eq!(bad["pack"], pack::pack_name(&at.pack), "{bad}");
    assert_eq!(bad["offset"], at.offset, "{bad}");
    assert_eq!(bad["releases"].as_array().unwrap().len(), 2, "{bad}");
    let pack_problem = problem(&found, "corrupt", &pack::pack_name(&at.pack));
    assert_eq!(pack_problem["kind"], "pack");

    // Mending v2 alone moves what v2 takes from the damaged pack into a new one, named
    // anew, and writes v2's pack map again; v1 still reads the damaged pack.
    let mended = check_ok(&mut repair_cmd(store_arg, &[&indexes[1]], &served.url));
    assert_clean(&mended["after"]);
    assert_eq!(mended["maps_rewritten"], 1, "{mended:#}");
    let new: Vec<String> = packs_in(&store).difference(&original).cloned().collect();
    assert!(!new.is_empty(), "{mended:#}");
    let moved = map_of(&store, &indexes[1]).find(&shared).unwrap();
    assert!(new.contains(&pack::pack_name(&moved.pack).replace("packs/", "")));
    let shown = mended["mended"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["object"] == name)
        .unwrap_or_else(|| panic!("{mended:#}"));
    assert_eq!(shown["from"], served.url.as_str(), "{shown}");
    assert_eq!(shown["to"], pack::pack_name(&moved.pack), "{shown}");
    let still = check_fails(&mut check_cmd(store_arg, &both));
    let left = problem(&still, "corrupt", &name);
    assert_eq!(left["releases"].as_array().unwrap().len(), 1, "{left}");

    // v2's delta pack cut in half: the deltas past the cut are missing.
    let v2_map = map_of(&store, &indexes[1]);
    let first = v2_map.find(&v2_deltas[0]).unwrap();
    let delta_pack = store.join(pack::pack_name(&first.pack));
    let cut = fs::metadata(&delta_pack).unwrap().len() / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&delta_pack)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let past: Vec<String> = v2_deltas
        .iter()
        .filter(|d| v2_map.find(d).is_some_and(|p| p.range().end > cut))
        .map(Object::loose_name)
        .collect();
    assert!(!past.is_empty());
    let found = check_fails(&mut check_cmd(store_arg, &both));
    let missing = objects_in(&found, "missing");
    for d in &past {
        assert!(missing.contains(d), "{d} not named: {found:#}");
        let p = problem(&found, "missing", d);
        assert_eq!(p["kind"], "delta");
        assert_eq!(p["pack"], pack::pack_name(&first.pack));
    }
    assert_eq!(missing.len(), past.len(), "{found:#}");
    let truncated = problem(&found, "corrupt", &pack::pack_name(&first.pack));
    assert!(
        truncated["reason"].as_str().unwrap().contains("truncated"),
        "{truncated}"
    );
    assert!(objects_in(&found, "corrupt").contains(&name));

    // Both mended from a packed directory (through its pack maps).
    let mended = check_ok(&mut repair_cmd(store_arg, &both, &packed));
    assert_clean(&mended["after"]);
    assert_eq!(mended["not_repaired"], serde_json::json!([]), "{mended:#}");
    assert_clean(&check_ok(&mut check_cmd(store_arg, &both)));
    for (index, bytes) in indexes.iter().zip(&index_bytes) {
        assert_eq!(
            &fs::read(index).unwrap(),
            bytes,
            "the indexes are never touched"
        );
    }
    extracts_both(&indexes, &store, t.path());

    // A pack map that cannot be read: the release is read loose, as readers would, and
    // the map comes back from a store whose map names packs this one holds.
    let map = pack::map_name(&Index::open(&indexes[0]).unwrap().digest());
    fs::write(store.join(&map), b"not a pack map").unwrap();
    let found = check_fails(&mut check_cmd(store_arg, &both));
    assert_eq!(
        problem(&found, "corrupt", &map)["kind"],
        "pack-map",
        "{found:#}"
    );
    assert!(
        !found["missing"].as_array().unwrap().is_empty(),
        "{found:#}"
    );
    let mended = check_ok(&mut repair_cmd(store_arg, &both, &packed));
    assert_clean(&mended["after"]);
    assert_eq!(mended["loose_written"], 0, "{mended:#}");
    assert!(
        mended["after"]["releases"][0]["packed"] == true,
        "{mended:#}"
    );
    served.stop();
}

/// curl, signing its requests with the credentials [`Moto::env`] gives.
fn curl() -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["--user", "blockcast-test:blockcast-test-secret"]);
    cmd
}

/// The object `key` of the bucket.
fn s3_get(moto: &Moto, key: &str) -> Vec<u8> {
    let out = curl().arg(format!("{}/{key}", moto.url)).output().unwrap();
    assert!(out.status.success(), "GET {key}");
    out.stdout
}

fn s3_put(moto: &Moto, key: &str, bytes: &[u8]) {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), bytes).unwrap();
    let ok = curl()
        .args(["-o", "/dev/null", "-T"])
        .arg(t.path())
        .arg(format!("{}/{key}", moto.url))
        .status()
        .unwrap()
        .success();
    assert!(ok, "PUT {key}");
}

#[test]
fn a_damaged_s3_prefix_is_named_and_mended_under_a_lease() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rel = signed_releases(&t.path().join("made"), KIND);
    let dest = "s3://releases/app";
    for index in &rel.indexes {
        ok(moto
            .env(&mut bin())
            .arg("push")
            .arg(index)
            .arg("--store")
            .arg(&rel.store)
            .arg(dest));
    }
    let check = |extra: &[&str]| {
        let mut cmd = bin();
        moto.env(&mut cmd).args(["check", dest]).args(extra);
        cmd
    };
    // The releases are the indexes pushed there.
    let clean = check_ok(&mut check(&[]));
    assert_clean(&clean);
    assert_eq!(clean["releases"].as_array().unwrap().len(), 2, "{clean}");

    let v2_map = map_of(&rel.store, &rel.indexes[1]);
    let (v2_chunks, _) = needs(&rel.indexes[1]);
    let target = v2_chunks[0];
    let at = v2_map.find(&target).unwrap();
    let key = format!("releases/app/{}", pack::pack_name(&at.pack));
    let mut bytes = s3_get(&moto, &key);
    bytes[(at.offset + u64::from(at.size) / 2) as usize] ^= 1;
    s3_put(&moto, &key, &bytes);

    let found = check_fails(&mut check(&[]));
    let bad = problem(&found, "corrupt", &target.loose_name());
    assert_eq!(bad["pack"], pack::pack_name(&at.pack), "{bad}");

    let from = rel.store.to_str().unwrap();
    let mended = check_ok(&mut check(&["--repair", "--from", from]));
    assert_clean(&mended["after"]);
    assert!(mended["mended"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["object"] == target.loose_name().as_str()));
    // The lease is gone with the run.
    let log = moto.log();
    assert!(
        log.contains("/releases/app/leases/"),
        "a lease was taken: {log}"
    );
    let listing =
        String::from_utf8(s3_get(&moto, "releases?list-type=2&prefix=app/leases/")).unwrap();
    assert!(!listing.contains(".publish"), "{listing}");

    for (v, index) in [1, 2].into_iter().zip(&rel.indexes) {
        let name = index.file_name().unwrap().to_str().unwrap();
        let out = t.path().join(format!("v{v}.img"));
        ok(moto
            .env(&mut bin())
            .arg("extract")
            .arg(format!("{dest}/{name}"))
            .args(["--store", dest, "--trusted-key"])
            .arg(&rel.public)
            .arg("-o")
            .arg(&out));
        assert!(is_extracted(&out, &image(KIND, v)), "v{v}");
    }
}
