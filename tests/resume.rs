//! Interrupted extracts never leave an output that looks valid, and a rerun with the
//! same arguments finishes the job.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn hide(chunk: &Path) -> std::path::PathBuf {
    let aside = chunk.with_extension("aside");
    std::fs::rename(chunk, &aside).unwrap();
    aside
}

fn partial_of(out: &Path) -> std::path::PathBuf {
    out.with_file_name(format!(
        ".{}.blockcast-partial",
        out.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn failed_new_extract_resumes_from_its_partial_file() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v2.bcidx");
    make(&image("ext4", 2), &store, &idx);
    let chunks = chunk_files(&store);
    let victim = chunks[chunks.len() - 1].clone();
    let aside = hide(&victim);
    let out = t.path().join("out.img");
    fails(&mut extract_cmd(&idx, &store, &out));
    assert!(!out.exists());
    let partial = partial_of(&out);
    assert!(partial.exists());
    let head = std::fs::read(&partial).unwrap();
    assert!(head[..4096].iter().all(|&b| b == 0), "guard not zero");

    std::fs::rename(&aside, &victim).unwrap();
    let r = extract(&idx, &store, &out, &[]);
    assert!(is_extracted(&out, &image("ext4", 2)));
    assert!(!partial.exists());
    assert_eq!(r["updated_in_place"], true);
    assert!(
        r["plan"]["in_place"]["bytes"].as_u64().unwrap() > 0,
        "nothing was resumed"
    );
}

#[test]
fn failed_in_place_update_is_not_a_valid_image_and_resumes() {
    let t = tempdir();
    let store = t.path().join("store");
    let v1 = t.path().join("v1.bcidx");
    let v2 = t.path().join("v2.bcidx");
    make(&image("erofs", 1), &store, &v1);
    let before: std::collections::HashSet<_> = chunk_files(&store).into_iter().collect();
    make(&image("erofs", 2), &store, &v2);
    let new_chunk = chunk_files(&store)
        .into_iter()
        .find(|c| !before.contains(c))
        .expect("v2 has a new chunk");
    let aside = hide(&new_chunk);
    let dev = t.path().join("dev.img");
    std::fs::copy(image("erofs", 1), &dev).unwrap();
    fails(&mut extract_cmd(&v2, &store, &dev));
    let bytes = std::fs::read(&dev).unwrap();
    assert!(
        bytes[..4096].iter().all(|&b| b == 0),
        "interrupted output still looks valid"
    );

    std::fs::rename(&aside, &new_chunk).unwrap();
    extract(&v2, &store, &dev, &[]);
    assert!(is_extracted(&dev, &image("erofs", 2)));
}

#[test]
fn killed_extract_resumes() {
    let t = tempdir();
    let store = t.path().join("store");
    let img = t.path().join("big.img");
    let mut data = noise(21, 96 << 20);
    for block in data.chunks_mut(1 << 20).step_by(3) {
        block[..512 << 10].fill(0x5a);
    }
    std::fs::write(&img, &data).unwrap();
    let idx = t.path().join("big.bcidx");
    make(&img, &store, &idx);
    let out = t.path().join("out.img");
    let partial = partial_of(&out);
    let mut child = extract_cmd(&idx, &store, &out).arg("-q").spawn().unwrap();
    let start = Instant::now();
    loop {
        let written = std::fs::metadata(&partial)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        if written > 16 << 20 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "extract ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "killed extract left an output");
    let head = std::fs::read(&partial).unwrap();
    assert!(head[..4096].iter().all(|&b| b == 0));

    let r = extract(&idx, &store, &out, &[]);
    assert!(is_extracted(&out, &img));
    assert!(r["plan"]["in_place"]["bytes"].as_u64().unwrap() >= 16 << 20);
}
