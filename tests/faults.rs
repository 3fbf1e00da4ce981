//! Extract from HTTP stores that misbehave: connections reset, 500 and 503, stalls and
//! trickles past the timeout, truncated and corrupted bodies, chunks only a second store
//! has, bodies far larger than the index allows. Each time the image comes out
//! byte-identical, or extract fails naming the chunk and leaves nothing at the output.
//! The faults come from `common::faulty`, reproducibly from a seed, and every test checks
//! that the server really injected them.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockcast::index::{ChunkRecord, Index};
use common::faulty::{Config, Fault, FaultyServer, Stats};
use common::*;

const SEED: u64 = 0x5eed_0001;
const INDEX: &str = "/x.bcidx";

/// A served directory: `store/` made from a test image, and the index `x.bcidx` beside it.
struct Site {
    dir: tempfile::TempDir,
    img: PathBuf,
    /// The chunk files extract fetches, each once, in index order (a gathered chunk as a
    /// record of its own, named as errors name it: by its first part's offset).
    chunks: Vec<ChunkRecord>,
}

impl Site {
    fn new(kind: &str) -> Site {
        let dir = tempdir();
        let img = image(kind, 2);
        let root = dir.path().join("served");
        make(&img, &root.join("store"), &root.join("x.bcidx"));
        let index = Index::open(&root.join("x.bcidx")).expect("open the index");
        let mut seen = HashSet::new();
        let chunks: Vec<ChunkRecord> = index
            .records()
            .filter(|r| !r.is_zero())
            .map(|r| r.unit())
            .filter(|u| seen.insert(u.id))
            .map(|u| ChunkRecord::stored(u.offset, u.size, u.stored_size, u.id))
            .collect();
        assert!(chunks.len() >= 8, "{kind}: only {} chunks", chunks.len());
        Site { dir, img, chunks }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("served")
    }

    fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    /// A fresh, empty directory for one extract's output; the output is `image` in it.
    fn out(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("out-{name}"));
        std::fs::create_dir(&dir).expect("output dir");
        dir.join("image")
    }

    /// A local store holding only `chunks`.
    fn partial_store(&self, name: &str, chunks: &[&ChunkRecord]) -> PathBuf {
        let store = self.dir.path().join(name).join("store");
        for r in chunks {
            let rel = chunk_path(r);
            let to = store.join(&rel[7..]);
            std::fs::create_dir_all(to.parent().unwrap()).expect("chunk dir");
            std::fs::copy(self.store().join(&rel[7..]), &to).expect("copy a chunk");
        }
        store
    }
}

/// Where the server sees a request for chunk `r`: `/store/abcd/abcd….cacnk`.
fn chunk_path(r: &ChunkRecord) -> String {
    let hex = r.id.to_hex();
    format!("/store/{}/{hex}.cacnk", &hex[..4])
}

/// `blockcast extract INDEX --store S… -o OUT EXTRA…`, where INDEX and the stores may be
/// URLs.
fn extract_from(index: &str, stores: &[String], out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg("extract").arg(index);
    for s in stores {
        c.arg("--store").arg(s);
    }
    c.arg("-o").arg(out).args(extra);
    c
}

/// The usual run against one server: its index and its store.
fn extract_served(server: &FaultyServer, out: &Path, extra: &[&str]) -> Command {
    extract_from(
        &format!("{}{INDEX}", server.url()),
        &[format!("{}/store", server.url())],
        out,
        extra,
    )
}

/// A failed extract left nothing at `out`, and nothing beside it but its hidden partial
/// file.
fn assert_no_output(out: &Path) {
    assert!(
        !out.exists(),
        "{} exists after a failed extract",
        out.display()
    );
    for entry in std::fs::read_dir(out.parent().unwrap()).unwrap().flatten() {
        assert_eq!(
            entry.file_name().to_string_lossy(),
            ".image.blockcast-partial",
            "unexpected file beside the output"
        );
    }
}

