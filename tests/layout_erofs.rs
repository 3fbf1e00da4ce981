//! The erofs analyser against images made by the real mkfs.erofs (erofs-utils 1.5 on
//! Debian bookworm) and extracted by the real fsck.erofs.
//!
//! What erofs-utils 1.5 lacks (`-Efragments`, `-Ededupe`, `-Eall-fragments`, `-E48bit`,
//! `-zdeflate`, `-zzstd`, `-b` other than 4096, `-m`) the `newer_erofs_utils_*` tests
//! cover with images made by erofs-utils 1.9.3 and committed in tests/fixtures/erofs/.
//! `-zlzma` is covered by neither: the Debian build has no liblzma support ("Available
//! compressors are: lz4hc, lz4") and the 1.9.3 build was configured without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use blockcast::layout::{erofs, Analysis, FsKind, Kind, Piece, Region};
use common::layout::*;
use tempfile::TempDir;

const UUID: &str = "6c0b4a0e-2f6e-4c43-9d0c-8f1e6a1b2c3d";

/// The generated tree, made once per test run.
fn gentree() -> &'static Path {
    static TREE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &TREE
        .get_or_init(|| {
            let dir = TempDir::new().unwrap();
            let t = dir.path().join("t");
            gen_tree(&t, 1);
            (dir, t)
        })
        .1
}

/// The generated tree plus what it lacks: hard links, a directory of several blocks,
/// empty, block-sized and very compressible files, a long symlink, deep paths and
/// xattrs (inline and shared).
fn extra_tree() -> &'static Path {
    static TREE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &TREE
        .get_or_init(|| {
            let dir = TempDir::new().unwrap();
            let t = dir.path().join("t");
            gen_tree(&t, 1);
            let x = t.join("extra");
            std::fs::create_dir_all(x.join("many")).unwrap();
            for i in 0..400 {
                let name = format!("entry-with-a-longish-name-{i:04}");
                std::fs::write(x.join("many").join(name), format!("{i}\n")).unwrap();
            }
            std::fs::write(x.join("empty"), b"").unwrap();
            std::fs::write(x.join("block"), vec![0x5a; 4096]).unwrap();
            std::fs::write(x.join("block-plus-one"), vec![0xa5; 4097]).unwrap();
            std::fs::write(x.join("zeros"), vec![0; 3 << 20]).unwrap();
            let mut text = Vec::new();
            for i in 0..60_000 {
                text.extend_from_slice(format!("line {i} of a very repetitive file\n").as_bytes());
            }
            std::fs::write(x.join("repetitive.txt"), &text).unwrap();
            let mut noise = vec![0u8; 70_000];
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            for b in &mut noise {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
            std::fs::write(x.join("noise.bin"), &noise).unwrap();
            std::fs::hard_link(t.join("usr/bin/busybox"), x.join("busybox-link")).unwrap();
            std::fs::hard_link(x.join("noise.bin"), x.join("many").join("noise-link")).unwrap();
            std::os::unix::fs::symlink("a/".repeat(1500), x.join("long-symlink")).unwrap();
            let mut deep = x.join("deep");
            for i in 0..40 {
                deep = deep.join(format!("level-{i}"));
            }
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("leaf"), b"deep leaf\n").unwrap();
            for (i, f) in ["empty", "block", "noise.bin", "repetitive.txt"]
                .iter()
                .enumerate()
            {
                let p = x.join(f);
                set_xattr(&p, "user.shared", b"the same value everywhere");
                set_xattr(&p, &format!("user.own{i}"), format!("value {i}").as_bytes());
            }
            set_xattr(&x.join("many"), "user.dir", b"on a directory");
            (dir, t)
        })
        .1
}

struct Built {
    _dir: TempDir,
    image: Vec<u8>,
    extracted: PathBuf,
}

fn build(tree: &Path, opts: &[&str]) -> Built {
    build_with(Path::new(""), tree, opts)
}

/// Builds with the mkfs.erofs in `bin` (or on the PATH when empty), checks the image
/// with its fsck.erofs and, with the system's, extracts it.
fn build_with(bin: &Path, tree: &Path, opts: &[&str]) -> Built {
    let dir = TempDir::new().unwrap();
    let img = dir.path().join("fs.img");
    run(Command::new(bin.join("mkfs.erofs"))
        .args(["-T0", "--all-root", "--quiet"])
        .arg(format!("-U{UUID}"))
        .args(opts)
        .arg(&img)
        .arg(tree));
    let extracted = dir.path().join("x");
    let mut fsck = Command::new(bin.join("fsck.erofs"));
    if bin.as_os_str().is_empty() {
        fsck.arg(format!("--extract={}", extracted.display()));
    }
    // Newer versions only check: the tests compare with the source tree instead.
    run(fsck.arg(&img));
    Built {
        image: std::fs::read(&img).unwrap(),
        extracted,
        _dir: dir,
    }
}

