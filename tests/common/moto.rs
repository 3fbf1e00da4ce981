//! moto's S3 server for a test: started on a free loopback port with one bucket, killed
//! when dropped. Commands given [`Moto::env`] reach it as `s3://BUCKET/…`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Moto {
    child: Child,
    log: tempfile::NamedTempFile,
    pub url: String,
}

impl Moto {
    /// A server holding the empty bucket `bucket`.
    pub fn start(bucket: &str) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .expect("moto_server is installed (tools/test installs it)");
        let moto = Moto {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        let began = Instant::now();
        while !moto.put(&format!("/{bucket}")) {
            assert!(
                began.elapsed() < START_DEADLINE,
                "moto_server did not start: {}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// An unsigned PUT of `path`, as moto takes it to make a bucket; whether it succeeded.
    fn put(&self, path: &str) -> bool {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "PUT"])
            .arg(format!("{}{path}", self.url))
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Points `cmd` at this server, with credentials moto accepts.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", "blockcast-test")
            .env("AWS_SECRET_ACCESS_KEY", "blockcast-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_SESSION_TOKEN")
    }

    /// The requests moto has logged so far, one line each.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
