//! Stores and indexes over HTTP from `blockcast serve`: every kind of image rebuilt
//! byte-identical, the chunk cache, signed remote indexes, several stores in order, the
//! server's HTTP semantics checked with curl, and what it refuses or sheds under attack.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::served::Served;
use common::*;

/// A served directory holding `store/` and `NAME.bcidx` for each image.
fn publish(dir: &Path, kinds: &[&str]) {
    for kind in kinds {
        make(
            &image(kind, 2),
            &dir.join("store"),
            &dir.join(format!("{kind}.bcidx")),
        );
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "-D", "-", "-o", "/dev/null"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

#[test]
fn every_kind_rebuilds_from_a_served_store() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &KINDS);
    let server = Served::start(&www, &["--verbose"]);
    for kind in KINDS {
        let out = dir.path().join(format!("{kind}.img"));
        let index = format!("{}/{kind}.bcidx", server.url);
        let store = format!("{}/store", server.url);
        let report = json(&ok(bin()
            .args(["extract", &index, "--store", &store, "--json", "-o"])
            .arg(&out)));
        assert!(is_extracted(&out, &image(kind, 2)), "{kind}");
        assert!(report["plan"]["store"]["chunks"].as_u64().unwrap() > 0);
        let plan = json(&ok(
            bin().args(["plan", &index, "--store", &store, "--json"])
        ));
        assert_eq!(plan["missing_from_stores"], 0, "{kind}");
    }
    let (status, log) = server.stop();
    assert!(
        status.success(),
        "serve did not stop cleanly on SIGTERM: {status}"
    );
    assert!(log.contains("\"GET /store/"), "no access log: {log}");
    assert!(log.contains(" 200 "), "{log}");
}

#[test]
fn plan_counts_chunks_no_store_has() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let victim = chunk_files(&www.join("store")).remove(0);
    fs::remove_file(&victim).unwrap();
    // --quiet keeps the banner: it is how a caller learns the port.
    let server = Served::start(&www, &["--quiet"]);
    let plan = json(&ok(bin().args([
        "plan",
        &format!("{}/erofs.bcidx", server.url),
        "--store",
        &format!("{}/store", server.url),
        "--json",
    ])));
    assert_eq!(plan["missing_from_stores"], 1);
}

#[test]
fn the_cache_serves_the_next_run_without_the_network() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["squashfs"]);
    let cache = dir.path().join("cache");
    let server = Served::start(&www, &[]);
    let store = format!("{}/store", server.url);
    let first = dir.path().join("first.img");
    let report = extract(
        &www.join("squashfs.bcidx"),
        Path::new(&store),
        &first,
        &["--cache", cache.to_str().unwrap()],
    );
    assert!(is_extracted(&first, &image("squashfs", 2)));
    let fetched = report["plan"]["store"]["chunks"].as_u64().unwrap();
    assert!(fetched > 1);
    assert_eq!(chunk_files(&cache).len() as u64, fetched);
    drop(server);
    // The server is gone: everything must come from the cache.
    let second = dir.path().join("second.img");
    extract(
        &www.join("squashfs.bcidx"),
        Path::new(&store),
        &second,
        &["--cache", cache.to_str().unwrap(), "--retries", "0"],
    );
    assert!(is_extracted(&second, &image("squashfs", 2)));
    // A corrupt cached chunk is fetched again, and without a server that fails.
    let cached = chunk_files(&cache).remove(0);
    fs::write(&cached, b"not zstd").unwrap();
    let err = fails(
        extract_cmd(
            &www.join("squashfs.bcidx"),
            Path::new(&store),
            &dir.path().join("third.img"),
        )
        .args(["--cache", cache.to_str().unwrap(), "--retries", "0"]),
    );
    assert!(err.contains("in the cache"), "{err}");
    assert!(err.contains("could not be fetched"), "{err}");
    assert!(!dir.path().join("third.img").exists());
}

