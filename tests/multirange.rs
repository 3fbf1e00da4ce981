//! Several byte ranges of a pack in one request: from `blockcast serve` and from nginx
//! (fewer requests than ranges, counted in their access logs), from a server that answers several ranges
//! with the whole pack (cut off, then one range at a time), and from one whose multipart
//! answers are broken (each extract still byte-identical, from single ranges).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::faulty::{Config, Fault, FaultyServer, Ranges};
use common::nginx::Nginx;
use common::served::Served;
use common::*;

/// Stretches of the image the seed lacks, far enough apart (512 KiB, several chunks of
/// incompressible data) that no two share a range.
const CHANGED: usize = 8;

/// A served directory whose `store/` holds a 4 MiB image of noise in packs, its index, and
/// a seed that differs from the image in [`CHANGED`] places.
struct Packed {
    dir: tempfile::TempDir,
    www: PathBuf,
    image: PathBuf,
    index: PathBuf,
    seed: PathBuf,
}

fn packed() -> Packed {
    let dir = tempdir();
    let www = dir.path().join("www");
    let image = dir.path().join("noise.img");
    let index = dir.path().join("noise.bcidx");
    let bytes = noise(5, 4 << 20);
    fs::write(&image, &bytes).unwrap();
    make_with(&image, &www.join("store"), &index, &["--pack"]);
    let mut seed = bytes;
    for k in 0..CHANGED {
        let at = k * (512 << 10) + (100 << 10);
        seed[at..at + 4096].fill(0);
    }
    let seed_path = dir.path().join("seed.img");
    fs::write(&seed_path, &seed).unwrap();
    Packed {
        dir,
        www,
        image,
        index,
        seed: seed_path,
    }
}

impl Packed {
    /// Extracts the image from the store at `base` + `/store`, with the seed.
    fn extract(&self, base: &str, out: &Path, extra: &[&str]) -> Output {
        extract_cmd(&self.index, Path::new(&format!("{base}/store")), out)
            .arg("--seed")
            .arg(&self.seed)
            .arg("--json")
            .args(extra)
            .output()
            .expect("run blockcast extract")
    }

