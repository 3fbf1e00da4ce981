//! The erofs analyser against images made by the real mkfs.erofs (erofs-utils 1.5 on
//! Debian bookworm) and extracted by the real fsck.erofs.
//!
//! Variants left out because erofs-utils 1.5 lacks them: `-Efragments`, `-Ededupe`,
//! `-Eall-fragments`, `-E48bit`, `-zdeflate`, `-zzstd`, `-b` (block sizes other than
//! 4096) and `-zlzma` (the Debian build has no liblzma support: "Available compressors
//! are: lz4hc, lz4"). `newer_erofs_utils` covers them when a newer build is at hand.

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