#[test]
fn a_chunk_missing_from_the_first_store_comes_from_the_next() {
    let dir = tempdir();
    let full = dir.path().join("full");
    publish(&full, &["ext4"]);
    let partial = dir.path().join("partial");
    copy_dir(&full, &partial);
    let removed = chunk_files(&partial.join("store"));
    for f in removed.iter().step_by(2) {
        fs::remove_file(f).unwrap();
    }
    let first = Served::start(&partial, &["--verbose"]);
    let second = Served::start(&full, &[]);
    let out = dir.path().join("out.img");
    ok(bin()
        .args(["extract", &format!("{}/ext4.bcidx", first.url)])
        .args(["--store", &format!("{}/store", first.url)])
        .args(["--store", &format!("{}/store", second.url)])
        .arg("-o")
        .arg(&out));
    assert!(is_extracted(&out, &image("ext4", 2)));
    let (_, log) = first.stop();
    assert!(log.contains(".cacnk HTTP/1.1\" 404"), "{log}");
}

#[test]
fn a_remote_index_is_refused_unless_signed_by_a_trusted_key() {
    let dir = tempdir();
    let www = dir.path().join("www");
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    keygen(&keys, "good");
    keygen(&keys, "other");
    make_with(
        &image("erofs", 2),
        &www.join("store"),
        &www.join("erofs.bcidx"),
        &["--sign", keys.join("good.key").to_str().unwrap()],
    );
    let server = Served::start(&www, &["--verbose"]);
    let index = format!("{}/erofs.bcidx", server.url);
    let store = format!("{}/store", server.url);
    let out = dir.path().join("out.img");
    let err = fails(
        bin()
            .args(["extract", &index, "--store", &store, "--trusted-key"])
            .arg(keys.join("other.pub"))
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("refusing"), "{err}");
    assert!(!out.exists());
    ok(bin()
        .args(["extract", &index, "--store", &store, "--trusted-key"])
        .arg(keys.join("good.pub"))
        .arg("-o")
        .arg(&out));
    assert!(is_extracted(&out, &image("erofs", 2)));
    fs::remove_file(www.join("erofs.bcidx.minisig")).unwrap();
    let err = fails(
        bin()
            .args(["plan", &index, "--store", &store, "--trusted-key"])
            .arg(keys.join("good.pub")),
    );
    assert!(err.contains("not signed"), "{err}");
    let (_, log) = server.stop();
    let chunk_requests = log.lines().filter(|l| l.contains(".cacnk")).count();
    let chunks = chunk_files(&www.join("store")).len();
    assert!(
        chunk_requests <= chunks,
        "chunks were fetched for a refused index: {chunk_requests} requests for {chunks} chunks"
    );
}

#[test]
fn unusable_store_locations_are_named() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let index = www.join("erofs.bcidx");
    let out = dir.path().join("out.img");
    let err = fails(&mut extract_cmd(
        &index,
        Path::new("ftp://example.org/store"),
        &out,
    ));
    assert!(err.contains("ftp://example.org/store"), "{err}");
    // Nothing listens on port 1: the chunk is named, and nothing looks complete.
    let err = fails(
        extract_cmd(&index, Path::new("http://127.0.0.1:1/store"), &out).args(["--retries", "1"]),
    );
    assert!(err.contains("could not be fetched"), "{err}");
    assert!(err.contains("image offset"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!out.exists());
    let err = fails(bin().args([
        "plan",
        "http://127.0.0.1:1/x.bcidx",
        "--store",
        "s",
        "--retries",
        "0",
    ]));
    assert!(err.contains("http://127.0.0.1:1/x.bcidx"), "{err}");
}

