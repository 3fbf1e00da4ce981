//! Reed-Solomon RS(255, 255 − roots) over GF(2^8) as dm-verity's FEC uses it: field
//! polynomial 0x11d, generator roots α^0 … α^(roots−1) (first consecutive root 0,
//! primitive element 1), data symbols first and highest degree first, the parity the
//! remainder of `data(x)·x^roots` divided by the generator.
//!
//! The encoder runs many codewords side by side (a block's bytes are the same symbol of
//! 4096 codewords), one table lookup per data byte; the decoder corrects one codeword at a
//! time, erasures and errors, by Berlekamp–Massey and Forney.

use super::FIELD_POLY;

/// Symbols in a codeword.
pub const N: usize = 255;
/// Most parity symbols a codeword may have (veritysetup's limit).
pub const MAX_ROOTS: usize = 24;

/// `EXP[i]` is α^i, twice over so that a sum of two logarithms needs no reduction.
static EXP: [u8; 2 * N] = TABLES.0;
/// `LOG[x]` is the i with α^i = x, for x ≠ 0.
static LOG: [u8; 256] = TABLES.1;

const TABLES: ([u8; 2 * N], [u8; 256]) = tables();

const fn tables() -> ([u8; 2 * N], [u8; 256]) {
    let mut exp = [0u8; 2 * N];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < N {
        exp[i] = x as u8;
        exp[i + N] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= FIELD_POLY;
        }
        i += 1;
    }
    (exp, log)
}

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[usize::from(LOG[usize::from(a)]) + usize::from(LOG[usize::from(b)])]
    }
}

/// `a / b`, `b` non-zero.
fn div(a: u8, b: u8) -> u8 {
    if a == 0 {
        0
    } else {
        EXP[usize::from(LOG[usize::from(a)]) + N - usize::from(LOG[usize::from(b)])]
    }
}

/// α^e.
fn pow(e: usize) -> u8 {
    EXP[e % N]
}

/// The value at `x` of a polynomial given lowest degree first.
fn eval(poly: &[u8], x: u8) -> u8 {
    poly.iter().rev().fold(0, |acc, &c| mul(acc, x) ^ c)
}

/// The generator polynomial `(x − α^0)(x − α^1)…(x − α^(roots−1))`, lowest degree first
/// (its last coefficient is 1).
pub fn generator(roots: usize) -> Vec<u8> {
    let mut g = vec![1u8];
    for i in 0..roots {
        let root = pow(i);
        let mut next = vec![0u8; g.len() + 1];
        for (k, &c) in g.iter().enumerate() {
            next[k + 1] ^= c;
            next[k] ^= mul(c, root);
        }
        g = next;
    }
    g
}

/// The parity register of one codeword, `W` little-endian words: byte 0 of word 0 is
/// the coefficient of `x^(roots−1)`, the next symbol to leave; bytes past `roots` stay 0.
type Register<const W: usize> = [u64; W];

/// Codewords whose parity registers are run together, small enough to stay in the
/// nearest cache.
const STRIP: usize = 1024;

/// The systematic encoder: for each feedback symbol `f`, what it adds to the shifted
/// register (byte `j` is `f · g[roots − 1 − j]`), in registers of as few words as the
/// parity needs.
pub struct Encoder {
    roots: usize,
    table: Table,
}

enum Table {
    One(Vec<Register<1>>),
    Two(Vec<Register<2>>),
    Three(Vec<Register<3>>),
}

impl Encoder {
    pub fn new(roots: usize) -> Encoder {
        let g = generator(roots);
        let table = match roots.div_ceil(8) {
            1 => Table::One(feedback_table(&g)),
            2 => Table::Two(feedback_table(&g)),
            _ => Table::Three(feedback_table(&g)),
        };
        Encoder { roots, table }
    }

    /// Writes the parity of codewords side by side into `parity`, `roots` bytes each:
    /// data symbol `i` of codeword `c` is `data[i · stride + offset + c]`.
    pub fn encode(&self, data: &[u8], stride: usize, offset: usize, parity: &mut [u8]) {
        match &self.table {
            Table::One(t) => encode_with(t, self.roots, data, stride, offset, parity),
            Table::Two(t) => encode_with(t, self.roots, data, stride, offset, parity),
            Table::Three(t) => encode_with(t, self.roots, data, stride, offset, parity),
        }
    }
}

