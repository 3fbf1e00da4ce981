//! A fault-injecting HTTP/1.1 file server for the tests: it serves a directory (a store,
//! indexes beside it) on loopback and, per request and reproducibly from a seed, resets
//! the connection, answers 500 or 503, stalls, dribbles or truncates the body, flips a
//! byte of it, answers 404 for a file it has, or sends a body far larger than asked for.
//! It ignores `Range` headers unless told how to answer them ([`Ranges`]); then it can
//! also break its `multipart/byteranges` answers (the `Multipart*` faults).
//!
//! Whether a request is faulted is a function of the seed, the request's path and how
//! many requests for that path came before it (its attempt number), never of timing or
//! of the order in which different paths arrive: the same run injects the same faults.
//! Random faults hit only attempts below [`Config::faulty_attempts`], so a client that
//! retries more often than that always gets every file. [`Rule`]s fault one path on
//! purpose, a given number of times or always.
//!
//! Bounded: loopback only, at most [`Config::max_connections`] connections at once (more
//! wait in the listen backlog), at most [`Config::max_requests`] requests in all (then it
//! stops listening), reads and writes with timeouts, no body longer than
//! [`Config::hostile_len`]. Dropping the [`FaultyServer`] stops and joins every thread.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the server does to one request instead of answering it properly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Reads the request, then closes the connection with a TCP reset (SO_LINGER 0).
    Reset,
    /// `500 Internal Server Error`, connection kept alive.
    Status500,
    /// `503 Service Unavailable`, connection kept alive.
    Status503,
    /// Answers nothing until the client hangs up, the server stops or [`Config::stall`]
    /// has passed, then closes the connection.
    Stall,
    /// Sends the headers and then the body a byte at a time, spread over
    /// [`Config::stall`]: only a timeout on the whole request stops this one.
    Trickle,
    /// Announces the whole body in `Content-Length`, sends half of it, closes.
    Truncate,
    /// The whole body with one byte changed.
    FlipBytes,
    /// `404 Not Found` although the file is there.
    NotFound,
    /// Announces and sends [`Config::hostile_len`] bytes of garbage.
    Oversize,
    /// Sends garbage without a `Content-Length`, up to [`Config::hostile_len`] bytes, until
    /// the client hangs up.
    Endless,
    /// A `multipart/byteranges` answer whose parts are delimited by another boundary than
    /// the one announced. Range faults like this one hit only requests for several ranges
    /// from a server that answers them ([`Ranges::Multipart`]), and are not in
    /// [`Fault::ALL`].
    MultipartWrongBoundary,
    /// A part's `Content-Range` and bytes one byte further on than asked.
    MultipartWrongRange,
    /// The first part again before the closing delimiter.
    MultipartExtraPart,
    /// Announces the whole multipart body, sends half of it, closes.
    MultipartTruncated,
    /// The right parts with one byte of one changed.
    MultipartFlipByte,
    /// `401 Unauthorized` without a `WWW-Authenticate` challenge.
    Status401,
    /// `403 Forbidden`.
    Status403,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    Status429,
    /// `307` to the path asked: a redirect loop.
    RedirectToSelf,
    /// `307` to `/elsewhere`, the path asked and `.moved`, which the test fills as it
    /// likes.
    RedirectElsewhere,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Reset,
        Fault::Status500,
        Fault::Status503,
        Fault::Stall,
        Fault::Trickle,
        Fault::Truncate,
        Fault::FlipBytes,
        Fault::NotFound,
        Fault::Oversize,
        Fault::Endless,
    ];

    /// Faults that change or need a body: not injected for a file the server lacks.
    fn needs_body(self) -> bool {
        matches!(
            self,
            Fault::Trickle | Fault::Truncate | Fault::FlipBytes | Fault::NotFound
        ) || self.of_multipart()
    }

    fn of_multipart(self) -> bool {
        matches!(
            self,
            Fault::MultipartWrongBoundary
                | Fault::MultipartWrongRange
                | Fault::MultipartExtraPart
                | Fault::MultipartTruncated
                | Fault::MultipartFlipByte
        )
    }
}

/// What the server does with a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Ignores it: `200` with the whole file.
    Ignore,
    /// One range: `206`; several: `200` with the whole file, as S3 does.
    One,
    /// One range: `206`; several: `206 multipart/byteranges`.
    Multipart,
}