/// The error names the chunk and where it goes in the image.
fn assert_names_chunk(stderr: &str, r: &ChunkRecord) {
    assert!(
        stderr.contains(&format!(
            "chunk {} (image offset {})",
            r.id.to_hex(),
            r.offset
        )),
        "the error does not name chunk {} at {}: {stderr}",
        r.id,
        r.offset
    );
}

/// Every chunk was served whole exactly once (the index too), and no path was asked for
/// more often than `most` times.
fn assert_each_served_once(site: &Site, stats: &Stats, most: u32) {
    assert_eq!(
        stats.served,
        site.chunks.len() as u64 + 1,
        "whole answers: {stats:?}"
    );
    assert_eq!(
        stats.absent_beyond_pack_maps(),
        Vec::<&str>::new(),
        "asked for files it lacks: {stats:?}"
    );
    for r in &site.chunks {
        let n = stats.requests_for(&chunk_path(r));
        assert!(
            (1..=most).contains(&n),
            "{} asked for {n} times",
            chunk_path(r)
        );
    }
}

/// Extracts `kind` through random faults of one kind at rate 0.3; every chunk gets through
/// within the retries, so the image must come out whole.
fn survives(kind: &str, fault: Fault, timeout: &str) -> Stats {
    let site = Site::new(kind);
    let server = FaultyServer::start(Config::new(&site.root()).random(SEED, 0.3, &[fault]));
    let out = site.out("faulty");
    ok(&mut extract_served(
        &server,
        &out,
        &["--retries", "4", "--timeout", timeout],
    ));
    assert!(is_extracted(&out, &site.img), "{kind} through {fault:?}");
    let stats = server.settled();
    assert!(
        stats.count(fault) >= 1,
        "{fault:?} never injected: {stats:?}"
    );
    assert_eq!(stats.faults.len(), 1, "{stats:?}");
    if !matches!(fault, Fault::Stall | Fault::Trickle) {
        // Random faults hit the first two attempts only; the third is always good.
        assert_each_served_once(&site, &stats, 3);
    }
    stats
}

#[test]
fn a_clean_server_reuses_connections() {
    let site = Site::new("erofs");
    let server = FaultyServer::start(Config::new(&site.root()));
    let out = site.out("clean");
    ok(&mut extract_served(&server, &out, &["--concurrency", "4"]));
    assert!(is_extracted(&out, &site.img));
    let stats = server.stats();
    assert_each_served_once(&site, &stats, 1);
    assert!(stats.faults.is_empty());
    assert!(
        stats.connections < stats.requests,
        "no connection was reused: {stats:?}"
    );
}

#[test]
fn connection_resets() {
    survives("erofs", Fault::Reset, "5");
}

#[test]
fn status_500() {
    survives("squashfs", Fault::Status500, "5");
}

#[test]
fn status_503() {
    survives("erofs", Fault::Status503, "5");
}

#[test]
fn stalls_past_the_timeout() {
    let stats = survives("squashfs", Fault::Stall, "1");
    // The client gave up on every stall (which would last 30 s) and hung up, rather than
    // waiting for the server to close.
    assert_eq!(
        stats.stalls_abandoned,
        stats.count(Fault::Stall),
        "{stats:?}"
    );
}

#[test]
fn bodies_trickled_past_the_timeout() {
    let stats = survives("erofs", Fault::Trickle, "1");
    // A request in all gets the timeout plus its bytes at 16 KiB/s, a few seconds for a
    // chunk file: the client hung up on every trickle before its last byte (each would
    // take 30 s), rather than waiting for it.
    assert_eq!(stats.hostile_completed, 0, "{stats:?}");
    assert_eq!(
        stats.hostile_abandoned,
        stats.count(Fault::Trickle),
        "{stats:?}"
    );
}