    /// Extracts and requires success and a byte-identical image; returns the report and
    /// the warnings.
    fn extract_ok(&self, base: &str) -> (serde_json::Value, String) {
        let out = self.dir.path().join("out.img");
        let _ = fs::remove_file(&out);
        let output = self.extract(base, &out, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "extract failed: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(is_extracted(&out, &self.image), "{stderr}");
        let report = json(&String::from_utf8_lossy(&output.stdout));
        (report, stderr)
    }
}

fn number(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_packed_store_from_serve_comes_in_fewer_requests_than_ranges() {
    let p = packed();
    let served = Served::start(&p.www, &["--verbose"]);
    let (report, _) = p.extract_ok(&served.url);
    let fetched = number(&report["plan"]["store"]["chunks"]);
    assert!(fetched >= CHANGED as u64, "{report}");
    // Every answer was logged before its body went out, and every body has arrived.
    let log = served.log();
    let requests: Vec<&str> = log.lines().filter(|l| l.contains("\"GET /")).collect();
    let pack_requests: Vec<&&str> = requests
        .iter()
        .filter(|l| l.contains("/store/packs/"))
        .collect();
    assert_eq!(pack_requests.len(), 1, "{log}");
    assert!(pack_requests[0].contains("\" 206 "), "{log}");
    let traffic = &report["traffic"];
    assert_eq!(number(&traffic["requests"]), requests.len() as u64, "{log}");
    assert!(number(&traffic["part_header_bytes"]) > 0, "{report}");
    assert!(
        number(&traffic["part_header_bytes"]) <= 200 * (CHANGED as u64 * 2 + 1),
        "{report}"
    );
}

#[test]
fn a_packed_store_from_nginx_comes_in_fewer_requests_than_ranges() {
    let p = packed();
    let nginx = Nginx::start(p.dir.path(), &p.www);
    let (report, warnings) = p.extract_ok(&nginx.url);
    assert!(!warnings.contains("ranges"), "{warnings}");
    // nginx logs a request once its answer is out, maybe after the client has it.
    let requests = number(&report["traffic"]["requests"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = nginx.access_log();
        if log.lines().count() as u64 >= requests || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(log.lines().count() as u64, requests, "{log}");
    let pack_requests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/store/packs/"))
        .collect();
    assert_eq!(pack_requests.len(), 1, "{log}");
    assert!(pack_requests[0].starts_with("GET 206 "), "{log}");
}

#[test]
fn a_server_answering_several_ranges_with_the_whole_pack_is_cut_off_and_asked_one_at_a_time() {
    let p = packed();
    let server = FaultyServer::start(Config::new(&p.www).ranges(Ranges::One));
    let (report, warnings) = p.extract_ok(&server.url());
    let stats = server.settled();
    assert_eq!(stats.several_ranges, 1, "one request tells: {stats:?}");
    assert!(stats.one_range >= CHANGED as u64, "{stats:?}");
    assert!(warnings.contains("whole file"), "{warnings}");
    // The whole pack (4 MiB) was not read: the body bytes are the ranges' and the map's.
    let traffic = &report["traffic"];
    let ranges_and_gaps =
        number(&report["plan"]["store"]["stored_bytes"]) + number(&traffic["gap_bytes"]);
    assert!(
        number(&traffic["bytes"]) < ranges_and_gaps + (64 << 10),
        "{report}"
    );
    assert_eq!(number(&traffic["part_header_bytes"]), 0, "{report}");
}

#[test]
fn a_whole_body_without_a_length_is_cut_off_at_the_ranges_bound() {
    let p = packed();
    let server = FaultyServer::start(Config::new(&p.www).ranges(Ranges::Multipart).rule(
        ".bcpack",
        Fault::Endless,
        1,
    ));
    let (report, warnings) = p.extract_ok(&server.url());
    assert!(warnings.contains("cut off after"), "{warnings}");
    let stats = server.settled();
    assert_eq!(stats.count(Fault::Endless), 1, "{stats:?}");
    assert_eq!(stats.hostile_abandoned, 1, "{stats:?}");
    // What was read of it: no more than the ranges' bytes and their part allowance.
    let traffic = &report["traffic"];
    let ranges_and_gaps =
        number(&report["plan"]["store"]["stored_bytes"]) + number(&traffic["gap_bytes"]);
    assert!(
        number(&traffic["bytes"]) <= 2 * ranges_and_gaps + (64 << 10),
        "{report}"
    );
}

#[test]
fn broken_multipart_answers_end_byte_identical_from_single_ranges() {
    let p = packed();
    let cases = [
        (Fault::MultipartWrongBoundary, "boundary"),
        (Fault::MultipartWrongRange, "not asked for"),
        // A part again, as long as any: past the bytes the answer may take.
        (Fault::MultipartExtraPart, "they may take"),
        (Fault::MultipartTruncated, "cut short"),
        (Fault::MultipartFlipByte, "in pack packs/"),
    ];
    for (fault, said) in cases {
        let server = FaultyServer::start(
            Config::new(&p.www)
                .ranges(Ranges::Multipart)
                .always(".bcpack", fault),
        );
        let (_, warnings) = p.extract_ok(&server.url());
        let stats = server.settled();
        assert_eq!(
            stats.count(fault),
            stats.several_ranges,
            "{fault:?}: {stats:?}"
        );
        assert!(stats.several_ranges >= 1, "{fault:?}: {stats:?}");
        assert!(stats.one_range >= 1, "{fault:?}: {stats:?}");
        assert!(warnings.contains(said), "{fault:?}: {warnings}");
    }
}

#[test]
fn a_multipart_server_gets_every_range_of_a_request_at_once() {
    let p = packed();
    let server = FaultyServer::start(Config::new(&p.www).ranges(Ranges::Multipart));
    let (report, warnings) = p.extract_ok(&server.url());
    let stats = server.settled();
    assert_eq!(stats.several_ranges, 1, "{stats:?}");
    assert_eq!(stats.one_range, 0, "{stats:?}");
    assert!(stats.ranges_asked >= CHANGED as u64, "{stats:?}");
    assert!(!warnings.contains("ranges"), "{warnings}");
    assert_eq!(number(&report["traffic"]["requests"]), stats.requests);
}

#[test]
fn ranges_no_answer_brings_end_in_an_error_naming_a_chunk() {
    let p = packed();
    let server = FaultyServer::start(
        Config::new(&p.www)
            .ranges(Ranges::Multipart)
            .always(".bcpack", Fault::Status500),
    );
    let out = p.dir.path().join("out.img");
    let output = p.extract(&server.url(), &out, &["--retries", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("(image offset "), "{stderr}");
    assert!(stderr.contains("could not be fetched"), "{stderr}");
    assert!(!out.exists(), "an output was left");
    let stats = server.settled();
    assert!(
        stats.several_ranges >= 1 && stats.one_range >= 1,
        "{stats:?}"
    );
}
