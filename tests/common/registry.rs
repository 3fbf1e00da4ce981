//! The CNCF distribution registry (Debian's `docker-registry`) for a test: started on a
//! free loopback port with its storage in a temporary directory or an S3 bucket, without
//! auth, with htpasswd Basic auth or with token auth, killed when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the registry may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How the registry asks for logins.
pub enum Access {
    Open,
    /// Basic auth against an htpasswd file (bcrypt) holding one user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// Bearer tokens from a realm, signed by the key whose certificate is given.
    Token {
        realm: String,
        service: String,
        issuer: String,
        certificate: PathBuf,
    },
}

pub struct Registry {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    /// `127.0.0.1:PORT`, as references name it.
    pub host: String,
}

/// Where the registry keeps blobs: a directory, or a bucket of an S3 endpoint
/// (`http://HOST:PORT`), whose presigned URLs it redirects blob reads to.
pub enum Storage {
    Directory,
    S3 { endpoint: String, bucket: String },
}

impl Registry {
    /// A registry keeping its blobs under `dir`.
    pub fn start(dir: &Path, access: Access) -> Registry {
        Registry::start_on(dir, access, Storage::Directory)
    }

    /// A registry keeping its blobs in `storage`, its configuration and log in `dir`.
    pub fn start_on(dir: &Path, access: Access, storage: Storage) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        fs::create_dir_all(dir).unwrap();
        let auth = match &access {
            Access::Open => String::new(),
            Access::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let file = dir.join("htpasswd");
                fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: blockcast-test\n    path: {}\n",
                    file.display()
                )
            }
            Access::Token {
                realm,
                service,
                issuer,
                certificate,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                certificate.display()
            ),
        };
        let storage = match storage {
            Storage::Directory => format!(
                "  filesystem:\n    rootdirectory: {}\n",
                dir.join("data").display()
            ),
            Storage::S3 { endpoint, bucket } => format!(
                "  s3:\n    region: us-east-1\n    regionendpoint: {endpoint}\n    bucket: {bucket}\n    accesskey: blockcast-test\n    secretkey: blockcast-test-secret\n    secure: false\n    v4auth: true\n  redirect:\n    disable: false\n"
            ),
        };
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}"
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        fs::File::create(&log).unwrap();
        let mut registry = Registry {
            child: spawn(&config, &log),
            log,
            host: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            config,
        };
        registry.wait_listening();
        registry
    }

    fn wait_listening(&mut self) {
        let began = Instant::now();
        while TcpStream::connect(&self.host).is_err() {
            assert!(
                began.elapsed() < START_DEADLINE,
                "docker-registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where a registry on a directory keeps its blobs and repositories.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops the registry, runs its garbage collection (`--delete-untagged` when asked)
    /// and starts it again on the same port and storage.
    pub fn garbage_collect(&mut self, delete_untagged: bool) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut gc = Command::new("docker-registry");
        gc.arg("garbage-collect");
        if delete_untagged {
            gc.arg("--delete-untagged");
        }
        let out = gc
            .arg(&self.config)
            .output()
            .expect("docker-registry garbage-collect");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "garbage-collect: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.child = spawn(&self.config, &self.log);
        self.wait_listening();
        text
    }

    /// `oci://HOST/REPO` and any suffix (`:TAG`).
    pub fn oci(&self, repo_and_tag: &str) -> String {
        format!("oci://{}/{repo_and_tag}", self.host)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The requests of the access log so far: method, path (with its query) and status.
    /// The registry logs a request once it has answered it, before its client has read
    /// the whole answer.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.parsed()
    }

    /// The requests logged from the `from`th on, once `done` holds for them (polled up
    /// to a deadline, since a line may come after the client has its answer).
    pub fn requests_after(
        &self,
        from: usize,
        done: impl Fn(&[(String, String, u16)]) -> bool,
    ) -> Vec<(String, String, u16)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.parsed().split_off(from);
            if done(&now) || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn parsed(&self) -> Vec<(String, String, u16)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let request = l.split('"').nth(1)?;
                let mut words = request.split_whitespace();
                let (method, path) = (words.next()?, words.next()?);
                let status = l
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((method.to_string(), path.to_string(), status))
            })
            .collect()
    }
}

/// `docker-registry serve CONFIG`, its output appended to `log`.
fn spawn(config: &Path, log: &Path) -> Child {
    let out = fs::OpenOptions::new().append(true).open(log).unwrap();
    Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("docker-registry is installed (tools/test installs it)")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