#[test]
fn a_slow_body_that_keeps_coming_outlasts_the_timeout() {
    let site = Site::new("erofs");
    let big = site.chunks.iter().max_by_key(|r| r.stored_size).unwrap();
    assert!(big.stored_size > 40_000, "{}", big.stored_size);
    // Its body takes 2 s, a byte at a time: never 1 s without progress, and within the
    // 1 s + its bytes at 16 KiB/s a request may take in all.
    let mut cfg = Config::new(&site.root()).rule(&chunk_path(big), Fault::Trickle, 1);
    cfg.stall = Duration::from_secs(2);
    let server = FaultyServer::start(cfg);
    let out = site.out("slow");
    ok(&mut extract_served(&server, &out, &["--timeout", "1"]));
    assert!(is_extracted(&out, &site.img));
    let stats = server.settled();
    assert_eq!(stats.count(Fault::Trickle), 1, "{stats:?}");
    assert_eq!(stats.hostile_completed, 1, "{stats:?}");
    assert_eq!(stats.hostile_abandoned, 0, "{stats:?}");
}

#[test]
fn truncated_bodies() {
    survives("squashfs", Fault::Truncate, "5");
}

#[test]
fn flipped_bytes() {
    survives("erofs", Fault::FlipBytes, "5");
}

#[test]
fn every_fault_at_once() {
    let kinds = [
        Fault::Reset,
        Fault::Status500,
        Fault::Status503,
        Fault::Stall,
        Fault::Trickle,
        Fault::Truncate,
        Fault::FlipBytes,
    ];
    for (kind, seed) in [("ext4", 11), ("erofs-lz4hc", 12)] {
        let site = Site::new(kind);
        let server = FaultyServer::start(Config::new(&site.root()).random(seed, 0.5, &kinds));
        let out = site.out("mixed");
        ok(&mut extract_served(
            &server,
            &out,
            &["--retries", "4", "--timeout", "1"],
        ));
        assert!(is_extracted(&out, &site.img), "{kind}");
        let stats = server.stats();
        assert!(
            stats.faults.len() >= 4,
            "{kind}: too few kinds of fault: {stats:?}"
        );
    }
}

#[test]
fn chunks_only_a_second_store_has() {
    let site = Site::new("erofs");
    // The first store denies every other chunk; the second has only those.
    let (denied, kept): (Vec<_>, Vec<_>) = site
        .chunks
        .iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let denied: Vec<&ChunkRecord> = denied.into_iter().map(|(_, r)| r).collect();
    let kept: Vec<&ChunkRecord> = kept.into_iter().map(|(_, r)| r).collect();
    let mut cfg = Config::new(&site.root());
    for r in &denied {
        cfg = cfg.always(&chunk_path(r), Fault::NotFound);
    }
    let first = FaultyServer::start(cfg);
    let second_store = site.partial_store("second", &denied);
    // The second store is flaky too.
    let second = FaultyServer::start(Config::new(second_store.parent().unwrap()).random(
        SEED,
        0.3,
        &[Fault::Status503],
    ));
    let out = site.out("two-servers");
    ok(&mut extract_from(
        &format!("{}{INDEX}", first.url()),
        &[
            format!("{}/store", first.url()),
            format!("{}/store", second.url()),
        ],
        &out,
        &["--timeout", "5"],
    ));
    assert!(is_extracted(&out, &site.img));
    let (a, b) = (first.stats(), second.stats());
    assert_eq!(a.count(Fault::NotFound), denied.len() as u64, "{a:?}");
    assert_eq!(a.served, kept.len() as u64 + 1, "{a:?}");
    for r in &denied {
        // A 404 is an answer, not a failure: not retried.
        assert_eq!(a.requests_for(&chunk_path(r)), 1);
    }
    // The second store was asked only for what the first denied.
    assert_eq!(b.served, denied.len() as u64, "{b:?}");
    assert_eq!(b.absent_beyond_pack_maps(), Vec::<&str>::new(), "{b:?}");
    assert!(b.count(Fault::Status503) >= 1, "{b:?}");

    // The same with a local directory as the second store.
    let out = site.out("server-then-dir");
    ok(&mut extract_from(
        &format!("{}{INDEX}", first.url()),
        &[
            format!("{}/store", first.url()),
            second_store.display().to_string(),
        ],
        &out,
        &["--timeout", "5"],
    ));
    assert!(is_extracted(&out, &site.img));
    assert_eq!(
        first.stats().count(Fault::NotFound),
        2 * denied.len() as u64
    );
}

