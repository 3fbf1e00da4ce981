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
pub type Register<const W: usize> = [u64; W];

/// Words a register of `roots` symbols takes.
pub fn words(roots: usize) -> usize {
    roots.div_ceil(8)
}

/// For each feedback symbol `f`, what it adds to the shifted register: byte `j` is
/// `f · g[roots − 1 − j]`.
pub fn feedback_table<const W: usize>(generator: &[u8]) -> Vec<Register<W>> {
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

/// Feeds one data symbol to each register: `symbols[i]` to `registers[i]`.
pub fn absorb<const W: usize>(
    table: &[Register<W>],
    registers: &mut [Register<W>],
    symbols: &[u8],
) {
    let table: &[Register<W>; 256] = table.try_into().expect("a feedback table has 256 rows");
    for (r, &d) in registers.iter_mut().zip(symbols) {
        let t = &table[usize::from(d ^ r[0] as u8)];
        for k in 0..W - 1 {
            r[k] = (r[k] >> 8 | r[k + 1] << 56) ^ t[k];
        }
        r[W - 1] = (r[W - 1] >> 8) ^ t[W - 1];
    }
}

/// The parity symbols a register holds once every data symbol was fed.
pub fn parity<const W: usize>(register: &Register<W>, out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        *b = (register[j / 8] >> (8 * (j % 8))) as u8;
    }
}

/// The locator of codeword position `k`: α to the degree of its term, `N − 1 − k`.
fn locator(k: usize) -> u8 {
    pow(N - 1 - k)
}

/// The syndromes `word(α^j)`, j < `roots`.
fn syndromes(word: &[u8; N], roots: usize) -> [u8; MAX_ROOTS] {
    let mut s = [0u8; MAX_ROOTS];
    for (j, s) in s.iter_mut().enumerate().take(roots) {
        let x = pow(j);
        *s = word.iter().fold(0, |acc, &c| mul(acc, x) ^ c);
    }
    s
}

/// Corrects the codeword `word` (data symbols then `roots` parity symbols), given the
/// positions of symbols known to be wrong (erasures). Returns the positions it changed,
/// or `None`, leaving `word` as it was, when the word is past correction: more than
/// `roots` erasures, or errors `e` and erasures `s` with `2e + s > roots` (which it may
/// also take for a different valid codeword, as any decoder may: callers check the
/// result against something else).
pub fn correct(word: &mut [u8; N], roots: usize, erasures: &[usize]) -> Option<Vec<usize>> {
    let s = syndromes(word, roots);
    if erasures.len() > roots || erasures.iter().any(|&k| k >= N) {
        return None;
    }
    if s[..roots].iter().all(|&v| v == 0) {
        return Some(Vec::new());
    }
    // The errata locator Λ, lowest degree first, grown from the erasures' locator by
    // Berlekamp–Massey over the syndromes the erasures leave.
    let mut lambda = [0u8; MAX_ROOTS + 1];
    lambda[0] = 1;
    for &k in erasures {
        let x = locator(k);
        for i in (1..=roots).rev() {
            lambda[i] ^= mul(lambda[i - 1], x);
        }
    }
    let erased = erasures.len();
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
    // Chien search: position k is wrong when Λ vanishes at its locator's inverse.
    let wrong: Vec<usize> = (0..N).filter(|&k| eval(lambda, pow(k + 1)) == 0).collect();
    if wrong.len() != degree {
        return None;
    }
    // Forney: the evaluator Ω = S·Λ mod x^roots; the value at locator X is
    // X · Ω(X⁻¹) / Λ'(X⁻¹) (first consecutive root 0).
    let mut omega = [0u8; MAX_ROOTS];
    for (i, o) in omega.iter_mut().enumerate().take(roots) {
        for j in 0..=i.min(degree) {
            *o ^= mul(s[i - j], lambda[j]);
        }
    }
    // Λ' keeps the odd terms, each down one degree (in characteristic 2).
    let mut derivative = [0u8; MAX_ROOTS];
    for i in (1..=degree).step_by(2) {
        derivative[i - 1] = lambda[i];
    }
    let mut fixed = *word;
    let mut changed = Vec::new();
    for &k in &wrong {
        let inverse = pow(k + 1);
        let slope = eval(&derivative[..degree], inverse);
        if slope == 0 {
            return None;
        }
        let value = div(mul(locator(k), eval(&omega[..roots], inverse)), slope);
        if value != 0 {
            fixed[k] ^= value;
            changed.push(k);
        }
    }
    if syndromes(&fixed, roots)[..roots].iter().any(|&v| v != 0) {
        return None;
    }
    *word = fixed;
    Some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parity of one codeword, by the register the encoder runs side by side.
    fn encode(data: &[u8], roots: usize) -> [u8; N] {
        let g = generator(roots);
        let table = feedback_table::<3>(&g);
        let mut register = [[0u64; 3]];
        for &d in data {
            absorb(&table, &mut register, &[d]);
        }
        let mut word = [0u8; N];
        word[..N - roots].copy_from_slice(data);
        parity(&register[0], &mut word[N - roots..]);
        word
    }

    /// A small deterministic generator of test bytes.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
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
        for roots in [2, 7, 8, 9, 16, 24] {
            let word = encode(&bytes(roots as u64, N - roots), roots);
            assert!(syndromes(&word, roots)[..roots].iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn erasures_and_errors_within_the_bound_are_corrected() {
        for roots in [2, 3, 10, 24] {
            for erased in 0..=roots {
                let errors = (roots - erased) / 2;
                let good = encode(&bytes((roots * 100 + erased) as u64, N - roots), roots);
                let mut word = good;
                let places = bytes(erased as u64 + 7, 64);
                let mut positions: Vec<usize> = Vec::new();
                for &p in &places {
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
        let roots = 4;
        let good = encode(&bytes(1, N - roots), roots);
        let mut word = good;
        let erasures = [0, 10, 20, 30, 40];
        for &k in &erasures {
            word[k] ^= 1;
        }
        let before = word;
        assert_eq!(correct(&mut word, roots, &erasures), None);
        assert_eq!(word, before);
    }

    #[test]
    fn an_erasure_that_was_right_changes_nothing() {
        let roots = 2;
        let good = encode(&bytes(3, N - roots), roots);
        let mut word = good;
        word[100] ^= 9;
        assert_eq!(correct(&mut word, roots, &[5, 100]), Some(vec![100]));
        assert_eq!(word, good);
    }
}
