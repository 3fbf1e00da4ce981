//! The analysers read an image file with `pread` through `layout::Source`: the same
//! analysis as from the bytes in memory, and an error, never a SIGBUS, when the file
//! shrinks after it was opened.

mod common;

use blockcast::chunker::{cut_image, ChunkParams};
use blockcast::image::Image;
use blockcast::layout::Cutting;
use blockcast::layout::{self, Source};
use blockcast::Error;

#[test]
fn a_file_analyses_as_its_bytes_do() {
    for kind in common::KINDS {
        for v in [1, 2] {
            let path = common::image(kind, v);
            let bytes = std::fs::read(&path).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let from_file = layout::analyse(Source::file(&file, bytes.len() as u64))
                .unwrap_or_else(|e| panic!("{kind}-v{v}: {e}"));
            let from_bytes = layout::analyse(&bytes).unwrap();
            assert_eq!(from_file.layout, from_bytes.layout, "{kind}-v{v}");
            assert_eq!(from_file.files, from_bytes.files, "{kind}-v{v}");
        }
    }
}

#[test]
fn an_image_truncated_after_open_is_an_error() {
    for kind in ["erofs", "squashfs", "ext4"] {
        let dir = common::tempdir();
        let path = dir.path().join("image");
        std::fs::copy(common::image(kind, 2), &path).unwrap();
        let image = Image::open(&path).unwrap();
        let size = image.size();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(size / 2)
            .unwrap();
        let result = cut_image(
            &image,
            ChunkParams::from_avg(64 << 10).unwrap(),
            Cutting::Filesystem {
                metadata_apart: true,
            },
            &blockcast::progress::Silent,
        );
        match result {
            Err(Error::Io { path: p, err }) => {
                assert_eq!(p, path, "{kind}");
                let msg = err.to_string();
                assert!(msg.contains("shorter"), "{kind}: {msg}");
            }
            Err(e) => panic!("{kind}: {e}"),
            Ok(_) => panic!("{kind}: cut an image that lost half its bytes"),
        }
    }
}

/// `diff` checks the new chunks and attributes them to regions by reading them and the
/// filesystem with `pread`: an image that shrank since it was opened is an error, not a
/// SIGBUS, whether the chunk reads (new chunks to check) or the analysis (none) meet it.
#[test]
fn diff_of_an_image_truncated_after_open_is_an_error() {
    let dir = common::tempdir();
    let store = dir.path().join("store");
    let old_path = dir.path().join("old.bcidx");
    common::make(&common::image("ext4", 1), &store, &old_path);
    let path = dir.path().join("image");
    std::fs::copy(common::image("ext4", 2), &path).unwrap();
    let index_path = dir.path().join("image.bcidx");
    common::make(&path, &store, &index_path);
    let index = blockcast::index::Index::open(&index_path).unwrap();
    let old = blockcast::index::Index::open(&old_path).unwrap();
    for old in [&old, &index] {
        std::fs::copy(common::image("ext4", 2), &path).unwrap();
        let image = Image::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(image.size() / 2)
            .unwrap();
        match blockcast::diff::compare(old, &index, Some(&image)) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("attributed the chunks of an image that lost half its bytes"),
        }
    }
}