/// A fault for one path on purpose: `times` requests (`u32::MAX`: all) for any path ending
/// with `path_suffix`, after those of the rules for the same path listed before it.
#[derive(Clone, Debug)]
pub struct Rule {
    pub path_suffix: String,
    pub fault: Fault,
    pub times: u32,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The directory served; `GET /a/b` is `root/a/b`.
    pub root: PathBuf,
    pub seed: u64,
    /// Chance that an eligible request is faulted at random, 0 to 1.
    pub rate: f64,
    /// The faults picked from at random (evenly, by the seed).
    pub kinds: Vec<Fault>,
    /// Only attempts below this (per path) may be faulted at random.
    pub faulty_attempts: u32,
    /// Random faults hit only paths ending with this (`.cacnk`: chunks, not the index).
    pub random_suffix: String,
    /// Faults on purpose, checked before the random ones.
    pub rules: Vec<Rule>,
    /// How long a stall or a trickle lasts at most: far longer than any client timeout
    /// the tests give, so a client that does not time out is seen not to.
    pub stall: Duration,
    /// The length of an oversized or endless body.
    pub hostile_len: u64,
    pub max_connections: usize,
    pub max_requests: u64,
    /// An idle connection is closed after this.
    pub idle: Duration,
    pub ranges: Ranges,
}

impl Config {
    /// Serves `root` faithfully until configured otherwise.
    pub fn new(root: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            seed: 1,
            rate: 0.0,
            kinds: Vec::new(),
            faulty_attempts: 2,
            random_suffix: ".cacnk".into(),
            rules: Vec::new(),
            stall: Duration::from_secs(30),
            hostile_len: 64 << 20,
            max_connections: 64,
            max_requests: 20_000,
            idle: Duration::from_secs(10),
            ranges: Ranges::Ignore,
        }
    }

    /// Answers `Range` headers as `ranges` says.
    pub fn ranges(mut self, ranges: Ranges) -> Config {
        self.ranges = ranges;
        self
    }

    /// Random faults of `kinds` at `rate` with `seed`.
    pub fn random(mut self, seed: u64, rate: f64, kinds: &[Fault]) -> Config {
        self.seed = seed;
        self.rate = rate;
        self.kinds = kinds.to_vec();
        self
    }

    /// `fault` for the next `times` requests of paths ending with `path_suffix`: after
    /// those of the rules already given for them. A path with rules has no random faults.
    pub fn rule(mut self, path_suffix: &str, fault: Fault, times: u32) -> Config {
        self.rules.push(Rule {
            path_suffix: path_suffix.into(),
            fault,
            times,
        });
        self
    }

    /// `fault` for every request of paths ending with `path_suffix`.
    pub fn always(self, path_suffix: &str, fault: Fault) -> Config {
        self.rule(path_suffix, fault, u32::MAX)
    }

    /// The fault for attempt `attempt` (0 for the first request) at `path`, if any.
    pub fn decide(&self, path: &str, attempt: u32) -> Option<Fault> {
        // Rules for the same path follow one another: the first covers its first `times`
        // attempts, the next the attempts after those, and so on; then the path is clean.
        let mut start = 0u32;
        let mut ruled = false;
        for rule in self.rules.iter().filter(|r| path.ends_with(&r.path_suffix)) {
            ruled = true;
            if attempt.checked_sub(start).is_some_and(|a| a < rule.times) {
                return Some(rule.fault);
            }
            start = start.saturating_add(rule.times);
        }
        if ruled {
            return None;
        }
        if self.kinds.is_empty()
            || attempt >= self.faulty_attempts
            || !path.ends_with(&self.random_suffix)
        {
            return None;
        }
        let h = mix(self.seed, path, attempt);
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        (unit < self.rate).then(|| self.kinds[(mix(h, path, 0) % self.kinds.len() as u64) as usize])
    }
}

