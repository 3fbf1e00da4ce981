//! Reads a `multipart/byteranges` answer (RFC 9110 §14.6) to a request for several byte
//! ranges, strictly and as it arrives: each part's bytes are read by the length its
//! `Content-Range` gives (never by scanning for the boundary, which the data may hold),
//! must be one of the ranges asked for and not sent before, and must be followed right
//! away by a delimiter. Memory holds one part's headers (at most [`MAX_PART_HEAD`]
//! bytes) and the bytes of the part under way, which are no more than were asked for.
//!
//! Written here rather than taken from a crate: the multipart crates at hand (`multer`
//! and its kin) read `multipart/form-data`, find a part's end by scanning for the
//! boundary and know nothing of `Content-Range`, the three things this reader must not
//! do or must check.

use std::ops::Range;

/// The most bytes of one part's delimiter and headers: a `Content-Type` and a
/// `Content-Range` take about 100.
pub const MAX_PART_HEAD: usize = 1024;

/// The boundary of a `Content-Type: multipart/byteranges; boundary=...` value; `None` for
/// any other type or a missing or malformed boundary (RFC 2046 §5.1.1: 1 to 70
/// characters, quoted or not).
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut fields = content_type.split(';');
    let kind = fields.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    let mut found = None;
    for field in fields {
        // Another parameter, even one without a value, is no concern of ours.
        let Some((name, value)) = field.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"')?,
                None => value,
            };
            if found.is_some() || value.is_empty() || value.len() > 70 {
                return None;
            }
            if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') || value.ends_with(' ') {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// A `multipart/byteranges` body being read.
pub struct Reader<'a> {
    asked: &'a [Range<u64>],
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    /// Which asked ranges have arrived.
    seen: Vec<bool>,
    state: State,
    /// The delimiter or headers being read.
    text: Vec<u8>,
    /// Bytes that were not data: delimiters, part headers, an epilogue.
    overhead: u64,
}

enum State {
    /// The body's first bytes: the first delimiter, whose leading CRLF may be left out.
    Open,
    /// A delimiter after a part's bytes.
    Delimiter,
    /// The two bytes after a delimiter: CRLF before a part, `--` at the end.
    AfterDelimiter,
    Headers,
    /// The bytes of asked range `index`.
    Data {
        index: usize,
        data: Vec<u8>,
    },
    /// After the closing delimiter: an epilogue, ignored.
    Closed,
}