/// Every piece of a file lies in a region that may hold it: plain data in a Data region
/// of that file (or a shared one) or in metadata (inline tails), compressed streams in
/// one Compressed region or in metadata (inline pclusters).
fn check_pieces_in_regions(a: &Analysis) {
    let regions = &a.layout.regions;
    let find = |off: u64| -> &Region {
        let i = regions.partition_point(|r| r.end() <= off);
        &regions[i]
    };
    for f in &a.files {
        for p in &f.pieces {
            let (offset, len, want) = match *p {
                Piece::Plain { offset, len } => (offset, len, Kind::Data),
                Piece::Compressed { offset, len, .. } => (offset, len, Kind::Compressed),
                Piece::Zero { .. } => continue,
            };
            let mut pos = offset;
            while pos < offset + len {
                let r = find(pos);
                assert!(
                    r.kind == Kind::Metadata
                        || (r.kind == want && (r.file.is_none() || r.file == Some(f.inode))),
                    "{}: {p:?} lies in {r:?}",
                    f.path
                );
                if want == Kind::Compressed && r.kind == Kind::Compressed {
                    assert!(offset + len <= r.end(), "{}: {p:?} spans pclusters", f.path);
                }
                pos = r.end();
            }
        }
    }
}

fn count(a: &Analysis, kind: Kind) -> usize {
    a.layout.regions.iter().filter(|r| r.kind == kind).count()
}

/// Builds, analyses and checks an image; returns the analysis for variant-specific
/// checks.
fn check(tree: &Path, opts: &[&str]) -> (Built, Analysis) {
    check_with(Path::new(""), tree, opts)
}

fn check_with(bin: &Path, tree: &Path, opts: &[&str]) -> (Built, Analysis) {
    let b = build_with(bin, tree, opts);
    let a = erofs::analyse(&b.image).unwrap_or_else(|e| panic!("{opts:?}: {e}"));
    assert_eq!(a.layout.fs, FsKind::Erofs);
    assert_eq!(a.layout.block_size, 4096);
    check_tiling(&a, b.image.len() as u64);
    check_files(&a, &b.image, &b.extracted);
    check_pieces_in_regions(&a);
    for r in &a.layout.regions {
        if matches!(r.kind, Kind::Data | Kind::Compressed) {
            assert!(
                r.offset % 4096 == 0 && r.len % 4096 == 0,
                "{opts:?}: unaligned {r:?}"
            );
        }
    }
    (b, a)
}

fn check_uncompressed(tree: &Path, opts: &[&str]) {
    let (_, a) = check(tree, opts);
    assert!(count(&a, Kind::Data) > 0, "{opts:?}: no data regions");
    assert_eq!(count(&a, Kind::Compressed), 0, "{opts:?}");
    assert!(
        a.files
            .iter()
            .flat_map(|f| &f.pieces)
            .all(|p| !matches!(p, Piece::Compressed { .. })),
        "{opts:?}"
    );
}

fn check_compressed(tree: &Path, opts: &[&str]) -> Analysis {
    let (_, a) = check(tree, opts);
    assert!(
        count(&a, Kind::Compressed) > 10,
        "{opts:?}: too few pclusters"
    );
    a
}

#[test]
fn uncompressed_default() {
    check_uncompressed(gentree(), &[]);
}

#[test]
fn uncompressed_extended_inodes() {
    check_uncompressed(gentree(), &["-Eforce-inode-extended"]);
}

#[test]
fn uncompressed_compact_inodes() {
    check_uncompressed(gentree(), &["-Eforce-inode-compact"]);
}

#[test]
fn uncompressed_no_inline_tails() {
    let (_, a) = check(gentree(), &["-Enoinline_data"]);
    // Without tail packing every piece of every file starts on a block.
    for f in &a.files {
        for p in &f.pieces {
            if let Piece::Plain { offset, .. } = p {
                assert_eq!(offset % 4096, 0, "{}: {p:?}", f.path);
            }
        }
    }
}

