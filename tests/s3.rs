//! Releases on an S3-compatible object store (moto's S3 server on loopback): `push`
//! sends a packed release and then only what the bucket lacks; `extract`, `plan`,
//! `verify` and a lazy mount read the signed index and the packs straight from
//! `s3://`, with every request presigned.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::Moto;
use common::proxy::Proxy;
use common::*;

/// `blockcast push INDEX --store STORE DEST` against `moto`.
fn push_cmd(moto: &Moto, index: &Path, store: &Path, dest: &str) -> Command {
    let mut cmd = bin();
    moto.env(&mut cmd)
        .arg("push")
        .arg(index)
        .arg("--store")
        .arg(store)
        .arg(dest);
    cmd
}

fn push(moto: &Moto, release: &SignedReleases, v: usize, dest: &str) -> serde_json::Value {
    let index = &release.indexes[v - 1];
    json(&ok(
        push_cmd(moto, index, &release.store, dest).arg("--json")
    ))
}

fn count(value: &serde_json::Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {value}"))
}

#[test]
fn a_release_pushed_to_s3_is_read_from_there_and_pushed_again_for_nothing() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rel = signed_releases(t.path(), "erofs");
    let dest = "s3://releases/app/stable";

    let first = push(&moto, &rel, 1, dest);
    assert!(count(&first, "packs_uploaded") > 0, "{first}");
    assert_eq!(first["signed"], true, "{first}");
    // Again: every pack is there; only the map, signature and index go again.
    let again = push(&moto, &rel, 1, dest);
    assert_eq!(count(&again, "packs_uploaded"), 0, "{again}");
    assert_eq!(
        count(&again, "packs_present"),
        count(&first, "packs_uploaded")
    );
    // v2 reuses v1's packs: they are not sent again.
    let second = push(&moto, &rel, 2, dest);
    assert!(count(&second, "packs_present") > 0, "{second}");
    assert!(count(&second, "packs_uploaded") > 0, "{second}");

    let index = format!("{dest}/v2.bcidx");
    let trusted = ["--trusted-key", rel.public.to_str().unwrap()];
    let out = t.path().join("v2.img");
    let report = json(&ok(moto
        .env(&mut bin())
        .args(["extract", &index, "--store", dest, "--json", "-o"])
        .arg(&out)
        .args(trusted)));
    assert!(is_extracted(&out, &image("erofs", 2)));
    let fetched = count(&report["plan"]["store"], "chunks");
    assert!(
        count(&report["traffic"], "requests") * 4 < fetched,
        "{report}"
    );

    // An update from v1 takes v2's deltas from the bucket.
    let seeded = t.path().join("seeded.img");
    let seed = image("erofs", 1);
    let report = json(&ok(moto
        .env(&mut bin())
        .args(["extract", &index, "--store", dest, "--json", "--seed"])
        .arg(&seed)
        .arg("-o")
        .arg(&seeded)
        .args(trusted)));
    assert!(is_extracted(&seeded, &image("erofs", 2)));
    assert!(count(&report, "chunk_files_from_deltas") > 0, "{report}");

    let planned = json(&ok(moto
        .env(&mut bin())
        .args(["plan", &index, "--store", dest, "--json"])));
    assert_eq!(count(&planned, "missing_from_stores"), 0, "{planned}");
    ok(moto
        .env(&mut bin())
        .args(["verify", &index])
        .arg(&out)
        .args(["--store", dest])
        .args(trusted));

    // A lazy mount reads the same bytes from the bucket.
    let exposed = t.path().join("exposed");
    std::fs::create_dir(&exposed).unwrap();
    ok(moto
        .env(&mut bin())
        .args(["mount", &index, "--no-attach"])
        .arg(&exposed)
        .args(["--store", dest, "--daemon"])
        .args(trusted));
    let served = exposed.join("image");
    let same = is_extracted(&served, &image("erofs", 2));
    ok(bin().arg("umount").arg(&exposed));
    assert!(same);

    // Every request but the test's own making of the bucket was signed and stayed
    // under the prefix.
    let log = moto.log();
    let asked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET ") || l.contains("\"PUT ") || l.contains("\"HEAD "))
        .filter(|l| !l.contains("\"PUT /releases HTTP"))
        .collect();
    assert!(asked.len() > 10, "{log}");
    for line in &asked {
        assert!(line.contains("X-Amz-Signature="), "{line}");
        // An object under the prefix, or a listing of the publisher's leases there.
        assert!(
            line.contains(" /releases/app/stable/") || line.contains("&prefix=app/stable/leases/"),
            "{line}"
        );
    }
}

