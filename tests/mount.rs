//! `blockcast mount`: every kind of test image mounted lazily from a local store and
//! from `blockcast serve`, compared with the tree it was made from; seeds; the cache
//! image, its repair and its use without blockcast; a store chunk that fails the hash
//! tree; a read that no source can verify;
//! cleaning up after a killed daemon; umount waiting for the mount process; and a
//! refused signature. Needs root, FUSE and loop devices, as CI has.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blockcast::index::{ChunkRecord, Index};
use blockcast::layout::Piece;
use blockcast::mount::attach::Attached;
use blockcast::store::LocalStore;
use common::served::Served;
use common::*;

/// The source tree of version `v` of the test images, generated once per test.
fn source_tree(dir: &Path, version: u32) -> PathBuf {
    let tree = dir.join(format!("tree-v{version}"));
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gentree.py"))
        .arg(&tree)
        .arg(version.to_string())
        .output()
        .expect("run gentree.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tree
}

/// Everything a tree holds that the image must reproduce: per path, the kind, the
/// permission bits, and the symlink target or file content.
fn snapshot(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "lost+found" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let (kind, body) = if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                ("symlink", target.into_os_string().into_encoded_bytes())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else {
                let content = fs::read(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
                ("file", content)
            };
            out.insert(rel, (kind.to_string(), mode, body));
        }
    }
    out
}

fn assert_same_tree(mounted: &Path, source: &Path) {
    let (got, want) = (snapshot(mounted), snapshot(source));
    assert_eq!(got.len(), want.len(), "entry counts differ");
    for (path, w) in &want {
        let g = got
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the mount"));
        assert_eq!((&g.0, g.1), (&w.0, w.1), "{path}: kind or mode differs");
        assert!(g.2 == w.2, "{path}: content differs");
    }
}

/// Lines of /proc/self/mounts and of `losetup -a` that still mention the mount at
/// `mp`: its mountpoint or its record directory (where its FUSE file lives). Tests run in
/// parallel, so only this mount's traces count.
fn leftovers(mp: &Mp) -> Vec<String> {
    let record = blockcast::mount::record_dir(&mp.path);
    let marks = [
        mp.path.to_string_lossy().into_owned(),
        record.to_string_lossy().into_owned(),
    ];
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .chain(String::from_utf8_lossy(&loops.stdout).lines())
        .filter(|l| marks.iter().any(|m| l.contains(m.as_str())))
        .map(String::from)
        .collect()
}

struct Mp {
    path: PathBuf,
}

impl Mp {
    fn new(dir: &Path, name: &str) -> Mp {
        let path = dir.join(name);
        fs::create_dir_all(&path).unwrap();
        Mp { path }
    }

    fn mount(&self, index: &str, extra: &[&str]) -> String {
        ok(bin()
            .args(["mount", index])
            .arg(&self.path)
            .arg("--daemon")
            .args(extra))
    }

    /// Takes the mount down and requires its log gone, as after every clean unmount;
    /// returns what umount printed on stderr.
    fn umount(&self) -> String {
        let stderr = self.umount_anyhow();
        assert!(
            !self.log_path().exists(),
            "{} kept after a clean unmount: {stderr}",
            self.log_path().display()
        );
        stderr
    }

    /// `blockcast umount`, which must succeed; returns its stderr.
    fn umount_anyhow(&self) -> String {
        let out = bin().arg("umount").arg(&self.path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "umount failed: {stderr}");
        stderr
    }

    fn log_path(&self) -> PathBuf {
        blockcast::mount::record_dir(&self.path).with_extension("log")
    }

