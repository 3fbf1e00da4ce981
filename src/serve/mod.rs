//! `blockcast serve`: a store directory and the indexes beside it over HTTP/1.1, as any
//! static web server would serve them: GET and HEAD, byte ranges (several in one
//! `multipart/byteranges` answer, streamed from the file), content types,
//! `Cache-Control: immutable` for chunks (a chunk's name is its content), bounded
//! connections, and a graceful stop.
//!
//! Only regular files inside the directory are served, reached without symlinks and
//! through no name starting with a dot (temporary files, `.git`); anything else is
//! answered 404 as if it were not there.

mod conn;
mod open;
pub mod range;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use conn::{Conns, Limits, Watched};
use open::Refused;
use range::Ranged;

pub struct ServeOptions {
    /// The directory served; nothing outside it is.
    pub root: PathBuf,
    /// Added before every answer, to stand in for a slow link in benchmarks.
    pub delay: Duration,
    /// Connections served at once. When all are taken, the one idle the longest between
    /// requests is closed for a new client; without one, new clients wait.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, from connecting or from
    /// the request's first byte.
    pub header_timeout: Duration,
    /// How long a connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// How long requests in flight get to finish once a stop is asked for.
    pub drain_timeout: Duration,
    /// One line per request on stderr.
    pub verbose: bool,
    /// Tests only: requests for this path (relative to the root) block their thread for
    /// good, as a read from a hung filesystem would.
    #[doc(hidden)]
    pub stall: Option<PathBuf>,
}

impl ServeOptions {
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
}

/// Files are sent in pieces of this size.
const PIECE: usize = 256 << 10;

type Body = BoxBody<Bytes, std::io::Error>;

