//! Chunk stores and indexes over HTTP and HTTPS: one client whose connections are reused
//! (HTTP/2 where the server offers it), timeouts on lack of progress (and a total one that
//! grows with the bytes asked for), retries with backoff on resets, timeouts, 5xx and bad
//! bodies, and every body capped before it is read.

use std::collections::HashMap;
use std::fs;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};

use super::byteranges;
use super::redirects::Redirects;
use super::s3::{Method, S3Location};
use super::{Check, Checked, ReadOptions, ReadStore, Traffic, Warn};
use crate::error::{Error, IoContext, Result};
use crate::oci::auth::Auth;

/// How requests are made; shared by every remote store and index of a run.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// How long a request may go without progress: connecting, or waiting for the
    /// answer's next bytes. A request as a whole may take this plus the time its bytes
    /// take at [`MIN_RATE`].
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// PEM files of certificate authorities trusted besides the system's roots.
    pub ca_certs: Vec<PathBuf>,
    /// PEM certificate and key presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Registries (`HOST[:PORT]`) reached over plain HTTP; those on loopback always are.
    pub insecure_registries: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            retries: 4,
            ca_certs: Vec::new(),
            client_cert: None,
            client_key: None,
            insecure_registries: Vec::new(),
        }
    }
}

/// True when `location` names a remote store or index rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The slowest transfer a request is given time for, in bytes a second, beyond
/// [`HttpOptions::timeout`]: a long range over a slow link is cut off by lack of progress,
/// not by a total meant for a short one.
pub const MIN_RATE: u64 = 16 << 10;

/// The first backoff; it doubles with each retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many leading bytes tell a file's length, and how to read it from them.
pub type Sniff<'a> = (usize, &'a (dyn Fn(&[u8]) -> Result<u64, String> + Sync));

/// The longest `Range` header sent: nginx refuses a header line past about 8 KiB.
pub const MAX_RANGE_HEADER: usize = 4 << 10;

/// The most ranges one request asks for: `blockcast serve` answers up to
/// [`crate::serve::range::MAX_RANGES`] with parts, and more with the whole file.
pub const MAX_RANGES: usize = 200;
const _: () = assert!(MAX_RANGES <= crate::serve::range::MAX_RANGES);

/// The bytes a part of a `multipart/byteranges` answer may take besides its data (its
/// delimiter and headers: about 100 from nginx or `blockcast serve`, and up to some 250
/// with a 70-character boundary, a long content type and large offsets), and the closing
/// delimiter too. An answer to several ranges is read to no more than their bytes and
/// this much per part: a server that answers with the whole file is cut off there.
const PART_OVERHEAD: u64 = 512;

/// Requests at once for the ranges of one request that go one at a time: a request for
/// ranges that an origin will not take together becomes several, and these keep some of
/// the concurrency that one request would have had.
const SINGLE_RANGES_AT_ONCE: usize = 4;

/// The `Range` header asking for `ranges` (each non-empty).
pub fn range_header(ranges: &[Range<u64>]) -> String {
    let specs: Vec<String> = ranges.iter().map(range_spec).collect();
    format!("bytes={}", specs.join(","))
}

/// One range's share of a `Range` header: `FIRST-LAST`.
pub fn range_spec(range: &Range<u64>) -> String {
    format!("{}-{}", range.start, range.end - 1)
}

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    /// Follows no redirect, for [`Client::send`]: a registry answers an upload with a
    /// place to send it to, and a HEAD of a blob on object storage with a redirect.
    direct: reqwest::Client,
    /// A registry's login: requests to its origin carry it (see [`Client::with_auth`]).
    auth: Option<Arc<Auth>>,
    /// Where GETs were redirected to another origin; a registry's client sends its
    /// blobs' later GETs there.
    redirects: Redirects,
    timeout: Duration,
    retries: u32,
    origins: Arc<Mutex<Origins>>,
    /// Per origin asked: held by the request that asks it for several ranges first, and
    /// set once that request has ended, told or not.
    probing: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>>,
    traffic: Arc<Traffic>,
}

/// What the run has learnt of the origins it asked for ranges.
#[derive(Default)]
struct Origins {
    /// The origin (after redirects) that answered the last request to an origin.
    redirected: HashMap<String, String>,
    /// Whether an origin answered several ranges with a well-formed `206
    /// multipart/byteranges` (true), or otherwise (false: whole, one part, malformed).
    several: HashMap<String, bool>,
}