#[test]
fn a_chunk_that_always_fails_is_named_and_no_output_is_left() {
    let site = Site::new("squashfs");
    let victim = site.chunks[site.chunks.len() / 2];
    let path = chunk_path(&victim);
    let mut outs = Vec::new();
    for fault in [
        Fault::Status500,
        Fault::FlipBytes,
        Fault::Truncate,
        Fault::Reset,
    ] {
        let server = FaultyServer::start(Config::new(&site.root()).always(&path, fault));
        let out = site.out(&format!("{fault:?}"));
        let stderr = fails(&mut extract_served(
            &server,
            &out,
            &["--retries", "2", "--timeout", "5"],
        ));
        assert_names_chunk(&stderr, &victim);
        assert!(stderr.contains("could not be fetched"), "{stderr}");
        assert_no_output(&out);
        let stats = server.stats();
        // The first attempt and two retries.
        assert_eq!(stats.requests_for(&path), 3, "{fault:?}: {stats:?}");
        assert_eq!(stats.count(fault), 3, "{stats:?}");
        outs.push(out);
    }
    // Once the server recovers, a rerun finishes each output from its partial file.
    let server = FaultyServer::start(Config::new(&site.root()));
    for out in &outs {
        ok(&mut extract_served(&server, out, &["--timeout", "5"]));
        assert!(is_extracted(out, &site.img));
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["image"], "the partial file was left behind");
    }
}

#[test]
fn a_chunk_that_always_fails_comes_from_the_next_store() {
    let site = Site::new("erofs");
    let victim = site.chunks[1];
    let path = chunk_path(&victim);
    let server = FaultyServer::start(Config::new(&site.root()).always(&path, Fault::Status503));
    let backup = site.partial_store("backup", &[&victim]);
    let out = site.out("fallback");
    let mut cmd = extract_served(&server, &out, &["--retries", "3", "--timeout", "5"]);
    ok(cmd.arg("--store").arg(&backup));
    assert!(is_extracted(&out, &site.img));
    let stats = server.stats();
    assert_eq!(stats.requests_for(&path), 4, "{stats:?}");
    assert_eq!(stats.count(Fault::Status503), 4);
}

/// Status, stderr and the peak resident memory (KiB) of a command run to its end.
struct Measured {
    code: Option<i32>,
    stderr: String,
    max_rss_kib: i64,
}

/// Runs `cmd` under a small python3 that reports the command's peak memory. Linux carries
/// a parent's high-water mark into a child it spawns (`ru_maxrss` of a child of this test
/// process is at least this process's own peak, hundreds of MiB with the other tests
/// running), so the command must be spawned by a process that is small itself.
fn run_measured(cmd: &mut Command) -> Measured {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)\n\
        print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut measure = Command::new("python3");
    measure
        .arg("-c")
        .arg(MEASURE)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => measure.env(key, value),
            None => measure.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        measure.current_dir(dir);
    }
    let out = measure
        .stdin(Stdio::null())
        .output()
        .expect("python3 is installed (tools/test installs it)");
    assert!(out.status.success(), "python3 measuring {cmd:?}: {out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    let (code, rss) = report
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("python3 measuring {cmd:?} said {report:?}"));
    let code: i32 = code.parse().expect("an exit status");
    Measured {
        // A negative status is the signal that ended the command.
        code: (code >= 0).then_some(code),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        max_rss_kib: rss.parse().expect("a peak in KiB"),
    }
}

