//! Logging in to a registry, as container tools do. A request goes without credentials
//! until the registry answers `401` with a `WWW-Authenticate` challenge; then:
//!
//! - `Basic`: the login is sent with every request to that registry;
//! - `Bearer realm=…,service=…,scope=…`: a token is asked of the realm (with the login,
//!   if there is one; anonymously otherwise, as public repositories take it) for every
//!   scope challenged so far, and sent as `Bearer` until it expires (`expires_in`, 60 s
//!   when not given), when a new one is asked for before the next request.
//!
//! The login comes from `BLOCKCAST_REGISTRY_USERNAME` and `BLOCKCAST_REGISTRY_PASSWORD`,
//! else from the first of these files that has an entry for the registry:
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`. An entry is found under `auths` (the registry with the
//! repository or a leading part of it, else the registry alone; `auth` is base64 of
//! `user:password`), or in `credHelpers`/`credsStore`, whose helper
//! `docker-credential-NAME get` is run. Identity tokens (OAuth refresh tokens) are not
//! used.
//!
//! Credentials go to the registry's own origin and to the token realm it names, never
//! to another host: a redirect elsewhere (a blob on object storage) drops them.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;

/// The most of an auth file, a token answer or a helper's output read.
const MAX_AUTH_TEXT: u64 = 1 << 20;
/// How long a token is taken to last when its answer does not say.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires (at most half its life), so it does
/// not expire in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(10);
/// How long a credential helper may take.
const HELPER_DEADLINE: Duration = Duration::from_secs(30);

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", self.username)
    }
}

impl Login {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// The login for `repository` on `registry` (`HOST[:PORT]`), from the environment or
    /// the first auth file with an entry (see the module's documentation).
    pub fn find(registry: &str, repository: &str) -> Result<Option<Login>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(username), Some(password)) = (
            var("BLOCKCAST_REGISTRY_USERNAME"),
            var("BLOCKCAST_REGISTRY_PASSWORD"),
        ) {
            return Ok(Some(Login { username, password }));
        }
        let home = var("HOME").map(PathBuf::from);
        let files = [
            var("REGISTRY_AUTH_FILE").map(PathBuf::from),
            var("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/auth.json")),
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
            var("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
            home.as_ref().map(|h| h.join(".docker/config.json")),
        ];
        for file in files.into_iter().flatten() {
            let text = match crate::image::read_text(&file, MAX_AUTH_TEXT, "an auth file") {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("auth file {}: {e}", file.display())),
            };
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("auth file {}: not JSON: {e}", file.display()))?;
            if let Some(login) = from_file(&json, registry, repository)
                .map_err(|e| format!("auth file {}: {e}", file.display()))?
            {
                return Ok(Some(login));
            }
        }
        Ok(None)
    }
}

/// The keys an entry for `repository` on `registry` may have, most specific first.
fn keys(registry: &str, repository: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let parts: Vec<&str> = repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    keys.push(registry.to_string());
    keys.push(format!("https://{registry}"));
    keys.push(format!("http://{registry}"));
    keys
}

fn from_file(
    json: &serde_json::Value,
    registry: &str,
    repository: &str,
) -> Result<Option<Login>, String> {
    let keys = keys(registry, repository);
    if let Some(auths) = json.get("auths").and_then(|a| a.as_object()) {
        for key in &keys {
            let Some(entry) = auths.get(key.as_str()) else {
                continue;
            };
            if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| format!("the auth of {key} is not base64 of user:password"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("the auth of {key} is not user:password"))?;
                return Ok(Some(Login {
                    username: username.into(),
                    password: password.into(),
                }));
            }
        }
    }
    let helper = json
        .get("credHelpers")
        .and_then(|h| keys.iter().find_map(|k| h.get(k.as_str())))
        .or_else(|| json.get("credsStore"))
        .and_then(|h| h.as_str());
    match helper {
        Some(helper) => from_helper(helper, registry),
        None => Ok(None),
    }
}

/// Asks `docker-credential-HELPER get` for the login of `registry`; `None` when it has
/// none ("credentials not found", as the helpers' protocol says it).
fn from_helper(helper: &str, registry: &str) -> Result<Option<Login>, String> {
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "credential helper {helper:?} is not a helper's name"
        ));
    }
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| format!("{program} get {registry}: {why}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    // Its answer is read on a thread of its own, so that a helper that hangs or talks
    // too much is killed at the deadline rather than waited for.
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.map(|s| s.take(MAX_AUTH_TEXT + 1).read_to_end(&mut out));
        let _ = tx.send((read.is_none_or(|r| r.is_ok()), out));
    });
    let answered = rx.recv_timeout(HELPER_DEADLINE);
    // Once it has said all, it has a moment to end.
    let ending = Instant::now() + Duration::from_secs(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if answered.is_ok() && Instant::now() < ending => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = match answered {
        Ok((true, out)) if out.len() as u64 <= MAX_AUTH_TEXT => out,
        Ok((true, _)) => return Err(failed(format!("its answer is over {MAX_AUTH_TEXT} bytes"))),
        Ok((false, _)) => return Err(failed("its answer could not be read".into())),
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                HELPER_DEADLINE.as_secs()
            )))
        }
    };
    let out = String::from_utf8(out).map_err(|_| failed("its answer is not UTF-8".into()))?;
    match status {
        Some(status) if status.success() => {}
        Some(_) if out.contains("credentials not found") => return Ok(None),
        Some(status) => return Err(failed(format!("it ended with {status}"))),
        None => return Err(failed("it did not end".into())),
    }
    let json: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| failed(format!("not JSON: {e}")))?;
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(String::from);
    match (field("Username"), field("Secret")) {
        (Some(u), _) if u == "<token>" => Err(failed(
            "it gave an identity token, which blockcast does not use".into(),
        )),
        (Some(username), Some(password)) => Ok(Some(Login { username, password })),
        _ => Err(failed("no Username and Secret in its answer".into())),
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// `SCHEME key="value",key=value,…` (the first challenge of the header).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = HashMap::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            let Some((key, after)) = rest.split_once('=') else {
                break;
            };
            let key = key.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let value;
            if let Some(quoted) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                value = v;
                rest = &quoted[end?..];
            } else {
                let end = after.find(',').unwrap_or(after.len());
                value = after[..end].trim().to_string();
                rest = &after[end..];
            }
            params.insert(key, value);
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

/// What a registry (an origin and a repository on it) is sent as `Authorization`.
pub struct Auth {
    origin: String,
    registry: String,
    repository: String,
    state: Mutex<State>,
    /// Held while a token is asked for, so that requests waiting on one ask once.
    asking: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    header: Option<String>,
    /// When a bearer token is to be renewed, shortly before it expires; `None` for Basic.
    expires: Option<Instant>,
    /// The realm and service of the bearer challenge, and every scope asked for.
    realm: Option<(String, Option<String>)>,
    scopes: BTreeSet<String>,
    /// Whether the login was looked up, and what it was.
    login: Option<Option<Login>>,
}

impl Auth {
    /// The one `Auth` of the process for `repository` on the registry at `origin`
    /// (`scheme://host:port`, reached as `registry`): every client of a run shares its
    /// login and tokens.
    pub fn of(origin: &str, registry: &str, repository: &str) -> Arc<Auth> {
        type ByRepository = HashMap<(String, String), Arc<Auth>>;
        static ALL: OnceLock<Mutex<ByRepository>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.entry((origin.to_string(), repository.to_string()))
            .or_insert_with(|| {
                Arc::new(Auth {
                    origin: origin.to_string(),
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                    state: Mutex::default(),
                    asking: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Whether `url` is on the registry's origin: only those requests carry credentials.
    pub fn covers(&self, url: &reqwest::Url) -> bool {
        url.origin().ascii_serialization() == self.origin
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` header to send now, a token renewed first when it is about to
    /// expire; `None` before the registry has asked for one.
    pub async fn header(&self, http: &reqwest::Client) -> Result<Option<String>, String> {
        {
            let state = self.state();
            let fresh = state.expires.is_none_or(|at| Instant::now() < at);
            if fresh || state.realm.is_none() {
                return Ok(state.header.clone());
            }
        }
        let _one = self.asking.lock().await;
        let renewed = {
            let state = self.state();
            state.expires.is_some_and(|at| Instant::now() < at)
        };
        if !renewed {
            self.ask_token(http).await?;
        }
        Ok(self.state().header.clone())
    }

    /// Answers a `401` to a request that carried `sent`: logs in as `challenge` asks.
    /// Refuses (with the reason) a challenge it cannot meet: none given, a scheme it does
    /// not know, a login it lacks or one the registry has just refused.
    pub async fn answer(
        &self,
        challenge: Option<&str>,
        sent: Option<&str>,
        http: &reqwest::Client,
    ) -> Result<(), String> {
        let challenge = challenge
            .and_then(Challenge::parse)
            .ok_or("the registry answered 401 without a WWW-Authenticate challenge")?;
        let _one = self.asking.lock().await;
        if self.state().header.as_deref() != sent {
            // Another request logged in meanwhile: try with what it got.
            return Ok(());
        }
        let login = self.login()?;
        match challenge.scheme.as_str() {
            "basic" => {
                let login = login.ok_or(
                    "the registry asks for a login (Basic) and none is configured (auth files or BLOCKCAST_REGISTRY_USERNAME/PASSWORD)",
                )?;
                if sent.is_some() {
                    return Err(format!(
                        "the registry refused the login of {}",
                        login.username
                    ));
                }
                let mut state = self.state();
                state.header = Some(login.basic());
                state.expires = None;
                Ok(())
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
                    .ok_or("the registry's Bearer challenge names no http(s) realm")?;
                if self.origin.starts_with("https://") && !realm.starts_with("https://") {
                    return Err(format!(
                        "the registry is reached over HTTPS but names a plain-HTTP token realm ({realm}): not sending the login there"
                    ));
                }
                let new_scope = {
                    let mut state = self.state();
                    state.realm = Some((realm.clone(), challenge.params.get("service").cloned()));
                    let mut new = false;
                    for scope in challenge
                        .params
                        .get("scope")
                        .into_iter()
                        .flat_map(|s| s.split(' '))
                    {
                        new |= state.scopes.insert(scope.to_string());
                    }
                    new
                };
                if sent.is_some_and(|s| s.starts_with("Bearer ")) && !new_scope {
                    return Err(match login {
                        Some(l) => format!("the registry refused the token issued to {}", l.username),
                        None => "the registry refused the anonymous token: it needs a login (auth files or BLOCKCAST_REGISTRY_USERNAME/PASSWORD)".into(),
                    });
                }
                self.ask_token(http).await
            }
            other => Err(format!(
                "the registry asks for {other} authentication, which blockcast does not speak"
            )),
        }
    }

    /// The login, looked up once (outside the state's lock: a credential helper may take
    /// a while; callers hold `asking`, so one looks it up).
    fn login(&self) -> Result<Option<Login>, String> {
        if let Some(login) = self.state().login.clone() {
            return Ok(login);
        }
        let login = Login::find(&self.registry, &self.repository)?;
        self.state().login = Some(login.clone());
        Ok(login)
    }

    /// Asks the realm for a token covering every scope asked for so far.
    async fn ask_token(&self, http: &reqwest::Client) -> Result<(), String> {
        let login = self.login()?;
        let url = {
            let state = self.state();
            let (realm, service) = state.realm.clone().ok_or("no token realm known")?;
            let mut url =
                reqwest::Url::parse(&realm).map_err(|e| format!("token realm {realm}: {e}"))?;
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = &service {
                    query.append_pair("service", service);
                }
                for scope in &state.scopes {
                    query.append_pair("scope", scope);
                }
            }
            url
        };
        let failed = |why: String| {
            format!(
                "token realm {}: {why}",
                url.as_str().split('?').next().unwrap_or("")
            )
        };
        let mut request = http.get(url.clone()).timeout(Duration::from_secs(30));
        if let Some(login) = &login {
            request = request.header(reqwest::header::AUTHORIZATION, login.basic());
        }
        let mut response = request.send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "answered {}{}",
                response.status(),
                match &login {
                    Some(l) => format!(" to the login of {}", l.username),
                    None => " to an anonymous request".into(),
                }
            )));
        }
        let mut body = Vec::new();
        while let Some(piece) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            body.extend_from_slice(&piece);
            if body.len() as u64 > MAX_AUTH_TEXT {
                return Err(failed("the answer is too large".into()));
            }
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| failed(format!("not JSON: {e}")))?;
        let token = ["token", "access_token"]
            .iter()
            .find_map(|k| json.get(k).and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()))
            .ok_or_else(|| failed("no token in its answer".into()))?;
        let life = json
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFE, |s| Duration::from_secs(s.min(86_400)));
        let mut state = self.state();
        state.header = Some(format!("Bearer {token}"));
        state.expires = Some(Instant::now() + life - RENEW_BEFORE.min(life / 2));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://127.0.0.1:5001/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = Challenge::parse("Bearer realm=x, service=y").unwrap();
        assert_eq!(c.params["service"], "y");
        assert!(Challenge::parse("").is_none());
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn auth_file_entries_match_the_most_specific_key() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({
            "auths": {
                "reg:5000": {"auth": b64("all:one")},
                "reg:5000/team": {"auth": b64("team:two")},
                "other": {"auth": "not base64!"}
            }
        });
        let login = from_file(&json, "reg:5000", "team/app").unwrap().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("team", "two")
        );
        let login = from_file(&json, "reg:5000", "elsewhere").unwrap().unwrap();
        assert_eq!(login.username, "all");
        assert!(from_file(&json, "none", "x").unwrap().is_none());
        assert!(from_file(&json, "other", "x").is_err());
    }
}