impl<'a> Reader<'a> {
    pub fn new(asked: &'a [Range<u64>], boundary: &str) -> Reader<'a> {
        Reader {
            asked,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            seen: vec![false; asked.len()],
            state: State::Open,
            text: Vec::new(),
            overhead: 0,
        }
    }

    /// Bytes of the body so far that were not parts' data.
    pub fn overhead(&self) -> u64 {
        self.overhead
    }

    /// Reads `input`, the next bytes of the body, handing each part to `part` (with its
    /// place in the ranges asked for) once its last byte is in. An error says why the
    /// body is not a well-formed answer to the ranges asked.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        part: &mut dyn FnMut(usize, Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                State::Data { index, data } => {
                    let want = (self.asked[*index].end - self.asked[*index].start) as usize;
                    let n = (want - data.len()).min(input.len());
                    data.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if data.len() == want {
                        let index = *index;
                        let data = std::mem::take(data);
                        self.state = State::Delimiter;
                        part(index, data)?;
                    }
                }
                State::Closed => {
                    self.overhead += input.len() as u64;
                    input = &[];
                }
                State::Open => {
                    let n = (2 - self.text.len()).min(input.len());
                    self.take(&mut input, n);
                    if self.text.len() == 2 {
                        if self.text != b"\r\n" {
                            self.text.splice(0..0, *b"\r\n");
                        }
                        self.state = State::Delimiter;
                    }
                }
                State::Delimiter => {
                    let n = (self.delimiter.len() - self.text.len()).min(input.len());
                    self.take(&mut input, n);
                    if self.text.len() == self.delimiter.len() {
                        if self.text != self.delimiter {
                            return Err(format!(
                                "a part is not followed by the boundary {:?}",
                                String::from_utf8_lossy(&self.delimiter[4..])
                            ));
                        }
                        self.text.clear();
                        self.state = State::AfterDelimiter;
                    }
                }
                State::AfterDelimiter => {
                    let n = (2 - self.text.len()).min(input.len());
                    self.take(&mut input, n);
                    match self.text.as_slice() {
                        b"\r\n" => self.state = State::Headers,
                        b"--" => {
                            let missing = self.seen.iter().filter(|s| !**s).count();
                            if missing > 0 {
                                return Err(format!(
                                    "the answer ends with {missing} of the {} ranges asked for missing",
                                    self.asked.len()
                                ));
                            }
                            self.state = State::Closed;
                        }
                        [_, _] => {
                            return Err("a boundary is followed by neither CRLF nor --".into())
                        }
                        _ => continue,
                    }
                    self.text.clear();
                }
                State::Headers => {
                    while let Some((&b, rest)) = input.split_first() {
                        input = rest;
                        self.text.push(b);
                        self.overhead += 1;
                        if self.text.ends_with(b"\r\n\r\n") || self.text == b"\r\n" {
                            break;
                        }
                        if self.text.len() > MAX_PART_HEAD {
                            return Err(format!("a part's headers run past {MAX_PART_HEAD} bytes"));
                        }
                    }
                    if self.text.ends_with(b"\r\n\r\n") || self.text == b"\r\n" {
                        let index = self.range_of(&self.text)?;
                        self.seen[index] = true;
                        let len = (self.asked[index].end - self.asked[index].start) as usize;
                        self.text.clear();
                        self.state = State::Data {
                            index,
                            data: Vec::with_capacity(len),
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the body ended where it may: after the closing delimiter.
    pub fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Closed => Ok(()),
            _ => {
                let arrived = self.seen.iter().filter(|s| **s).count();
                Err(format!(
                    "the answer was cut short ({arrived} of {} parts begun)",
                    self.asked.len()
                ))
            }
        }
    }

    /// Moves `n` bytes of `input` to the text under way, as overhead.
    fn take(&mut self, input: &mut &[u8], n: usize) {
        self.text.extend_from_slice(&input[..n]);
        self.overhead += n as u64;
        *input = &input[n..];
    }

    /// The asked range a part's headers announce, not announced before.
    fn range_of(&self, head: &[u8]) -> Result<usize, String> {
        let head = std::str::from_utf8(head).map_err(|_| "a part's headers are not text")?;
        let mut range = None;
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("a part's header line {line:?} has no colon"))?;
            if name.trim().eq_ignore_ascii_case("content-range") {
                if range.is_some() {
                    return Err("a part has two Content-Range headers".into());
                }
                range = Some(content_range(value.trim()).ok_or_else(|| {
                    format!("a part's Content-Range {:?} is malformed", value.trim())
                })?);
            }
        }
        let range = range.ok_or("a part has no Content-Range")?;
        let index = self.asked.iter().position(|a| *a == range).ok_or_else(|| {
            format!(
                "a part holds bytes {}-{}, which were not asked for",
                range.start,
                range.end - 1
            )
        })?;
        if self.seen[index] {
            return Err(format!(
                "bytes {}-{} arrived twice",
                range.start,
                range.end - 1
            ));
        }
        Ok(index)
    }
}

