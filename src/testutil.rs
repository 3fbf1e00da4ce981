//! Helpers for the unit tests.

/// `len` pseudo-random bytes (xorshift from `seed`): incompressible, and the same for a
/// seed every run.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A warning sink for unit tests that expect none: a warning fails the test.
pub fn no_warnings() -> crate::store::Warn {
    std::sync::Arc::new(|m: &str| panic!("unexpected warning: {m}"))
}