#[test]
fn uncompressed_extra_tree() {
    check_uncompressed(extra_tree(), &[]);
    check_uncompressed(extra_tree(), &["-Eforce-inode-extended", "-Enoinline_data"]);
}

#[test]
fn chunked_8k() {
    check_uncompressed(gentree(), &["--chunksize=8192"]);
}

#[test]
fn chunked_64k() {
    check_uncompressed(gentree(), &["--chunksize=65536"]);
    check_uncompressed(gentree(), &["--chunksize=65536", "-Eforce-inode-blockmap"]);
}

#[test]
fn chunked_with_indexes() {
    check_uncompressed(gentree(), &["--chunksize=8192", "-Eforce-chunk-indexes"]);
    check_uncompressed(extra_tree(), &["--chunksize=4096", "-Eforce-chunk-indexes"]);
}

#[test]
fn chunked_extra_tree_deduplicates() {
    // mkfs.erofs stores identical chunks once: the 3 MiB of zeros become one shared
    // block run named by no single file.
    let (_, a) = check(extra_tree(), &["--chunksize=4096"]);
    let zeros = a.files.iter().find(|f| f.path == "extra/zeros").unwrap();
    let offsets: std::collections::HashSet<_> = zeros
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Plain { offset, .. } => *offset,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(offsets.len(), 1, "{:?}", &zeros.pieces[..3]);
}

#[test]
fn lz4hc_compact() {
    check_compressed(gentree(), &["-zlz4hc"]);
}

#[test]
fn lz4_compact() {
    check_compressed(gentree(), &["-zlz4"]);
}

#[test]
fn lz4hc_big_pclusters() {
    let a = check_compressed(gentree(), &["-zlz4hc", "-C65536"]);
    assert!(
        a.layout
            .regions
            .iter()
            .any(|r| r.kind == Kind::Compressed && r.len > 4096),
        "no big pcluster"
    );
}

#[test]
fn lz4_legacy_full_index_without_0padding() {
    check_compressed(gentree(), &["-zlz4", "-Elegacy-compress"]);
}

#[test]
fn lz4hc_legacy_full_index() {
    check_compressed(gentree(), &["-zlz4hc", "-Elegacy-compress"]);
    check_compressed(gentree(), &["-zlz4hc", "-Elegacy-compress", "-C65536"]);
}

#[test]
fn lz4hc_ztailpacking() {
    check_compressed(gentree(), &["-zlz4hc", "-Eztailpacking"]);
    check_compressed(gentree(), &["-zlz4hc", "-C65536", "-Eztailpacking"]);
}

#[test]
fn lz4_legacy_ztailpacking() {
    check_compressed(gentree(), &["-zlz4", "-Elegacy-compress", "-Eztailpacking"]);
}

#[test]
fn compressed_extra_tree() {
    let a = check_compressed(extra_tree(), &["-zlz4hc", "-C65536"]);
    // Hard links: one map per path, the same inode.
    let ino = |p: &str| a.files.iter().find(|f| f.path == p).unwrap().inode;
    assert_eq!(ino("extra/busybox-link"), ino("usr/bin/busybox"));
    check_compressed(
        extra_tree(),
        &["-zlz4", "-Elegacy-compress", "-Eforce-inode-extended"],
    );
    check_compressed(
        extra_tree(),
        &["-zlz4hc", "-Eztailpacking", "-Enoinline_data"],
    );
}

// ---------------------------------------------------------------------------------------
// Bad input.

fn images() -> Vec<Vec<u8>> {
    [
        &[][..],
        &["-zlz4hc", "-C65536"][..],
        &["-zlz4", "-Elegacy-compress"][..],
        &["--chunksize=8192"][..],
    ]
    .iter()
    .map(|opts| build(gentree(), opts).image)
    .collect()
}