    /// What the mount process has logged so far.
    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Mp {
    fn drop(&mut self) {
        if blockcast::mount::read_record(&self.path)
            .ok()
            .flatten()
            .is_some()
        {
            let _ = bin().arg("umount").arg(&self.path).output();
        }
    }
}

fn findmnt_source(path: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "--mountpoint"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn publish(dir: &Path, kinds: &[&str]) -> PathBuf {
    publish_with(dir, kinds, &[])
}

/// [`publish`], with `extra` options for `make`.
fn publish_with(dir: &Path, kinds: &[&str], extra: &[&str]) -> PathBuf {
    let www = dir.join("www");
    for kind in kinds {
        make_with(
            &image(kind, 2),
            &www.join("store"),
            &www.join(format!("{kind}.bcidx")),
            extra,
        );
    }
    www
}

#[test]
fn every_kind_mounts_from_a_local_store_and_over_http() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &KINDS);
    let server = Served::start(&www, &[]);
    for kind in KINDS {
        let mp = Mp::new(dir.path(), kind);
        let local = www.join(format!("{kind}.bcidx"));
        let store = www.join("store");
        mp.mount(
            local.to_str().unwrap(),
            &["--store", store.to_str().unwrap()],
        );
        assert_same_tree(&mp.path, &tree);
        mp.umount();
        assert!(leftovers(&mp).is_empty(), "{kind}: {:?}", leftovers(&mp));

        let index = format!("{}/{kind}.bcidx", server.url);
        mp.mount(&index, &["--store", &format!("{}/store", server.url)]);
        assert_same_tree(&mp.path, &tree);
        mp.umount();
        assert!(
            leftovers(&mp).is_empty(),
            "{kind} over http: {:?}",
            leftovers(&mp)
        );
    }
}

/// From packs, every kind mounts locally and over HTTP, and reading the whole tree over
/// HTTP takes fewer requests for packs than chunk files it reads: read ahead comes in
/// batches of neighbouring chunk files, several ranges a request (serve's log).
#[test]
fn every_kind_mounts_from_packs_whose_chunk_files_come_many_a_request() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish_with(dir.path(), &KINDS, &["--pack"]);
    for kind in KINDS {
        let mp = Mp::new(dir.path(), kind);
        let local = www.join(format!("{kind}.bcidx"));
        mp.mount(
            local.to_str().unwrap(),
            &["--store", www.join("store").to_str().unwrap()],
        );
        assert_same_tree(&mp.path, &tree);
        mp.umount();

        let server = Served::start(&www, &["--verbose"]);
        let index = format!("{}/{kind}.bcidx", server.url);
        mp.mount(&index, &["--store", &format!("{}/store", server.url)]);
        assert_same_tree(&mp.path, &tree);
        mp.umount();
        let log = server.log();
        let packs = log.lines().filter(|l| l.contains("/store/packs/")).count();
        let chunk_files = chunk_ids(&local).len();
        assert!(packs > 0, "{kind}: {log}");
        assert!(
            packs * 2 < chunk_files,
            "{kind}: {packs} pack requests for {chunk_files} chunk files: {log}"
        );
        assert!(leftovers(&mp).is_empty(), "{kind}: {:?}", leftovers(&mp));
    }
}

#[test]
fn a_store_repacked_while_mounted_is_read_through_its_new_pack_map() {
    let dir = tempdir();
    let www = publish_with(dir.path(), &["erofs"], &["--pack"]);
    // The same release packed otherwise: other packs, another map of the same name.
    let repacked = dir.path().join("repacked");
    make_with(
        &image("erofs", 2),
        &repacked,
        &dir.path().join("repacked.bcidx"),
        &["--pack", "--pack-size", "64K"],
    );
    let server = Served::start(&www, &["--verbose"]);
    // Exposed, not attached: the kernel reads nothing before the store is repacked.
    let exposed = Mp::new(dir.path(), "exposed");
    ok(bin()
        .args([
            "mount",
            &format!("{}/erofs.bcidx", server.url),
            "--no-attach",
        ])
        .arg(&exposed.path)
        .args(["--store", &format!("{}/store", server.url), "--daemon"]));
    for sub in ["packs", "packmaps"] {
        fs::remove_dir_all(www.join("store").join(sub)).unwrap();
        fs::rename(repacked.join(sub), www.join("store").join(sub)).unwrap();
    }
    assert!(is_extracted(
        &exposed.path.join("image"),
        &image("erofs", 2)
    ));
    let log = exposed.log();
    assert_eq!(log.matches("reading the map again").count(), 1, "{log}");
    exposed.umount();
    let served = server.log();
    let maps = served.lines().filter(|l| l.contains("/packmaps/")).count();
    assert_eq!(maps, 2, "{served}");
    let gone = served
        .lines()
        .filter(|l| l.contains("/packs/") && l.contains(" 404 "))
        .count();
    assert!(gone > 0, "{served}");
}

