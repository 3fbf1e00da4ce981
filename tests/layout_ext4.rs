//! The ext4 analyser against images made by the real mkfs.ext4 -d and read back by the
//! real debugfs, in the variants a build system may produce; and against broken images.

mod common;

use common::layout::*;
use common::noise;

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use blockcast::layout::{ext4, Analysis, FsKind, Kind, Piece};

const UUID: &str = "6b1f3c2e-0d5a-4e1b-9a57-3c9e8f1d2a40";

/// The host's /etc/mke2fs.conf must not matter: the features of a plain `mkfs.ext4` on
/// Debian bookworm, spelled out.
const MKE2FS_CONF: &str = "[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("blockcast-ext4")
        .tempdir()
        .expect("temp dir")
}

fn write_at(path: &Path, at: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
}

/// The generated tree plus what exercises ext4's corners: holes, many extents, deep
/// block maps, inline-sized files, a big directory, a hard link, a slow symlink.
fn tree(root: &Path) {
    gen_tree(root, 1);
    let x = root.join("x");
    std::fs::create_dir(&x).unwrap();
    // Holes between data, and a tail after the last hole.
    let sparse = x.join("sparse.bin");
    write_at(&sparse, 0, &noise(1, 5000));
    write_at(&sparse, 150 * 1024, &noise(2, 2048));
    write_at(&sparse, 300 * 1024 - 1000, &noise(3, 1000));
    // One data block in every other 4 KiB: more extents than fit in the inode.
    let frag = x.join("frag.bin");
    for i in 0..40u64 {
        write_at(&frag, i * 8192, &noise(10 + i, 4096));
    }
    // Past the double-indirect range of 1 KiB blocks, far into a hole.
    write_at(&x.join("far.bin"), 70 << 20, &noise(4, 3000));
    std::fs::write(x.join("zeros.bin"), vec![0u8; 64 * 1024]).unwrap();
    std::fs::write(x.join("big.bin"), noise(5, 1536 * 1024 + 77)).unwrap();
    std::fs::write(x.join("sixty.txt"), noise(6, 60)).unwrap();
    std::fs::write(x.join("sixty-one.txt"), noise(7, 61)).unwrap();
    std::fs::write(x.join("hundred.txt"), noise(8, 100)).unwrap();
    std::fs::hard_link(x.join("big.bin"), x.join("big-link.bin")).unwrap();
    std::os::unix::fs::symlink("a/".repeat(50), x.join("long-link")).unwrap();
    let many = x.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..400u64 {
        std::fs::write(
            many.join(format!("entry-with-a-long-name-{i:04}")),
            noise(100 + i, (i % 7 * 100) as usize),
        )
        .unwrap();
    }
}

struct Built {
    _dir: tempfile::TempDir,
    img: PathBuf,
    image: Vec<u8>,
    extracted: PathBuf,
}

fn mkfs(args: &[&str], after: &[&[&str]]) -> Built {
    let dir = tempdir();
    let root = dir.path().join("tree");
    tree(&root);
    let conf = dir.path().join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).unwrap();
    let img = dir.path().join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-T", "default", "-U", UUID, "-E"])
        .arg(format!(
            "hash_seed={UUID},root_owner=0:0,lazy_itable_init=0"
        ))
        .args(args)
        .arg("-d")
        .arg(&root)
        .arg(&img));
    for cmd in after {
        let out = Command::new(cmd[0])
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args(&cmd[1..])
            .arg(&img)
            .output()
            .expect("e2fsprogs tool");
        // e2fsck: 1 means it changed the filesystem, as -D does.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let extracted = dir.path().join("out");
    std::fs::create_dir(&extracted).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", extracted.display()))
        .arg(&img));
    let image = std::fs::read(&img).unwrap();
    Built {
        _dir: dir,
        img,
        image,
        extracted,
    }
}