#[test]
fn bodies_larger_than_the_index_allows() {
    let site = Site::new("erofs");
    // The largest chunk: its bound is the most the client may read.
    let victim = *site.chunks.iter().max_by_key(|r| r.size).unwrap();
    let path = chunk_path(&victim);
    for fault in [Fault::Oversize, Fault::Endless] {
        let server = FaultyServer::start(Config::new(&site.root()).always(&path, fault));
        let out = site.out(&format!("{fault:?}"));
        let run = run_measured(&mut extract_served(
            &server,
            &out,
            &["--retries", "2", "--timeout", "10"],
        ));
        assert_eq!(run.code, Some(1), "{fault:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert_names_chunk(&run.stderr, &victim);
        assert!(run.stderr.contains("larger than"), "{}", run.stderr);
        assert_no_output(&out);
        // Far less than the 64 MiB the server tried to send.
        assert!(
            run.max_rss_kib < 48 << 10,
            "{fault:?}: extract peaked at {} KiB",
            run.max_rss_kib
        );
        let stats = server.settled();
        assert!(stats.count(fault) >= 1);
        assert_eq!(stats.hostile_completed, 0, "the client read it all");
        // The client hung up on each body once past its bound, rather than stop reading
        // and wait for its timeout.
        assert_eq!(stats.hostile_abandoned, stats.count(fault), "{stats:?}");
        assert!(stats.hostile_bytes < 64 << 20, "{stats:?}");

        // With another store to fall back on, the extract completes.
        let backup = site.partial_store(&format!("backup-{fault:?}"), &[&victim]);
        let out = site.out(&format!("{fault:?}-fallback"));
        let mut cmd = extract_served(&server, &out, &["--retries", "2", "--timeout", "10"]);
        ok(cmd.arg("--store").arg(&backup));
        assert!(is_extracted(&out, &site.img));
    }
}

#[test]
fn the_index_url_through_faults() {
    let site = Site::new("squashfs");
    // Four failures in a row before the index comes through, on the fifth and last
    // attempt; chunks fail now and then too.
    let server = FaultyServer::start(
        Config::new(&site.root())
            .random(SEED, 0.3, &[Fault::Status500])
            .rule(INDEX, Fault::Status503, 2)
            .rule(INDEX, Fault::Reset, 1)
            .rule(INDEX, Fault::Truncate, 1),
    );
    let out = site.out("index");
    ok(&mut extract_served(
        &server,
        &out,
        &["--retries", "4", "--timeout", "5"],
    ));
    assert!(is_extracted(&out, &site.img));
    let stats = server.stats();
    assert_eq!(stats.requests_for(INDEX), 5, "{stats:?}");
    assert_eq!(stats.count(Fault::Status503), 2);
    assert_eq!(stats.count(Fault::Reset), 1);
    assert_eq!(stats.count(Fault::Truncate), 1);
    assert!(stats.count(Fault::Status500) >= 1);

    // An index that never comes: a clear error, no output.
    let server = FaultyServer::start(Config::new(&site.root()).always(INDEX, Fault::Status503));
    let out = site.out("no-index");
    let stderr = fails(&mut extract_served(
        &server,
        &out,
        &["--retries", "1", "--timeout", "5"],
    ));
    assert!(stderr.contains(INDEX) && stderr.contains("503"), "{stderr}");
    assert_no_output(&out);
    assert_eq!(server.stats().requests_for(INDEX), 2);
}

#[test]
fn a_corrupted_index_is_refetched() {
    let site = Site::new("erofs");
    let server = FaultyServer::start(Config::new(&site.root()).rule(INDEX, Fault::FlipBytes, 1));
    let out = site.out("flipped-index");
    ok(&mut extract_served(
        &server,
        &out,
        &["--retries", "2", "--timeout", "5"],
    ));
    assert!(is_extracted(&out, &site.img));
    let stats = server.stats();
    assert_eq!(stats.count(Fault::FlipBytes), 1);
}

#[test]
fn a_hostile_index_body_is_cut_off_at_its_header() {
    let site = Site::new("erofs");
    for fault in [Fault::Oversize, Fault::Endless] {
        let server = FaultyServer::start(Config::new(&site.root()).always(INDEX, fault));
        let out = site.out(&format!("index-{fault:?}"));
        let run = run_measured(&mut extract_served(
            &server,
            &out,
            &["--retries", "1", "--timeout", "10"],
        ));
        assert_eq!(run.code, Some(1), "{fault:?}: {}", run.stderr);
        assert!(run.stderr.contains("x.bcidx"), "{}", run.stderr);
        assert!(
            run.stderr.contains("not a blockcast index"),
            "{}",
            run.stderr
        );
        assert_no_output(&out);
        assert!(
            run.max_rss_kib < 48 << 10,
            "{fault:?}: extract peaked at {} KiB",
            run.max_rss_kib
        );
        let stats = server.settled();
        assert!(stats.count(fault) >= 1);
        assert_eq!(stats.hostile_completed, 0, "the client read it all");
        // The client hung up on each body once past its bound, rather than stop reading
        // and wait for its timeout.
        assert_eq!(stats.hostile_abandoned, stats.count(fault), "{stats:?}");
    }
}

/// One GET on `stream`; the status, or `None` when the server closed the connection.
fn raw_get(stream: &mut TcpStream, path: &str) -> Option<u16> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    head.split(' ').nth(1)?.parse().ok()
}