#[test]
fn erofs_attaches_from_the_file_or_through_a_loop_device() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &["erofs"]);
    let index = www.join("erofs.bcidx");
    let store = www.join("store");
    let mp = Mp::new(dir.path(), "mp");
    let args = |mode: &'static str| ["--store", store.to_str().unwrap(), "--attach", mode];

    mp.mount(index.to_str().unwrap(), &args("file"));
    assert!(
        findmnt_source(&mp.path).ends_with("/fuse/image"),
        "{}",
        findmnt_source(&mp.path)
    );
    assert_same_tree(&mp.path, &tree);
    mp.umount();

    mp.mount(index.to_str().unwrap(), &args("loop"));
    assert!(
        findmnt_source(&mp.path).starts_with("/dev/loop"),
        "{}",
        findmnt_source(&mp.path)
    );
    assert_same_tree(&mp.path, &tree);
    mp.umount();
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));

    // A file-backed mount of squashfs does not exist: refused, and nothing left behind.
    let www = publish(dir.path(), &["squashfs"]);
    let err = fails(
        bin()
            .args(["mount", www.join("squashfs.bcidx").to_str().unwrap()])
            .arg(&mp.path)
            .args([
                "--store",
                www.join("store").to_str().unwrap(),
                "--attach",
                "file",
            ]),
    );
    assert!(err.contains("only erofs"), "{err}");
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
}

#[test]
fn no_attach_exposes_the_verified_image_file() {
    let dir = tempdir();
    let www = publish(dir.path(), &["ext4"]);
    let exposed = Mp::new(dir.path(), "exposed");
    ok(bin()
        .args([
            "mount",
            www.join("ext4.bcidx").to_str().unwrap(),
            "--no-attach",
        ])
        .arg(&exposed.path)
        .args(["--store", www.join("store").to_str().unwrap(), "--daemon"]));
    let file = exposed.path.join("image");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert!(is_extracted(&file, &image("ext4", 2)));
    assert!(fs::OpenOptions::new().write(true).open(&file).is_err());
    exposed.umount();
    assert!(leftovers(&exposed).is_empty(), "{:?}", leftovers(&exposed));
}

#[test]
fn a_seed_supplies_the_chunks_it_holds() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &["squashfs"]);
    let server = Served::start(&www, &["--verbose"]);
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(
        &format!("{}/squashfs.bcidx", server.url),
        &[
            "--store",
            &format!("{}/store", server.url),
            "--seed",
            image("squashfs", 1).to_str().unwrap(),
        ],
    );
    assert_same_tree(&mp.path, &tree);
    let log = mp.umount();
    let from_seeds: u64 = log
        .split(" from seeds")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no seed count in the log: {log}"));
    assert!(from_seeds > 0, "{log}");
    let (_, served) = server.stop();
    let index = Index::open(&www.join("squashfs.bcidx")).unwrap();
    let fetched = served.lines().filter(|l| l.contains(".cacnk")).count();
    assert!(
        fetched < index.len(),
        "{fetched} chunks fetched for {} records despite the seed",
        index.len()
    );
}

/// The first data block of the largest plain file of an uncompressed erofs image, and
/// that file's path.
fn a_file_block(img: &Path) -> (String, u64) {
    let bytes = fs::read(img).unwrap();
    let analysis = blockcast::layout::analyse(&bytes).unwrap();
    analysis
        .files
        .iter()
        .filter_map(|f| match f.pieces.first() {
            Some(Piece::Plain { offset, len }) if *len >= 8192 && offset % 4096 == 0 => {
                Some((f.size, f.path.clone(), *offset))
            }
            _ => None,
        })
        .max()
        .map(|(_, path, offset)| (path, offset / 4096))
        .expect("a plain file")
}