/// How a request for several ranges in one went.
enum Several {
    /// Every range arrived.
    Done,
    /// The server does not have the file.
    Absent,
}

/// Why a request for several ranges in one did not bring them all.
enum Fell {
    /// The answer: worth asking again, one range at a time.
    Answer(String),
    /// The connection (sending, or the body cut short): worth asking again, one range at
    /// a time, but no sign of what the origin does with several ranges.
    Transport(String),
    /// The receiver of the parts refused one: the caller's to handle.
    Caller(Error),
}

/// Why one attempt failed, and whether another may succeed.
enum Failure {
    Transient(String),
    Permanent(String),
    /// A `401`: the registry's challenge, and the `Authorization` the request carried.
    Unauthorized {
        challenge: Option<String>,
        sent: Option<String>,
    },
    /// A kept redirect target refused the request: ask where it redirects again.
    Stale(String),
    /// Worth asking again after the time the server gave (`Retry-After`).
    Later(String, Duration),
}

/// The longest `Retry-After` waited for; a longer one is waited this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `failure`, waiting as long as `response`'s `Retry-After` (in seconds) asks when it is
/// a transient one.
fn with_retry_after(failure: Failure, response: &reqwest::Response) -> Failure {
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (failure, after) {
        (Failure::Transient(reason), Some(secs)) => Failure::Later(
            format!("{reason}, asking to wait {secs} s"),
            Duration::from_secs(secs).min(MAX_RETRY_AFTER),
        ),
        (failure, _) => failure,
    }
}

/// Why a body was not read whole: the connection failed, or it ran past its bound.
enum Cut {
    Transport(String),
    Over,
}

/// How many times one request logs in again after a `401`.
const LOGINS_PER_REQUEST: u32 = 3;

