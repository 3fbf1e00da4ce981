//! The squashfs analyser against images made by the real mksquashfs and extracted by the
//! real unsquashfs, and against broken and hostile images.

mod common;
use common::layout::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use blockcast::layout::{squashfs, Algorithm, Analysis, FsKind, Kind, Piece};
use tempfile::TempDir;

const REPRODUCIBLE: [&str; 8] = [
    "-mkfs-time",
    "0",
    "-all-time",
    "0",
    "-all-root",
    "-noappend",
    "-quiet",
    "-no-progress",
];

/// The generated tree (version 1), made once per test run.
fn tree() -> &'static Path {
    static TREE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &TREE
        .get_or_init(|| {
            let dir = common::tempdir();
            let root = dir.path().join("tree");
            gen_tree(&root, 1);
            (dir, root)
        })
        .1
}

/// The generated tree plus what it lacks: holes, hard links, duplicate files, files of
/// whole blocks, incompressible blocks, a directory too big for one metadata block, deep
/// nesting and extended attributes.
fn extra_tree() -> &'static Path {
    static TREE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &TREE
        .get_or_init(|| {
            let dir = common::tempdir();
            let root = dir.path().join("tree");
            gen_tree(&root, 1);
            let x = root.join("extra");
            std::fs::create_dir(&x).unwrap();
            let text: Vec<u8> = (0..600_000u32)
                .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
                .take(3 << 20)
                .collect();
            let mut sparse = common::noise(1, 100_000);
            sparse.resize(1_700_000, 0);
            sparse.extend_from_slice(&common::noise(2, 50_000));
            sparse.resize(2_500_000, 0);
            std::fs::write(x.join("sparse.bin"), &sparse).unwrap();
            let mut mixed = common::noise(3, 1 << 20);
            mixed.extend_from_slice(&text[..2 << 20]);
            mixed.extend_from_slice(&common::noise(4, 300_001));
            std::fs::write(x.join("mixed.bin"), &mixed).unwrap();
            std::fs::write(x.join("whole-blocks.bin"), &text[..1 << 20]).unwrap();
            std::fs::write(x.join("hard1"), &text[1000..400_000]).unwrap();
            std::fs::hard_link(x.join("hard1"), x.join("hard2")).unwrap();
            std::fs::write(x.join("dup1"), &text[5..300_000]).unwrap();
            std::fs::write(x.join("dup2"), &text[5..300_000]).unwrap();
            std::fs::write(x.join("small-dup1"), b"the same small tail\n").unwrap();
            std::fs::write(x.join("small-dup2"), b"the same small tail\n").unwrap();
            std::fs::write(x.join("empty"), b"").unwrap();
            std::fs::write(x.join("name with spaces & ünïcode"), b"odd name\n").unwrap();
            let many = x.join("many");
            std::fs::create_dir(&many).unwrap();
            for i in 0..1500 {
                let name = format!("a-rather-long-file-name-to-fill-directory-blocks-{i:05}");
                std::fs::write(many.join(name), format!("file {i}\n").repeat(i % 7)).unwrap();
            }
            let mut deep = x.clone();
            for i in 0..60 {
                deep = deep.join(format!("d{i}"));
            }
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("bottom"), b"deep down\n").unwrap();
            let attrs = x.join("with-xattrs");
            std::fs::write(&attrs, &text[..70_000]).unwrap();
            set_xattr(&attrs, "user.blockcast", &[b'v'; 300]);
            set_xattr(&x.join("many"), "user.dir", b"value");
            (dir, root)
        })
        .1
}

struct Built {
    _dir: TempDir,
    image: Vec<u8>,
    path: PathBuf,
}

fn mksquashfs(tree: &Path, opts: &[&str]) -> Built {
    let dir = common::tempdir();
    let path = dir.path().join("image.sqfs");
    run(Command::new("mksquashfs")
        .arg(tree)
        .arg(&path)
        .args(REPRODUCIBLE)
        .args(opts));
    Built {
        image: std::fs::read(&path).unwrap(),
        path,
        _dir: dir,
    }
}

fn unsquashfs(built: &Built) -> PathBuf {
    let out = built._dir.path().join("extracted");
    run(Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-quiet")
        .arg("-d")
        .arg(&out)
        .arg(&built.path));
    out
}

fn superblock_u64(image: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
}