/// Serves `listener` until `stop` completes, then lets requests in flight finish (for at
/// most the drain timeout). A thread still blocked in the filesystem then is not waited
/// for: the caller shuts its runtime down without waiting (`shutdown_background`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let root = std::fs::canonicalize(&opts.root).map_err(|e| Error::Io {
        path: opts.root.clone(),
        err: e,
    })?;
    let opts = Arc::new(ServeOptions { root, ..opts });
    let limits = Limits {
        header: opts.header_timeout,
        idle: opts.idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let conns = Arc::new(Conns::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    'serving: loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    eprintln!("blockcast serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A client is waiting: when every slot is taken, close idle connections (the
        // longest idle first, one at a time) until one is free.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => loop {
                conns.shed_idlest();
                tokio::select! {
                    _ = &mut stop => break 'serving,
                    slot = slots.clone().acquire_owned() => break slot.map_err(|_| stopped())?,
                    _ = conns.idled() => {}
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let registered = conns.register();
        let io = Watched {
            inner: stream,
            conn: registered.conn.clone(),
        };
        let service = {
            let (opts, conns, conn) = (opts.clone(), conns.clone(), registered.conn.clone());
            hyper::service::service_fn(move |req| {
                let opts = opts.clone();
                let busy = conns.busy(&conn);
                async move {
                    let response = answer(&opts, peer, req).await;
                    // Idle again once hyper has sent the body and dropped it.
                    Ok::<_, Infallible>(response.map(|body| {
                        body.map_frame(move |frame| {
                            let _held = &busy;
                            frame
                        })
                        .boxed()
                    }))
                }
            })
        };
        let serving = graceful.watch(
            hyper::server::conn::http1::Builder::new()
                // Bounded by `limits` instead, which tells idle from slow.
                .header_read_timeout(None)
                .serve_connection(TokioIo::new(io), service),
        );
        tokio::spawn(async move {
            registered.conn.watch(limits, serving).await;
            // The slot first: while the connection is still listed, a client waiting for
            // the slot sheds no other connection.
            drop(slot);
            drop(registered);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(opts.drain_timeout, graceful.shutdown()).await;
    Ok(())
}

fn stopped() -> Error {
    Error::Internal("the server stopped".into())
}

async fn answer(
    opts: &Arc<ServeOptions>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let began = Instant::now();
    if !opts.delay.is_zero() {
        tokio::time::sleep(opts.delay).await;
    }
    let response = respond(opts, &req).await;
    if opts.verbose {
        let sent = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        eprintln!(
            "{peer} \"{} {} {:?}\" {} {sent} {:.1}ms",
            req.method(),
            req.uri().path(),
            req.version(),
            response.status().as_u16(),
            began.elapsed().as_secs_f64() * 1000.0
        );
    }
    response
}

async fn respond(opts: &Arc<ServeOptions>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let path = match local_path(req.uri().path()) {
        Ok(path) => path,
        Err(Unnamed::Bad) => return plain(StatusCode::BAD_REQUEST, "bad path\n"),
        Err(Unnamed::Hidden) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if range.as_ref().is_some_and(|r| r.len() > range::MAX_HEADER) {
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "range header too long\n",
        );
    }
    // One trip to a blocking thread opens, measures and (for the small files a store is
    // made of) reads the file, so the answer goes out in one piece.
    let opened = {
        let (opts, path) = (opts.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            if opts.stall.as_ref() == Some(&path) {
                eprintln!("blockcast serve: stalling {} for a test", path.display());
                loop {
                    std::thread::park();
                }
            }
            open(&opts.root, &path, range.as_deref(), head)
        })
        .await
    };
    let found = match opened {
        Ok(Opened::Found(found)) => found,
        Ok(Opened::Missing) => return plain(StatusCode::NOT_FOUND, "not found\n"),
        Ok(Opened::Unreadable) => return plain(StatusCode::FORBIDDEN, "not readable\n"),
        Ok(Opened::Unsatisfiable { len }) => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            set(&mut r, header::CONTENT_RANGE, &format!("bytes */{len}"));
            return r;
        }
        Ok(Opened::Failed(why)) => return plain(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "read failed\n"),
    };
    let body = match found.content {
        Content::Nothing => empty(),
        Content::Bytes(bytes) => Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
        Content::File(file, segments) => file_body(file, segments),
    };
    let mut r = Response::new(body);
    *r.status_mut() = found.status;
    set(&mut r, header::CONTENT_LENGTH, &found.length.to_string());
    set(&mut r, header::CONTENT_TYPE, &found.content_type);
    set(&mut r, header::CACHE_CONTROL, cache_control(&path));
    set(&mut r, header::ACCEPT_RANGES, "bytes");
    if let Some(content_range) = &found.content_range {
        set(&mut r, header::CONTENT_RANGE, content_range);
    }
    r
}

enum Opened {
    Found(Found),
    Missing,
    Unreadable,
    Unsatisfiable { len: u64 },
    Failed(&'static str),
}

/// A file's answer, settled.
struct Found {
    status: StatusCode,
    /// The body's, headers of parts included.
    length: u64,
    content_type: String,
    /// For a single part only; several parts each carry theirs.
    content_range: Option<String>,
    content: Content,
}

enum Content {
    Nothing,
    Bytes(Vec<u8>),
    /// Streamed, a piece at a time.
    File(std::fs::File, Vec<Segment>),
}

/// A stretch of an answer's body.
enum Segment {
    /// Made here: a part's delimiter and headers, or the closing delimiter.
    Text(Bytes),
    /// These bytes of the file.
    File(Range<u64>),
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Text(text) => text.len() as u64,
            Segment::File(range) => range.end - range.start,
        }
    }
}

/// Opens `relative` under `root` and settles the answer: which bytes, and the bytes
/// themselves when the file's share of them fits in one piece.
fn open(root: &Path, relative: &Path, range: Option<&str>, head: bool) -> Opened {
    let file = match open::open_beneath(root, relative) {
        Ok(f) => f,
        Err(Refused::NotFound) => return Opened::Missing,
        Err(Refused::Unreadable) => return Opened::Unreadable,
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return Opened::Unreadable,
    };
    let file_type = content_type(relative);
    let (status, content_type, content_range, segments) = match range::parse(range, len) {
        Ranged::Whole => (
            StatusCode::OK,
            file_type.to_string(),
            None,
            vec![Segment::File(0..len)],
        ),
        Ranged::Parts(parts) => match &parts[..] {
            [one] => (
                StatusCode::PARTIAL_CONTENT,
                file_type.to_string(),
                Some(format!("bytes {}-{}/{len}", one.start, one.end - 1)),
                vec![Segment::File(one.clone())],
            ),
            _ => {
                let Some(boundary) = boundary() else {
                    return Opened::Failed("no random boundary\n");
                };
                (
                    StatusCode::PARTIAL_CONTENT,
                    format!("multipart/byteranges; boundary={boundary}"),
                    None,
                    multipart(&parts, len, file_type, &boundary),
                )
            }
        },
        Ranged::Unsatisfiable => return Opened::Unsatisfiable { len },
    };
    let length = segments.iter().map(Segment::len).sum();
    let from_file: u64 = segments
        .iter()
        .filter(|s| matches!(s, Segment::File(_)))
        .map(Segment::len)
        .sum();
    let content = if head || length == 0 {
        Content::Nothing
    } else if from_file <= PIECE as u64 {
        match gather(&file, &segments, length) {
            Ok(bytes) => Content::Bytes(bytes),
            // A file that shrank meanwhile: send what the headers promise or nothing,
            // and say so as a server error, which a client may ask again about.
            Err(_) => return Opened::Failed("the file changed while it was read\n"),
        }
    } else {
        Content::File(file, segments)
    };
    Opened::Found(Found {
        status,
        length,
        content_type,
        content_range,
        content,
    })
}

/// 128 random bits in hex: no file holds them by chance, so they cannot end a part early.
fn boundary() -> Option<String> {
    let mut bits = [0u8; 16];
    getrandom::fill(&mut bits).ok()?;
    Some(bits.iter().map(|b| format!("{b:02x}")).collect())
}

/// A `multipart/byteranges` body (RFC 9110 §14.6) of `parts` of a file of `len` bytes,
/// laid out as nginx lays it out.
fn multipart(parts: &[Range<u64>], len: u64, content_type: &str, boundary: &str) -> Vec<Segment> {
    let mut segments = Vec::with_capacity(2 * parts.len() + 1);
    for part in parts {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            part.start,
            part.end - 1
        );
        segments.push(Segment::Text(Bytes::from(head)));
        segments.push(Segment::File(part.clone()));
    }
    segments.push(Segment::Text(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    segments
}

/// The whole body at once, for answers whose file bytes fit in one piece.
fn gather(file: &std::fs::File, segments: &[Segment], length: u64) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(length as usize);
    for segment in segments {
        match segment {
            Segment::Text(text) => body.extend_from_slice(text),
            Segment::File(range) => {
                let at = body.len();
                body.resize(at + (range.end - range.start) as usize, 0);
                file.read_exact_at(&mut body[at..], range.start)?;
            }
        }
    }
    Ok(body)
}

enum Unnamed {
    /// Undecodable, empty, or climbing out with `..`: answered 400.
    Bad,
    /// A name starting with a dot: answered 404, as a static server hides them.
    Hidden,
}

/// The path relative to the root that a request path names: percent-decoded, and only
/// plain names that do not start with a dot (`..`, temporary files, `.git`).
fn local_path(uri_path: &str) -> Result<PathBuf, Unnamed> {
    let decoded = percent_decode(uri_path).ok_or(Unnamed::Bad)?;
    let relative = Path::new(decoded.trim_start_matches('/'));
    if relative.as_os_str().is_empty() {
        return Err(Unnamed::Bad);
    }
    let mut hidden = false;
    for c in relative.components() {
        match c {
            Component::Normal(name) => hidden |= name.as_encoded_bytes().starts_with(b"."),
            _ => return Err(Unnamed::Bad),
        }
    }
    match hidden {
        true => Err(Unnamed::Hidden),
        false => Ok(relative.to_path_buf()),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bcidx") => "application/vnd.blockcast.index",
        Some("minisig") | Some("pub") => "text/plain; charset=utf-8",
        Some("p7s") => "application/pkcs7-signature",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A chunk's name is the hash of its content, a delta's the hashes of what it rebuilds
/// and its base, and a pack's the hash of its bytes, so none ever changes: caches may
/// keep them for good. Anything else (an index is republished under the same name, a pack
/// map rewritten by a prune) is revalidated.
fn cache_control(path: &Path) -> &'static str {
    if path
        .extension()
        .is_some_and(|e| e == "cacnk" || e == "cadelta" || e == "bcpack")
    {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

fn set(r: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// `Cache-Control` of a `404`.
pub const ABSENT_CACHE_CONTROL: &str = "public, max-age=10";

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if status == StatusCode::NOT_FOUND {
        // A file missing now may be published in a moment: a cache keeps its absence
        // briefly.
        set(&mut r, header::CACHE_CONTROL, ABSENT_CACHE_CONTROL);
    }
    set(&mut r, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    set(&mut r, header::CONTENT_LENGTH, &text.len().to_string());
    r
}

/// `segments`, the file's read a piece at a time (positioned reads, on a blocking thread)
/// as the client takes them. A file that shrinks underneath ends the body early, which
/// the client sees as a short body.
fn file_body(file: std::fs::File, segments: Vec<Segment>) -> Body {
    let state = (Arc::new(file), VecDeque::from(segments));
    let pieces = stream::unfold(state, |(file, mut left)| async move {
        let piece = match left.pop_front()? {
            Segment::Text(text) => Ok(text),
            Segment::File(range) => {
                let n = (range.end - range.start).min(PIECE as u64);
                if range.start + n < range.end {
                    left.push_front(Segment::File(range.start + n..range.end));
                }
                let reading = file.clone();
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    match reading.read_exact_at(&mut buf, range.start) {
                        Ok(()) => Ok(Bytes::from(buf)),
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(
                            std::io::Error::new(e.kind(), "file shrank while being sent"),
                        ),
                        Err(e) => Err(e),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
        };
        if piece.is_err() {
            left.clear();
        }
        Some((piece.map(Frame::data), (file, left)))
    });
    StreamBody::new(pieces).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let named = |p| local_path(p).ok();
        assert_eq!(
            named("/ab12/ab12cd.cacnk"),
            Some(PathBuf::from("ab12/ab12cd.cacnk"))
        );
        assert_eq!(named("/v%201.bcidx"), Some(PathBuf::from("v 1.bcidx")));
        assert_eq!(named("/a/./b"), Some(PathBuf::from("a/b")));
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/%2e%2e/etc",
            "/",
            "/a%00b",
            "/a%zz",
        ] {
            assert!(matches!(local_path(bad), Err(Unnamed::Bad)), "{bad}");
        }
        for hidden in [
            "/.git/config",
            "/store/ab12/.ab12cd.1234-0.tmp",
            "/.v2.bcidx.99.tmp",
            "/%2esecret",
        ] {
            assert!(
                matches!(local_path(hidden), Err(Unnamed::Hidden)),
                "{hidden}"
            );
        }
    }
}