fn feedback_table<const W: usize>(generator: &[u8]) -> Vec<Register<W>> {
    let roots = generator.len() - 1;
    (0..=255u8)
        .map(|f| {
            let mut r = [0u64; W];
            for j in 0..roots {
                r[j / 8] |= u64::from(mul(f, generator[roots - 1 - j])) << (8 * (j % 8));
            }
            r
        })
        .collect()
}

fn encode_with<const W: usize>(
    table: &[Register<W>],
    roots: usize,
    data: &[u8],
    stride: usize,
    offset: usize,
    parity: &mut [u8],
) {
    let table: &[Register<W>; 256] = table.try_into().expect("a feedback table has 256 rows");
    let codewords = parity.len() / roots;
    let mut registers = vec![[0u64; W]; STRIP.min(codewords)];
    for start in (0..codewords).step_by(STRIP) {
        let width = STRIP.min(codewords - start);
        let registers = &mut registers[..width];
        registers.fill([0; W]);
        for i in 0..N - roots {
            let at = i * stride + offset + start;
            absorb(table, registers, &data[at..at + width]);
        }
        for (c, register) in registers.iter().enumerate() {
            let at = (start + c) * roots;
            for (j, b) in parity[at..at + roots].iter_mut().enumerate() {
                *b = (register[j / 8] >> (8 * (j % 8))) as u8;
            }
        }
    }
}

/// Feeds one data symbol to each register: `symbols[i]` to `registers[i]`.
fn absorb<const W: usize>(
    table: &[Register<W>; 256],
    registers: &mut [Register<W>],
    symbols: &[u8],
) {
    for (r, &d) in registers.iter_mut().zip(symbols) {
        let t = &table[usize::from(d ^ r[0] as u8)];
        for k in 0..W - 1 {
            r[k] = (r[k] >> 8 | r[k + 1] << 56) ^ t[k];
        }
        r[W - 1] = (r[W - 1] >> 8) ^ t[W - 1];
    }
}

/// The locator of codeword position `k`: α to the degree of its term, `N − 1 − k`.
fn locator(k: usize) -> u8 {
    pow(N - 1 - k)
}

/// The syndromes `word(α^j)`, j < roots, of a codeword from its remainder by the
/// generator, `roots` symbols highest degree first: the parity it holds xor the parity
/// of its data symbols (the generator vanishes at each α^j).
pub fn syndromes(remainder: &[u8]) -> [u8; MAX_ROOTS] {
    let mut s = [0u8; MAX_ROOTS];
    for (j, s) in s.iter_mut().enumerate().take(remainder.len()) {
        let x = pow(j);
        *s = remainder.iter().fold(0, |acc, &c| mul(acc, x) ^ c);
    }
    s
}

/// Whether changing positions `changes` (position, value added) accounts for the
/// syndromes `s`: a correction that leaves a valid codeword.
fn accounts_for(changes: &[(usize, u8)], s: &[u8]) -> bool {
    s.iter().enumerate().all(|(j, &sj)| {
        let made = changes
            .iter()
            .fold(0, |acc, &(k, e)| acc ^ mul(e, pow((N - 1 - k) * j)));
        made == sj
    })
}

/// Erasure positions many codewords share (those of a round's damaged blocks), with what
/// correcting them needs worked out once.
pub struct Erasures {
    roots: usize,
    positions: Vec<usize>,
    /// Γ(x) = ∏ (1 + X_i·x), lowest degree first.
    locator: [u8; MAX_ROOTS + 1],
    /// Γ'(X_i⁻¹) for each position.
    slopes: Vec<u8>,
}

impl Erasures {
    /// `None` when there are more erasures than `roots`, or a position outside a codeword.
    pub fn new(roots: usize, positions: &[usize]) -> Option<Erasures> {
        if positions.len() > roots || positions.iter().any(|&k| k >= N) {
            return None;
        }
        let mut locator = [0u8; MAX_ROOTS + 1];
        locator[0] = 1;
        for &k in positions {
            let x = self::locator(k);
            for i in (1..=roots).rev() {
                locator[i] ^= mul(locator[i - 1], x);
            }
        }
        let derivative = derivative(&locator[..=positions.len()]);
        let slopes = positions
            .iter()
            .map(|&k| eval(&derivative, pow(k + 1)))
            .collect();
        Some(Erasures {
            roots,
            positions: positions.to_vec(),
            locator,
            slopes,
        })
    }