/// debugfs commands run in one go; the output of each, by command.
fn debugfs(img: &Path, cmds: &[String]) -> HashMap<String, String> {
    let file = img.with_extension("cmds");
    std::fs::write(&file, cmds.join("\n") + "\n").unwrap();
    let out = Command::new("debugfs")
        .arg("-f")
        .arg(&file)
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut by_cmd = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("debugfs: ") {
            current = Some(cmd.to_string());
            by_cmd.insert(cmd.to_string(), String::new());
        } else if let Some(c) = &current {
            let s = by_cmd.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    by_cmd
}

/// Blocks of `debugfs stat` output: (data blocks, extent tree and indirect blocks).
fn block_list(stat: &str) -> (Vec<u64>, Vec<u64>) {
    let (mut data, mut meta) = (Vec::new(), Vec::new());
    let Some(at) = stat.find("EXTENTS:\n").or_else(|| stat.find("BLOCKS:\n")) else {
        return (data, meta);
    };
    let list = &stat[at..];
    let list = &list[list.find('\n').unwrap() + 1..];
    let list = list.split("TOTAL:").next().unwrap().replace('\n', "");
    for item in list.split(", ").filter(|s| !s.trim().is_empty()) {
        let (label, range) = item.trim().split_once("):").expect(item);
        let (from, to) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
            None => (range.parse().unwrap(), range.parse().unwrap()),
        };
        let is_data = label[1..].starts_with(|c: char| c.is_ascii_digit());
        (if is_data { &mut data } else { &mut meta }).extend(from..=to);
    }
    (data, meta)
}

fn region_at(a: &Analysis, offset: u64) -> &blockcast::layout::Region {
    let i = a.layout.regions.partition_point(|r| r.end() <= offset);
    &a.layout.regions[i]
}

/// The checks every variant passes.
fn check(b: &Built, block_size: u32) -> Analysis {
    let a = ext4::analyse(&b.image).unwrap_or_else(|e| panic!("analyse: {e}"));
    assert_eq!(a.layout.fs, FsKind::Ext4);
    assert_eq!(a.layout.block_size, block_size);
    check_tiling(&a, b.image.len() as u64);
    check_files(&a, &b.image, &b.extracted);
    // The same through the dispatcher: no fallback in between.
    let again = blockcast::layout::analyse(&b.image).expect("dispatch");
    assert_eq!(again.layout, a.layout);

    // Every block debugfs lists for a file is data of that file, or metadata when it is
    // an extent tree or indirect block; the analysis gives the file no other blocks. The
    // journal's blocks are all metadata.
    let bs = u64::from(block_size);
    let mut cmds: Vec<String> = a
        .files
        .iter()
        .map(|f| format!("stat \"/{}\"", f.path))
        .collect();
    cmds.push("stat <8>".into());
    let listed = debugfs(&b.img, &cmds);
    let mut owned: HashMap<u64, u64> = HashMap::new();
    for r in &a.layout.regions {
        if let Some(f) = r.file {
            *owned.entry(f).or_default() += r.len / bs;
        }
    }
    let mut data_blocks = 0;
    for f in &a.files {
        let (data, meta) = block_list(&listed[&format!("stat \"/{}\"", f.path)]);
        for &blk in &data {
            let r = region_at(&a, blk * bs);
            assert_eq!(r.kind, Kind::Data, "{}: block {blk} in {r:?}", f.path);
            assert_eq!(r.file, Some(f.inode), "{}: block {blk} in {r:?}", f.path);
        }
        for &blk in &meta {
            let r = region_at(&a, blk * bs);
            assert_eq!(r.kind, Kind::Metadata, "{}: block {blk} in {r:?}", f.path);
        }
        assert_eq!(
            owned.get(&f.inode).copied().unwrap_or(0),
            data.len() as u64,
            "{}: blocks",
            f.path
        );
        data_blocks += data.len();
    }
    assert!(data_blocks > 0);
    let (data, meta) = block_list(&listed["stat <8>"]);
    for blk in data.into_iter().chain(meta) {
        assert_eq!(
            region_at(&a, blk * bs).kind,
            Kind::Metadata,
            "journal block {blk}"
        );
    }
    // Data regions are whole blocks; free space is zeros (tile() checks that).
    for r in &a.layout.regions {
        if r.kind == Kind::Data {
            assert!(r.offset % bs == 0 && r.len % bs == 0, "{r:?}");
        }
    }
    a
}

