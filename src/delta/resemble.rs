//! Resemblance: which chunks of earlier releases a stretch of new bytes most resembles.
//! Both are sampled at content-defined positions (8-byte windows whose hash has its low 8
//! bits zero); the earlier chunk sharing the most samples is the most alike. Resemblance
//! found this way survives shifted and scattered edits, which block hashes do not.

use rayon::prelude::*;

/// A sample is kept where the hash's low bits are zero: one position in 256.
const SAMPLE_MASK: u64 = 0xff;
/// Fewest samples a stretch must share with an earlier chunk to be said to resemble it.
pub const MIN_SHARED: u32 = 2;
/// A sample more earlier chunks than this hold (a run of zeros, common padding) says
/// nothing about which one a stretch resembles, and is left out.
const MAX_HOLDERS: usize = 32;

/// The sampled features of `data`: hashes of the 8-byte windows at content-defined
/// positions, deduplicated.
pub fn features(data: &[u8]) -> Vec<u64> {
    let mut out: Vec<u64> = data
        .windows(8)
        .filter_map(|w| {
            let word = u64::from_le_bytes(w.try_into().ok()?);
            let h = word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24;
            (h & SAMPLE_MASK == 0).then_some(h)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The features of numbered earlier chunks, searchable.
pub struct Features {
    /// (feature, chunk number), sorted.
    table: Vec<(u64, u32)>,
}

impl Features {
    /// `each[n]`: the features of chunk `n`.
    pub fn new(each: Vec<Vec<u64>>) -> Features {
        let mut table: Vec<(u64, u32)> = each
            .into_iter()
            .enumerate()
            .flat_map(|(n, fs)| fs.into_iter().map(move |f| (f, n as u32)))
            .collect();
        table.par_sort_unstable();
        let mut kept = Vec::with_capacity(table.len());
        for same in table.chunk_by(|a, b| a.0 == b.0) {
            if same.len() <= MAX_HOLDERS {
                kept.extend_from_slice(same);
            }
        }
        Features { table: kept }
    }

    /// The earlier chunk sharing the most features with `data`, at least [`MIN_SHARED`],
    /// and how many it shares; ties go to the lowest number.
    pub fn most_like(&self, data: &[u8]) -> Option<(u32, u32)> {
        let mut hits: Vec<u32> = Vec::new();
        for f in features(data) {
            let from = self.table.partition_point(|&(g, _)| g < f);
            hits.extend(
                self.table[from..]
                    .iter()
                    .take_while(|&&(g, _)| g == f)
                    .map(|&(_, n)| n),
            );
        }
        hits.sort_unstable();
        let mut best: Option<(u32, u32)> = None;
        for run in hits.chunk_by(|a, b| a == b) {
            let count = run.len() as u32;
            if count >= MIN_SHARED && best.is_none_or(|(_, c)| count > c) {
                best = Some((run[0], count));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    #[test]
    fn features_survive_a_shift_and_an_edit() {
        let data = noise(1, 300_000);
        let a = features(&data);
        assert!(a.len() > 500, "{} features", a.len());
        let mut b_data = b"shifted by a few bytes".to_vec();
        b_data.extend_from_slice(&data);
        b_data[150_000] ^= 0xff;
        let b = features(&b_data);
        let shared = a.iter().filter(|f| b.binary_search(f).is_ok()).count();
        assert!(shared * 100 > a.len() * 98, "{shared} of {}", a.len());
        let c = features(&noise(2, 300_000));
        let chance = a.iter().filter(|f| c.binary_search(f).is_ok()).count();
        assert!(
            chance * 100 < a.len(),
            "{chance} of {} shared by chance",
            a.len()
        );
    }

    #[test]
    fn the_most_alike_chunk_wins_and_ties_go_to_the_first() {
        let a = noise(11, 40_000);
        let b = noise(21, 40_000);
        let index = Features::new(vec![features(&a), features(&b), features(&b)]);
        let mut edited = b[..20_000].to_vec();
        edited[10_000] ^= 1;
        assert_eq!(index.most_like(&edited).map(|(n, _)| n), Some(1));
        assert_eq!(index.most_like(&a[5_000..9_000]).map(|(n, _)| n), Some(0));
        assert_eq!(index.most_like(&noise(31, 4096)), None);
    }
}
