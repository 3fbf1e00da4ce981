//! A forwarding HTTP proxy for a test, in front of one upstream on loopback: one request
//! per connection (it asks the upstream to close after answering), each passed on as it
//! is unless a rule answers it instead. Bounded in requests and time; stopped when
//! dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::acceptor::Acceptor;

const LIFETIME: Duration = Duration::from_secs(600);
const MAX_REQUESTS: usize = 20_000;
const MAX_HEAD: usize = 64 << 10;

/// A request as the proxy saw it: method and target (path and query).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The status the proxy answered itself, if it did.
    pub answered: Option<u16>,
    /// Whether the request carried an `Authorization` header.
    pub authorized: bool,
}

/// Decides, from the requests seen before and this one, whether the proxy answers it
/// with a status of its own.
pub type Rule = Box<dyn Fn(&[Seen], &Seen) -> Option<u16> + Send>;

pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _acceptor: Acceptor,
}

impl Proxy {
    /// A proxy to `upstream` (`127.0.0.1:PORT`) applying `rule`. Requests are handled
    /// one at a time, which keeps the rule's view of their order exact.
    pub fn start(upstream: &str, rule: Rule) -> Proxy {
        Proxy::slow(upstream, rule, Duration::ZERO)
    }

    /// [`Proxy::start`], each request passed on `delay` after it arrived: a slow link.
    pub fn slow(upstream: &str, rule: Rule, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_string();
        let noted = seen.clone();
        let acceptor = Acceptor::start(listener, LIFETIME, MAX_REQUESTS, move |client| {
            let _ = pass(client, &upstream, &noted, &rule, delay);
        });
        Proxy {
            host,
            seen,
            _acceptor: acceptor,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads a request head and its body (by `Content-Length`) from `stream`.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 16 << 10];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut piece).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut piece).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&piece[..n]);
    }
    Some((head, body))
}

fn pass(
    mut client: TcpStream,
    upstream: &str,
    seen: &Mutex<Vec<Seen>>,
    rule: &Rule,
    delay: Duration,
) -> Option<()> {
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let (head, body) = read_request(&mut client)?;
    let mut words = head.lines().next()?.split_whitespace();
    let mut this = Seen {
        method: words.next()?.to_string(),
        target: words.next()?.to_string(),
        answered: None,
        authorized: head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        }),
    };
    let status = {
        let before = seen.lock().unwrap();
        rule(&before, &this)
    };
    this.answered = status;
    seen.lock().unwrap().push(this);
    if let Some(status) = status {
        // As S3 refuses: the error code in an XML body.
        let code = match status {
            403 => "AccessDenied",
            _ => "InternalError",
        };
        let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
        let reply = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(reply.as_bytes()).ok();
    }
    std::thread::sleep(delay);
    // The same request, asking the upstream to close once it has answered.
    let mut forwarded = String::new();
    for (i, line) in head.trim_end().split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or("").trim();
        if i > 0 && name.eq_ignore_ascii_case("connection") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    up.write_all(forwarded.as_bytes()).ok()?;
    up.write_all(&body).ok()?;
    std::io::copy(&mut up, &mut client).ok()?;
    Some(())
}
