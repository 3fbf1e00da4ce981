//! `blockcast serve` run for a test: started on a free loopback port, stopped with
//! SIGTERM when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped server may take to exit: far above its drain timeout (5 s by
/// default), far below forever.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

pub struct Served {
    child: Child,
    log: tempfile::NamedTempFile,
    pub url: String,
}

impl Served {
    pub fn start(dir: &Path, extra: &[&str]) -> Served {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = super::bin()
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .expect("start blockcast serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the serve banner");
        let url = line
            .split_whitespace()
            .last()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the serve banner {line:?}"))
            .to_string();
        Served { child, log, url }
    }

    /// What the server has logged on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).expect("read serve log")
    }

    /// Sends SIGTERM and waits (at most [`STOP_DEADLINE`]); returns the exit status and
    /// what was logged on stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = self.terminate().unwrap_or_else(|| {
            panic!(
                "blockcast serve did not stop within {STOP_DEADLINE:?} of SIGTERM: {}",
                self.log()
            )
        });
        (status, self.log())
    }

    /// SIGTERM, then SIGKILL if the server has not exited by the deadline (`None`).
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        // kill(1) keeps the tests free of unsafe signal calls.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for blockcast serve") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}
