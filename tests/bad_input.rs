//! Bad input gets a clear error and exit status 1, never a panic, and never an output
//! that looks complete.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const BROKEN: [(&str, &str); 17] = [
    ("empty.bcidx", "truncated"),
    ("garbage.bcidx", "bad magic"),
    ("v3-truncated-header.bcidx", "truncated"),
    ("v3-truncated-table.bcidx", "truncated or corrupt"),
    ("v3-flipped-table.bcidx", "digest mismatch"),
    ("v3-flipped-header.bcidx", "digest mismatch"),
    (
        "v7-future-version.bcidx",
        "format version 7 is not supported",
    ),
    ("v3-gather-count.bcidx", "version 3 has no gathered chunks"),
    ("v4-delta-count.bcidx", "version 4 has no deltas"),
    ("v3-absurd-count.bcidx", "chunk count 1152921504606846976"),
    ("v3-absurd-chunk-size.bcidx", "chunk record 0"),
    (
        "v3-absurd-largest-chunk.bcidx",
        "exceeds the 16777216-byte limit",
    ),
    (
        "v3-gap-in-table.bcidx",
        "chunk record 1 (offset 32768): expected offset",
    ),
    ("v3-bad-chunk-params.bcidx", "average chunk size 12345"),
    ("v3-wrong-tree-size.bcidx", "tree_size is 8192"),
    ("v3-long-salt.bcidx", "salt of 300 bytes"),
    ("v3-unknown-layout.bcidx", "unknown layout 7"),
];