#[test]
fn the_fault_plan_is_reproducible_and_ends() {
    let cfg = Config::new(Path::new("/nonexistent")).random(SEED, 0.3, &Fault::ALL);
    let paths: Vec<String> = (0..2000).map(|i| format!("/store/{i:04x}.cacnk")).collect();
    let first: Vec<_> = paths.iter().map(|p| cfg.decide(p, 0)).collect();
    let again: Vec<_> = paths.iter().map(|p| cfg.decide(p, 0)).collect();
    assert_eq!(first, again);
    let faulted = first.iter().filter(|f| f.is_some()).count();
    assert!((400..800).contains(&faulted), "{faulted} of 2000 faulted");
    let kinds: HashSet<_> = first.iter().flatten().collect();
    assert_eq!(kinds.len(), Fault::ALL.len());
    // Attempts past the faulty ones are always clean; so is what is not a chunk.
    assert!(paths.iter().all(|p| cfg.decide(p, 2).is_none()));
    assert!(cfg.decide(INDEX, 0).is_none());
    let other = Config::new(Path::new("/nonexistent")).random(SEED + 1, 0.3, &Fault::ALL);
    assert_ne!(
        first,
        paths.iter().map(|p| other.decide(p, 0)).collect::<Vec<_>>()
    );
    // Rules follow one another, then the path is clean.
    let ruled = cfg
        .rule(INDEX, Fault::Status503, 2)
        .rule(INDEX, Fault::Reset, 1);
    let plan: Vec<_> = (0..4).map(|a| ruled.decide(INDEX, a)).collect();
    assert_eq!(
        plan,
        [
            Some(Fault::Status503),
            Some(Fault::Status503),
            Some(Fault::Reset),
            None
        ]
    );
    let always = Config::new(Path::new("/nonexistent")).always("a.cacnk", Fault::NotFound);
    assert_eq!(always.decide("/a.cacnk", 1000), Some(Fault::NotFound));
}

#[test]
fn the_server_is_bounded() {
    let dir = tempdir();
    std::fs::write(dir.path().join("f"), b"hello").unwrap();
    let mut cfg = Config::new(dir.path()).always("/stall", Fault::Stall);
    cfg.max_requests = 3;
    // Longer than any test runs: only stopping the server ends it.
    cfg.stall = Duration::from_secs(3600);
    let server = FaultyServer::start(cfg);
    let addr = server.url().trim_start_matches("http://").to_string();
    // Keep-alive: three requests on one connection, then the cap closes it.
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(raw_get(&mut conn, "/f"), Some(200));
    assert_eq!(raw_get(&mut conn, "/../f"), Some(404));
    // The third request stalls; the server must still stop. Its client waits longer than
    // the test gives the server to stop, so that its hanging up never ends the stall.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let waiter = std::thread::spawn(move || raw_get(&mut stalled, "/stall"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.stats().requests < 3 {
        assert!(Instant::now() < deadline, "no third request");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(raw_get(&mut conn, "/f"), None, "served past the cap");
    let stats = server.stats();
    assert!(stats.capped);
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.connections, 2);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop());
    });
    let stopped = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server did not stop with a request stalled");
    assert_eq!(stopped.stalls_stopped, 1, "{stopped:?}");
    assert_eq!(waiter.join().unwrap(), None);
    assert!(TcpStream::connect(&addr).is_err(), "still listening");
}
