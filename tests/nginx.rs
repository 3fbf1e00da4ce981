//! A store directory served by a real nginx, as any static web server would: over plain
//! HTTP, over HTTPS with a private CA (where HTTP/2 is negotiated), and behind mutual TLS.
//! nginx runs as one process (`master_process off`) so that killing it leaves nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

struct Nginx {
    child: Child,
    access_log: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
fn certificates(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509", "-days", "2"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=blockcast test CA",
            ],
        ]
        .concat(),
    );
    for (name, cn) in [("server", "127.0.0.1"), ("client", "blockcast device")] {
        let subject = format!("/CN={cn}");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let keyfile = format!("{name}.key");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                &["req", "-new"][..],
                &key,
                &["-keyout", &keyfile, "-out", &csr, "-subj", &subject],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// Starts nginx serving `www` on three ports: plain, TLS, and TLS requiring a client
/// certificate. Returns it and the ports.
fn start_nginx(dir: &Path, www: &Path, certs: &Path) -> (Nginx, [u16; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let prefix = dir.join("nginx");
    fs::create_dir_all(prefix.join("logs")).unwrap();
    let access_log = prefix.join("logs/access.log");
    let c = |f: &str| certs.join(f).display().to_string();
    let conf = format!(
        r#"
worker_processes 1;
user root;
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 128; }}
http {{
    log_format proto '$server_protocol $status $request_uri';
    access_log {log} proto;
    default_type application/octet-stream;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{p0}; root {www}; }}
    server {{ listen 127.0.0.1:{p1} ssl http2; root {www}; }}
    server {{
        listen 127.0.0.1:{p2} ssl http2;
        root {www};
        ssl_client_certificate {ca};
        ssl_verify_client on;
    }}
}}
"#,
        prefix = prefix.display(),
        log = access_log.display(),
        cert = c("server.pem"),
        key = c("server.key"),
        ca = c("ca.pem"),
        www = www.display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx { child, access_log };
    let began = Instant::now();
    while ports
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "nginx did not start: {}",
            fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (nginx, ports)
}

#[test]
fn nginx_serves_a_store_over_http_https_and_mutual_tls() {
    let dir = tempdir();
    let www = dir.path().join("www");
    let certs = dir.path().join("certs");
    certificates(&certs);
    for kind in ["erofs", "squashfs"] {
        make(
            &image(kind, 2),
            &www.join("store"),
            &www.join(format!("{kind}.bcidx")),
        );
    }
    let (nginx, [plain, tls, mutual]) = start_nginx(dir.path(), &www, &certs);
    let ca = certs.join("ca.pem");
    let run = |base: &str, kind: &str, extra: &[&str]| {
        let out = dir
            .path()
            .join(format!("{kind}-{}.img", base.len() + extra.len()));
        let _ = fs::remove_file(&out);
        let mut cmd = bin();
        cmd.args(["extract", &format!("{base}/{kind}.bcidx")])
            .args(["--store", &format!("{base}/store"), "--retries", "1"])
            .args(extra)
            .arg("-o")
            .arg(&out);
        (cmd, out)
    };

    let (mut cmd, out) = run(&format!("http://127.0.0.1:{plain}"), "erofs", &[]);
    ok(&mut cmd);
    assert!(is_extracted(&out, &image("erofs", 2)));

    let https = format!("https://127.0.0.1:{tls}");
    let ca_arg = ["--ca-cert", ca.to_str().unwrap()];
    let (mut cmd, out) = run(&https, "squashfs", &ca_arg);
    ok(&mut cmd);
    assert!(is_extracted(&out, &image("squashfs", 2)));

    // Without the private CA the server is not trusted, and nothing is written.
    let (mut cmd, out) = run(&https, "erofs", &[]);
    let err = fails(&mut cmd);
    assert!(err.contains(&https), "{err}");
    assert!(!out.exists());

    // Mutual TLS: refused without a client certificate, served with one.
    let mtls = format!("https://127.0.0.1:{mutual}");
    let (mut cmd, out) = run(&mtls, "erofs", &ca_arg);
    fails(&mut cmd);
    assert!(!out.exists());
    let (cert, key) = (certs.join("client.pem"), certs.join("client.key"));
    let client = [
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let (mut cmd, out) = run(&mtls, "erofs", &[&ca_arg[..], &client].concat());
    ok(&mut cmd);
    assert!(is_extracted(&out, &image("erofs", 2)));

    // nginx writes a request's log line after answering it: wait for the lines to come.
    let log = log_showing(&nginx.access_log, |log| chunks_over(log, "HTTP/2.0"));
    assert!(
        chunks_over(&log, "HTTP/2.0"),
        "HTTP/2 was not negotiated over TLS:\n{log}"
    );
    let log = log_showing(&nginx.access_log, |log| chunks_over(log, "HTTP/1.1"));
    assert!(chunks_over(&log, "HTTP/1.1"), "{log}");
}

/// Whether the access log shows a chunk file served over `protocol`.
fn chunks_over(log: &str, protocol: &str) -> bool {
    log.lines()
        .any(|l| l.contains(".cacnk") && l.starts_with(&format!("{protocol} 200")))
}

/// The log at `path` once `shows` holds for it, or as it is after 20 s.
fn log_showing(path: &Path, shows: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = fs::read_to_string(path).unwrap_or_default();
        if shows(&log) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