/// `bytes FIRST-LAST/LENGTH` (or `/*`) as the range `FIRST..LAST + 1`.
fn content_range(value: &str) -> Option<Range<u64>> {
    let (unit, rest) = value.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (span, length) = rest.trim().split_once('/')?;
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let (first, last) = span.split_once('-')?;
    let (first, last) = (number(first)?, number(last)?);
    if length != "*" && number(length)? <= last {
        return None;
    }
    let end = last.checked_add(1)?;
    (first <= last).then_some(first..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    fn body(parts: &[(u64, u64)], boundary: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for &(first, last) in parts {
            body.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {first}-{last}/36\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(&FILE[first as usize..=last as usize]);
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    /// Parts that arrived, with their places in the ranges asked.
    type Parts = Vec<(usize, Vec<u8>)>;

    /// Feeds `body` `step` bytes at a time; the parts that arrived, by place.
    fn read(asked: &[Range<u64>], body: &[u8], step: usize) -> (Parts, Result<(), String>) {
        let mut reader = Reader::new(asked, "b0undary");
        let mut got = Vec::new();
        for piece in body.chunks(step) {
            let outcome = reader.feed(piece, &mut |i, data| {
                got.push((i, data));
                Ok(())
            });
            if outcome.is_err() {
                return (got, outcome);
            }
        }
        (got, reader.finish())
    }

    #[test]
    fn reads_well_formed_answers_in_any_pieces() {
        let asked = [0..4, 10..11, 30..36];
        let good = body(&[(0, 3), (10, 10), (30, 35)], "b0undary");
        for step in [1, 2, 3, 7, 1000] {
            let (got, outcome) = read(&asked, &good, step);
            assert_eq!(outcome, Ok(()), "step {step}");
            let expected = vec![
                (0, b"0123".to_vec()),
                (1, b"a".to_vec()),
                (2, b"uvwxyz".to_vec()),
            ];
            assert_eq!(got, expected, "step {step}");
        }
        // Out of order is fine, each once; the first CRLF may be left out.
        let unordered = body(&[(30, 35), (0, 3), (10, 10)], "b0undary");
        let (got, outcome) = read(&asked, &unordered[2..], 5);
        assert_eq!(outcome, Ok(()));
        let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [2, 0, 1]);
        let mut reader = Reader::new(&asked, "b0undary");
        reader.feed(&good, &mut |_, _| Ok(())).unwrap();
        assert_eq!(reader.overhead(), good.len() as u64 - 11);
    }

    #[test]
    fn data_may_hold_the_boundary() {
        let file = b"\r\n--b0undary\r\n--b0undary--\r\n";
        let len = file.len();
        let mut good = format!(
            "--b0undary\r\nContent-Range: bytes 0-{}/{len}\r\n\r\n",
            len - 1
        )
        .into_bytes();
        good.extend_from_slice(file);
        good.extend_from_slice(b"\r\n--b0undary--");
        let whole = 0..len as u64;
        let asked = std::slice::from_ref(&whole);
        let (got, outcome) = read(asked, &good, 3);
        assert_eq!(outcome, Ok(()));
        assert_eq!(got, vec![(0, file.to_vec())]);
    }

    #[test]
    fn refuses_malformed_answers() {
        let asked = [0..4, 10..11];
        let refused = |body: &[u8], why: &str| {
            let (_, outcome) = read(&asked, body, 4);
            let e = outcome.expect_err(why);
            assert!(e.contains(why), "{e} (expected {why})");
        };
        refused(&body(&[(0, 3), (10, 10)], "other"), "boundary");
        refused(&body(&[(0, 3), (11, 11)], "b0undary"), "not asked for");
        refused(&body(&[(0, 3), (0, 3)], "b0undary"), "twice");
        refused(&body(&[(0, 3), (10, 10), (0, 3)], "b0undary"), "twice");
        refused(&body(&[(0, 3)], "b0undary"), "missing");
        refused(&body(&[(0, 3), (0, 4)], "b0undary"), "not asked for");
        let good = body(&[(0, 3), (10, 10)], "b0undary");
        refused(&good[..good.len() - 20], "cut short");
        refused(&good[..good.len() - 6], "cut short");
        let mut long = good.clone();
        long.splice(20..20, vec![b'x'; MAX_PART_HEAD]);
        refused(&long, "past");
        let mut no_range = good.clone();
        let at = no_range
            .windows(13)
            .position(|w| w == b"Content-Range")
            .unwrap();
        no_range[at] = b'X';
        refused(&no_range, "no Content-Range");
        let mut shifted = good.clone();
        let at = shifted.windows(4).position(|w| w == b"0123").unwrap();
        shifted.insert(at, b'!');
        refused(&shifted, "not followed by the boundary");
        refused(b"preamble\r\n--b0undary--", "boundary");
    }

    #[test]
    fn a_content_range_ends_within_the_length_it_gives() {
        assert_eq!(content_range("bytes 0-3/4"), Some(0..4));
        assert_eq!(content_range("bytes 0-3/*"), Some(0..4));
        assert_eq!(content_range("bytes 0-3/3"), None);
        assert_eq!(content_range("bytes 2-1/9"), None);
    }

    #[test]
    fn finds_the_boundary() {
        assert_eq!(boundary("multipart/byteranges; boundary=abc"), Some("abc"));
        assert_eq!(
            boundary("Multipart/ByteRanges;BOUNDARY=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("multipart/byteranges"), None);
        assert_eq!(
            boundary("multipart/byteranges; charset; boundary=abc"),
            Some("abc")
        );
        assert_eq!(boundary("multipart/form-data; boundary=abc"), None);
        assert_eq!(boundary("multipart/byteranges; boundary="), None);
        assert_eq!(
            boundary("multipart/byteranges; boundary=a; boundary=b"),
            None
        );
        assert_eq!(
            boundary(&format!(
                "multipart/byteranges; boundary={}",
                "x".repeat(71)
            )),
            None
        );
    }

    #[test]
    fn reads_content_ranges() {
        assert_eq!(content_range("bytes 0-9/100"), Some(0..10));
        assert_eq!(content_range("bytes 5-5/*"), Some(5..6));
        assert_eq!(content_range("bytes 9-0/100"), None);
        assert_eq!(content_range("bytes 0-9/x"), None);
        assert_eq!(content_range("items 0-9/100"), None);
        assert_eq!(content_range("bytes 0-18446744073709551615/*"), None);
        assert_eq!(content_range("bytes -1-9/100"), None);
    }
}