#[test]
fn a_tampered_index_in_the_bucket_is_refused_before_any_pack_is_read() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rel = signed_releases(t.path(), "ext4");
    let dest = "s3://releases/x";
    push(&moto, &rel, 2, dest);
    // Someone with write access puts v1's bytes under v2's name, beside v2's signature.
    let tampered = t.path().join("tampered");
    std::fs::create_dir(&tampered).unwrap();
    let forged = tampered.join("v2.bcidx");
    std::fs::copy(&rel.indexes[0], &forged).unwrap();
    std::fs::copy(
        blockcast::sign::signature_path(&rel.indexes[1]),
        blockcast::sign::signature_path(&forged),
    )
    .unwrap();
    ok(&mut push_cmd(&moto, &forged, &rel.store, dest));
    let before = moto.log().lines().count();
    let err = fails(
        moto.env(&mut bin())
            .args(["extract", "s3://releases/x/v2.bcidx", "--store", dest, "-o"])
            .arg(t.path().join("out.img"))
            .args(["--trusted-key", rel.public.to_str().unwrap()]),
    );
    assert!(err.contains("bad signature"), "{err}");
    let log = moto.log();
    let after: Vec<&str> = log.lines().skip(before).collect();
    assert!(after.iter().all(|l| !l.contains("/packs/")), "{after:#?}");
}

#[test]
fn credentials_come_from_a_profile_and_a_missing_bucket_is_named() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rel = signed_releases(t.path(), "squashfs");
    let credentials = t.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = not-this-one\naws_secret_access_key = x\n\n\
         [publisher]\naws_access_key_id = publisher-key\naws_secret_access_key = publisher-secret\n",
    )
    .unwrap();
    ok(
        push_cmd(&moto, &rel.indexes[1], &rel.store, "s3://releases/p")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_PROFILE", "publisher"),
    );
    let log = moto.log();
    let puts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"PUT /releases/p/"))
        .collect();
    assert!(!puts.is_empty(), "{log}");
    for line in puts {
        assert!(line.contains("X-Amz-Credential=publisher-key/"), "{line}");
    }

    let err = fails(&mut push_cmd(
        &moto,
        &rel.indexes[1],
        &rel.store,
        "s3://no-such-bucket/p",
    ));
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(err.contains("s3://no-such-bucket/p"), "{err}");

    // Credentials S3 refuses (moto checks none on presigned requests: a proxy refuses
    // them as S3 does) end at once, naming the object and S3's code.
    let refusing = Proxy::start(
        moto.url.trim_start_matches("http://"),
        Box::new(|_, _| Some(403)),
    );
    let err = fails(
        push_cmd(&moto, &rel.indexes[1], &rel.store, "s3://releases/q")
            .env("AWS_ENDPOINT_URL", format!("http://{}", refusing.host)),
    );
    // The first request is the publisher's lease, a PUT, whose refusal carries S3's code.
    assert!(err.contains("403") && err.contains("AccessDenied"), "{err}");
    assert!(err.contains("/releases/q/leases/"), "{err}");
    assert!(!err.contains("retrying"), "a refusal is not retried: {err}");
    let err = fails(
        moto.env(&mut bin())
            .env("AWS_ENDPOINT_URL", format!("http://{}", refusing.host))
            .args([
                "extract",
                "s3://releases/p/v2.bcidx",
                "--store",
                "s3://releases/p",
                "-o",
            ])
            .arg(t.path().join("out.img")),
    );
    assert!(
        err.contains("AccessDenied") && err.contains("/releases/p/v2.bcidx"),
        "{err}"
    );
}