    /// Corrects the codeword `word` (data symbols then parity symbols) whose syndromes are
    /// `s`. Returns the positions it changed, or `None`, leaving `word` as it was, when
    /// the word is past correction: errors `e` besides the erasures with
    /// `2e + erasures > roots` (which it may also take for another valid codeword, as any
    /// decoder may: callers check the result against something else).
    pub fn correct(&self, word: &mut [u8; N], s: &[u8; MAX_ROOTS]) -> Option<Vec<usize>> {
        let roots = self.roots;
        let s = &s[..roots];
        if s.iter().all(|&v| v == 0) {
            return Some(Vec::new());
        }
        // The evaluator Ω = S·Γ mod x^roots stays below degree `erasures` exactly when
        // the syndromes are those of values at the erasures alone (Γ is a unit mod
        // x^roots, so those syndromes are all that leave Ω so low): Forney gives them.
        let erased = self.positions.len();
        let omega = evaluator(s, &self.locator[..=erased]);
        if omega[erased..roots].iter().all(|&v| v == 0) {
            let mut changed = Vec::with_capacity(erased);
            for (&k, &slope) in self.positions.iter().zip(&self.slopes) {
                let e = forney(&omega[..roots], k, slope);
                if e != 0 {
                    word[k] ^= e;
                    changed.push(k);
                }
            }
            return Some(changed);
        }
        self.with_errors(word, s)
    }

    /// Berlekamp–Massey grown from the erasures' locator, over the syndromes they leave,
    /// then a Chien search for the errata and Forney for their values.
    fn with_errors(&self, word: &mut [u8; N], s: &[u8]) -> Option<Vec<usize>> {
        let roots = self.roots;
        let erased = self.positions.len();
        let mut lambda = self.locator;
        let mut b = lambda;
        let mut length = erased;
        for q in erased..roots {
            let delta = (0..=q).fold(0, |acc, i| acc ^ mul(lambda[i], s[q - i]));
            let mut shifted = [0u8; MAX_ROOTS + 1];
            shifted[1..=roots].copy_from_slice(&b[..roots]);
            if delta == 0 {
                b = shifted;
                continue;
            }
            let mut next = lambda;
            for (n, &c) in next.iter_mut().zip(&shifted) {
                *n ^= mul(delta, c);
            }
            if 2 * length <= q + erased {
                length = q + 1 + erased - length;
                b = lambda.map(|c| div(c, delta));
            } else {
                b = shifted;
            }
            lambda = next;
        }
        let degree = (0..=roots).rev().find(|&i| lambda[i] != 0)?;
        let lambda = &lambda[..=degree];
        // Position k is wrong when Λ vanishes at its locator's inverse.
        let wrong: Vec<usize> = (0..N).filter(|&k| eval(lambda, pow(k + 1)) == 0).collect();
        if wrong.len() != degree {
            return None;
        }
        let omega = evaluator(s, lambda);
        let derivative = derivative(lambda);
        let mut changes = Vec::with_capacity(wrong.len());
        for k in wrong {
            let slope = eval(&derivative, pow(k + 1));
            if slope == 0 {
                return None;
            }
            let e = forney(&omega[..roots], k, slope);
            if e != 0 {
                changes.push((k, e));
            }
        }
        if !accounts_for(&changes, s) {
            return None;
        }
        for &(k, e) in &changes {
            word[k] ^= e;
        }
        Some(changes.iter().map(|&(k, _)| k).collect())
    }
}

/// Ω = S·Λ mod x^roots, `roots` being the syndromes' count.
fn evaluator(s: &[u8], lambda: &[u8]) -> [u8; MAX_ROOTS] {
    let mut omega = [0u8; MAX_ROOTS];
    for (i, o) in omega.iter_mut().enumerate().take(s.len()) {
        for (j, &l) in lambda.iter().enumerate().take(i + 1) {
            *o ^= mul(s[i - j], l);
        }
    }
    omega
}

/// The formal derivative: the odd terms, each down one degree (characteristic 2).
fn derivative(poly: &[u8]) -> Vec<u8> {
    (1..poly.len())
        .map(|i| if i % 2 == 1 { poly[i] } else { 0 })
        .collect()
}