/// The record holding data block `block` of the image `index` describes, and its chunk
/// file in `store`.
fn chunk_file_of_block(index: &Path, store: &Path, block: u64) -> (ChunkRecord, PathBuf) {
    let idx = Index::open(index).unwrap();
    let record = idx.record(idx.find(block * 4096).unwrap());
    let file = LocalStore::open(store, false)
        .unwrap()
        .chunk_path(&record.id);
    (record, file)
}

fn flip_byte(file: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[test]
fn the_cache_image_fills_repairs_itself_and_mounts_alone() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &["erofs"]);
    let index_path = www.join("erofs.bcidx");
    let index = index_path.to_str().unwrap();
    let store = www.join("store");
    let cache = dir.path().join("cache.img");
    let args = [
        "--store",
        store.to_str().unwrap(),
        "--cache-image",
        cache.to_str().unwrap(),
    ];
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(index, &args);
    assert_same_tree(&mp.path, &tree);
    // Read the whole file too, so every chunk is in the cache image.
    let exposed = fs::read(
        blockcast::mount::read_record(&mp.path)
            .unwrap()
            .unwrap()
            .fuse_dir
            .join("image"),
    )
    .unwrap();
    assert!(exposed.len() as u64 >= fs::metadata(image("erofs", 2)).unwrap().len());
    mp.umount();

    // Complete: blockcast verify accepts it, and the kernel mounts it without blockcast.
    ok(bin().arg("verify").arg(&index_path).arg(&cache));
    assert!(is_extracted(&cache, &image("erofs", 2)));
    let plain = Mp::new(dir.path(), "plain");
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,loop"])
        .arg(&cache)
        .arg(&plain.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&plain.path, &tree);
    assert!(Command::new("umount")
        .arg(&plain.path)
        .status()
        .unwrap()
        .success());

    // A corrupt block in the cache image is fetched again: the content stays right and
    // the event is logged.
    let (victim, block) = a_file_block(&image("erofs", 2));
    flip_byte(&cache, block * 4096 + 100);
    mp.mount(index, &args);
    assert_same_tree(&mp.path, &tree);
    let log = mp.log();
    mp.umount();
    assert!(
        log.contains(&format!("block {block} of the cache image")),
        "{log}"
    );
    assert!(log.contains("fetching it again"), "{log}");
    ok(bin().arg("verify").arg(&index_path).arg(&cache));

    // Corrupt in the cache image and in the store too: that file fails with EIO, the
    // rest of the tree reads fine, and the log names the chunk.
    flip_byte(&cache, block * 4096 + 100);
    let (record, chunk_file) = chunk_file_of_block(&index_path, &store, block);
    let hex = record.id.to_hex();
    fs::write(&chunk_file, b"not a zstd frame").unwrap();
    mp.mount(index, &args);
    let err = fs::read(mp.path.join(&victim)).expect_err("a read of unverifiable data");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}: {err}");
    let mut readable = 0;
    for (path, (kind, _, content)) in snapshot(&tree) {
        if kind != "file" || path == victim {
            continue;
        }
        let place = mp.path.join(&path);
        // Files whose data shares the bad chunk fail too; every other one reads right.
        if let Ok(got) = fs::read(&place) {
            assert!(got == content, "{path}: wrong content");
            readable += 1;
        }
    }
    assert!(readable > 100, "only {readable} files readable");
    let log = mp.log();
    mp.umount();
    assert!(
        log.contains(&hex),
        "the log does not name chunk {hex}: {log}"
    );
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
}