/// debugfs 1.47 dumps an inline file's inline bytes whatever its size (60 bytes for an
/// empty file); the kernel reads i_size bytes, zeros past the inline data (mkfs -d
/// leaves an all-zero file inline with its full size). Cut or extend to i_size.
/// Returns how many files it changed.
fn fit_inline_dumps(img: &Path, extracted: &Path) -> usize {
    let mut paths = Vec::new();
    let mut stack = vec![extracted.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                paths.push(e.path());
            }
        }
    }
    let cmds: Vec<String> = paths
        .iter()
        .map(|p| format!("stat \"/{}\"", p.strip_prefix(extracted).unwrap().display()))
        .collect();
    let stats = debugfs(img, &cmds);
    let mut fixed = 0;
    for (path, cmd) in paths.iter().zip(&cmds) {
        let size: u64 = stats[cmd]
            .split("Size: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{cmd}: {}", stats[cmd]));
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        if f.metadata().unwrap().len() != size {
            f.set_len(size).unwrap();
            fixed += 1;
        }
    }
    fixed
}

fn file<'a>(a: &'a Analysis, path: &str) -> &'a blockcast::layout::FileMap {
    a.files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not in the analysis"))
}

fn zero_bytes(f: &blockcast::layout::FileMap) -> u64 {
    f.pieces
        .iter()
        .map(|p| match p {
            Piece::Zero { len } => *len,
            _ => 0,
        })
        .sum()
}

#[test]
fn default_ext4_with_journal_htree_and_unwritten_extents() {
    // Fill the holes of sparse.bin with unwritten extents, index the directories.
    let b = mkfs(
        &[],
        &[
            &["debugfs", "-w", "-R", "fallocate /x/sparse.bin 0 74"],
            &["e2fsck", "-f", "-y", "-D"],
        ],
    );
    let htree = debugfs(&b.img, &["htree /x/many".into()]);
    assert!(
        htree["htree /x/many"].contains("Root node dump"),
        "{htree:?}"
    );
    let a = check(&b, 4096);
    let sparse = file(&a, "x/sparse.bin");
    // All 75 blocks belong to the file now, yet most of it reads as zeros.
    let owned: u64 = a
        .layout
        .regions
        .iter()
        .filter(|r| r.file == Some(sparse.inode))
        .map(|r| r.len)
        .sum();
    assert_eq!(owned, 75 * 4096);
    assert!(zero_bytes(sparse) > 200 * 1024);
    let hard = file(&a, "x/big-link.bin");
    assert_eq!(hard.inode, file(&a, "x/big.bin").inode);
    assert_eq!(hard.pieces, file(&a, "x/big.bin").pieces);
}

#[test]
fn one_kib_blocks_without_journal() {
    let b = mkfs(&["-b", "1024", "-O", "^has_journal"], &[]);
    let a = check(&b, 1024);
    assert!(zero_bytes(file(&a, "x/far.bin")) >= 70 << 20);
}

#[test]
fn two_kib_blocks_and_an_unreachable_file() {
    // The entry goes, the inode and its blocks stay: data of no known path.
    let b = mkfs(
        &["-b", "2048"],
        &[&["debugfs", "-w", "-R", "unlink /var/log/install.log"]],
    );
    let a = check(&b, 2048);
    assert!(a.files.iter().all(|f| f.path != "var/log/install.log"));
    let nameless: u64 = a
        .layout
        .regions
        .iter()
        .filter(|r| r.kind == Kind::Data && r.file.is_none())
        .map(|r| r.len)
        .sum();
    assert_eq!(nameless, 100 * 2048);
}

#[test]
fn block_maps_instead_of_extents() {
    let b = mkfs(&["-O", "^extent,^64bit"], &[]);
    check(&b, 4096);
}

