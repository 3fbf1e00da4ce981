//! Chunk stores and indexes over HTTP and HTTPS: one client whose connections are reused
//! (HTTP/2 where the server offers it), a timeout per request, retries with backoff on
//! resets, timeouts, 5xx and bad bodies, and every body capped before it is read.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use std::ops::Range;

use futures_util::future::BoxFuture;

use super::{Check, Checked, ReadOptions, ReadStore, Warn};
use crate::error::{Error, IoContext, Result};

/// How requests are made; shared by every remote store and index of a run.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The whole of one request, from connecting to the body's last byte.
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// PEM files of certificate authorities trusted besides the system's roots.
    pub ca_certs: Vec<PathBuf>,
    /// PEM certificate and key presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            retries: 4,
            ca_certs: Vec::new(),
            client_cert: None,
            client_key: None,
        }
    }
}

/// True when `location` names a remote store or index rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The first backoff; it doubles with each retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many leading bytes tell a file's length, and how to read it from them.
pub type Sniff<'a> = (usize, &'a (dyn Fn(&[u8]) -> Result<u64, String> + Sync));

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    timeout: Duration,
    retries: u32,
}

/// Why one attempt failed, and whether another may succeed.
enum Failure {
    Transient(String),
    Permanent(String),
}

impl Client {
    pub fn new(opts: &HttpOptions) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("blockcast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
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
        let inner = builder
            .build()
            .map_err(|e| Error::Internal(format!("setting up the HTTP client: {e}")))?;
        Ok(Client {
            inner,
            timeout: opts.timeout,
            retries: opts.retries,
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

    /// Whether the server has `url`, by HEAD, with the same retries as [`Client::get`].
    pub async fn exists(&self, url: &str, warn: &(dyn Fn(&str) + Send + Sync)) -> Result<bool> {
        self.retrying(url, warn, || async {
            let response = self
                .inner
                .head(url)
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| Failure::Transient(describe(&e)))?;
            judge(response.status())
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
        loop {
            attempt += 1;
            let reason = match once().await {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(reason)) => return Err(remote(url, reason)),
                Err(Failure::Transient(reason)) => reason,
            };
            if attempt > self.retries {
                return Err(remote(
                    url,
                    format!("{reason} (gave up after {attempt} attempts)"),
                ));
            }
            warn(&format!(
                "{url}: {reason}; retrying in {} ms (attempt {} of {})",
                backoff.as_millis(),
                attempt + 1,
                self.retries + 1
            ));
            tokio::time::sleep(jittered(backoff)).await;
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
        let mut request = self.inner.get(url).timeout(self.timeout);
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
        let mut response = request.send().await.map_err(transient)?;
        let status = response.status();
        if !judge(status)? {
            return Ok(None);
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

/// A store served over HTTP(S) with a local store's layout: any static web server.
pub struct HttpStore {
    base: String,
    client: Client,
    warn: Warn,
}

impl HttpStore {
    pub fn new(location: &str, client: Client, warn: Warn) -> HttpStore {
        HttpStore {
            base: location.trim_end_matches('/').to_string(),
            client,
            warn,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

impl ReadStore for HttpStore {
    fn describe(&self) -> String {
        self.base.clone()
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
                .get(&self.url(name), opts.max_len, open, self.warn.as_ref())
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
            let url = self.url(name);
            for (i, range) in ranges.iter().enumerate() {
                match self
                    .client
                    .get_range(&url, range.clone(), self.warn.as_ref())
                    .await?
                {
                    Some(bytes) => part(i, bytes)?,
                    None => return Ok(false),
                }
            }
            Ok(true)
        })
    }

    fn has<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.client
                .exists(&self.url(name), self.warn.as_ref())
                .await
        })
    }

    fn get_file<'a>(
        &'a self,
        name: &'a str,
        max_len: u64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.client
                .get(&self.url(name), max_len, Ok, self.warn.as_ref())
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

fn remote(url: &str, reason: String) -> Error {
    Error::Remote {
        url: url.to_string(),
        reason,
    }
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