/// Builds with `opts`, analyses, and checks the analysis against unsquashfs.
fn check(tree: &Path, opts: &[&str], algorithm: Algorithm, block_size: u32) -> Analysis {
    let built = mksquashfs(tree, opts);
    let image = &built.image;
    let a = squashfs::analyse(image).unwrap_or_else(|e| panic!("{opts:?}: {e}"));
    assert_eq!(a.layout.fs, FsKind::Squashfs);
    assert_eq!(a.layout.block_size, block_size);
    check_tiling(&a, image.len() as u64);
    check_files(&a, image, &unsquashfs(&built));
    check_units(&a, image, algorithm);

    let bytes_used = superblock_u64(image, 40);
    let last = a.layout.regions.last().unwrap();
    if bytes_used < image.len() as u64 {
        assert_eq!(image.len() % 4096, 0, "padded to 4 KiB");
        assert_eq!(
            (last.offset, last.kind),
            (bytes_used, Kind::Free),
            "the padding is free"
        );
    } else {
        assert_ne!(last.kind, Kind::Free);
    }
    assert!(
        a.layout.regions.iter().all(|r| r.kind != Kind::Data),
        "squashfs has no plain data regions"
    );
    a
}

/// Each unit a piece names is one `Compressed` region, decompresses to exactly
/// `unit_size` bytes, and names its file unless shared.
fn check_units(a: &Analysis, image: &[u8], algorithm: Algorithm) {
    let regions: std::collections::HashMap<u64, _> =
        a.layout.regions.iter().map(|r| (r.offset, r)).collect();
    let mut checked = std::collections::HashSet::new();
    for f in &a.files {
        for p in &f.pieces {
            let (offset, len) = match *p {
                Piece::Compressed {
                    offset,
                    len,
                    algorithm: alg,
                    unit_size,
                    skip,
                    take,
                } => {
                    assert_eq!(alg, algorithm, "{}", f.path);
                    if checked.insert((offset, unit_size)) {
                        let unit = &image[offset as usize..(offset + len) as usize];
                        let out = decompress(alg, unit, unit_size as usize);
                        assert_eq!(out.len() as u64, unit_size, "{}: unit size", f.path);
                    }
                    assert!(skip + take <= unit_size);
                    (offset, len)
                }
                Piece::Plain { offset, len } => (offset, len),
                Piece::Zero { .. } => continue,
            };
            // A plain piece of a stored fragment starts inside its unit.
            let r = regions.get(&offset).copied().or_else(|| {
                a.layout
                    .regions
                    .iter()
                    .find(|r| r.offset <= offset && offset + len <= r.end())
            });
            let r = r.unwrap_or_else(|| panic!("{}: no region for {p:?}", f.path));
            assert_eq!(r.kind, Kind::Compressed, "{}: {r:?}", f.path);
            assert!(offset + len <= r.end());
            assert!(
                r.file.is_none() || r.file == Some(f.inode),
                "{}: {r:?}",
                f.path
            );
        }
    }
}

fn no_xattrs<'a>(opts: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-no-xattrs"];
    v.extend_from_slice(opts);
    v
}

#[test]
fn zstd() {
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd"]),
        Algorithm::Zstd,
        131072,
    );
}

#[test]
fn gzip() {
    check(
        tree(),
        &no_xattrs(&["-comp", "gzip"]),
        Algorithm::Gzip,
        131072,
    );
}

#[test]
fn xz() {
    check(tree(), &no_xattrs(&["-comp", "xz"]), Algorithm::Xz, 131072);
}

#[test]
fn lz4() {
    check(
        tree(),
        &no_xattrs(&["-comp", "lz4"]),
        Algorithm::Lz4,
        131072,
    );
}

#[test]
fn lz4_high_compression() {
    check(
        tree(),
        &no_xattrs(&["-comp", "lz4", "-Xhc"]),
        Algorithm::Lz4,
        131072,
    );
}

#[test]
fn no_fragments() {
    let a = check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-no-fragments"]),
        Algorithm::Zstd,
        131072,
    );
    let shared = a
        .layout
        .regions
        .iter()
        .filter(|r| r.kind == Kind::Compressed && r.file.is_none());
    assert_eq!(shared.count(), 0, "no fragment blocks");
}

#[test]
fn always_use_fragments() {
    let a = check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-always-use-fragments"]),
        Algorithm::Zstd,
        131072,
    );
    // A file of more than a block keeps its tail in a fragment block, shared.
    let log = a
        .files
        .iter()
        .find(|f| f.path == "var/log/install.log")
        .unwrap();
    assert!(log.size > 131072 && log.size % 131072 != 0);
    let Some(&Piece::Compressed { offset, take, .. }) = log.pieces.last() else {
        panic!("{:?}", log.pieces)
    };
    assert_eq!(take, log.size % 131072);
    let unit = a
        .layout
        .regions
        .iter()
        .find(|r| r.offset == offset)
        .unwrap();
    assert_eq!((unit.kind, unit.file), (Kind::Compressed, None));
}

