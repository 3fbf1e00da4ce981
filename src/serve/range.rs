//! The one byte range of a `Range` header (RFC 9110 §14), as a static server serves it.

/// What to send of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// All of it (no Range header, one we do not serve, or several ranges): 200.
    Whole,
    /// Bytes `start..end`: 206.
    Part { start: u64, end: u64 },
    /// A well-formed range outside the file: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value against a file of `len` bytes. Malformed headers and
/// multiple ranges are ignored, as the RFC allows: the whole file is sent.
pub fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: len.saturating_sub(n),
                end: len,
            },
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return Ranged::Whole;
            };
            let end = if last.is_empty() {
                len
            } else {
                match number(last) {
                    Some(l) if l >= start => l.saturating_add(1).min(len),
                    _ => return Ranged::Whole,
                }
            };
            if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part { start, end }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |h: &str| parse(Some(h), 100);
        assert_eq!(parse(None, 100), Ranged::Whole);
        assert_eq!(p("bytes=0-9"), Ranged::Part { start: 0, end: 10 });
        assert_eq!(
            p("bytes=90-"),
            Ranged::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            p("bytes=90-1000"),
            Ranged::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            p("bytes=-10"),
            Ranged::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(p("bytes=-1000"), Ranged::Part { start: 0, end: 100 });
        assert_eq!(p("bytes=100-"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=5-3"), Ranged::Whole);
        assert_eq!(p("bytes=0-1,5-6"), Ranged::Whole);
        assert_eq!(p("items=0-1"), Ranged::Whole);
        assert_eq!(p("bytes=a-b"), Ranged::Whole);
        assert_eq!(p("bytes=+1-2"), Ranged::Whole);
        assert_eq!(p("bytes=99999999999999999999999-"), Ranged::Whole);
    }
}