#[test]
fn push_refuses_a_fifo_a_link_out_of_the_store_and_a_pack_that_lies() {
    let t = tempdir();
    let moto = Moto::start("releases");
    let rel = signed_releases(t.path(), "ext4");
    let dest = "s3://releases/h";
    let v2 = &rel.indexes[1];
    let pushed = |what: &str| {
        let out = within(&mut push_cmd(&moto, v2, &rel.store, dest), 60);
        assert!(!out.status.success(), "{what}: the push succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A FIFO where the signature goes: refused, not waited on.
    let signature = blockcast::sign::signature_path(v2);
    std::fs::remove_file(&signature).unwrap();
    mkfifo(&signature);
    let err = pushed("a FIFO signature");
    assert!(err.contains(&signature.display().to_string()), "{err}");
    std::fs::remove_file(&signature).unwrap();
    // A pack v2's map names (all the store's packs) that is a symbolic link out of the
    // store.
    let packs = rel.store.join("packs");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let outside = t.path().join("outside.bcpack");
    std::fs::rename(&names[0], &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &names[0]).unwrap();
    let err = pushed("a pack linked out of the store");
    assert!(err.contains("out of the store"), "{err}");
    // A pack whose bytes are not what its name says (one byte changed).
    std::fs::remove_file(&names[0]).unwrap();
    let mut bytes = std::fs::read(&outside).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&names[0], &bytes).unwrap();
    let err = pushed("a pack that does not hash to its name");
    assert!(err.contains("do not hash to its name"), "{err}");
    // Nothing of the release was sent: every refusal came before the first PUT but the
    // publisher's lease.
    let log = moto.log();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"PUT /releases/h/") && !l.contains("\"PUT /releases/h/leases/"))
        .collect();
    assert!(sent.is_empty(), "{log}");
}

/// A pack larger than a part goes up in parts; a push cut short after its first part is
/// resumed from the parts the bucket lists, and what it sends extracts.
#[test]
fn a_large_pack_goes_up_in_parts_and_a_push_cut_short_resumes_from_them() {
    let t = tempdir();
    let moto = Moto::start("releases");
    // An erofs image of 12 MiB of noise: one pack of about 12 MiB, three 5 MiB parts.
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("noise.bin"), noise(7, 12 << 20)).unwrap();
    let img = t.path().join("big.img");
    ok(Command::new("mkfs.erofs")
        .args(["--quiet", "-T0", "--all-root"])
        .arg(&img)
        .arg(&tree));
    let (store, index) = (t.path().join("store"), t.path().join("big.bcidx"));
    make_with(&img, &store, &index, &["--pack"]);

    // The bucket refuses, once each: the second part under big/, as a link that drops
    // would; the completion of the upload under big2/.
    let bucket = Proxy::start(
        moto.url.trim_start_matches("http://"),
        Box::new(|before, this| {
            let second = this.method == "PUT" && this.target.contains("partNumber=2&");
            let completion = this.method == "POST"
                && this.target.contains("/releases/big2/")
                && this.target.contains("uploadId=");
            let refused = |big2: bool| {
                before
                    .iter()
                    .any(|s| s.answered.is_some() && s.target.contains("/releases/big2/") == big2)
            };
            ((second && !refused(false)) || (completion && !refused(true))).then_some(403)
        }),
    );
    let proxied = format!("http://{}", bucket.host);
    let push_to = |dest: &str, part_size: &str| {
        let mut cmd = bin();
        moto.env(&mut cmd)
            .env("AWS_ENDPOINT_URL", &proxied)
            .arg("push")
            .arg(&index)
            .arg("--store")
            .arg(&store)
            .args([dest, "--part-size", part_size, "--json"]);
        cmd
    };
    let push = || push_to("s3://releases/big", "5MiB");
    let err = fails(&mut push());
    assert!(
        err.contains("sending part 2") && err.contains("403"),
        "{err}"
    );
    let report = json(&ok(&mut push()));
    assert_eq!(report["parts_present"], 1, "{report}");
    assert_eq!(report["parts_uploaded"], 2, "{report}");
    let first_parts = bucket
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains("partNumber=1&"))
        .count();
    assert_eq!(first_parts, 1, "part 1 was sent again");

    let out = t.path().join("out.img");
    ok(moto
        .env(&mut bin())
        .args([
            "extract",
            "s3://releases/big/big.bcidx",
            "--store",
            "s3://releases/big",
            "-o",
        ])
        .arg(&out));
    assert!(is_extracted(&out, &img));

    // An upload left with 7 MiB parts (7 + 5) is resumed with 5 MiB parts: its part 2
    // has the right size but other bytes, and is sent again.
    let err = fails(&mut push_to("s3://releases/big2", "7MiB"));
    assert!(err.contains("completing"), "{err}");
    let report = json(&ok(&mut push_to("s3://releases/big2", "5MiB")));
    assert_eq!(report["parts_present"], 0, "{report}");
    assert_eq!(report["parts_uploaded"], 3, "{report}");
    ok(moto
        .env(&mut bin())
        .args([
            "extract",
            "s3://releases/big2/big.bcidx",
            "--store",
            "s3://releases/big2",
            "-o",
        ])
        .arg(&out));
    assert!(is_extracted(&out, &img));
}