#[test]
fn block_maps_with_one_kib_blocks_reach_triple_indirect() {
    // ext2 as it was: no journal, no extents, no flex_bg, no checksums.
    let b = mkfs(
        &[
            "-b",
            "1024",
            "-O",
            "^has_journal,^extent,^64bit,^flex_bg,^metadata_csum,^huge_file,^dir_nlink,^extra_isize",
        ],
        &[],
    );
    let a = check(&b, 1024);
    let far = file(&a, "x/far.bin");
    assert_eq!(far.size, (70 << 20) + 3000);
}

#[test]
fn inline_data() {
    let b = mkfs(&["-O", "inline_data"], &[]);
    assert!(fit_inline_dumps(&b.img, &b.extracted) > 0);
    let a = check(&b, 4096);
    assert!(matches!(
        file(&a, "x/zeros.bin").pieces[..],
        [Piece::Plain { len: 60, .. }, Piece::Zero { len: 65476 }]
    ));
    // Small files live in the inode table: their pieces point into metadata.
    for path in [
        "x/sixty.txt",
        "x/sixty-one.txt",
        "x/hundred.txt",
        "etc/hostname",
    ] {
        let f = file(&a, path);
        assert!(!f.pieces.is_empty(), "{path}");
        for p in &f.pieces {
            let Piece::Plain { offset, .. } = *p else {
                panic!("{path}: {p:?}")
            };
            assert_eq!(region_at(&a, offset).kind, Kind::Metadata, "{path}");
        }
        assert!(
            a.layout.regions.iter().all(|r| r.file != Some(f.inode)),
            "{path} has data blocks"
        );
    }
    assert_eq!(file(&a, "x/hundred.txt").pieces.len(), 2);
}

#[test]
fn no_flex_bg_several_groups() {
    let b = mkfs(&["-O", "^flex_bg", "-g", "2048"], &[]);
    check(&b, 4096);
}

#[test]
fn small_inodes() {
    let b = mkfs(&["-I", "128"], &[]);
    check(&b, 4096);
}

#[test]
fn meta_block_groups() {
    // 16 descriptors per block, 192 groups: descriptors spread over 12 meta groups.
    let b = mkfs(
        &["-b", "1024", "-g", "256", "-O", "meta_bg,^resize_inode"],
        &[],
    );
    check(&b, 1024);
}

#[test]
fn sparse_super2_mmp_and_many_groups() {
    let b = mkfs(&["-g", "1024", "-O", "sparse_super2,mmp"], &[]);
    check(&b, 4096);
}

#[test]
fn bigalloc() {
    let b = mkfs(&["-O", "bigalloc", "-C", "16384"], &[]);
    check(&b, 4096);
}

// --- broken images ----------------------------------------------------------------

/// A small valid image to break.
fn small() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempdir();
    let root = dir.path().join("tree");
    gen_tree(&root, 1);
    let conf = dir.path().join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).unwrap();
    let img = dir.path().join("small.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args([
            "-q", "-F", "-T", "default", "-U", UUID, "-b", "1024", "-g", "2048", "-N", "512",
        ])
        .args(["-O", "^has_journal,inline_data", "-E"])
        .arg(format!(
            "hash_seed={UUID},root_owner=0:0,lazy_itable_init=0"
        ))
        .arg("-d")
        .arg(&root)
        .arg(&img));
    let image = std::fs::read(&img).unwrap();
    ext4::analyse(&image).expect("the unbroken image");
    (dir, image)
}

#[test]
fn truncated_images_are_errors() {
    let (_dir, image) = small();
    let n = image.len();
    for cut in [
        0,
        100,
        1024,
        1024 + 0x3A,
        2048,
        4096,
        8192,
        n / 3,
        n / 2,
        n - 1024,
        n - 1,
    ] {
        let e = ext4::analyse(&image[..cut]).expect_err(&format!("cut at {cut}"));
        assert_eq!(e.fs, "ext4");
    }
}