#[test]
fn nopad() {
    let built = mksquashfs(tree(), &no_xattrs(&["-comp", "zstd", "-nopad"]));
    assert_ne!(
        built.image.len() % 4096,
        0,
        "this tree does not happen to end aligned"
    );
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-nopad"]),
        Algorithm::Zstd,
        131072,
    );
}

#[test]
fn block_size_4k() {
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-b", "4096"]),
        Algorithm::Zstd,
        4096,
    );
}

#[test]
fn block_size_1m() {
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-b", "1M"]),
        Algorithm::Zstd,
        1 << 20,
    );
}

#[test]
fn uncompressed_metadata() {
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-noI", "-noD"]),
        Algorithm::Zstd,
        131072,
    );
}

#[test]
fn all_uncompressed() {
    let a = check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-noF", "-noD", "-noI"]),
        Algorithm::Zstd,
        131072,
    );
    let compressed = a
        .files
        .iter()
        .flat_map(|f| &f.pieces)
        .filter(|p| matches!(p, Piece::Compressed { .. }))
        .count();
    assert_eq!(compressed, 0, "every piece is plain");
}

#[test]
fn no_exports() {
    check(
        tree(),
        &no_xattrs(&["-comp", "zstd", "-no-exports"]),
        Algorithm::Zstd,
        131072,
    );
}

#[test]
fn extras_zstd_with_xattrs() {
    let a = check(extra_tree(), &["-comp", "zstd"], Algorithm::Zstd, 131072);
    let built = mksquashfs(extra_tree(), &["-comp", "zstd"]);
    assert_ne!(
        superblock_u64(&built.image, 56),
        u64::MAX,
        "xattrs are stored"
    );

    let file = |p: &str| a.files.iter().find(|f| f.path == p).unwrap();
    let sparse = file("extra/sparse.bin");
    assert!(sparse
        .pieces
        .iter()
        .any(|p| matches!(p, Piece::Zero { len } if *len >= 131072)));
    let mixed = file("extra/mixed.bin");
    assert!(
        mixed
            .pieces
            .iter()
            .any(|p| matches!(p, Piece::Plain { .. })),
        "noise is stored"
    );
    assert!(mixed
        .pieces
        .iter()
        .any(|p| matches!(p, Piece::Compressed { .. })));
    let (h1, h2) = (file("extra/hard1"), file("extra/hard2"));
    assert_eq!((h1.inode, &h1.pieces), (h2.inode, &h2.pieces), "hard links");
    let (d1, d2) = (file("extra/dup1"), file("extra/dup2"));
    assert_ne!(d1.inode, d2.inode);
    assert_eq!(d1.pieces, d2.pieces, "duplicates share blocks");
    let Piece::Compressed { offset, .. } = d1.pieces[0] else {
        panic!("{:?}", d1.pieces[0])
    };
    let shared = a
        .layout
        .regions
        .iter()
        .find(|r| r.offset == offset)
        .unwrap();
    assert_eq!(shared.file, None, "a block of two files belongs to neither");
    assert!(file("extra/whole-blocks.bin").pieces.len() == 8);
    assert!(a.files.iter().any(|f| f.path.ends_with("/d59/bottom")));
    assert_eq!(
        a.files
            .iter()
            .filter(|f| f.path.starts_with("extra/many/"))
            .count(),
        1500
    );
}

#[test]
fn extras_gzip_4k() {
    check(
        extra_tree(),
        &["-comp", "gzip", "-b", "4096"],
        Algorithm::Gzip,
        4096,
    );
}

#[test]
fn xz_always_use_fragments() {
    // (Not the extra tree: its 1500 tails would make check_files decode one xz fragment
    // block 1500 times with lzma-rs.)
    check(
        tree(),
        &["-comp", "xz", "-Xdict-size", "50%", "-always-use-fragments"],
        Algorithm::Xz,
        131072,
    );
}

#[test]
fn extras_lz4_all_uncompressed() {
    let opts = ["-comp", "lz4", "-noI", "-noD", "-noF", "-noX"];
    check(extra_tree(), &opts, Algorithm::Lz4, 131072);
}

#[test]
fn extras_zstd_1m_no_fragments_nopad() {
    let opts = [
        "-comp",
        "zstd",
        "-Xcompression-level",
        "19",
        "-b",
        "1M",
        "-no-fragments",
        "-nopad",
    ];
    check(extra_tree(), &opts, Algorithm::Zstd, 1 << 20);
}