/// splitmix64 over the seed, the attempt and an FNV-1a hash of the path.
fn mix(seed: u64, path: &str, attempt: u32) -> u64 {
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        fnv ^= u64::from(b);
        fnv = fnv.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed
        .wrapping_add(fnv.rotate_left(17))
        .wrapping_add(u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the server did, for the tests to check that the faults really happened.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connections: u64,
    /// Requests read, faulted or not.
    pub requests: u64,
    /// `200` answers sent in full, unaltered.
    pub served: u64,
    /// Paths answered `404` because the server does not have them (not counting
    /// [`Fault::NotFound`]), each as often as asked.
    pub absent: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Requests per path.
    pub per_path: BTreeMap<String, u32>,
    /// Requests with a `Range` header asking for one range, and for several.
    pub one_range: u64,
    pub several_ranges: u64,
    /// Ranges asked for in all.
    pub ranges_asked: u64,
    /// `206` answers sent in full (one part or `multipart/byteranges`), unaltered.
    pub partial: u64,
    /// Body bytes of hostile answers ([`Fault::Oversize`], [`Fault::Endless`]) the kernel
    /// took before the client hung up.
    pub hostile_bytes: u64,
    /// Hostile or trickled bodies sent to the end: the client did not hang up on them.
    pub hostile_completed: u64,
    /// Hostile or trickled bodies the client hung up on before their end.
    pub hostile_abandoned: u64,
    /// Stalls the client hung up on.
    pub stalls_abandoned: u64,
    /// Stalls cut short because the server stopped.
    pub stalls_stopped: u64,
    /// Requests read and not yet answered to the end, faulted or not.
    pub answering: u64,
    /// Set when [`Config::max_requests`] was reached and the server stopped.
    pub capped: bool,
}

impl Stats {
    pub fn count(&self, fault: Fault) -> u64 {
        self.faults.get(&fault).copied().unwrap_or(0)
    }

    /// Absent paths other than pack maps: a store without packs has none, and a client
    /// asks for its release's once, to learn that it reads loose files.
    pub fn absent_beyond_pack_maps(&self) -> Vec<&str> {
        self.absent
            .iter()
            .filter(|p| !p.contains("/packmaps/"))
            .map(String::as_str)
            .collect()
    }

    pub fn requests_for(&self, path_suffix: &str) -> u32 {
        self.per_path
            .iter()
            .filter(|(p, _)| p.ends_with(path_suffix))
            .map(|(_, n)| *n)
            .sum()
    }
}

struct Shared {
    cfg: Config,
    stop: AtomicBool,
    stats: Mutex<Stats>,
    /// Connections open now.
    open: Mutex<usize>,
    freed: Condvar,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Answers nothing on `stream` for [`Config::stall`], or until the client hangs up or
    /// the server stops, and counts why the stall ended.
    fn stall(&self, stream: &mut TcpStream) {
        let end = Instant::now() + self.cfg.stall;
        while Instant::now() < end {
            if self.stopping() {
                self.stats().stalls_stopped += 1;
                return;
            }
            // Waits up to the stream's read timeout for the client to close or send more.
            match stream.peek(&mut [0u8]) {
                Ok(0) => {
                    self.stats().stalls_abandoned += 1;
                    return;
                }
                Ok(_) => thread::sleep(POLL),
                Err(e) if hung_up(&e) => {
                    self.stats().stalls_abandoned += 1;
                    return;
                }
                Err(_) => {}
            }
        }
    }
}

/// Whether a read or write failed because the peer closed the connection.
fn hung_up(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

pub struct FaultyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyServer {
    pub fn start(cfg: Config) -> FaultyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            cfg,
            stop: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            open: Mutex::new(0),
            freed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("faulty-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the accept thread");
        FaultyServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }

    /// The stats once no request is being answered: a client that has exited may have
    /// left the server a hung-up connection to notice.
    pub fn settled(&self) -> Stats {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.stats();
            if stats.answering == 0 {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "answers still running: {stats:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server, joins every thread and returns the final stats.
    pub fn stop(mut self) -> Stats {
        self.shut_down();
        self.stats()
    }

    fn shut_down(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.freed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            // Wakes the blocking accept; refused when the server already stopped listening.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        {
            let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
            while *open >= shared.cfg.max_connections && !shared.stopping() {
                open = shared
                    .freed
                    .wait_timeout(open, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if shared.stopping() || shared.stats().capped {
            break;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.stopping() {
            break;
        }
        shared.stats().connections += 1;
        *shared.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let s = shared.clone();
        let worker = thread::Builder::new()
            .name("faulty-conn".into())
            .spawn(move || {
                connection(stream, &s);
                *s.open.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                s.freed.notify_all();
            })
            .expect("spawn a connection thread");
        workers.retain(|w| !w.is_finished());
        workers.push(worker);
    }
    drop(listener);
    for w in workers {
        let _ = w.join();
    }
}

struct Request {
    method: String,
    path: String,
    close: bool,
    range: Option<String>,
}

const MAX_HEAD: usize = 16 << 10;
const POLL: Duration = Duration::from_millis(100);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves requests on one connection until either side closes it.
fn connection(mut stream: TcpStream, shared: &Shared) {
    if stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf, shared) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(status) => {
                let _ = respond(&mut stream, status, b"bad request\n", true, false);
                return;
            }
        };
        let attempt = {
            let mut stats = shared.stats();
            if stats.requests >= shared.cfg.max_requests {
                stats.capped = true;
                return;
            }
            stats.requests += 1;
            stats.answering += 1;
            let n = stats.per_path.entry(req.path.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let keep = answer(&mut stream, &req, attempt, shared);
        shared.stats().answering -= 1;
        if !keep || req.close || shared.stopping() {
            // Dropping the stream closes it: a FIN, or a reset after [`reset`].
            return;
        }
    }
}

/// Reads one request head (and discards any body). `Ok(None)`: the connection closed or
/// idled out, or the server stops. `Err(status)`: a request to refuse.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> Result<Option<Request>, u16> {
    let idle_until = Instant::now() + shared.cfg.idle;
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        if shared.stopping() || Instant::now() > idle_until {
            return Ok(None);
        }
        let mut piece = [0u8; 4096];
        match stream.read(&mut piece) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    buf.drain(..head_len);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m, t, v),
        _ => return Err(400),
    };
    let mut close = version == "HTTP/1.0";
    let mut range = None;
    let mut body_len: usize = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" if value.eq_ignore_ascii_case("close") => close = true,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => close = false,
            "content-length" => body_len = value.parse().map_err(|_| 400u16)?,
            "transfer-encoding" => return Err(501),
            "range" => range = Some(value.to_string()),
            _ => {}
        }
    }
    if body_len > MAX_HEAD {
        return Err(413);
    }
    while buf.len() < body_len {
        if shared.stopping() || Instant::now() > idle_until {
            return Ok(None);
        }
        let mut piece = [0u8; 4096];
        match stream.read(&mut piece) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&piece[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    }
    buf.drain(..body_len);
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    Ok(Some(Request {
        method: method.to_string(),
        path,
        close,
        range,
    }))
}

/// The file a request path names under `root`, if it is a plain path with no way out.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.strip_prefix('/')?);
    if path.contains('\\') || path.contains('\0') {
        return None;
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

/// Answers one request, faulted or not; false when the connection is to be closed.
fn answer(stream: &mut TcpStream, req: &Request, attempt: u32, shared: &Shared) -> bool {
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return respond(stream, 405, b"GET or HEAD\n", false, false);
    }
    let body = resolve(&shared.cfg.root, &req.path)
        .filter(|p| p.is_file())
        .and_then(|p| fs::read(p).ok());
    let asked = match (&body, shared.cfg.ranges) {
        (Some(body), Ranges::One | Ranges::Multipart) => req
            .range
            .as_deref()
            .and_then(|r| ranges_of(r, body.len() as u64)),
        _ => None,
    };
    {
        let mut stats = shared.stats();
        match asked.as_ref().map(Vec::len) {
            Some(1) => stats.one_range += 1,
            Some(_) => stats.several_ranges += 1,
            None => {}
        }
        stats.ranges_asked += asked.as_ref().map_or(0, |a| a.len() as u64);
    }
    let multipart =
        shared.cfg.ranges == Ranges::Multipart && asked.as_ref().is_some_and(|a| a.len() > 1);
    let fault = shared
        .cfg
        .decide(&req.path, attempt)
        .filter(|f| body.is_some() || !f.needs_body())
        .filter(|f| multipart || !f.of_multipart());
    if let (Some(file), Some(asked)) = (&body, &asked) {
        if fault.is_none() || fault.is_some_and(Fault::of_multipart) {
            return ranged(stream, req, file, asked, fault, shared);
        }
    }
    let Some(fault) = fault else {
        return match body {
            Some(body) => {
                let sent = respond(stream, 200, &body, false, head);
                if sent {
                    shared.stats().served += 1;
                }
                sent
            }
            None => {
                shared.stats().absent.push(req.path.clone());
                respond(stream, 404, b"no such file\n", false, head)
            }
        };
    };
    *shared.stats().faults.entry(fault).or_insert(0) += 1;
    let body = body.unwrap_or_default();
    match fault {
        Fault::Reset => {
            reset(stream);
            false
        }
        Fault::Status500 => respond(stream, 500, b"injected fault\n", false, head),
        Fault::Status503 => respond(stream, 503, b"injected fault\n", false, head),
        Fault::NotFound => respond(stream, 404, b"injected fault\n", false, head),
        Fault::Status401 => respond(stream, 401, b"injected fault\n", false, head),
        Fault::Status403 => respond(stream, 403, b"injected fault\n", false, head),
        Fault::Status429 => {
            let body = b"injected fault\n";
            let len = Some(body.len() as u64);
            write_head_with(stream, 429, len, false, "text/plain", "Retry-After: 1\r\n")
                .and_then(|()| if head { Ok(()) } else { stream.write_all(body) })
                .is_ok()
        }
        Fault::RedirectToSelf => {
            let location = format!("Location: {}\r\n", req.path);
            write_head_with(stream, 307, Some(0), false, "text/plain", &location).is_ok()
        }
        Fault::RedirectElsewhere => {
            let location = format!("Location: /elsewhere{}.moved\r\n", req.path);
            write_head_with(stream, 307, Some(0), false, "text/plain", &location).is_ok()
        }
        Fault::Stall => {
            shared.stall(stream);
            false
        }
        Fault::FlipBytes => {
            let mut body = body;
            if !body.is_empty() {
                let at = (mix(shared.cfg.seed, &req.path, attempt) % body.len() as u64) as usize;
                body[at] ^= 0x5a;
            }
            respond(stream, 200, &body, false, head)
        }
        Fault::Truncate => {
            let _ = write_head(stream, 200, Some(body.len() as u64), true)
                .and_then(|()| stream.write_all(&body[..body.len() / 2]))
                .and_then(|()| stream.flush())
                .and_then(|()| stream.shutdown(Shutdown::Write));
            false
        }
        Fault::Trickle => {
            if write_head(stream, 200, Some(body.len() as u64), true).is_err() {
                return false;
            }
            // A byte a millisecond until the stall is over, then the rest at once.
            let started = Instant::now();
            let mut at = 0;
            while at < body.len() && started.elapsed() < shared.cfg.stall {
                if shared.stopping() {
                    return false;
                }
                if let Err(e) = stream.write_all(&body[at..at + 1]) {
                    shared.stats().hostile_abandoned += u64::from(hung_up(&e));
                    return false;
                }
                at += 1;
                thread::sleep(Duration::from_millis(1));
            }
            if shared.stopping() {
                return false;
            }
            if let Err(e) = stream.write_all(&body[at..]) {
                shared.stats().hostile_abandoned += u64::from(hung_up(&e));
                return false;
            }
            shared.stats().hostile_completed += 1;
            false
        }
        Fault::MultipartWrongBoundary
        | Fault::MultipartWrongRange
        | Fault::MultipartExtraPart
        | Fault::MultipartTruncated
        | Fault::MultipartFlipByte => unreachable!("answered by ranged"),
        Fault::Oversize | Fault::Endless => {
            let len = shared.cfg.hostile_len;
            let announced = (fault == Fault::Oversize).then_some(len);
            if write_head(stream, 200, announced, true).is_err() {
                return false;
            }
            let garbage: Vec<u8> = (0..64 << 10).map(|i: u32| (i * 131 + 7) as u8).collect();
            let mut sent = 0u64;
            let mut abandoned = false;
            while sent < len && !shared.stopping() {
                let n = (len - sent).min(garbage.len() as u64) as usize;
                if let Err(e) = stream.write_all(&garbage[..n]) {
                    abandoned = hung_up(&e);
                    break;
                }
                sent += n as u64;
            }
            let mut stats = shared.stats();
            stats.hostile_bytes += sent;
            stats.hostile_abandoned += u64::from(abandoned);
            if sent == len {
                stats.hostile_completed += 1;
            }
            false
        }
    }
}

/// The ranges of a `bytes=FIRST-LAST,...` header inside a file of `len` bytes; `None`
/// for anything else (other forms are not asked for by the client under test).
fn ranges_of(header: &str, len: u64) -> Option<Vec<(u64, u64)>> {
    let specs = header.strip_prefix("bytes=")?;
    specs
        .split(',')
        .map(|spec| {
            let (first, last) = spec.trim().split_once('-')?;
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            (first <= last && last < len).then_some((first, last))
        })
        .collect()
}

const BOUNDARY: &str = "faulty0123456789";

/// Answers a request for `asked` ranges of `file` (as [`Config::ranges`] says), broken as
/// `fault` says.
fn ranged(
    stream: &mut TcpStream,
    req: &Request,
    file: &[u8],
    asked: &[(u64, u64)],
    fault: Option<Fault>,
    shared: &Shared,
) -> bool {
    let head = req.method == "HEAD";
    if let Some(fault) = fault {
        *shared.stats().faults.entry(fault).or_insert(0) += 1;
    }
    let len = file.len();
    let bytes = |(first, last): (u64, u64)| &file[first as usize..=last as usize];
    if let [one] = asked {
        let extra = format!("Content-Range: bytes {}-{}/{len}\r\n", one.0, one.1);
        let sent = write_head_with(
            stream,
            206,
            Some(bytes(*one).len() as u64),
            false,
            "application/octet-stream",
            &extra,
        )
        .and_then(|()| {
            if head {
                Ok(())
            } else {
                stream.write_all(bytes(*one))
            }
        })
        .and_then(|()| stream.flush())
        .is_ok();
        shared.stats().partial += u64::from(sent);
        return sent;
    }
    if shared.cfg.ranges == Ranges::One {
        let sent = respond(stream, 200, file, false, head);
        shared.stats().served += u64::from(sent);
        return sent;
    }
    let mut parts: Vec<(u64, u64)> = asked.to_vec();
    let mut delimiter = BOUNDARY.to_string();
    match fault {
        Some(Fault::MultipartWrongBoundary) => delimiter = "another0123456789".into(),
        Some(Fault::MultipartWrongRange) => {
            parts[0] = (parts[0].0 + 1, (parts[0].1 + 1).min(len as u64 - 1));
        }
        Some(Fault::MultipartExtraPart) => parts.push(parts[0]),
        _ => {}
    }
    let mut body = Vec::new();
    for &part in &parts {
        body.extend_from_slice(
            format!(
                "\r\n--{delimiter}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                part.0, part.1
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes(part));
    }
    body.extend_from_slice(format!("\r\n--{delimiter}--\r\n").as_bytes());
    if fault == Some(Fault::MultipartFlipByte) {
        let at = body.len() / 2;
        body[at] ^= 0x5a;
    }
    let content_type = format!("multipart/byteranges; boundary={BOUNDARY}");
    let truncated = fault == Some(Fault::MultipartTruncated);
    let sent = write_head_with(
        stream,
        206,
        Some(body.len() as u64),
        truncated,
        &content_type,
        "",
    )
    .and_then(|()| match (head, truncated) {
        (true, _) => Ok(()),
        (false, true) => stream
            .write_all(&body[..body.len() / 2])
            .and_then(|()| stream.flush())
            .and_then(|()| stream.shutdown(Shutdown::Write)),
        (false, false) => stream.write_all(&body),
    })
    .and_then(|()| stream.flush())
    .is_ok();
    if fault.is_none() {
        shared.stats().partial += u64::from(sent);
    }
    sent && !truncated
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    len: Option<u64>,
    close: bool,
) -> std::io::Result<()> {
    write_head_with(stream, status, len, close, "application/octet-stream", "")
}

/// A head with this `Content-Type` and `extra` header lines (each ending in CRLF).
fn write_head_with(
    stream: &mut TcpStream,
    status: u16,
    len: Option<u64>,
    close: bool,
    content_type: &str,
    extra: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n{extra}",
        reason(status)
    );
    if let Some(len) = len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

/// A whole answer; false when it could not be sent or the connection is to be closed.
fn respond(stream: &mut TcpStream, status: u16, body: &[u8], close: bool, head: bool) -> bool {
    let sent = write_head(stream, status, Some(body.len() as u64), close)
        .and_then(|()| if head { Ok(()) } else { stream.write_all(body) })
        .and_then(|()| stream.flush());
    sent.is_ok() && !close
}

/// Closes with a TCP reset rather than an orderly FIN: SO_LINGER with a zero timeout.
fn reset(stream: &mut TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