#[test]
fn garbage_is_an_error() {
    for seed in 1..20u64 {
        let mut junk = noise(seed, 1 << 20);
        assert!(ext4::analyse(&junk).is_err());
        // With the magic in place, the rest still garbage.
        junk[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert!(ext4::analyse(&junk).is_err(), "seed {seed}");
    }
}

fn set_u32(image: &mut [u8], at: usize, v: u32) {
    image[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn bad_superblock_fields_are_errors() {
    let (_dir, image) = small();
    let sb = 1024;
    let cases: &[(usize, u32, &str)] = &[
        (0x18, 7, "block size"),
        (0x28, 0, "inodes per group"),
        (0x20, 0, "blocks per group"),
        (0x4, u32::MAX, "do not fit"),
        (0x60, 0x1 | 0x2 | 0x8000, "not understood"),
        (0x60, 0x4 | 0x2 | 0x8000, "not understood"),
        (0x54, 3, "first inode"),
    ];
    for &(off, v, want) in cases {
        let mut img = image.clone();
        set_u32(&mut img, sb + off, v);
        let e = ext4::analyse(&img).expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
    }
    let mut img = image.clone();
    img[sb + 0x58..sb + 0x5A].copy_from_slice(&100u16.to_le_bytes());
    assert!(ext4::analyse(&img).is_err());
}

#[test]
fn corrupt_descriptors_and_inodes_are_errors_not_panics() {
    let (_dir, image) = small();
    let good = ext4::analyse(&image).unwrap();
    // Group 0's descriptor (1 KiB blocks: block 2): inode table far away, then onto
    // the superblock.
    for (off, v) in [(8, u32::MAX), (8, 1), (0, 1), (4, 0)] {
        let mut img = image.clone();
        set_u32(&mut img, 2048 + off, v);
        assert!(ext4::analyse(&img).is_err(), "descriptor field {off} = {v}");
    }
    // The root inode overwritten with noise.
    let table = u32::from_le_bytes(image[2048 + 8..2048 + 12].try_into().unwrap()) as usize;
    let root = table * 1024 + 256;
    for seed in 0..50 {
        let mut img = image.clone();
        img[root..root + 256].copy_from_slice(&noise(seed, 256));
        if let Ok(a) = ext4::analyse(&img) {
            check_tiling(&a, img.len() as u64);
        }
    }
    // Random damage anywhere in the metadata: never a panic, and whatever comes back
    // still tiles the image.
    let meta: Vec<_> = good
        .layout
        .regions
        .iter()
        .filter(|r| r.kind == Kind::Metadata)
        .collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..400 {
        let mut img = image.clone();
        for _ in 0..1 + next() % 8 {
            let r = meta[(next() % meta.len() as u64) as usize];
            let at = (r.offset + next() % r.len) as usize;
            img[at] = next() as u8;
        }
        let result = std::panic::catch_unwind(|| ext4::analyse(&img));
        match result {
            Err(_) => panic!("round {round}: the analyser panicked"),
            Ok(Ok(a)) => check_tiling(&a, img.len() as u64),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn hostile_extent_trees_are_errors() {
    let (_dir, image) = small();
    let good = ext4::analyse(&image).unwrap();
    // The root directory's i_block (inode 2 of group 0's table; 256-byte inodes).
    let table = u32::from_le_bytes(image[2048 + 8..2048 + 12].try_into().unwrap()) as usize;
    let i_block = table * 1024 + 256 + 0x28;
    let free = good
        .layout
        .regions
        .iter()
        .find(|r| r.kind == Kind::Free && r.len >= 2048)
        .expect("free space")
        .offset as usize;
    let spare = free / 1024;
    let node = |depth: u16, child: u32| {
        let mut n = Vec::new();
        for v in [0xF30Au16, 1, 4, depth] {
            n.extend_from_slice(&v.to_le_bytes());
        }
        n.extend_from_slice(&[0; 4]);
        n.extend_from_slice(&0u32.to_le_bytes());
        n.extend_from_slice(&child.to_le_bytes());
        n.extend_from_slice(&[0; 4]);
        n
    };
    let s = spare as u32;
    // (what, root depth, child block, what to write at the spare block, the error)
    type Case<'a> = (&'a str, u16, u32, Option<Vec<u8>>, &'a str);
    let cases: Vec<Case> = vec![
        ("onto the superblock", 1, 1, None, "claimed twice"),
        ("past the end", 1, u32::MAX, None, "outside the filesystem"),
        ("too deep", 6, s, None, "depth 6"),
        ("into a loop", 2, s, Some(node(1, s)), "claimed twice"),
        (
            "into garbage",
            1,
            s,
            Some(noise(9, 1024)),
            "no extent header",
        ),
        ("with a wrong depth", 2, s, Some(node(0, s + 1)), "depth 0"),
    ];
    for (what, depth, child, at_spare, want) in cases {
        let mut img = image.clone();
        let root = node(depth, child);
        img[i_block..i_block + root.len()].copy_from_slice(&root);
        // Inode flags: extents.
        let flags = i_block - 0x28 + 0x20;
        img[flags..flags + 4].copy_from_slice(&0x80000u32.to_le_bytes());
        if let Some(b) = at_spare {
            img[spare * 1024..spare * 1024 + b.len()].copy_from_slice(&b);
        }
        let e = ext4::analyse(&img).expect_err(what);
        assert!(e.to_string().contains(want), "extent tree {what}: {e}");
    }
}

/// Tiny filesystems (one group, a few inodes) in many feature combinations.
#[test]
fn tiny_images_in_many_variants() {
    let dir = tempdir();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("d/b.bin"), noise(1, 5000)).unwrap();
    write_at(&root.join("d/e/sparse.bin"), 0, &[b'x'; 100]);
    write_at(&root.join("d/e/sparse.bin"), 20000, &noise(2, 3000));
    std::fs::write(root.join("d/e/t.txt"), noise(3, 100)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("l")).unwrap();
    let conf = dir.path().join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).unwrap();
    let variants: &[&[&str]] = &[
        &["-b", "1024", "-O", "^has_journal"],
        &["-b", "1024", "-O", "^has_journal,^extent,^64bit"],
        &[
            "-b",
            "1024",
            "-O",
            "^has_journal,^flex_bg,^metadata_csum",
            "-I",
            "128",
        ],
        &[
            "-b",
            "1024",
            "-O",
            "^has_journal,meta_bg,^resize_inode",
            "-g",
            "256",
        ],
        &[
            "-b",
            "1024",
            "-O",
            "^has_journal,sparse_super2,mmp",
            "-g",
            "256",
        ],
        &[
            "-b",
            "1024",
            "-O",
            "^has_journal,^resize_inode,^sparse_super",
        ],
        &["-b", "2048", "-O", "^has_journal,inline_data"],
        &["-b", "4096", "-O", "^has_journal", "-I", "1024"],
        &[
            "-b",
            "4096",
            "-O",
            "^has_journal,^64bit,^metadata_csum,uninit_bg",
        ],
        &[
            "-b",
            "4096",
            "-O",
            "^has_journal,^dir_index,^filetype,^ext_attr",
        ],
        &["-b", "4096", "-r", "0"],
    ];
    for (i, args) in variants.iter().enumerate() {
        let img = dir.path().join(format!("tiny{i}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(if args.contains(&"4096") {
                1 << 20
            } else {
                256 << 10
            })
            .unwrap();
        run(Command::new("mkfs.ext4")
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args(["-q", "-F", "-T", "default", "-U", UUID, "-N", "32"])
            .args(*args)
            .arg("-d")
            .arg(&root)
            .arg(&img));
        let out = dir.path().join(format!("out{i}"));
        std::fs::create_dir(&out).unwrap();
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", out.display()))
            .arg(&img));
        if args.iter().any(|a| a.contains("inline_data")) {
            fit_inline_dumps(&img, &out);
        }
        let image = std::fs::read(&img).unwrap();
        let a = ext4::analyse(&image).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        check_tiling(&a, image.len() as u64);
        let checked = std::panic::catch_unwind(|| check_files(&a, &image, &out));
        assert!(checked.is_ok(), "{args:?}");
        assert_eq!(a.files.len(), 5, "{args:?}");
    }
}
