#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = blockcast::index::Index::from_bytes(std::path::Path::new("fuzz"), data.to_vec()) {
        for d in index.deltas() {
            assert_eq!(d.run.iter().map(|p| u64::from(p.size)).sum::<u64>(), u64::from(d.base_size));
        }
        let _ = index.deltas_by_unit();
    }
});
