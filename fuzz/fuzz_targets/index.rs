#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = blockcast::index::Index::from_bytes(std::path::Path::new("fuzz"), data.to_vec());
});