/// A store's chunk file that decompresses to the wrong bytes fails the dm-verity tree,
/// which the mount checks a chunk's whole blocks against as they arrive: the next store's
/// copy is taken, and the log names the block and the chunk; with no other store, only
/// the files on that chunk fail.
#[test]
fn a_store_chunk_that_fails_the_tree_is_taken_from_the_next_store() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &["erofs"]);
    let index_path = www.join("erofs.bcidx");
    let index = index_path.to_str().unwrap();
    let good = dir.path().join("good");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(www.join("store"))
        .arg(&good)
        .status()
        .unwrap()
        .success());
    let (victim, block) = a_file_block(&image("erofs", 2));
    let (record, chunk_file) = chunk_file_of_block(&index_path, &www.join("store"), block);
    assert!(record.part.is_none() && record.offset.is_multiple_of(4096));
    let hex = record.id.to_hex();
    let stored = fs::read(&chunk_file).unwrap();
    let mut bytes =
        blockcast::store::codec::decompress(&stored, record.size, record.id, record.offset)
            .unwrap();
    let at = (block * 4096 - record.offset) as usize + 100;
    bytes[at] ^= 0x5a;
    let wrong = blockcast::store::codec::Compressor::new(3)
        .unwrap()
        .compress(&bytes)
        .unwrap();
    fs::write(&chunk_file, wrong).unwrap();

    let bad_store = www.join("store");
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(
        index,
        &[
            "--store",
            bad_store.to_str().unwrap(),
            "--store",
            good.to_str().unwrap(),
        ],
    );
    assert_same_tree(&mp.path, &tree);
    let log = mp.log();
    mp.umount();
    let complaint = log
        .lines()
        .find(|l| l.contains(&hex))
        .unwrap_or_else(|| panic!("the log does not name chunk {hex}: {log}"));
    assert!(
        complaint.contains(&format!(
            "data block {block} does not match the dm-verity tree"
        )) && complaint.contains("trying the next store"),
        "{complaint}"
    );

    mp.mount(index, &["--store", bad_store.to_str().unwrap()]);
    let err = fs::read(mp.path.join(&victim)).expect_err("a read of unverifiable data");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}: {err}");
    mp.umount();
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
}

#[test]
fn umount_cleans_up_after_a_killed_daemon() {
    let dir = tempdir();
    let www = publish(dir.path(), &["squashfs"]);
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(
        www.join("squashfs.bcidx").to_str().unwrap(),
        &["--store", www.join("store").to_str().unwrap()],
    );
    kill_daemon(&mp);
    let said = mp.umount_anyhow();
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
    assert!(!blockcast::mount::record_dir(&mp.path).exists());
    // The log of a mount that did not stop cleanly is kept, and umount says where.
    assert!(mp.log_path().exists());
    assert!(
        said.contains("did not stop cleanly")
            && said.contains(&mp.log_path().display().to_string()),
        "{said}"
    );
    // And the mountpoint is usable again.
    mp.mount(
        www.join("squashfs.bcidx").to_str().unwrap(),
        &["--store", www.join("store").to_str().unwrap()],
    );
    mp.umount();
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
}

/// Kills the mount process at `mp` with SIGKILL and waits until it is gone; returns its
/// record.
fn kill_daemon(mp: &Mp) -> blockcast::mount::MountRecord {
    let record = blockcast::mount::read_record(&mp.path).unwrap().unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &record.pid.to_string()])
        .status()
        .unwrap()
        .success());
    let began = Instant::now();
    while !exited(record.pid) {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "process {} still runs",
            record.pid
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    record
}