#[test]
fn truncated_images_are_errors() {
    for image in images() {
        let len = image.len();
        for cut in [
            0,
            1,
            1023,
            1024,
            1100,
            4096,
            8192,
            len / 3,
            len / 2,
            len - 4096,
            len - 1,
        ] {
            assert!(
                erofs::analyse(&image[..cut]).is_err(),
                "cut at {cut} of {len}"
            );
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_is_an_error() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for size in [0, 100, 1024, 1200, 4096, 65536, 1 << 20] {
        let mut junk: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        assert!(erofs::analyse(&junk).is_err());
        if size >= 1200 {
            // With the magic in place the rest still cannot pass.
            junk[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
            junk[1024 + 12] = 12;
            assert!(erofs::analyse(&junk).is_err(), "{size} bytes");
        }
    }
}

#[test]
fn corrupted_root_is_an_error() {
    let b = build(gentree(), &[]);
    let good = erofs::analyse(&b.image).unwrap();
    let root = u16::from_le_bytes([b.image[1024 + 14], b.image[1024 + 15]]);
    let file_nid = good.files[0].inode as u16;
    for nid in [u16::MAX, 60000, file_nid, root + 1, root.wrapping_sub(1)] {
        let mut image = b.image.clone();
        image[1024 + 14..1024 + 16].copy_from_slice(&nid.to_le_bytes());
        if nid == root + 1 || nid == root.wrapping_sub(1) {
            let _ = erofs::analyse(&image); // misaligned: must only not panic
        } else {
            assert!(erofs::analyse(&image).is_err(), "root nid {nid}");
        }
    }
    // A bad block size, an unknown incompatible feature.
    let mut image = b.image.clone();
    image[1024 + 12] = 8;
    assert!(erofs::analyse(&image).is_err());
    let mut image = b.image.clone();
    image[1024 + 83] = 0x80;
    assert!(erofs::analyse(&image).is_err());
}

#[test]
fn flipped_metadata_never_panics() {
    // A cheap stand-in for fuzzing: random byte flips in the metadata of real images.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for image in images() {
        let a = erofs::analyse(&image).unwrap();
        let meta: Vec<&Region> = a
            .layout
            .regions
            .iter()
            .filter(|r| r.kind == Kind::Metadata)
            .collect();
        for _ in 0..300 {
            let mut bad = image.clone();
            for _ in 0..1 + rng.next() % 4 {
                let r = meta[(rng.next() % meta.len() as u64) as usize];
                let at = r.offset + rng.next() % r.len;
                bad[at as usize] ^= 1 << (rng.next() % 8);
            }
            if let Ok(a) = erofs::analyse(&bad) {
                check_tiling(&a, bad.len() as u64);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures from erofs-utils 1.9.3: the features 1.5 lacks. tests/fixtures/erofs/README.md
// says how they were made; manifest.txt holds each image's digest and the digest of
// every regular file as that version's fsck.erofs --extract wrote it.

use blockcast::chunk::ChunkId;
use blockcast::layout::FileMap;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/erofs");

/// Fixtures the analyser may refuse, and what its error must say: compression it does
/// not decode (erofs numbers deflate 2 and zstd 3) and metadata compression, as its
/// module doc says.
const MAY_REFUSE: &[(&str, &str)] = &[
    ("zstd.img", "compression algorithm 3 is not supported"),
    ("zstd-48bit.img", "compression algorithm 3 is not supported"),
    ("deflate.img", "compression algorithm 2 is not supported"),
    (
        "lz4hc-metabox.img",
        "metadata compression (metabox) is not supported",
    ),
];

/// One image of manifest.txt: its size and digest, and its regular files by path with
/// their digest and size.
struct Fixture {
    name: String,
    size: u64,
    sha256: String,
    files: std::collections::BTreeMap<String, (String, u64)>,
}

fn manifest() -> Vec<Fixture> {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("manifest.txt")).unwrap();
    let mut out: Vec<Fixture> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words[..] {
            ["image", name, size, sha256] => out.push(Fixture {
                name: name.to_string(),
                size: size.parse().unwrap(),
                sha256: sha256.to_string(),
                files: Default::default(),
            }),
            ["file", sha256, size, path] => {
                let f = out.last_mut().expect("a file line before any image line");
                f.files.insert(
                    path.to_string(),
                    (sha256.to_string(), size.parse().unwrap()),
                );
            }
            _ => {}
        }
    }
    out
}

fn fixture(name: &str) -> Fixture {
    manifest()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} is not in manifest.txt"))
}

fn sha256_hex(data: &[u8]) -> String {
    ChunkId::of(data).to_hex()
}

/// Every regular file under `root` with its digest and size.
fn digests_under(root: &Path) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(rel, (sha256_hex(&data), data.len() as u64));
            }
        }
    }
    out
}