#[test]
fn broken_indexes_are_refused_by_every_command() {
    let t = tempdir();
    let store = t.path().join("store");
    std::fs::create_dir(&store).unwrap();
    ok(bin().arg("info").arg(fixture("v3-tiny.bcidx")));
    for (name, reason) in BROKEN {
        let idx = fixture(name);
        let out = t.path().join(format!("{name}.img"));
        let commands: [Vec<&std::ffi::OsStr>; 4] = [
            vec!["info".as_ref(), idx.as_os_str()],
            vec![
                "plan".as_ref(),
                idx.as_os_str(),
                "--store".as_ref(),
                store.as_os_str(),
            ],
            vec![
                "extract".as_ref(),
                idx.as_os_str(),
                "--store".as_ref(),
                store.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            vec![
                "export-caibx".as_ref(),
                idx.as_os_str(),
                "--store".as_ref(),
                store.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
        ];
        for args in commands {
            let err = fails(bin().args(&args));
            assert!(err.contains(name), "{args:?}: {err}");
            assert!(err.contains(reason), "{args:?}: {err}");
        }
        assert!(!out.exists());
    }
    assert!(
        std::fs::read_dir(t.path()).unwrap().count() == 1,
        "something was written"
    );
}

struct Made {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    index: PathBuf,
}

fn made(kind: &str) -> Made {
    let t = tempdir();
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    let index = dir.join("v2.bcidx");
    make(&image(kind, 2), &store, &index);
    Made {
        _t: t,
        dir,
        store,
        index,
    }
}

fn extract_made(m: &Made, out: &Path) -> Command {
    extract_cmd(&m.index, &m.store, out)
}

fn no_output_file(out: &Path) {
    assert!(!out.exists(), "{} exists", out.display());
}

#[test]
fn missing_chunk_is_named_and_leaves_no_output() {
    let m = made("erofs");
    let victim = &chunk_files(&m.store)[3];
    let id = victim.file_stem().unwrap().to_string_lossy().to_string();
    std::fs::remove_file(victim).unwrap();
    let out = m.dir.join("out.img");
    let err = fails(&mut extract_made(&m, &out));
    assert!(
        err.contains(&id) && err.contains("not in any store"),
        "{err}"
    );
    no_output_file(&out);
    let plan = json(&ok(bin()
        .arg("plan")
        .arg(&m.index)
        .arg("--store")
        .arg(&m.store)
        .arg("--json")));
    assert_eq!(plan["missing_from_stores"], 1);
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn corrupt_chunk_is_caught_and_another_store_used() {
    let m = made("erofs");
    let victim = chunk_files(&m.store)[2].clone();
    let id = victim.file_stem().unwrap().to_string_lossy().to_string();
    let good_store = m.dir.join("good");
    std::fs::create_dir_all(good_store.join(&id[..4])).unwrap();
    std::fs::copy(
        &victim,
        good_store.join(&id[..4]).join(format!("{id}.cacnk")),
    )
    .unwrap();
    flip_byte(&victim);
    let out = m.dir.join("out.img");
    let err = fails(&mut extract_made(&m, &out));
    assert!(err.contains(&id), "{err}");
    no_output_file(&out);

    let r = ok(extract_made(&m, &out).arg("--store").arg(&good_store));
    assert!(r.contains("written"));
    assert!(is_extracted(&out, &image("erofs", 2)));
}

#[test]
fn oversized_chunk_file_is_refused_without_inflating_it() {
    let m = made("erofs");
    let victim = chunk_files(&m.store)[1].clone();
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    std::fs::write(&victim, bomb).unwrap();
    let id = victim.file_stem().unwrap().to_string_lossy().to_string();
    let out = m.dir.join("out.img");
    let err = fails(&mut extract_made(&m, &out));
    assert!(err.contains(&id), "{err}");
    no_output_file(&out);
}

#[test]
fn make_removes_what_killed_writers_left_and_nothing_else() {
    let m = made("erofs");
    let dir = chunk_files(&m.store)[0].parent().unwrap().to_path_buf();
    let hex = "ab".repeat(32);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let temp = |pid: u32, n: u32| dir.join(format!(".{hex}.{pid}-{n}.tmp"));
    let backdate = |p: &Path| {
        let st = Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    };
    let stale = temp(dead, 0);
    let fresh = temp(dead, 1);
    let alive = temp(std::process::id(), 2);
    let other = dir.join(".not-a-chunk.tmp");
    // A pack a killed `make --pack` was writing.
    std::fs::create_dir_all(m.store.join("packs")).unwrap();
    let stale_pack = m.store.join(format!("packs/.pack.{dead}-3.tmp"));
    for p in [&stale, &fresh, &alive, &other, &stale_pack] {
        std::fs::write(p, b"partial").unwrap();
    }
    for p in [&stale, &alive, &other, &stale_pack] {
        backdate(p);
    }
    let again = make(&image("erofs", 2), &m.store, &m.dir.join("again.bcidx"));
    assert_eq!(again["stale_temps_removed"], 2);
    assert!(!stale.exists() && !stale_pack.exists());
    assert!(fresh.exists() && alive.exists() && other.exists());
}

#[test]
fn make_repairs_a_corrupt_chunk_file() {
    let m = made("erofs");
    let victim = chunk_files(&m.store)[0].clone();
    flip_byte(&victim);
    let again = make(&image("erofs", 2), &m.store, &m.dir.join("again.bcidx"));
    assert_eq!(again["repaired_chunks"], 1);
    assert!(same_bytes(&m.index, &m.dir.join("again.bcidx")));
    let out = m.dir.join("out.img");
    ok(&mut extract_made(&m, &out));
    assert!(is_extracted(&out, &image("erofs", 2)));
}

#[test]
fn unreadable_seed_is_an_error() {
    let m = made("erofs");
    let out = m.dir.join("out.img");
    let missing = m.dir.join("no-such-seed.img");
    let err = fails(extract_made(&m, &out).arg("--seed").arg(&missing));
    assert!(err.contains("no-such-seed.img"), "{err}");
    let err = fails(extract_made(&m, &out).arg("--seed").arg(&m.store));
    assert!(
        err.contains("opening seed") && err.contains("a directory, not a regular file"),
        "{err}"
    );
    no_output_file(&out);
    let err = fails(extract_made(&m, &out).arg("--seed-index").arg(&m.index));
    assert!(err.contains("--seed-index"), "{err}");
}

#[test]
fn bad_make_arguments() {
    let t = tempdir();
    let store = t.path().join("store");
    for size in ["1000", "3M", "64Q", "x"] {
        let err = fails(
            bin()
                .arg("make")
                .arg(image("erofs", 1))
                .arg("--store")
                .arg(&store)
                .args(["--chunk-size", size]),
        );
        assert!(
            err.contains("chunk size") || err.contains("chunk-size"),
            "{err}"
        );
    }
    let err = fails(
        bin()
            .arg("make")
            .arg(t.path().join("nothing.img"))
            .arg("--store")
            .arg(&store),
    );
    assert!(err.contains("nothing.img"), "{err}");
}

/// A small tmpfs mounted for one test, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "blockcast-test"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs (tests run as root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_output_directory() {
    let m = made("erofs");
    let fs = Tmpfs::mount(&m.dir.join("full"), "size=256k");
    let out = fs.0.join("out.img");
    let err = fails(&mut extract_made(&m, &out));
    assert!(err.contains("No space left"), "{err}");
    no_output_file(&out);
}

#[test]
fn read_only_output_directory() {
    let m = made("erofs");
    let fs = Tmpfs::mount(&m.dir.join("ro"), "ro,size=4m");
    let out = fs.0.join("out.img");
    let err = fails(&mut extract_made(&m, &out));
    assert!(
        err.contains("Read-only file system") && err.contains("out.img"),
        "{err}"
    );
    no_output_file(&out);
}

#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    let mut child = bin()
        .arg("info")
        .arg(fixture("v3-tiny.bcidx"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end at once, as `blockcast info | head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// Exit status 1 and stderr containing `want`, within the deadline.
fn fails_within(cmd: &mut Command, want: &str) -> String {
    let out = within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {stderr}");
    assert!(stderr.contains(want), "{cmd:?}: {stderr}");
    stderr
}

#[test]
fn fifos_are_refused_without_hanging() {
    let m = made("erofs");
    let out = m.dir.join("out.img");
    let fifo = m.dir.join("fifo");
    mkfifo(&fifo);
    fails_within(extract_made(&m, &out).arg("--seed").arg(&fifo), "a FIFO");
    fails_within(bin().arg("info").arg(&fifo), "a FIFO, not a regular file");
    fails_within(&mut extract_cmd(&fifo, &m.store, &out), "a FIFO");
    no_output_file(&out);

    // A chunk file that is a FIFO is a bad copy: the next store has the chunk.
    let good = m.dir.join("good-store");
    make(&image("erofs", 2), &good, &m.dir.join("again.bcidx"));
    let victim = chunk_files(&m.store)[3].clone();
    std::fs::remove_file(&victim).unwrap();
    mkfifo(&victim);
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let ok_out = within(extract_made(&m, &out).arg("--store").arg(&good), 60);
    let stderr = String::from_utf8_lossy(&ok_out.stderr);
    assert!(ok_out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains("a FIFO"),
        "{stderr}"
    );
    assert!(is_extracted(&out, &image("erofs", 2)));
    std::fs::remove_file(&out).unwrap();
    // With no other store, the chunk is named and nothing is left behind.
    fails_within(&mut extract_made(&m, &out), name.trim_end_matches(".cacnk"));
    no_output_file(&out);
}

#[test]
fn an_in_place_update_on_a_full_tmpfs_reports_no_space() {
    let m = made("erofs");
    let v1 = m.dir.join("v1.bcidx");
    make(&image("erofs", 1), &m.store, &v1);
    let fs = Tmpfs::mount(&m.dir.join("full"), "size=12m");
    let out = fs.0.join("out.img");
    ok(extract_cmd(&v1, &m.store, &out).arg("--quiet"));
    // Fill what is left: the output's holes can no longer be given pages.
    let mut fill = std::fs::File::create(fs.0.join("fill")).unwrap();
    let block = vec![1u8; 64 << 10];
    while std::io::Write::write_all(&mut fill, &block).is_ok() {}
    drop(fill);
    fails_within(&mut extract_made(&m, &out), "No space left on device");
}

/// An unsigned, well-formed index claiming a 256 GiB image whose 32,800-odd tree records
/// all name one 64 KiB chunk: the tree cannot hash to the root, and finding that out must
/// cost memory for what is read, not for the 2 GiB tree the index claims.
#[test]
fn a_lying_tree_is_refused_with_memory_for_what_was_read() {
    use blockcast::chunk::ChunkId;
    use blockcast::index::format::TREE_PIECE;
    use blockcast::index::{self, ChunkRecord, Index};
    use blockcast::store::codec::Compressor;
    use blockcast::store::LocalStore;
    use blockcast::verity::Geometry;

    let m = made("erofs");
    let template = Index::open(&m.index).unwrap();
    let put = |len: u64| {
        let piece = noise(len, len as usize);
        let id = ChunkId::of(&piece);
        let stored = Compressor::new(3).unwrap().compress(&piece).unwrap();
        let store = LocalStore::open(&m.store, false).unwrap();
        store.put_chunk(&id, &stored).unwrap();
        (id, stored.len() as u32)
    };

    const SIZE: u64 = 256 << 30;
    let zeros: Vec<ChunkRecord> = (0..SIZE / (1 << 31))
        .map(|i| ChunkRecord::zero(i << 31, 1 << 31))
        .collect();
    let geometry = Geometry::new(SIZE / 4096);
    let (id, stored) = put(TREE_PIECE);
    let mut tree: Vec<ChunkRecord> = (0..geometry.tree_size() / TREE_PIECE)
        .map(|i| ChunkRecord::stored(i * TREE_PIECE, TREE_PIECE as u32, stored, id))
        .collect();
    let rest = geometry.tree_size() % TREE_PIECE;
    if rest > 0 {
        let (id, stored) = put(rest);
        let at = geometry.tree_size() - rest;
        tree.push(ChunkRecord::stored(at, rest as u32, stored, id));
    }
    let mut header = template.header().clone();
    header.image_size = SIZE;
    header.largest_chunk = 0;
    header.verity.data_blocks = geometry.data_blocks;
    header.verity.tree_size = geometry.tree_size();
    let lying = m.dir.join("lying.bcidx");
    std::fs::write(&lying, index::encode(&header, &zeros, &tree, &[], &[])).unwrap();
    assert_eq!(
        Index::open(&lying).unwrap().tree_records().len(),
        tree.len()
    );

    // 2 GiB of address space: far less than the claimed tree, plenty for the real work.
    let limited = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={}", 2u64 << 30))
            .arg(env!("CARGO_BIN_EXE_blockcast"))
            .args(args);
        c
    };
    let exposed = m.dir.join("exposed");
    std::fs::create_dir(&exposed).unwrap();
    let err = fails_within(
        &mut limited(&[
            "mount".as_ref(),
            lying.as_os_str(),
            "--store".as_ref(),
            m.store.as_os_str(),
            "--no-attach".as_ref(),
            exposed.as_os_str(),
        ]),
        "does not hash to the index's root",
    );
    assert!(err.contains("hash block 0"), "{err}");
    let some_image = image("erofs", 2);
    fails_within(
        &mut limited(&[
            "verify".as_ref(),
            lying.as_os_str(),
            some_image.as_os_str(),
            "--store".as_ref(),
            m.store.as_os_str(),
        ]),
        "does not hash to the index's root",
    );
}
