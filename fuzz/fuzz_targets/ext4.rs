#![no_main]

use libfuzzer_sys::fuzz_target;

// The analyser must return Ok or Err on any bytes, never panic or run away.
fuzz_target!(|data: &[u8]| {
    let _ = blockcast::layout::ext4::analyse(data);
});
