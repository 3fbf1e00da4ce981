//! nginx for a test: serving a directory over plain HTTP on a free loopback port, with an
//! access log, killed when dropped.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long nginx may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// nginx serving `www` over plain HTTP as one process (`master_process off`), killed
/// when dropped: the reference a static web server's answers are compared with.
pub struct Nginx {
    child: Child,
    prefix: PathBuf,
    pub url: String,
}

impl Nginx {
    pub fn start(dir: &Path, www: &Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let prefix = dir.join("nginx");
        fs::create_dir_all(prefix.join("logs")).unwrap();
        let conf = format!(
            r#"
worker_processes 1;
user root;
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16; }}
http {{
    log_format counted '$request_method $status $body_bytes_sent $request_uri';
    access_log {prefix}/logs/access.log counted;
    default_type application/octet-stream;
    server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
"#,
            prefix = prefix.display(),
            www = www.display(),
        );
        fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            prefix: prefix.clone(),
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Nginx {
    /// The access log so far: a line per request answered, `METHOD STATUS BYTES_SENT URI`.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
