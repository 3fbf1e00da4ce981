//! Checks of a layout analyser against the real tools' view of an image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockcast::layout::{Algorithm, Analysis, Kind, Piece};

/// Writes version `v` (1 or 2) of the generated test tree into `dir`.
pub fn gen_tree(dir: &Path, v: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gentree.py");
    let st = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(v.to_string())
        .status()
        .expect("python3");
    assert!(st.success(), "gentree.py failed");
}

/// Runs a command and requires success.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regions must be sorted, contiguous, non-empty and cover the whole image.
pub fn check_tiling(a: &Analysis, size: u64) {
    let mut pos = 0;
    for r in &a.layout.regions {
        assert_eq!(r.offset, pos, "gap or overlap at {pos}: {r:?}");
        assert!(r.len > 0, "empty region {r:?}");
        pos = r.end();
    }
    assert_eq!(pos, size, "regions end at {pos}, the image at {size}");
    assert!(
        a.layout.regions.iter().any(|r| r.kind == Kind::Metadata),
        "no metadata region"
    );
}

/// Decodes one compression unit as the tests know how to.
pub fn decompress(algorithm: Algorithm, data: &[u8], size: usize) -> Vec<u8> {
    use std::io::Read;
    match algorithm {
        Algorithm::Lz4 => lz4_flex::block::decompress(data, size).expect("lz4"),
        Algorithm::Zstd => zstd::bulk::decompress(data, size).expect("zstd"),
        Algorithm::Gzip => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .expect("zlib");
            out
        }
        Algorithm::Deflate => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .read_to_end(&mut out)
                .expect("deflate");
            out
        }
        Algorithm::Xz => {
            let mut out = Vec::new();
            lzma_rs::xz_decompress(&mut &data[..], &mut out).expect("xz");
            out
        }
        Algorithm::Lzma | Algorithm::Lzo => panic!("{algorithm:?} is not decoded by the tests"),
    }
}

/// A file's content as the analyser locates it.
pub fn content(image: &[u8], pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match *p {
            Piece::Plain { offset, len } => {
                out.extend_from_slice(&image[offset as usize..(offset + len) as usize])
            }
            Piece::Zero { len } => out.resize(out.len() + len as usize, 0),
            Piece::Compressed {
                offset,
                len,
                algorithm,
                unit_size,
                skip,
                take,
            } => {
                let unit = decompress(
                    algorithm,
                    &image[offset as usize..(offset + len) as usize],
                    unit_size as usize,
                );
                out.extend_from_slice(&unit[skip as usize..(skip + take) as usize]);
            }
        }
    }
    out
}

fn regular_files(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, e.path());
            }
        }
    }
    files
}

/// Every regular file under `extracted` (as the real tool extracted it) is in the
/// analysis with the same content, and the analysis names no other file. Data regions
/// must belong to files the analysis knows.
pub fn check_files(a: &Analysis, image: &[u8], extracted: &Path) {
    let want = regular_files(extracted);
    let got: BTreeMap<&str, _> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    assert_eq!(
        want.keys().map(String::as_str).collect::<Vec<_>>(),
        got.keys().copied().collect::<Vec<_>>(),
        "file lists differ"
    );
    for (path, on_disk) in &want {
        let map = got[path.as_str()];
        let bytes = content(image, &map.pieces);
        assert_eq!(bytes.len() as u64, map.size, "{path}: size");
        assert!(
            bytes == std::fs::read(on_disk).unwrap(),
            "{path}: content differs"
        );
    }
    let inodes: std::collections::HashSet<u64> = a.files.iter().map(|f| f.inode).collect();
    for r in &a.layout.regions {
        if let Some(ino) = r.file {
            assert!(inodes.contains(&ino), "region {r:?} names an unknown inode");
        }
    }
}

/// Sets an extended attribute, for trees that must carry some.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length, all alive here.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {path:?}: {}",
        std::io::Error::last_os_error()
    );
}