/// The analysis of a fixture, checked against the manifest: the regions tile the image,
/// data regions start and end on blocks, every piece lies where it may, and each file's
/// pieces, read back, give the size and digest fsck.erofs gave. `None` when the analyser
/// refused a fixture it may refuse, with the error `MAY_REFUSE` gives for it.
fn analyse_fixture(f: &Fixture, image: &[u8]) -> Option<Analysis> {
    let a = match erofs::analyse(image) {
        Ok(a) => a,
        Err(e) => {
            let says = MAY_REFUSE
                .iter()
                .find(|(n, _)| *n == f.name)
                .map(|(_, w)| *w)
                .unwrap_or_else(|| panic!("{}: {e}", f.name));
            assert!(e.to_string().contains(says), "{}: {e}", f.name);
            return None;
        }
    };
    assert_eq!(a.layout.fs, FsKind::Erofs);
    let bs = 1u32 << image[1024 + 12];
    assert_eq!(a.layout.block_size, bs, "{}", f.name);
    check_tiling(&a, image.len() as u64);
    check_pieces_in_regions(&a);
    for r in &a.layout.regions {
        if matches!(r.kind, Kind::Data | Kind::Compressed) {
            let bs = u64::from(bs);
            assert!(
                r.offset % bs == 0 && r.len % bs == 0,
                "{}: unaligned {r:?}",
                f.name
            );
        }
    }
    let got: Vec<&str> = a.files.iter().map(|m| m.path.as_str()).collect();
    let want: Vec<&str> = f.files.keys().map(String::as_str).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want, "{}: file lists differ", f.name);
    for m in &a.files {
        let bytes = content(image, &m.pieces);
        let (sha256, size) = &f.files[&m.path];
        assert_eq!(
            (bytes.len() as u64, m.size),
            (*size, *size),
            "{}: {}",
            f.name,
            m.path
        );
        assert_eq!(&sha256_hex(&bytes), sha256, "{}: {}", f.name, m.path);
    }
    Some(a)
}

/// An erofs mount, undone on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `blockcast make` then `blockcast extract` give the fixture back byte for byte (every
/// fixture is whole 4 KiB blocks, so extract adds no padding), cut along the filesystem
/// when the analyser reads it; the rebuilt image, mounted by the kernel, holds the
/// manifest's files. The kernel refuses blocks larger than a page, so such fixtures may
/// fail to mount; any other must mount.
fn round_trip_fixture(f: &Fixture, analysed: bool) {
    let dir = common::tempdir();
    let img = Path::new(FIXTURES).join(&f.name);
    let (store, index, out) = (
        dir.path().join("s"),
        dir.path().join("i"),
        dir.path().join("o"),
    );
    let made = common::make(&img, &store, &index);
    assert_eq!(made["fallback"].is_null(), analysed, "{}: {made}", f.name);
    common::extract(&index, &store, &out, &[]);
    assert!(
        common::same_bytes(&out, &img),
        "{}: rebuilt image differs",
        f.name
    );

    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(&out)
        .arg(&mnt)
        .output()
        .unwrap();
    let bs = 1u64 << std::fs::read(&img).unwrap()[1024 + 12];
    // SAFETY: sysconf only reads a system value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    if !st.status.success() {
        assert!(bs > page, "{}: mount failed: {st:?}", f.name);
        return;
    }
    let m = Mounted(mnt);
    let got = digests_under(&m.0);
    let differ: Vec<_> = f
        .files
        .iter()
        .filter(|(p, d)| got.get(*p) != Some(d))
        .map(|(p, _)| p)
        .chain(got.keys().filter(|p| !f.files.contains_key(*p)))
        .collect();
    assert!(
        differ.is_empty(),
        "{}: mounted files differ: {differ:?}",
        f.name
    );
}

fn check_fixture(name: &str) -> Option<Analysis> {
    let f = fixture(name);
    let image = std::fs::read(Path::new(FIXTURES).join(name)).unwrap();
    assert_eq!(
        (image.len() as u64, sha256_hex(&image)),
        (f.size, f.sha256.clone()),
        "{name} is not the image manifest.txt describes"
    );
    let a = analyse_fixture(&f, &image);
    round_trip_fixture(&f, a.is_some());
    a
}

fn file<'a>(a: &'a Analysis, path: &str) -> &'a FileMap {
    a.files.iter().find(|m| m.path == path).unwrap()
}