#[test]
fn serve_speaks_http_as_a_static_server_does() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let server = Served::start(&www, &[]);
    let u = &server.url;
    let index_len = fs::metadata(www.join("erofs.bcidx")).unwrap().len();

    let head = curl(&["-I", &format!("{u}/erofs.bcidx")]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {index_len}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("content-type: application/vnd.blockcast.index"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");

    let part = curl(&["-r", "10-19", &format!("{u}/erofs.bcidx")]);
    assert!(part.starts_with("http/1.1 206"), "{part}");
    assert!(part.contains("content-length: 10\r\n"), "{part}");
    assert!(
        part.contains(&format!("content-range: bytes 10-19/{index_len}")),
        "{part}"
    );
    let bytes = Command::new("curl")
        .args(["-s", "-r", "10-19", &format!("{u}/erofs.bcidx")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(bytes, fs::read(www.join("erofs.bcidx")).unwrap()[10..20]);

    let past = curl(&["-r", &format!("{index_len}-"), &format!("{u}/erofs.bcidx")]);
    assert!(past.starts_with("http/1.1 416"), "{past}");
    assert!(
        past.contains(&format!("content-range: bytes */{index_len}")),
        "{past}"
    );

    let chunk = chunk_files(&www.join("store")).remove(0);
    let rel = chunk
        .strip_prefix(&www)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let got = curl(&[&format!("{u}/{rel}")]);
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(
        got.contains("cache-control: public, max-age=31536000, immutable"),
        "{got}"
    );
    assert!(
        got.contains("content-type: application/octet-stream"),
        "{got}"
    );
    assert!(got.contains(&format!(
        "content-length: {}\r\n",
        fs::metadata(&chunk).unwrap().len()
    )));

    let absent = curl(&[&format!("{u}/nothing.bcidx")]);
    assert!(absent.starts_with("http/1.1 404"), "{absent}");
    assert!(
        absent.contains("cache-control: public, max-age=10\r\n"),
        "{absent}"
    );
    assert!(curl(&[&format!("{u}/store")]).starts_with("http/1.1 404"));
    let escape = curl(&["--path-as-is", &format!("{u}/store/../../etc/passwd")]);
    assert!(escape.starts_with("http/1.1 400"), "{escape}");
    let post = curl(&["-X", "POST", &format!("{u}/erofs.bcidx")]);
    assert!(post.starts_with("http/1.1 405"), "{post}");
    assert!(post.contains("allow: get, head"), "{post}");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn serve_adds_the_delay_it_is_given() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let server = Served::start(&www, &["--delay", "300"]);
    let began = std::time::Instant::now();
    curl(&[&format!("{}/erofs.bcidx", server.url)]);
    assert!(began.elapsed() >= std::time::Duration::from_millis(300));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn an_http_store_reads_objects_by_ranges() {
    use blockcast::store::http::{Client, HttpStore};
    use blockcast::store::{HttpOptions, ReadStore};

    let t = tempdir();
    publish(t.path(), &["erofs"]);
    let store_dir = t.path().join("store");
    let file = &chunk_files(&store_dir)[0];
    let bytes = fs::read(file).unwrap();
    let name = file
        .strip_prefix(&store_dir)
        .unwrap()
        .to_string_lossy()
        .to_string();
    let served = Served::start(t.path(), &[]);
    let warn: blockcast::store::Warn = std::sync::Arc::new(|_: &str| {});
    let client = Client::new(&HttpOptions::default(), Default::default()).unwrap();
    let store = HttpStore::new(&format!("{}/store", served.url), client, warn);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let len = bytes.len() as u64;
    let ranges = [0..1, len / 2..len, 3..3];
    let mut parts = Vec::new();
    let found = rt
        .block_on(store.get_ranges(&name, &ranges, &mut |i, b| {
            parts.push((i, b));
            Ok(())
        }))
        .unwrap();
    assert!(found);
    assert_eq!(parts.len(), ranges.len());
    for (i, part) in parts {
        let r = &ranges[i];
        assert_eq!(part[..], bytes[r.start as usize..r.end as usize]);
    }
    assert!(rt.block_on(store.has(&name)).unwrap());
    let gone = rt.block_on(store.get_ranges(
        "abcd/none.cacnk",
        std::slice::from_ref(&(0..1)),
        &mut |_, _| Ok(()),
    ));
    assert!(!gone.unwrap());
    // A 416 says the file is not the one asked for (a pack a stale map names), as a 404.
    let past = rt.block_on(store.get_ranges(
        &name,
        std::slice::from_ref(&(len..len + 10)),
        &mut |_, _| Ok(()),
    ));
    assert!(!past.unwrap());
}

/// How long a test waits for an answer the server owes it before failing.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// One keep-alive HTTP/1.1 connection, spoken by hand so that tests control when it is
/// silent. Reads give up after [`ANSWER_DEADLINE`].
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(url: &str) -> Client {
        let stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
        stream.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, method: &str, path: &str) {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send request");
    }

    /// Reads one answer: its status and body.
    fn receive(&mut self, method: &str) -> (u16, Vec<u8>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut len = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header line");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; if method == "HEAD" { 0 } else { len }];
        self.reader.read_exact(&mut body).expect("body");
        (status, body)
    }

    fn ask(&mut self, method: &str, path: &str) -> (u16, Vec<u8>) {
        self.send(method, path);
        self.receive(method)
    }

    /// True once the server has closed the connection; panics if it does not within
    /// [`ANSWER_DEADLINE`].
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[test]
fn serve_answers_a_fifo_at_once_and_keeps_serving() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let fifo = www.join("store/pipe.cacnk");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    let index = fs::read(www.join("erofs.bcidx")).unwrap();
    let server = Served::start(&www, &["--max-connections", "4"]);
    let mut client = Client::connect(&server.url);
    assert_eq!(client.ask("GET", "/store/pipe.cacnk").0, 404);
    assert_eq!(client.ask("HEAD", "/store/pipe.cacnk").0, 404);
    assert_eq!(client.ask("GET", "/erofs.bcidx"), (200, index.clone()));
    // More than the blocking pool's 512 threads: each used to stay stuck in open(2).
    for _ in 0..600 {
        assert_eq!(client.ask("GET", "/store/pipe.cacnk").0, 404);
    }
    assert_eq!(
        Client::connect(&server.url).ask("GET", "/erofs.bcidx"),
        (200, index)
    );
    let (status, _) = server.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn serve_refuses_links_out_hidden_names_and_temporary_files() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let secret = dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("shadow"), "root:x:0\n").unwrap();
    let chunk = chunk_files(&www.join("store")).remove(0);
    let chunk_dir = chunk.parent().unwrap();
    let name = chunk.file_name().unwrap().to_str().unwrap();
    let link = |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at).unwrap();
    link(&secret.join("shadow"), &www.join("store/evil.cacnk"));
    link(&secret, &www.join("store/out"));
    // Links inside the directory are refused too: they are never followed.
    link(Path::new("erofs.bcidx"), &www.join("latest.bcidx"));
    // What a killed `make` leaves: a chunk's and an index's temporary files.
    fs::copy(&chunk, chunk_dir.join(format!(".{name}.4242-0.tmp"))).unwrap();
    fs::copy(www.join("erofs.bcidx"), www.join(".erofs.bcidx.4242.tmp")).unwrap();
    fs::create_dir_all(www.join(".git")).unwrap();
    fs::write(www.join(".git/config"), "[core]\n").unwrap();
    fs::write(www.join(".htpasswd"), "admin:x\n").unwrap();

    let server = Served::start(&www, &[]);
    let rel = |p: &Path| format!("/{}", p.strip_prefix(&www).unwrap().display());
    let tmp = chunk_dir.join(format!(".{name}.4242-0.tmp"));
    let refused = [
        "/store/evil.cacnk".to_string(),
        "/store/out/shadow".to_string(),
        "/latest.bcidx".to_string(),
        rel(&tmp),
        "/.erofs.bcidx.4242.tmp".to_string(),
        "/%2Eerofs.bcidx.4242.tmp".to_string(),
        "/.git/config".to_string(),
        "/.htpasswd".to_string(),
    ];
    let mut client = Client::connect(&server.url);
    for path in &refused {
        for method in ["GET", "HEAD"] {
            let (status, body) = client.ask(method, path);
            assert_eq!(status, 404, "{method} {path}");
            assert!(!String::from_utf8_lossy(&body).contains("root:x"));
        }
    }
    assert_eq!(client.ask("GET", &rel(&chunk)).0, 200);
    assert_eq!(client.ask("HEAD", "/erofs.bcidx").0, 200);
}

#[test]
fn silent_connections_give_their_slots_back_after_the_header_timeout() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let server = Served::start(
        &www,
        &["--max-connections", "16", "--header-timeout", "300"],
    );
    let mut silent: Vec<Client> = (0..16).map(|_| Client::connect(&server.url)).collect();
    // Served once a silent one times out: within the deadline, unlike the old 30 s.
    assert_eq!(
        Client::connect(&server.url).ask("GET", "/erofs.bcidx").0,
        200
    );
    for (i, client) in silent.iter_mut().enumerate() {
        assert!(client.closed_by_server(), "silent connection {i}");
    }
}