fn refused(opts: &[&str], why: &str) {
    let built = mksquashfs(tree(), &no_xattrs(opts));
    let e = squashfs::analyse(&built.image).expect_err("an image the analyser cannot describe");
    assert!(e.reason.contains(why), "{opts:?}: {e}");
}

#[test]
fn unsupported_compression_is_an_error() {
    refused(&["-comp", "lzo"], "lzo");
    refused(&["-comp", "lzma"], "lzma");
    refused(&["-comp", "xz", "-Xbcj", "x86"], "BCJ");
}

/// The zstd image of the generated tree, built once.
fn sample() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| mksquashfs(tree(), &no_xattrs(&["-comp", "zstd"])).image)
}

/// The same with every table stored uncompressed, so that corruption reaches the parser.
fn sample_uncompressed() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        mksquashfs(
            tree(),
            &no_xattrs(&["-comp", "zstd", "-noI", "-noD", "-noF"]),
        )
        .image
    })
}

#[test]
fn truncated_images_are_errors() {
    for image in [sample(), sample_uncompressed()] {
        let used = superblock_u64(image, 40) as usize;
        let mut cuts = vec![0, 1, 4, 40, 95, 96, 97, 4096, used / 2, used - 2, used - 1];
        for at in [48, 64, 72, 80, 88] {
            let t = superblock_u64(image, at) as usize;
            cuts.extend([t, t + 1, t + 7, t + 100].into_iter().filter(|&c| c < used));
        }
        for cut in cuts {
            assert!(squashfs::analyse(&image[..cut]).is_err(), "cut at {cut}");
            // The same with the superblock claiming the shorter size.
            if cut >= 96 {
                let mut short = image[..cut].to_vec();
                short[40..48].copy_from_slice(&(cut as u64).to_le_bytes());
                assert!(
                    squashfs::analyse(&short).is_err(),
                    "cut at {cut}, size patched"
                );
            }
        }
        // Cutting only padding is fine.
        assert!(squashfs::analyse(&image[..used]).is_ok());
    }
}

#[test]
fn garbage_is_an_error() {
    for (seed, len) in [(1, 0), (2, 95), (3, 96), (4, 4096), (5, 1 << 20)] {
        let mut junk = common::noise(seed, len);
        assert!(squashfs::analyse(&junk).is_err());
        if len >= 96 {
            // A valid superblock over junk.
            junk[..96].copy_from_slice(&sample()[..96]);
            junk[40..48].copy_from_slice(&(len as u64).to_le_bytes());
            assert!(squashfs::analyse(&junk).is_err(), "{len} bytes");
        }
    }
}

#[test]
fn corrupted_table_pointers_are_errors() {
    for image in [sample(), sample_uncompressed()] {
        let len = superblock_u64(image, 40);
        let starts: Vec<u64> = [48, 64, 72, 80, 88]
            .iter()
            .map(|&at| superblock_u64(image, at))
            .collect();
        for at in [32usize, 48, 56, 64, 72, 80, 88] {
            let mut values = vec![
                0,
                1,
                95,
                96,
                97,
                len - 1,
                len,
                len + 1,
                u64::MAX,
                u64::MAX - 1,
                1 << 40,
            ];
            values.extend(starts.iter().flat_map(|&s| [s, s + 2, s.saturating_sub(2)]));
            for v in values {
                let mut bad = image.to_vec();
                bad[at..at + 8].copy_from_slice(&v.to_le_bytes());
                if bad == image {
                    continue;
                }
                let result = squashfs::analyse(&bad);
                // Absent optional tables are legal; everything else must be refused.
                let absent_ok = v == u64::MAX && matches!(at, 56 | 88);
                if !absent_ok {
                    assert!(result.is_err(), "pointer at {at} set to {v} was accepted");
                }
            }
        }
    }
}

/// Deterministic mutations of the metadata area: never a panic, and the analysis, when
/// there is one, still tiles the image.
#[test]
fn corrupted_metadata_does_not_panic() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for image in [sample(), sample_uncompressed()] {
        let from = superblock_u64(image, 64) as usize;
        let to = superblock_u64(image, 40) as usize;
        for _ in 0..1500 {
            let mut bad = image.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = from + (next() as usize) % (to - from);
                bad[at] = match next() % 3 {
                    0 => bad[at] ^ (1 << (next() % 8)),
                    1 => 0xff,
                    _ => next() as u8,
                };
            }
            if let Ok(a) = squashfs::analyse(&bad) {
                check_tiling(&a, bad.len() as u64);
            }
        }
    }
}