/// A registry's answer that [`Client::send`] hands back whatever its status.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Client {
    /// A client that counts its requests and the bytes they brought in `traffic`.
    pub fn new(opts: &HttpOptions, traffic: Arc<Traffic>) -> Result<Client> {
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .build()
                .map_err(|e| Error::Internal(format!("setting up the HTTP client: {e}")))
        };
        let redirects = Redirects::default();
        Ok(Client {
            inner: build(Self::builder(opts)?.redirect(redirects.policy()))?,
            direct: build(Self::builder(opts)?.redirect(reqwest::redirect::Policy::none()))?,
            auth: None,
            redirects,
            timeout: opts.timeout,
            retries: opts.retries,
            origins: Arc::default(),
            probing: Arc::default(),
            traffic,
        })
    }

    /// This client (sharing its connections and what it learnt) sending `auth`'s
    /// credentials to its registry's origin, and nowhere else.
    pub fn with_auth(&self, auth: Arc<Auth>) -> Client {
        Client {
            auth: Some(auth),
            ..self.clone()
        }
    }

    fn builder(opts: &HttpOptions) -> Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("blockcast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .read_timeout(opts.timeout)
            .tcp_nodelay(true);
        for path in &opts.ca_certs {
            let pem = fs::read(path).at(path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Invalid(format!("CA certificate {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::Invalid(format!(
                    "CA certificate {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = fs::read(cert).at(cert)?;
                pem.push(b'\n');
                pem.extend(fs::read(key).at(key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    Error::Invalid(format!(
                        "client certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(Error::Invalid(
                    "a client certificate needs its key, and a key its certificate".into(),
                ))
            }
        }
        Ok(builder)
    }

    /// `request` with the registry's credentials when `url` is on its origin; the
    /// `Authorization` sent, if any.
    async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(reqwest::RequestBuilder, Option<String>), Failure> {
        let Some(auth) = self
            .auth
            .as_ref()
            .filter(|a| reqwest::Url::parse(url).is_ok_and(|u| a.covers(&u)))
        else {
            return Ok((request, None));
        };
        // A realm that fails now may answer the next attempt.
        match auth.header(&self.inner).await.map_err(Failure::Transient)? {
            Some(header) => Ok((
                request.header(reqwest::header::AUTHORIZATION, &header),
                Some(header),
            )),
            None => Ok((request, None)),
        }
    }

    /// Where to send a GET of `url`: for a registry's client, the target its last
    /// redirect to another origin named, while that is good (and whether it is one).
    fn target(&self, url: &str) -> (String, bool) {
        match self.auth.as_ref().and_then(|_| self.redirects.target(url)) {
            Some(target) => (target, true),
            None => (url.to_string(), false),
        }
    }

    /// A kept target's refusal (a presigned URL expired or revoked): forgets it, so the
    /// next request asks the registry again.
    fn stale(&self, url: &str, kept: bool, status: reqwest::StatusCode) -> Option<Failure> {
        use reqwest::StatusCode;
        let refused = [
            StatusCode::FORBIDDEN,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
        ];
        (kept && refused.contains(&status)).then(|| {
            self.redirects.forget(url);
            Failure::Stale(format!("the redirect's target answered {status}"))
        })
    }

    /// Sends `request` for `url`, counted, with the registry's login where it goes: a `401`
    /// from the registry is [`Failure::Unauthorized`], a failure to send one
    /// [`Failure::Transient`].
    async fn dispatch(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, Failure> {
        let (request, sent) = self.authorized(request, url).await?;
        self.traffic.request();
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Transient(describe(&e)))?;
        match self.challenged(&response, &sent) {
            Some(f) => Err(f),
            None => Ok(response),
        }
    }

    /// The body of `response`, counted, if it ends within `max_len` bytes.
    async fn body(&self, response: &mut reqwest::Response, max_len: u64) -> Result<Vec<u8>, Cut> {
        let mut body = Vec::new();
        while let Some(piece) = response
            .chunk()
            .await
            .map_err(|e| Cut::Transport(describe(&e)))?
        {
            self.traffic.body(piece.len());
            if (body.len() + piece.len()) as u64 > max_len {
                return Err(Cut::Over);
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// A `401` from the registry itself, as a [`Failure`] that logs in again; `None` for
    /// any other answer, and for a `401` from another host a redirect led to, whose
    /// challenge must never draw the registry's login.
    fn challenged(&self, response: &reqwest::Response, sent: &Option<String>) -> Option<Failure> {
        let ours = self.auth.as_ref().is_some_and(|a| a.covers(response.url()));
        (response.status() == reqwest::StatusCode::UNAUTHORIZED && ours).then(|| {
            Failure::Unauthorized {
                challenge: response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
                sent: sent.clone(),
            }
        })
    }

    /// GETs `url` (at most `max_len` bytes of body) and passes the body to `check`,
    /// retrying transient failures and bodies `check` refuses. `None` when the server
    /// answers 404 or 410.
    pub async fn get<T>(
        &self,
        url: &str,
        max_len: u64,
        check: impl Fn(Vec<u8>) -> Result<T>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<T>> {
        self.get_sized(url, max_len, None, check, warn).await
    }

    /// Like [`Client::get`] for a file that states its own length in its first bytes:
    /// once `sniff.0` bytes have arrived, `sniff.1` reads them and returns the exact
    /// length, or why they cannot start such a file; the body is held to that length. A
    /// hostile server cannot make us take more than the file claims to be.
    pub async fn get_sized<T>(
        &self,
        url: &str,
        max_len: u64,
        sniff: Option<Sniff<'_>>,
        check: impl Fn(Vec<u8>) -> Result<T>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<T>> {
        self.retrying(url, warn, || async {
            match self.attempt(url, None, max_len, sniff).await? {
                None => Ok(None),
                Some(body) => check(body)
                    .map(Some)
                    .map_err(|e| Failure::Transient(e.to_string())),
            }
        })
        .await
    }

    /// The bytes `range` of `url` (a `206 Partial Content` answer of exactly that many
    /// bytes), with the same retries as [`Client::get`]. `None` when the server does not
    /// have it. A server that ignores the range is refused after `range`'s length.
    pub async fn get_range(
        &self,
        url: &str,
        range: Range<u64>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<Vec<u8>>> {
        if range.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let want = range.end - range.start;
        self.retrying(url, warn, || async {
            let Some(body) = self.attempt(url, Some(&range), want, None).await? else {
                return Ok(None);
            };
            if body.len() as u64 != want {
                return Err(Failure::Transient(format!(
                    "{} of the {want} bytes of the range arrived",
                    body.len()
                )));
            }
            Ok(Some(body))
        })
        .await
    }

    /// The bytes `ranges` of `url` (each non-empty), each handed to `part` with its place
    /// in `ranges` as it arrives, not necessarily in order; false when the server does not
    /// have the file. Several ranges go in one request to an origin that has answered so
    /// with a well-formed `206 multipart/byteranges`, or that has not answered such a
    /// request yet (which tells); otherwise, and for the ranges a failed answer left, one
    /// request per range, as [`Client::get_range`] makes them.
    pub async fn get_ranges(
        &self,
        url: &str,
        ranges: &[Range<u64>],
        part: &mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<bool> {
        let mut arrived = vec![false; ranges.len()];
        let mut takes = (ranges.len() > 1).then(|| self.takes_several(url));
        // One request at a time asks an origin not known yet: the others wait for what
        // it tells rather than all ask a server that may answer with whole packs.
        let probing = match takes {
            Some(None) => {
                let mut probed = self.probe_gate(url).lock_owned().await;
                takes = Some(self.takes_several(url));
                // A probe that ended without telling (a timeout, a 503) lets the others go:
                // they ask at once rather than each be the next probe in turn.
                let first = takes == Some(None) && !*probed;
                *probed = true;
                first.then_some(probed)
            }
            _ => None,
        };
        if matches!(takes, Some(None | Some(true))) {
            let asked = self.several(url, ranges, &mut arrived, part, probing).await;
            match asked {
                Ok(Several::Done) => return Ok(true),
                Ok(Several::Absent) => return Ok(false),
                Err(Fell::Caller(e)) => return Err(e),
                Err(Fell::Answer(reason) | Fell::Transport(reason)) => {
                    let left = arrived.iter().filter(|a| !**a).count();
                    warn(&format!(
                        "{}: {reason}; asking for the {left} of {} ranges left one at a time",
                        shown(url),
                        ranges.len()
                    ));
                }
            }
        }
        let mut left = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            if !arrived[i] {
                left.push(self.get_range_at(url, i, range.clone(), warn));
            }
        }
        let mut answers = stream::iter(left).buffer_unordered(SINGLE_RANGES_AT_ONCE);
        while let Some((i, answer)) = answers.next().await {
            match answer? {
                Some(bytes) => part(i, bytes)?,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// [`Client::get_range`], with the range's place in a list.
    async fn get_range_at(
        &self,
        url: &str,
        i: usize,
        range: Range<u64>,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> (usize, Result<Option<Vec<u8>>>) {
        (i, self.get_range(url, range, warn).await)
    }

    /// The gate of the first request for several ranges to `url`'s origin.
    fn probe_gate(&self, url: &str) -> Arc<tokio::sync::Mutex<bool>> {
        let origin = origin_of(url).unwrap_or_default();
        let mut gates = self.probing.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(origin).or_default().clone()
    }

    /// Whether `url`'s origin (as redirected last time) takes several ranges in one
    /// request; `None` while that is not known.
    fn takes_several(&self, url: &str) -> Option<bool> {
        let Some(asked) = origin_of(url) else {
            return Some(false);
        };
        let origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let answering = origins.redirected.get(&asked).unwrap_or(&asked);
        origins.several.get(answering).copied()
    }

    /// Records that a request to `asked` was answered by `answering`, and, when `several`
    /// is given, what that origin does with several ranges (a first verdict only, unless
    /// it is a well-formed multipart answer: one bad answer does not condemn an origin
    /// that has shown it can).
    fn learn(&self, asked: &str, answering: &str, several: Option<bool>) {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .redirected
            .insert(asked.to_string(), answering.to_string());
        match several {
            Some(true) => {
                origins.several.insert(answering.to_string(), true);
            }
            Some(false) => {
                origins
                    .several
                    .entry(answering.to_string())
                    .or_insert(false);
            }
            None => {}
        }
    }

    /// One request for all of `ranges`, not retried: its parts are handed to `part` as
    /// they arrive and marked in `arrived`. The answer is read to no more than the
    /// ranges' bytes and [`PART_OVERHEAD`] per part: a `200` with a whole file that fits
    /// serves the ranges, one that does not is cut off there.
    async fn several(
        &self,
        url: &str,
        ranges: &[Range<u64>],
        arrived: &mut [bool],
        part: &mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
        gate: Option<tokio::sync::OwnedMutexGuard<bool>>,
    ) -> Result<Several, Fell> {
        let header = range_header(ranges);
        if header.len() > MAX_RANGE_HEADER {
            return Err(Fell::Answer(format!(
                "{} ranges take a Range header of {} bytes, over {MAX_RANGE_HEADER}",
                ranges.len(),
                header.len()
            )));
        }
        let asked = origin_of(url).unwrap_or_default();
        let wanted: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let bound = wanted + PART_OVERHEAD * (ranges.len() as u64 + 1);
        let (target, kept) = self.target(url);
        let request = self
            .inner
            .get(&target)
            .timeout(self.deadline(bound))
            .header(reqwest::header::RANGE, header)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        // Asked one at a time, ranges that met a 401 log in again.
        let mut response = self.dispatch(request, &target).await.map_err(|f| {
            Fell::Transport(match f {
                Failure::Unauthorized { .. } => "the registry asked for a login".into(),
                Failure::Transient(r)
                | Failure::Permanent(r)
                | Failure::Stale(r)
                | Failure::Later(r, _) => r,
            })
        })?;
        if let Some(Failure::Stale(reason)) = self.stale(url, kept, response.status()) {
            // Asked one at a time, the ranges go to the registry again.
            return Err(Fell::Transport(reason));
        }
        let answering = response.url().origin().ascii_serialization();
        let status = response.status();
        match judge_range(status) {
            Ok(true) => {}
            Ok(false) => return Ok(Several::Absent),
            Err(Failure::Transient(reason) | Failure::Permanent(reason)) => {
                self.learn(&asked, &answering, None);
                return Err(Fell::Answer(reason));
            }
            Err(Failure::Unauthorized { .. } | Failure::Stale(_) | Failure::Later(..)) => {
                return Err(Fell::Transport(format!("the server answered {status}")))
            }
        }
        let boundary = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(byteranges::boundary)
            .map(String::from);
        let multipart = status == reqwest::StatusCode::PARTIAL_CONTENT && boundary.is_some();
        let n = ranges.len();
        let announced = response.content_length().filter(|l| *l > bound);
        if !multipart || announced.is_some() {
            self.learn(&asked, &answering, Some(false));
        }
        if let Some(announced) = announced {
            return Err(Fell::Answer(format!(
                "the server answered {n} ranges ({wanted} bytes) with {status} and {announced} bytes{}, more than the {bound} they may take; not read",
                if status == reqwest::StatusCode::OK { " (the whole file)" } else { "" }
            )));
        }
        match boundary.filter(|_| multipart) {
            Some(boundary) => {
                let mut reader = byteranges::Reader::new(ranges, &boundary);
                let read = self
                    .read_parts(&mut response, &mut reader, bound, arrived, part, || {
                        // A well-formed part tells: the requests waiting on this one go.
                        self.learn(&asked, &answering, Some(true));
                        drop(gate);
                    })
                    .await;
                self.traffic.headers(reader.overhead());
                let finished = read.and_then(|()| reader.finish().map_err(Fell::Answer));
                // A malformed answer tells against the origin; a connection lost midway
                // tells only if a well-formed part had arrived before.
                let verdict = match &finished {
                    Err(Fell::Answer(_)) => Some(false),
                    Err(Fell::Transport(_)) => arrived.iter().any(|a| *a).then_some(true),
                    Ok(()) | Err(Fell::Caller(_)) => Some(true),
                };
                self.learn(&asked, &answering, verdict);
                finished.map(|()| Several::Done)
            }
            None if status == reqwest::StatusCode::OK => {
                let whole = self.read_whole(&mut response, bound).await?;
                for (i, range) in ranges.iter().enumerate() {
                    let bytes = whole
                        .get(range.start as usize..range.end as usize)
                        .ok_or_else(|| {
                            Fell::Answer(format!(
                                "the server answered with the whole file, {} bytes, which ends before bytes {}",
                                whole.len(),
                                range_spec(range)
                            ))
                        })?;
                    part(i, bytes.to_vec()).map_err(Fell::Caller)?;
                    arrived[i] = true;
                }
                Ok(Several::Done)
            }
            None => Err(Fell::Answer(format!(
                "the server answered {n} ranges with {status} but not with multipart/byteranges"
            ))),
        }
    }

    /// Feeds the body of a multipart answer to `reader`, at most `bound` bytes of it;
    /// `told` runs once the first part has arrived whole.
    async fn read_parts(
        &self,
        response: &mut reqwest::Response,
        reader: &mut byteranges::Reader<'_>,
        bound: u64,
        arrived: &mut [bool],
        part: &mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
        told: impl FnOnce(),
    ) -> Result<(), Fell> {
        let mut received = 0u64;
        let mut refused = None;
        let mut told = Some(told);
        while let Some(piece) = response
            .chunk()
            .await
            .map_err(|e| Fell::Transport(describe(&e)))?
        {
            self.traffic.body(piece.len());
            received += piece.len() as u64;
            if received > bound {
                return Err(Fell::Answer(format!(
                    "the multipart answer runs past the {bound} bytes it may take; cut off"
                )));
            }
            let fed = reader.feed(&piece, &mut |i, data| match part(i, data) {
                Ok(()) => {
                    arrived[i] = true;
                    Ok(())
                }
                Err(e) => {
                    refused = Some(e);
                    Err(String::new())
                }
            });
            if let Err(reason) = fed {
                return Err(match refused.take() {
                    Some(e) => Fell::Caller(e),
                    None => Fell::Answer(format!("a malformed multipart answer: {reason}")),
                });
            }
            if arrived.iter().any(|a| *a) {
                if let Some(told) = told.take() {
                    told();
                }
            }
        }
        Ok(())
    }

    /// The body of a `200` answer to a request for several ranges, if it ends within
    /// `bound` bytes; cut off there if not.
    async fn read_whole(
        &self,
        response: &mut reqwest::Response,
        bound: u64,
    ) -> Result<Vec<u8>, Fell> {
        self.body(response, bound).await.map_err(|cut| match cut {
            Cut::Transport(reason) => Fell::Transport(reason),
            Cut::Over => Fell::Answer(format!(
                "the server answered several ranges with the whole file; cut off after {bound} bytes"
            )),
        })
    }

    /// PUTs `body` at `url` (a presigned upload), with the usual retries.
    pub async fn put(
        &self,
        url: &str,
        body: bytes::Bytes,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<()> {
        self.retrying(url, warn, || async {
            let request = self
                .inner
                .put(url)
                .timeout(self.deadline(body.len() as u64))
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body.clone());
            let response = self.dispatch(request, url).await?;
            let refused = match judge(response.status()) {
                Ok(true) => return Ok(()),
                Ok(false) => format!("the server answered {}", response.status()),
                Err(Failure::Permanent(reason)) => reason,
                Err(other) => return Err(other),
            };
            Err(Failure::Permanent(explained(refused, response).await))
        })
        .await
    }

    /// The length of the file at `url` by HEAD (the `Content-Length` it announces);
    /// `None` when the server does not have it.
    pub async fn length(
        &self,
        url: &str,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<u64>> {
        self.head(url, warn, |headers| {
            headers
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Failure::Permanent("a HEAD answer without a Content-Length".into()))
        })
        .await
    }

    /// The longest a request for `bytes` may take in all.
    fn deadline(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_RATE)
    }

    /// Whether the server has `url`, by HEAD, with the same retries as [`Client::get`].
    pub async fn exists(&self, url: &str, warn: &(dyn Fn(&str) + Send + Sync)) -> Result<bool> {
        Ok(self.head(url, warn, |_| Ok(())).await?.is_some())
    }

    /// A HEAD of `url`, retried as [`Client::get`] is: what `read` takes from the
    /// answer's headers, `None` when the server does not have it.
    async fn head<T>(
        &self,
        url: &str,
        warn: &(dyn Fn(&str) + Send + Sync),
        read: impl Fn(&reqwest::header::HeaderMap) -> Result<T, Failure>,
    ) -> Result<Option<T>> {
        self.retrying(url, warn, || async {
            let response = self
                .dispatch(self.inner.head(url).timeout(self.timeout), url)
                .await?;
            match judge(response.status())? {
                true => read(response.headers()).map(Some),
                false => Ok(None),
            }
        })
        .await
    }

    /// A request to a registry, retried on transient failures and logged in again on a
    /// `401`: its answer whatever its status, the body read to at most `max_len` bytes.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, &str)],
        body: Option<bytes::Bytes>,
        max_len: u64,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Reply> {
        let size = body.as_ref().map_or(0, |b| b.len() as u64);
        self.retrying(url, warn, || async {
            let mut request = self
                .direct
                .request(method.clone(), url)
                .timeout(self.deadline(size.max(max_len)));
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(body.clone());
            }
            let mut response = self.dispatch(request, url).await?;
            let status = response.status();
            if let Err(Failure::Transient(reason)) = judge(status) {
                return Err(with_retry_after(Failure::Transient(reason), &response));
            }
            let body = self
                .body(&mut response, max_len)
                .await
                .map_err(|cut| match cut {
                    Cut::Transport(reason) => Failure::Transient(reason),
                    Cut::Over => Failure::Permanent(format!(
                        "the answer ({status}) is larger than {max_len} bytes"
                    )),
                })?;
            Ok(Reply {
                status,
                headers: response.headers().clone(),
                body,
            })
        })
        .await
    }

    /// Runs `once` until it succeeds, fails for good, or has failed `retries + 1` times,
    /// sleeping a growing, jittered backoff between attempts.
    async fn retrying<T, F, Fut>(
        &self,
        url: &str,
        warn: &(dyn Fn(&str) + Send + Sync),
        mut once: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let mut logins = 0;
        loop {
            attempt += 1;
            let mut at_least = Duration::ZERO;
            let reason = match once().await {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(reason)) => return Err(remote(url, reason)),
                Err(Failure::Transient(reason)) => reason,
                Err(Failure::Unauthorized { challenge, sent }) => {
                    let auth = self.auth.as_ref().filter(|_| logins < LOGINS_PER_REQUEST);
                    let Some(auth) = auth else {
                        return Err(remote(url, "the registry answered 401 Unauthorized".into()));
                    };
                    logins += 1;
                    auth.answer(challenge.as_deref(), sent.as_deref(), &self.inner)
                        .await
                        .map_err(|reason| remote(url, format!("401 Unauthorized: {reason}")))?;
                    attempt -= 1;
                    continue;
                }
                Err(Failure::Stale(reason)) if logins < LOGINS_PER_REQUEST => {
                    logins += 1;
                    warn(&format!(
                        "{}: {reason}; asking the registry again",
                        shown(url)
                    ));
                    attempt -= 1;
                    continue;
                }
                Err(Failure::Stale(reason)) => reason,
                Err(Failure::Later(reason, wait)) => {
                    at_least = wait;
                    reason
                }
            };
            if attempt > self.retries {
                return Err(remote(
                    url,
                    format!("{reason} (gave up after {attempt} attempts)"),
                ));
            }
            let wait = jittered(backoff).max(at_least);
            warn(&format!(
                "{}: {reason}; retrying in {} ms (attempt {} of {})",
                shown(url),
                wait.as_millis(),
                attempt + 1,
                self.retries + 1
            ));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One GET of `url`, or of its bytes `range` (answered `206 Partial Content`, never
    /// compressed in transit): the body, read to at most `max_len` bytes.
    async fn attempt(
        &self,
        url: &str,
        range: Option<&Range<u64>>,
        mut max_len: u64,
        mut sniff: Option<Sniff<'_>>,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let transient = |e: reqwest::Error| Failure::Transient(describe(&e));
        let (target, kept) = self.target(url);
        let mut request = self.inner.get(&target).timeout(self.deadline(max_len));
        let expected = match range {
            Some(r) => {
                request = request
                    .header(
                        reqwest::header::RANGE,
                        format!("bytes={}-{}", r.start, r.end - 1),
                    )
                    .header(reqwest::header::ACCEPT_ENCODING, "identity");
                reqwest::StatusCode::PARTIAL_CONTENT
            }
            None => reqwest::StatusCode::OK,
        };
        let mut response = self.dispatch(request, &target).await?;
        let status = response.status();
        if let Some(f) = self.stale(url, kept, status) {
            return Err(f);
        }
        let judged = match range {
            Some(_) => judge_range(status),
            None => judge(status),
        };
        match judged {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(Failure::Permanent(reason)) => {
                return Err(Failure::Permanent(explained(reason, response).await))
            }
            Err(other) => return Err(with_retry_after(other, &response)),
        }
        if status != expected {
            return Err(Failure::Permanent(format!(
                "the server answered {status}{}",
                if range.is_some() {
                    " to a range request"
                } else {
                    ""
                }
            )));
        }
        let too_large = |max: u64| Failure::Permanent(format!("body larger than {max} bytes"));
        let announced = response.content_length();
        if announced.is_some_and(|n| n > max_len) {
            return Err(too_large(max_len));
        }
        let mut body = Vec::with_capacity(announced.unwrap_or(0).min(1 << 20) as usize);
        while let Some(piece) = response.chunk().await.map_err(transient)? {
            self.traffic.body(piece.len());
            if (body.len() + piece.len()) as u64 > max_len {
                return Err(too_large(max_len));
            }
            body.extend_from_slice(&piece);
            if let Some((prefix, sized)) = sniff.filter(|(prefix, _)| body.len() >= *prefix) {
                max_len = max_len.min(sized(&body[..prefix]).map_err(Failure::Permanent)?);
                sniff = None;
                if body.len() as u64 > max_len {
                    return Err(too_large(max_len));
                }
            }
        }
        Ok(Some(body))
    }
}

/// A store served over HTTP(S) with a local store's layout: any static web server, or an
/// S3 bucket whose requests are presigned.
pub struct HttpStore {
    base: String,
    s3: Option<S3Location>,
    client: Client,
    warn: Warn,
}

impl HttpStore {
    pub fn new(location: &str, client: Client, warn: Warn) -> HttpStore {
        HttpStore {
            base: location.trim_end_matches('/').to_string(),
            s3: None,
            client,
            warn,
        }
    }

    /// The store under an S3 prefix.
    pub fn s3(location: S3Location, client: Client, warn: Warn) -> HttpStore {
        HttpStore {
            base: location.describe(),
            s3: Some(location),
            client,
            warn,
        }
    }

    fn url(&self, method: Method, name: &str) -> String {
        match &self.s3 {
            Some(s3) => s3.url(method, name),
            None => format!("{}/{name}", self.base),
        }
    }
}

impl ReadStore for HttpStore {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn remote(&self) -> bool {
        true
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: ReadOptions,
        check: Check,
    ) -> BoxFuture<'a, Result<Option<Checked>>> {
        Box::pin(async move {
            let open = |body: Vec<u8>| check(&body).map(|chunk| (chunk, body));
            self.client
                .get(
                    &self.url(Method::Get, name),
                    opts.max_len,
                    open,
                    self.warn.as_ref(),
                )
                .await
        })
    }

    fn get_ranges<'a>(
        &'a self,
        name: &'a str,
        ranges: &'a [Range<u64>],
        part: &'a mut (dyn FnMut(usize, Vec<u8>) -> Result<()> + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.client
                .get_ranges(
                    &self.url(Method::Get, name),
                    ranges,
                    part,
                    self.warn.as_ref(),
                )
                .await
        })
    }

    fn has<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let there = self
                .client
                .exists(&self.url(Method::Head, name), self.warn.as_ref())
                .await;
            match &self.s3 {
                Some(_) => there.map_err(super::s3::explain_refusal),
                None => there,
            }
        })
    }

    fn get_file<'a>(
        &'a self,
        name: &'a str,
        max_len: u64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.client
                .get(
                    &self.url(Method::Get, name),
                    max_len,
                    Ok,
                    self.warn.as_ref(),
                )
                .await
        })
    }
}

/// What a status says of the file asked for: there (`true`), not in this store (404,
/// 410: `false`), worth asking again (408, 429, 5xx), or a failure of this store.
fn judge(status: reqwest::StatusCode) -> Result<bool, Failure> {
    use reqwest::StatusCode;
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        Ok(false)
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(Failure::Transient(format!("the server answered {status}")))
    } else if status.is_success() {
        Ok(true)
    } else {
        Err(Failure::Permanent(format!("the server answered {status}")))
    }
}

/// `reason`, with the error code an S3-style XML body gives (`<Code>AccessDenied</Code>`,
/// `NoSuchBucket`, `SignatureDoesNotMatch`), read from at most its first 4 KiB.
async fn explained(reason: String, mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < 4096 {
        match response.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            _ => break,
        }
    }
    let code = super::s3::element(&String::from_utf8_lossy(&body), "Code")
        .map(|c| c.trim().to_string())
        .filter(|c| {
            !c.is_empty() && c.len() < 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric())
        });
    match code {
        Some(code) => format!("{reason} ({code})"),
        None => reason,
    }
}

/// [`judge`] for a request of ranges: a 416 says the file is shorter than asked, so it is
/// not the file asked for (a pack a stale pack map names, say), as a 404 would.
fn judge_range(status: reqwest::StatusCode) -> Result<bool, Failure> {
    match status {
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE => Ok(false),
        status => judge(status),
    }
}

/// `scheme://host:port` of a URL; `None` when it does not parse.
fn origin_of(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

fn remote(url: &str, reason: String) -> Error {
    Error::Remote {
        url: shown(url).to_string(),
        reason,
    }
}

/// `url` as messages show it: without its query, which for a presigned URL holds a
/// signature.
fn shown(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

/// reqwest's message, with the causes it hides behind "error sending request".
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut short"
    } else {
        "the request failed"
    }
    .to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Between half and the whole of `d`, so that many devices do not retry in step.
fn jittered(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX);
    d / 2 + d.mul_f64(f64::from(r) / f64::from(u32::MAX) / 2.0)
}
