//! A registry token server for a test (the realm of distribution's token auth): answers
//! `GET /token?service=…&scope=…` with an RS256 JWT that carries its certificate
//! (`x5c`), granting the user it knows what each scope asks, and anonymous requests only
//! `pull`, when it is told to. On loopback, serving a bounded number of requests for a
//! bounded time; stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::acceptor::Acceptor;

/// How long the server runs at most, and how many requests it answers.
const LIFETIME: Duration = Duration::from_secs(600);
const MAX_REQUESTS: usize = 10_000;

pub const SERVICE: &str = "blockcast-test-registry";
pub const ISSUER: &str = "blockcast-test-issuer";

/// A token request as the server saw it.
#[derive(Clone, Debug)]
pub struct Asked {
    /// The user it came with, if any, and whether the password was right.
    pub user: Option<(String, bool)>,
    pub scopes: Vec<String>,
}

pub struct TokenServer {
    pub realm: String,
    pub certificate: PathBuf,
    asked: Arc<Mutex<Vec<Asked>>>,
    _acceptor: Acceptor,
}

struct Grants {
    user: String,
    password: String,
    anonymous_pull: bool,
    expires_in: u64,
    key: PathBuf,
    certificate_der: Vec<u8>,
}

impl TokenServer {
    /// Tokens for `user` with `password` (every action asked), and for anonymous
    /// requests (`pull` when `anonymous_pull`, nothing otherwise), each good for
    /// `expires_in` seconds. Key and certificate go in `dir`.
    pub fn start(
        dir: &Path,
        user: &str,
        password: &str,
        anonymous_pull: bool,
        expires_in: u64,
    ) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("token-key.pem");
        let certificate = dir.join("token-cert.pem");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=blockcast-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&certificate)
            .output()
            .unwrap();
        assert!(der.status.success());
        let grants = Grants {
            user: user.into(),
            password: password.into(),
            anonymous_pull,
            expires_in,
            key,
            certificate_der: der.stdout,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let noted = asked.clone();
        let acceptor = Acceptor::start(listener, LIFETIME, MAX_REQUESTS, move |stream| {
            answer(stream, &grants, &noted);
        });
        TokenServer {
            realm,
            certificate,
            asked,
            _acceptor: acceptor,
        }
    }

    /// The token requests so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request, noting in `asked` what it asked before answering.
fn answer(mut stream: TcpStream, grants: &Grants, asked: &Mutex<Vec<Asked>>) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.lines().next()?.split_whitespace().nth(1)?.to_string();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(("scope", v)) = pair.split_once('=') {
            scopes.push(percent_decoded(v));
        }
    }
    let user = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("authorization") {
            return None;
        }
        let encoded = value.trim().strip_prefix("Basic ")?;
        let pair = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let pair = String::from_utf8(pair).ok()?;
        let (u, p) = pair.split_once(':')?;
        Some((u.to_string(), u == grants.user && p == grants.password))
    });
    asked.lock().unwrap().push(Asked {
        user: user.clone(),
        scopes: scopes.clone(),
    });
    let reply = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = match &user {
        Some((_, false)) => reply("401 Unauthorized", r#"{"details":"wrong password"}"#),
        _ => {
            let known = user.as_ref().map(|(u, _)| u.clone());
            let access: Vec<serde_json::Value> = scopes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    let granted: Vec<&str> = actions
                        .split(',')
                        .filter(|a| known.is_some() || (grants.anonymous_pull && *a == "pull"))
                        .collect();
                    Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
                })
                .collect();
            let token = jwt(grants, known.as_deref().unwrap_or(""), access)?;
            let body = serde_json::json!({
                "token": token,
                "expires_in": grants.expires_in,
            })
            .to_string();
            reply("200 OK", &body)
        }
    };
    stream.write_all(response.as_bytes()).ok()
}

fn jwt(grants: &Grants, subject: &str, access: Vec<serde_json::Value>) -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&grants.certificate_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + grants.expires_in,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(&grants.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| format!("{input}.{}", b64url(&out.stdout)))
}