#[test]
fn idle_connections_make_room_for_a_new_client() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    // Timeouts far beyond the test's deadline: only shedding can make room.
    let server = Served::start(
        &www,
        &[
            "--max-connections",
            "16",
            "--idle-timeout",
            "600000",
            "--header-timeout",
            "600000",
        ],
    );
    let mut idle: Vec<Client> = (0..16)
        .map(|_| {
            let mut c = Client::connect(&server.url);
            assert_eq!(c.ask("GET", "/erofs.bcidx").0, 200);
            c
        })
        .collect();
    assert_eq!(
        Client::connect(&server.url).ask("HEAD", "/erofs.bcidx").0,
        200
    );
    assert!(idle[0].closed_by_server(), "the longest idle was not shed");
    // The others kept their connections.
    for client in &mut idle[1..] {
        assert_eq!(client.ask("HEAD", "/erofs.bcidx").0, 200);
    }
}

#[test]
fn sigterm_stops_serve_with_a_request_stuck_in_flight() {
    let dir = tempdir();
    let www = dir.path().join("www");
    publish(&www, &["erofs"]);
    let server = Served::start(
        &www,
        &["--stall-for-tests", "erofs.bcidx", "--drain-timeout", "200"],
    );
    let mut stuck = Client::connect(&server.url);
    stuck.send("GET", "/erofs.bcidx");
    let deadline = Instant::now() + ANSWER_DEADLINE;
    while !server.log().contains("stalling erofs.bcidx") {
        assert!(
            Instant::now() < deadline,
            "the request never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(stuck.closed_by_server());
}

/// What a server answered to a Range request, once its bytes and headers are checked
/// against the file: the same from any server that answers alike.
#[derive(Debug, PartialEq)]
enum Answer {
    Whole,
    /// One part: its first and last byte.
    Part(u64, u64),
    /// `multipart/byteranges`: each part's first and last byte, in the order sent.
    Parts(Vec<(u64, u64)>),
    Unsatisfiable,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Header lines as lower-case names and trimmed values.
fn header_fields(block: &[u8]) -> Vec<(String, String)> {
    String::from_utf8(block.to_vec())
        .expect("ASCII headers")
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    let mut found = fields.iter().filter(|(n, _)| n == name);
    let (_, value) = found
        .next()
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    assert!(found.next().is_none(), "two {name} in {fields:?}");
    value
}

/// `bytes FIRST-LAST/LEN`, checked against the file's length.
fn content_range(value: &str, len: usize) -> (u64, u64) {
    let (span, total) = value
        .strip_prefix("bytes ")
        .and_then(|v| v.split_once('/'))
        .unwrap_or_else(|| panic!("content-range {value:?}"));
    assert_eq!(total, len.to_string(), "{value}");
    let (first, last) = span.split_once('-').expect("first-last");
    let (first, last) = (first.parse().unwrap(), last.parse().unwrap());
    assert!(first <= last && last < len as u64, "{value}");
    (first, last)
}

/// Reads `curl -i`'s output for a GET of `file` (whose parts are typed `file_type`):
/// the status, Content-Length against the body, and every byte sent against the file.
fn read_answer(raw: &[u8], file: &[u8], file_type: &str) -> Answer {
    let split = find(raw, b"\r\n\r\n").expect("end of the headers");
    let (head, body) = (&raw[..split], &raw[split + 4..]);
    let status_line = String::from_utf8_lossy(&head[..find(head, b"\r\n").unwrap_or(split)]);
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let fields = header_fields(head);
    if status == 416 {
        assert_eq!(
            field(&fields, "content-range"),
            format!("bytes */{}", file.len())
        );
        return Answer::Unsatisfiable;
    }
    assert_eq!(field(&fields, "content-length"), body.len().to_string());
    let content_type = field(&fields, "content-type");
    match status {
        200 => {
            assert_eq!(content_type, file_type);
            assert!(body == file, "the whole file");
            Answer::Whole
        }
        206 => match content_type.strip_prefix("multipart/byteranges; boundary=") {
            Some(boundary) => {
                let parts = multipart_parts(body, boundary, file, file_type);
                let independent = python_parts(content_type, body);
                let ours: Vec<(String, Vec<u8>)> = parts
                    .iter()
                    .map(|&(first, last)| {
                        (
                            format!("bytes {first}-{last}/{}", file.len()),
                            file[first as usize..=last as usize].to_vec(),
                        )
                    })
                    .collect();
                assert!(ours == independent, "python3's email parser disagrees");
                Answer::Parts(parts)
            }
            None => {
                assert_eq!(content_type, file_type);
                let (first, last) = content_range(field(&fields, "content-range"), file.len());
                assert!(body == &file[first as usize..=last as usize]);
                Answer::Part(first, last)
            }
        },
        other => panic!("{status_line}: {other}"),
    }
}

/// Parses a `multipart/byteranges` body (RFC 9110 §14.6, RFC 2046 §5.1.1) strictly: each
/// part's headers, its bytes against the file, the delimiter right after them, and no
/// delimiter inside them (where a parser scanning for it would cut the part short).
fn multipart_parts(body: &[u8], boundary: &str, file: &[u8], file_type: &str) -> Vec<(u64, u64)> {
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter's CRLF may be left out; an empty preamble ends in it.
    let mut rest = body
        .strip_prefix(&delimiter[..])
        .or_else(|| body.strip_prefix(&delimiter[2..]))
        .expect("the body opens with a delimiter");
    let mut parts = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let end = find(rest, b"\r\n\r\n").expect("end of a part's headers");
        let fields = header_fields(&rest[..end]);
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert_eq!(field(&fields, "content-type"), file_type);
        let (first, last) = content_range(field(&fields, "content-range"), file.len());
        let n = (last - first + 1) as usize;
        let data = &rest[end + 4..][..n];
        assert!(
            data == &file[first as usize..=last as usize],
            "part {first}-{last}"
        );
        assert!(
            find(data, &delimiter).is_none(),
            "the boundary is in the data"
        );
        rest = rest[end + 4 + n..]
            .strip_prefix(&delimiter[..])
            .expect("a delimiter right after a part's bytes");
        parts.push((first, last));
    }
    assert_eq!(&rest[2..], b"\r\n", "the closing delimiter ends the body");
    parts
}

/// Each part of a `multipart/byteranges` body as python3's email parser reads it: its
/// `Content-Range` and its bytes.
fn python_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let script = "import email, sys\n\
        m = email.message_from_bytes(sys.stdin.buffer.read())\n\
        assert m.is_multipart()\n\
        for p in m.get_payload():\n\
        \x20   print(p['Content-Range'], p.get_payload(decode=True).hex())\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut message = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    message.extend_from_slice(body);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&message)
        .expect("feed python3");
    let out = child.wait_with_output().expect("python3's answer");
    assert!(out.status.success(), "python3 could not read the answer");
    String::from_utf8(out.stdout)
        .expect("text")
        .lines()
        .map(|line| {
            let (range, hex) = line.rsplit_once(' ').expect("range and bytes");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (range.to_string(), bytes)
        })
        .collect()
}

fn get_ranged(url: &str, ranges: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "-r", ranges, url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl -r {ranges} {url} failed");
    out.stdout
}

#[test]
fn serve_answers_several_ranges_with_multipart_byteranges_as_nginx_does() {
    let dir = tempdir();
    let www = dir.path().join("www");
    fs::create_dir_all(&www).unwrap();
    // More than a piece (256 KiB), with what a careless boundary would collide with.
    let mut file = noise(17, 1 << 20);
    for at in (0..file.len() - 64).step_by(4099) {
        file[at..at + 4].copy_from_slice(b"\r\n--");
    }
    fs::write(www.join("pack.cacnk"), &file).unwrap();
    let l = file.len() as u64;
    let served = Served::start(&www, &[]);
    let nginx = Nginx::start(dir.path(), &www);
    use Answer::*;
    let cases = [
        ("0-9,100-199", Parts(vec![(0, 9), (100, 199)])),
        ("100-199,0-9", Parts(vec![(100, 199), (0, 9)])),
        ("0-9,5-14", Parts(vec![(0, 9), (5, 14)])),
        ("0-0,0-0,0-0", Parts(vec![(0, 0); 3])),
        ("-5,0-0", Parts(vec![(l - 5, l - 1), (0, 0)])),
        // Streamed: more than a piece in all and in its first part.
        (
            "0-299999,700000-",
            Parts(vec![(0, 299_999), (700_000, l - 1)]),
        ),
        ("0-9,2000000-", Part(0, 9)),
        ("2000000-,3000000-3000001", Unsatisfiable),
        // More than the file in all: the whole file, not two thirds of it twice.
        ("0-599999,100000-699999", Whole),
    ];
    for (ranges, expected) in cases {
        for base in [&served.url, &nginx.url] {
            let raw = get_ranged(&format!("{base}/pack.cacnk"), ranges);
            let answer = read_answer(&raw, &file, "application/octet-stream");
            assert_eq!(answer, expected, "{base} -r {ranges}");
        }
    }

    // HEAD: the GET's headers, and no body before the next answer or the close.
    let url = format!("{}/pack.cacnk", served.url);
    let got = get_ranged(&url, "0-9,100-199");
    let got_fields = header_fields(&got[..find(&got, b"\r\n\r\n").unwrap()]);
    let mut stream = TcpStream::connect(served.url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    stream
        .write_all(
            b"HEAD /pack.cacnk HTTP/1.1\r\nHost: t\r\n\
              Range: bytes=0-9,100-199\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    stream.read_to_end(&mut head).expect("the HEAD answer");
    assert!(head.starts_with(b"HTTP/1.1 206"), "{head:?}");
    assert_eq!(find(&head, b"\r\n\r\n").map(|e| e + 4), Some(head.len()));
    let head_fields = header_fields(&head);
    // Each answer draws its own boundary, of the same length.
    assert_eq!(
        field(&head_fields, "content-length"),
        field(&got_fields, "content-length")
    );
    for fields in [&head_fields, &got_fields] {
        let content_type = field(fields, "content-type");
        assert!(content_type.starts_with("multipart/byteranges; boundary="));
    }

    // At most 256 ranges; past them the header is ignored.
    let listed = |n: u64| {
        let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 7, i * 7 + 2)).collect();
        specs.join(",")
    };
    let most: Vec<(u64, u64)> = (0..256).map(|i| (i * 7, i * 7 + 2)).collect();
    let answer = read_answer(
        &get_ranged(&url, &listed(256)),
        &file,
        "application/octet-stream",
    );
    assert_eq!(answer, Parts(most));
    let answer = read_answer(
        &get_ranged(&url, &listed(257)),
        &file,
        "application/octet-stream",
    );
    assert_eq!(answer, Whole);
    // A Range header past 8 KiB is refused.
    let long = format!("Range: bytes=0-0{}", ",0-0".repeat(3000));
    let refused = curl(&["-H", &long, &url]);
    assert!(refused.starts_with("http/1.1 431"), "{refused}");
}
