#![no_main]

//! A pack map, read for a fixed index. The input's index digest and trailer are set to
//! what the index and the bytes give, so that the fuzzer reaches the entries rather than
//! stop at the digests.

use std::path::Path;
use std::sync::OnceLock;

use blockcast::index::Index;
use blockcast::pack::format::{MAP_HEADER_SIZE, M_INDEX_DIGEST};
use blockcast::pack::PackMap;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let bytes = include_bytes!("../../tests/fixtures/v3-tiny.bcidx").to_vec();
        Index::from_bytes(Path::new("v3-tiny.bcidx"), bytes).expect("the fixture index reads")
    })
}

fuzz_target!(|data: &[u8]| {
    let index = index();
    let mut map = data.to_vec();
    if map.len() >= MAP_HEADER_SIZE + 32 {
        let at = M_INDEX_DIGEST.offset;
        map[at..at + 32].copy_from_slice(&index.digest());
        let body = map.len() - 32;
        let digest = Sha256::digest(&map[..body]);
        map[body..].copy_from_slice(&digest);
    }
    let _ = PackMap::parse("fuzz", &map, index);
});
