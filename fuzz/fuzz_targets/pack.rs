#![no_main]

//! A whole pack file: its header checked against its length, then its table of contents,
//! as a store's catalogue reads them.

use blockcast::pack::{format::PACK_HEADER_SIZE, parse_header, parse_toc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = &data[..data.len().min(PACK_HEADER_SIZE)];
    if let Ok((count, toc_offset)) = parse_header("fuzz", header, data.len() as u64) {
        let toc = usize::try_from(toc_offset)
            .ok()
            .and_then(|at| data.get(at..))
            .unwrap_or_default();
        let _ = parse_toc("fuzz", &[0; 32], toc, count, toc_offset);
    }
});
