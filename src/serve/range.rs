//! The byte ranges of a `Range` header (RFC 9110 §14), as a static server serves them.

use std::ops::Range;

/// Past this many ranges in one header the header is ignored and the whole file sent, as
/// nginx does past its `max_ranges`: a client coalescing reads keeps under it.
pub const MAX_RANGES: usize = 256;

/// A longer `Range` header is refused (431), as nginx refuses any header line past its
/// 8 KiB buffers. 256 ranges of 10-digit offsets fit in 5.7 KiB.
pub const MAX_HEADER: usize = 8 << 10;

/// What to send of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// All of it: no Range header, or one ignored (malformed, another unit, more than
    /// [`MAX_RANGES`] ranges, or ranges adding up to more than the file): 200.
    Whole,
    /// These bytes, in the order asked, each non-empty and inside the file: 206, with one
    /// part or with `multipart/byteranges`.
    Parts(Vec<Range<u64>>),
    /// Well formed, but no range selects a byte of the file: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value against a file of `len` bytes. Malformed headers are
/// ignored, as the RFC allows: the whole file is sent. Ranges outside the file are
/// dropped; overlapping and unordered ones are kept as asked (as nginx keeps them), but
/// ranges adding up to more than the file get the whole file, so a short header cannot
/// ask for many copies of it.
pub fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some((unit, set)) = header.and_then(|h| h.trim().split_once('=')) else {
        return Ranged::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ranged::Whole;
    }
    let mut parts = Vec::new();
    let mut listed = 0;
    let mut total = 0u64;
    // A list may hold empty elements (RFC 9110 §5.6.1).
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        listed += 1;
        if listed > MAX_RANGES {
            return Ranged::Whole;
        }
        match one(spec, len) {
            None => return Ranged::Whole,
            Some(None) => {}
            Some(Some(range)) => {
                total = total.saturating_add(range.end - range.start);
                parts.push(range);
            }
        }
    }
    if listed == 0 || total > len {
        Ranged::Whole
    } else if parts.is_empty() {
        Ranged::Unsatisfiable
    } else {
        Ranged::Parts(parts)
    }
}

/// One range-spec: `None` if malformed, `Some(None)` if it selects no byte of the file.
fn one(spec: &str, len: u64) -> Option<Option<Range<u64>>> {
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        let n = number(last)?;
        return Some((n > 0 && len > 0).then(|| len.saturating_sub(n)..len));
    }
    let start = number(first)?;
    let end = if last.is_empty() {
        len
    } else {
        let last = number(last)?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(len)
    };
    Some((start < len).then_some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(range: Range<u64>) -> Ranged {
        Ranged::Parts(vec![range])
    }

    #[test]
    fn ranges() {
        let p = |h: &str| parse(Some(h), 100);
        assert_eq!(parse(None, 100), Ranged::Whole);
        assert_eq!(p("bytes=0-9"), single(0..10));
        assert_eq!(p("bytes=90-"), single(90..100));
        assert_eq!(p("bytes=90-1000"), single(90..100));
        assert_eq!(p("bytes=-10"), single(90..100));
        assert_eq!(p("bytes=-1000"), single(0..100));
        assert_eq!(p("bytes=100-"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=5-3"), Ranged::Whole);
        assert_eq!(p("items=0-1"), Ranged::Whole);
        assert_eq!(p("bytes=a-b"), Ranged::Whole);
        assert_eq!(p("bytes=+1-2"), Ranged::Whole);
        assert_eq!(p("bytes=99999999999999999999999-"), Ranged::Whole);
        assert_eq!(p("bytes="), Ranged::Whole);
        assert_eq!(p("BYTES=0-0"), single(0..1));
    }

    #[test]
    fn several_ranges() {
        let p = |h: &str| parse(Some(h), 100);
        let parts = |r: &[Range<u64>]| Ranged::Parts(r.to_vec());
        assert_eq!(p("bytes=0-1,5-6"), parts(&[0..2, 5..7]));
        assert_eq!(p("bytes=50-59, 0-9"), parts(&[50..60, 0..10]), "as asked");
        assert_eq!(p("bytes=0-9,5-14"), parts(&[0..10, 5..15]), "overlaps kept");
        assert_eq!(p("bytes=0-0,,-1,"), parts(&[0..1, 99..100]));
        assert_eq!(p("bytes=200-,0-9,-0"), single(0..10), "dropped");
        assert_eq!(p("bytes=200-,300-"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=0-9,x"), Ranged::Whole, "one bad spec spoils all");
        assert_eq!(
            p("bytes=0-49,40-89"),
            parts(&[0..50, 40..90]),
            "as much as the file"
        );
        assert_eq!(p("bytes=0-49,40-90"), Ranged::Whole, "more than the file");
        assert_eq!(p("bytes=,"), Ranged::Whole);

        let listed = |n: u64| {
            let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", i % 100, i % 100)).collect();
            format!("bytes={}", specs.join(","))
        };
        let n = MAX_RANGES as u64;
        let most = parse(Some(&listed(n)), 1000);
        assert!(matches!(&most, Ranged::Parts(r) if r.len() == MAX_RANGES));
        assert_eq!(parse(Some(&listed(n + 1)), 1000), Ranged::Whole);
        assert!(listed(n).len() < MAX_HEADER);
    }
}