/// Offsets of the compressed units a file's pieces come from.
fn units(a: &Analysis, path: &str) -> std::collections::BTreeSet<u64> {
    file(a, path)
        .pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Compressed { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

/// Whether a piece lies in data no single file owns (the packed inode's).
fn in_shared_data(a: &Analysis, p: &Piece) -> bool {
    let off = match *p {
        Piece::Plain { offset, .. } | Piece::Compressed { offset, .. } => offset,
        Piece::Zero { .. } => return false,
    };
    let regions = &a.layout.regions;
    let r = &regions[regions.partition_point(|r| r.end() <= off)];
    matches!(r.kind, Kind::Data | Kind::Compressed) && r.file.is_none()
}

fn check_fragments(a: &Analysis) {
    assert!(
        a.files
            .iter()
            .any(|m| m.pieces.iter().any(|p| in_shared_data(a, p))),
        "no file takes a piece from the packed inode"
    );
}

fn check_dedupe(a: &Analysis) {
    let (orig, copy) = (units(a, "doc/guide.txt"), units(a, "doc/guide-copy.txt"));
    assert!(
        orig.intersection(&copy).next().is_some(),
        "identical files share no unit: {orig:?} {copy:?}"
    );
}

/// Every fixture in manifest.txt has its test below.
#[test]
fn newer_erofs_utils_fixtures_are_all_tested() {
    let names: Vec<String> = manifest().into_iter().map(|f| f.name).collect();
    let tested = [
        "lz4hc-fragments.img",
        "lz4hc-all-fragments.img",
        "lz4hc-dedupe.img",
        "lz4hc-dedupe-fragments.img",
        "lz4hc-ztailpacking.img",
        "lz4hc-48bit.img",
        "lz4-48bit-fragments.img",
        "plain-48bit-chunked.img",
        "zstd.img",
        "zstd-48bit.img",
        "deflate.img",
        "b1024-plain.img",
        "b1024-lz4hc.img",
        "b16384-plain.img",
        "b16384-lz4hc.img",
        "lz4hc-metabox.img",
    ];
    assert_eq!(names, tested);
}

#[test]
fn newer_erofs_utils_fragments() {
    check_fragments(&check_fixture("lz4hc-fragments.img").unwrap());
}

#[test]
fn newer_erofs_utils_all_fragments() {
    let a = check_fixture("lz4hc-all-fragments.img").unwrap();
    // Every file ends in the packed inode; one the packed data already holds from the
    // middle on (guide-shifted.txt) keeps only its head in a pcluster of its own.
    for m in a.files.iter().filter(|m| m.size > 0) {
        assert!(
            in_shared_data(&a, m.pieces.last().unwrap()),
            "{}: {:?}",
            m.path,
            m.pieces
        );
    }
    let guide = file(&a, "doc/guide.txt");
    assert!(
        guide.pieces.iter().all(|p| in_shared_data(&a, p)),
        "{guide:?}"
    );
}

#[test]
fn newer_erofs_utils_dedupe() {
    check_dedupe(&check_fixture("lz4hc-dedupe.img").unwrap());
}

#[test]
fn newer_erofs_utils_dedupe_fragments() {
    let a = check_fixture("lz4hc-dedupe-fragments.img").unwrap();
    check_dedupe(&a);
    check_fragments(&a);
}

#[test]
fn newer_erofs_utils_ztailpacking() {
    check_fixture("lz4hc-ztailpacking.img").unwrap();
}

#[test]
fn newer_erofs_utils_48bit() {
    check_fixture("lz4hc-48bit.img").unwrap();
}

#[test]
fn newer_erofs_utils_48bit_fragments() {
    check_fragments(&check_fixture("lz4-48bit-fragments.img").unwrap());
}

#[test]
fn newer_erofs_utils_48bit_chunked() {
    check_fixture("plain-48bit-chunked.img").unwrap();
}

#[test]
fn newer_erofs_utils_zstd() {
    check_fixture("zstd.img");
}

#[test]
fn newer_erofs_utils_zstd_48bit() {
    check_fixture("zstd-48bit.img");
}

#[test]
fn newer_erofs_utils_deflate() {
    check_fixture("deflate.img");
}

#[test]
fn newer_erofs_utils_1k_blocks() {
    check_fixture("b1024-plain.img").unwrap();
    check_fixture("b1024-lz4hc.img").unwrap();
}

#[test]
fn newer_erofs_utils_16k_blocks() {
    check_fixture("b16384-plain.img").unwrap();
    check_fixture("b16384-lz4hc.img").unwrap();
}

#[test]
fn newer_erofs_utils_metabox() {
    check_fixture("lz4hc-metabox.img");
}