/// The value of the error at position `k` (first consecutive root 0):
/// `X · Ω(X⁻¹) / Λ'(X⁻¹)`, `slope` being `Λ'(X⁻¹)`.
fn forney(omega: &[u8], k: usize, slope: u8) -> u8 {
    div(mul(locator(k), eval(omega, pow(k + 1))), slope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    /// A codeword of `data`, by the encoder.
    fn encode(data: &[u8], roots: usize) -> [u8; N] {
        let mut word = [0u8; N];
        word[..N - roots].copy_from_slice(data);
        let (data, parity) = word.split_at_mut(N - roots);
        Encoder::new(roots).encode(data, 1, 0, parity);
        word
    }

    /// The syndromes of `word`, straight from their definition.
    fn syndromes_of(word: &[u8; N], roots: usize) -> [u8; MAX_ROOTS] {
        let mut s = [0u8; MAX_ROOTS];
        for (j, s) in s.iter_mut().enumerate().take(roots) {
            *s = word.iter().fold(0, |acc, &c| mul(acc, pow(j)) ^ c);
        }
        s
    }

    /// The syndromes of `word` as the decoder gets them: from its remainder.
    fn from_remainder(word: &[u8; N], roots: usize) -> [u8; MAX_ROOTS] {
        let mut parity = vec![0u8; roots];
        Encoder::new(roots).encode(&word[..N - roots], 1, 0, &mut parity);
        for (p, &stored) in parity.iter_mut().zip(&word[N - roots..]) {
            *p ^= stored;
        }
        syndromes(&parity)
    }

    fn correct(word: &mut [u8; N], roots: usize, erasures: &[usize]) -> Option<Vec<usize>> {
        let s = from_remainder(word, roots);
        assert_eq!(s, syndromes_of(word, roots));
        Erasures::new(roots, erasures)?.correct(word, &s)
    }

    #[test]
    fn the_field_and_generator_are_the_codes() {
        assert_eq!(EXP[8], 0x1d);
        assert_eq!(mul(0x80, 2), 0x1d);
        assert_eq!(div(mul(0x53, 0xca), 0xca), 0x53);
        // (x − 1)(x − α) = x² + 3x + 2
        assert_eq!(generator(2), vec![2, 3, 1]);
        for roots in [2, 24] {
            let g = generator(roots);
            for i in 0..roots {
                assert_eq!(eval(&g, pow(i)), 0);
            }
        }
    }

    #[test]
    fn codewords_have_zero_syndromes() {
        for roots in [2, 7, 8, 9, 16, 17, 24] {
            let word = encode(&noise(roots as u64, N - roots), roots);
            assert!(syndromes_of(&word, roots).iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn erasures_and_errors_within_the_bound_are_corrected() {
        for roots in [2, 3, 10, 24] {
            for erased in 0..=roots {
                let errors = (roots - erased) / 2;
                let good = encode(&noise((roots * 100 + erased) as u64, N - roots), roots);
                let mut word = good;
                let mut positions: Vec<usize> = Vec::new();
                for p in noise(erased as u64 + 7, 64) {
                    let k = usize::from(p) % N;
                    if !positions.contains(&k) {
                        positions.push(k);
                    }
                }
                let (erasures, wrong) = positions[..erased + errors].split_at(erased);
                for &k in erasures.iter().chain(wrong) {
                    word[k] ^= 0x5a;
                }
                let changed = correct(&mut word, roots, erasures).expect("within the bound");
                assert_eq!(
                    word, good,
                    "roots {roots}, {erased} erasures, {errors} errors"
                );
                assert_eq!(changed.len(), erased + errors);
            }
        }
    }

    #[test]
    fn more_erasures_than_roots_are_refused() {
        assert!(Erasures::new(4, &[0, 10, 20, 30, 40]).is_none());
        assert!(Erasures::new(4, &[255]).is_none());
    }

    #[test]
    fn too_many_errors_leave_the_word_alone() {
        let roots = 4;
        let good = encode(&noise(1, N - roots), roots);
        let mut refused = 0;
        for seed in 0..50 {
            let mut word = good;
            for (i, p) in noise(seed, 3).into_iter().enumerate() {
                word[usize::from(p) % 80 + 80 * i] ^= 1 + i as u8;
            }
            let before = word;
            match correct(&mut word, roots, &[]) {
                None => {
                    assert_eq!(word, before);
                    refused += 1;
                }
                // A miscorrection must at least be a valid codeword.
                Some(_) => assert!(syndromes_of(&word, roots).iter().all(|&s| s == 0)),
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn an_erasure_that_was_right_changes_nothing() {
        let roots = 2;
        let good = encode(&noise(3, N - roots), roots);
        let mut word = good;
        word[100] ^= 9;
        assert_eq!(correct(&mut word, roots, &[5, 100]), Some(vec![100]));
        assert_eq!(word, good);
    }
}
