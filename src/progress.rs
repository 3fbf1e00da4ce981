//! How long-running library work reports progress, without knowing who listens.

pub trait Progress: Sync {
    /// Announces a new phase measured in `total` units (bytes unless the phase says otherwise).
    fn start(&self, phase: &str, total: u64);
    fn advance(&self, done: u64);
    fn finish(&self);
}

/// For callers that do not watch.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _phase: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn finish(&self) {}
}