/// The file behind loop device `device`, if it is attached.
fn loop_backing(device: &Path) -> Option<String> {
    let name = device.file_name()?.to_str()?;
    fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A loop device the test attached to a file, detached when dropped if it still backs
/// that file.
struct LoopDevice {
    device: PathBuf,
    file: PathBuf,
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if loop_backing(&self.device).as_deref() == self.file.to_str() {
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// After `kill -9` of a mount attached through a loop device, an admin unmounts the
/// filesystem and frees the device, and another user attaches their own file to it:
/// `blockcast umount` must leave that device alone.
#[test]
fn umount_leaves_alone_a_loop_device_that_now_backs_another_file() {
    let dir = tempdir();
    let www = publish(dir.path(), &["erofs"]);
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(
        www.join("erofs.bcidx").to_str().unwrap(),
        &[
            "--store",
            www.join("store").to_str().unwrap(),
            "--attach",
            "loop",
        ],
    );
    let record = kill_daemon(&mp);
    let Some(Attached::Loop { device }) = record.attached else {
        panic!("not attached through a loop device: {record:?}");
    };
    run(Command::new("umount").arg(&mp.path));
    run(Command::new("losetup").arg("-d").arg(&device));
    let other = dir.path().join("other.img");
    fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let other = fs::canonicalize(&other).unwrap();
    // The kernel lets go of a detached device a moment after losetup -d returns.
    let began = Instant::now();
    loop {
        let out = Command::new("losetup")
            .arg(&device)
            .arg(&other)
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("busy") && began.elapsed() < Duration::from_secs(30),
            "losetup {} {}: {stderr}",
            device.display(),
            other.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _other_loop = LoopDevice {
        device: device.clone(),
        file: other.clone(),
    };

    mp.umount_anyhow();
    assert_eq!(
        loop_backing(&device).as_deref(),
        Some(other.to_str().unwrap()),
        "{} no longer backs {}",
        device.display(),
        other.display()
    );
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
    assert!(!blockcast::mount::record_dir(&mp.path).exists());
    fs::remove_file(mp.log_path()).unwrap();
}

/// The same after an `--attach file` mount was killed and unmounted by hand: a
/// filesystem mounted since on the mountpoint stays mounted.
#[test]
fn umount_leaves_alone_a_filesystem_mounted_since_on_the_mountpoint() {
    let dir = tempdir();
    let www = publish(dir.path(), &["erofs"]);
    let mp = Mp::new(dir.path(), "mp");
    mp.mount(
        www.join("erofs.bcidx").to_str().unwrap(),
        &[
            "--store",
            www.join("store").to_str().unwrap(),
            "--attach",
            "file",
        ],
    );
    kill_daemon(&mp);
    run(Command::new("umount").arg(&mp.path));
    let source = format!("other-{}", std::process::id());
    run(Command::new("mount")
        .args(["-t", "tmpfs", &source])
        .arg(&mp.path));
    let _other = Tmpfs {
        at: mp.path.clone(),
        source: source.clone(),
    };

    mp.umount_anyhow();
    assert_eq!(findmnt_source(&mp.path), source);
    let record = blockcast::mount::record_dir(&mp.path);
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(record.to_str().unwrap()),
        "the FUSE file is still mounted: {mounts}"
    );
    fs::remove_file(mp.log_path()).unwrap();
}

/// A tmpfs the test mounted, unmounted when dropped if it is still on top.
struct Tmpfs {
    at: PathBuf,
    source: String,
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if findmnt_source(&self.at) == self.source {
            let _ = Command::new("umount").arg(&self.at).status();
        }
    }
}

/// A cache image shortened under a mount is a miss, as the README promises: its chunks
/// are fetched again from the store, and every read still succeeds.
#[test]
fn a_cache_image_shortened_while_mounted_costs_a_refetch_not_an_error() {
    let dir = tempdir();
    let www = publish(dir.path(), &["erofs"]);
    let index = www.join("erofs.bcidx");
    let store = www.join("store");
    let cache = dir.path().join("cache.img");
    let args = [
        "--store",
        store.to_str().unwrap(),
        "--cache-image",
        cache.to_str().unwrap(),
    ];
    let mp = Mp::new(dir.path(), "mp");
    let exposed = |mp: &Mp| {
        let record = blockcast::mount::read_record(&mp.path).unwrap().unwrap();
        fs::read(record.fuse_dir.join("image")).unwrap()
    };
    mp.mount(index.to_str().unwrap(), &args);
    let whole = exposed(&mp);
    assert!(whole.starts_with(&fs::read(image("erofs", 2)).unwrap()));
    mp.umount();

    // The next mount starts with every chunk in the cache image; then it is shortened.
    mp.mount(index.to_str().unwrap(), &args);
    fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_len(whole.len() as u64 / 2)
        .unwrap();
    assert!(
        exposed(&mp) == whole,
        "different bytes after the cache image shrank"
    );
    let log = mp.log();
    mp.umount();
    assert!(
        log.contains("fetching the chunks the cache image should hold again"),
        "{log}"
    );
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn exited(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

#[test]
fn umount_returns_once_the_mount_process_is_done_whatever_its_executable_is_called() {
    let dir = tempdir();
    let tree = source_tree(dir.path(), 2);
    let www = publish(dir.path(), &["erofs"]);
    let renamed = dir.path().join("bc-renamed");
    fs::copy(env!("CARGO_BIN_EXE_blockcast"), &renamed).unwrap();
    let cache = dir.path().join("cache.img");
    let state = blockcast::mount::cache_image::state_path(&cache);
    let mp = Mp::new(dir.path(), "mp");
    // Mounting again right after umount finds nothing of the last mount in the way.
    for round in 0..3 {
        ok(Command::new(&renamed)
            .arg("mount")
            .arg(www.join("erofs.bcidx"))
            .arg(&mp.path)
            .arg("--daemon")
            .arg("--store")
            .arg(www.join("store"))
            .arg("--cache-image")
            .arg(&cache));
        let pid = blockcast::mount::read_record(&mp.path)
            .unwrap()
            .unwrap()
            .pid;
        assert_same_tree(&mp.path, &tree);
        if round == 0 {
            assert!(!state.exists());
        }
        mp.umount();
        assert!(exited(pid), "round {round}: process {pid} still runs");
        assert!(
            state.exists(),
            "round {round}: the cache state is not saved"
        );
        assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
    }
}

#[test]
fn a_signature_by_another_key_is_refused_before_anything_is_attached() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    keygen(&keys, "good");
    keygen(&keys, "other");
    let www = dir.path().join("www");
    make_with(
        &image("erofs", 2),
        &www.join("store"),
        &www.join("erofs.bcidx"),
        &["--sign", keys.join("good.key").to_str().unwrap()],
    );
    let mp = Mp::new(dir.path(), "mp");
    let index = www.join("erofs.bcidx");
    let store = www.join("store");
    for foreground in [true, false] {
        let mut cmd = bin();
        cmd.args(["mount", index.to_str().unwrap()])
            .arg(&mp.path)
            .args(["--store", store.to_str().unwrap(), "--trusted-key"])
            .arg(keys.join("other.pub"));
        if !foreground {
            cmd.arg("--daemon");
        }
        let err = fails(&mut cmd);
        assert!(err.contains("refusing"), "{err}");
        assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
        assert!(blockcast::mount::read_record(&mp.path).unwrap().is_none());
        // A background mount that failed keeps its log and says where.
        assert_eq!(mp.log_path().exists(), !foreground);
        if !foreground {
            let kept = format!("its log is kept in {}", mp.log_path().display());
            assert!(err.contains(&kept), "{err}");
        }
    }
    mp.mount(
        index.to_str().unwrap(),
        &[
            "--store",
            store.to_str().unwrap(),
            "--trusted-key",
            keys.join("good.pub").to_str().unwrap(),
        ],
    );
    assert!(mp.path.join("etc").is_dir());
    mp.umount();
}

#[test]
fn a_foreground_mount_stops_cleanly_on_sigterm() {
    let dir = tempdir();
    let www = publish(dir.path(), &["ext4"]);
    let mp = Mp::new(dir.path(), "mp");
    let mut child = bin()
        .args(["mount", www.join("ext4.bcidx").to_str().unwrap()])
        .arg(&mp.path)
        .args(["--store", www.join("store").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("mounted on"), "{line}");
    assert!(mp.path.join("etc").is_dir());
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    assert!(leftovers(&mp).is_empty(), "{:?}", leftovers(&mp));
    assert!(!mp.path.join("etc").exists());
}
