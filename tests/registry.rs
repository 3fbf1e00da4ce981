//! Releases on an OCI registry (Debian's `docker-registry`, the CNCF distribution
//! registry, on loopback): `push` sends a packed, signed release as one manifest and then
//! only what the repository lacks; `extract`, `plan` and a lazy mount read the signed
//! index and ranges of the pack blobs from `oci://`; `skopeo copy` copies a release that
//! still extracts; logins by htpasswd (Basic) and by token; a registry on object storage
//! (moto's S3 server) that redirects blob reads; bad manifests and blobs.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::faulty::{Config, Fault, FaultyServer, Ranges};
use common::moto::Moto;
use common::proxy::{Proxy, Seen};
use common::registry::{Access, Registry, Storage};
use common::token::{self, TokenServer};
use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Two signed releases of `kind` in one packed store (in `dir/kind`).
fn release(dir: &Path, kind: &str) -> SignedReleases {
    signed_releases(&dir.join(kind), kind)
}

/// blockcast with no login but what the test gives: `home` holds no auth file.
fn cmd(home: &Path) -> Command {
    let mut c = bin();
    c.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env_remove("BLOCKCAST_REGISTRY_USERNAME")
        .env_remove("BLOCKCAST_REGISTRY_PASSWORD");
    c
}

fn push_cmd(home: &Path, rel: &SignedReleases, v: usize, dest: &str) -> Command {
    let mut c = cmd(home);
    c.arg("push")
        .arg(&rel.indexes[v - 1])
        .arg("--store")
        .arg(&rel.store)
        .arg(dest)
        .arg("--json");
    c
}

fn extract_cmd(home: &Path, rel: &SignedReleases, reference: &str, out: &Path) -> Command {
    let mut c = cmd(home);
    c.args(["extract", reference, "--json", "--trusted-key"])
        .arg(&rel.public)
        .arg("-o")
        .arg(out);
    c
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The packs (by hex digest) v of a release's pack map names, read from the store.
fn packs_of(rel: &SignedReleases, v: usize) -> BTreeSet<String> {
    let index = blockcast::index::Index::open(&rel.indexes[v - 1]).unwrap();
    let name = blockcast::pack::map_name(&index.digest());
    let bytes = fs::read(rel.store.join(&name)).unwrap();
    let map = blockcast::pack::PackMap::read(&name, &bytes, &index).unwrap();
    map.packs()
        .iter()
        .map(|p| blockcast::chunk::ChunkId(*p).to_hex())
        .collect()
}

/// The digests (hex) of the blobs uploaded by `PUT …/blobs/uploads/…?digest=sha256:X`
/// and of those a HEAD found, in `requests`.
fn uploads_and_heads(requests: &[(String, String, u16)]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut put, mut head) = (BTreeSet::new(), BTreeSet::new());
    for (method, path, status) in requests {
        if method == "PUT" && path.contains("/blobs/uploads/") {
            assert_eq!(*status, 201, "{path}");
            let digest = path
                .split("digest=sha256%3A")
                .nth(1)
                .or_else(|| path.split("digest=sha256:").nth(1));
            put.insert(digest.unwrap().chars().take(64).collect());
        } else if method == "HEAD" && path.contains("/blobs/sha256:") && *status == 200 {
            head.insert(path.rsplit("sha256:").next().unwrap().to_string());
        }
    }
    (put, head)
}

#[test]
fn every_kind_pushes_extracts_and_mounts_and_a_second_release_sends_only_what_is_new() {
    let t = tempdir();
    let registry = Registry::start(&t.path().join("registry"), Access::Open);
    for kind in KINDS {
        let rel = release(t.path(), kind);
        let repo = format!("os/{kind}");
        let report = json(&ok(&mut push_cmd(
            t.path(),
            &rel,
            1,
            &registry.oci(&format!("{repo}:v1")),
        )));
        assert_eq!(report["packs_present"], 0, "{report}");
        assert_eq!(report["tags"][1], "v1", "{report}");
        assert!(
            report["tags"][0].as_str().unwrap().starts_with("bcidx-"),
            "{report}"
        );

        let out = t.path().join(format!("{kind}-v1.img"));
        ok(&mut extract_cmd(
            t.path(),
            &rel,
            &registry.oci(&format!("{repo}:v1")),
            &out,
        ));
        assert!(is_extracted(&out, &image(kind, 1)), "{kind} v1");

        // v2: exactly its new packs, its map, signature and index go up; v1's packs it
        // reuses are answered by HEAD.
        let before = registry.requests().len();
        let report = json(&ok(&mut push_cmd(
            t.path(),
            &rel,
            2,
            &registry.oci(&format!("{repo}:v2")),
        )));
        let manifest_put = |r: &(String, String, u16)| r.0 == "PUT" && r.1.contains("/manifests/");
        let requests = registry.requests_after(before, |r| {
            r.iter().filter(|r| manifest_put(r)).count() >= 2
        });
        let (v1, v2) = (packs_of(&rel, 1), packs_of(&rel, 2));
        let new: BTreeSet<String> = v2.difference(&v1).cloned().collect();
        let reused: BTreeSet<String> = v2.intersection(&v1).cloned().collect();
        assert!(
            !new.is_empty() && !reused.is_empty(),
            "{kind}: {v1:?} {v2:?}"
        );
        assert_eq!(report["packs_uploaded"], new.len() as u64, "{report}");
        let index = blockcast::index::Index::open(&rel.indexes[1]).unwrap();
        let mut expected = new.clone();
        for file in [
            rel.store.join(blockcast::pack::map_name(&index.digest())),
            blockcast::sign::signature_path(&rel.indexes[1]),
            rel.indexes[1].clone(),
        ] {
            expected.insert(sha256_hex(&fs::read(&file).unwrap()));
        }
        let (put, head) = uploads_and_heads(&requests);
        assert_eq!(put, expected, "{kind}: blobs uploaded");
        assert!(
            reused.is_subset(&head),
            "{kind}: {reused:?} not asked by HEAD: {head:?}"
        );
        let manifests = requests
            .iter()
            .filter(|(m, p, s)| m == "PUT" && p.contains("/manifests/") && *s == 201)
            .count();
        assert_eq!(manifests, 2, "{kind}: the bcidx- tag and v2");

        // A device on v1 updates from the registry: deltas and coalesced ranges.
        let seeded = t.path().join(format!("{kind}-v2.img"));
        let seed = image(kind, 1);
        let before = registry.requests().len();
        let report = json(&ok(extract_cmd(
            t.path(),
            &rel,
            &registry.oci(&format!("{repo}:v2")),
            &seeded,
        )
        .arg("--seed")
        .arg(&seed)));
        assert!(is_extracted(&seeded, &image(kind, 2)), "{kind} v2");
        assert!(
            report["chunk_files_from_deltas"].as_u64().unwrap() > 0,
            "{report}"
        );
        let pack_get = |(m, p, _): &(String, String, u16)| {
            m == "GET"
                && v2
                    .iter()
                    .any(|d| p.ends_with(&format!("/blobs/sha256:{d}")))
        };
        let ranged: Vec<_> = registry
            .requests_after(before, |r| r.iter().any(pack_get))
            .into_iter()
            .filter(pack_get)
            .collect();
        assert!(!ranged.is_empty(), "{kind}: no pack read");
        assert!(
            ranged.iter().all(|(_, _, s)| *s == 206),
            "{kind}: {ranged:?}"
        );

        let planned = json(&ok(cmd(t.path()).args([
            "plan",
            &registry.oci(&format!("{repo}:v2")),
            "--json",
        ])));
        assert_eq!(planned["missing_from_stores"], 0, "{planned}");
        // A lazy mount serves the same image.
        let reference = registry.oci(&format!("{repo}:v2"));
        mounted_image_is(t.path(), &rel, &reference, t.path(), kind);

        // A device holding only the index finds the pack map by the bcidx- tag.
        let before = registry.requests().len();
        let index = rel.indexes[1].to_str().unwrap().to_string();
        let from_file = t.path().join(format!("{kind}-from-file.img"));
        ok(extract_cmd(t.path(), &rel, &index, &from_file).args(["--store", &registry.oci(&repo)]));
        assert!(
            is_extracted(&from_file, &image(kind, 2)),
            "{kind} from its index file"
        );
        let tag = blockcast::oci::index_tag(
            &blockcast::index::Index::open(&rel.indexes[1])
                .unwrap()
                .digest(),
        );
        let by_tag = registry.requests_after(before, |r| {
            r.iter()
                .any(|(m, p, _)| m == "GET" && p.ends_with(&format!("/manifests/{tag}")))
        });
        assert!(
            by_tag.iter().any(|(m, p, s)| m == "GET"
                && p.ends_with(&format!("/manifests/{tag}"))
                && *s == 200),
            "{kind}: {by_tag:?}"
        );
    }
}

/// The release's v2 from `reference` mounted lazily, its image compared with the
/// original.
fn mounted_image_is(home: &Path, rel: &SignedReleases, reference: &str, dir: &Path, kind: &str) {
    let exposed = dir.join(format!("exposed-{kind}"));
    fs::create_dir_all(&exposed).unwrap();
    ok(cmd(home)
        .args(["mount", reference, "--daemon", "--trusted-key"])
        .arg(&rel.public)
        .arg("--no-attach")
        .arg(&exposed));
    let same = is_extracted(&exposed.join("image"), &image(kind, 2));
    ok(bin().arg("umount").arg(&exposed));
    assert!(same, "{kind}: the mounted image differs");
}

#[test]
fn a_release_mounts_from_the_registry_with_its_tree_intact() {
    let t = tempdir();
    let registry = Registry::start(&t.path().join("registry"), Access::Open);
    let kind = "erofs";
    let rel = release(t.path(), kind);
    let reference = registry.oci("os/root:v2");
    ok(&mut push_cmd(t.path(), &rel, 2, &reference));
    mounted_image_is(t.path(), &rel, &reference, t.path(), kind);
    // Mounted through the kernel, the tree is the one the original image holds.
    let (mp, original) = (t.path().join("mp"), t.path().join("original"));
    fs::create_dir_all(&mp).unwrap();
    fs::create_dir_all(&original).unwrap();
    ok(cmd(t.path())
        .args(["mount", &reference, "--daemon", "--trusted-key"])
        .arg(&rel.public)
        .arg(&mp));
    ok(Command::new("mount")
        .args(["-o", "loop,ro"])
        .arg(image(kind, 2))
        .arg(&original));
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&mp)
        .arg(&original)
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&original).status();
    ok(bin().arg("umount").arg(&mp));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn a_release_extracts_by_digest_and_skopeo_copies_it_into_one_that_still_extracts_and_verifies() {
    let t = tempdir();
    let registry = Registry::start(&t.path().join("registry"), Access::Open);
    let rel = release(t.path(), "squashfs");
    let report = json(&ok(&mut push_cmd(
        t.path(),
        &rel,
        2,
        &registry.oci("os/app:v2"),
    )));
    // The manifest by its digest, as the push reported it.
    let digest = report["manifest"].as_str().unwrap();
    let out = t.path().join("by-digest.img");
    let by_digest = registry.oci(&format!("os/app@{digest}"));
    ok(&mut extract_cmd(t.path(), &rel, &by_digest, &out));
    assert!(is_extracted(&out, &image("squashfs", 2)));
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{}/os/app:v2", registry.host))
        .arg(format!("docker://{}/mirror/app:stable", registry.host))
        .env("HOME", t.path())
        .output()
        .expect("skopeo is installed (tools/test installs it)");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let out = t.path().join("copy.img");
    // Only the tag was copied, not bcidx-: the pack map comes from the copied manifest.
    ok(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("mirror/app:stable"),
        &out,
    ));
    assert!(is_extracted(&out, &image("squashfs", 2)));
    ok(cmd(t.path())
        .args(["verify", &registry.oci("mirror/app:stable")])
        .arg(&out)
        .arg("--trusted-key")
        .arg(&rel.public));
}

/// An auth file of the container tools logging `user` in to `host`.
fn auth_file(path: &Path, host: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

#[test]
fn basic_logins_come_from_auth_files_and_bad_ones_are_named() {
    let t = tempdir();
    let registry = Registry::start(
        &t.path().join("registry"),
        Access::Htpasswd {
            user: "ci".into(),
            password: "s3cret".into(),
        },
    );
    let rel = release(t.path(), "ext4");
    let reference = registry.oci("private/root:v2");
    let err = fails(&mut push_cmd(t.path(), &rel, 2, &reference));
    assert!(err.contains("none is configured"), "{err}");

    // docker's file under $DOCKER_CONFIG.
    let docker = t.path().join("docker");
    auth_file(&docker.join("config.json"), &registry.host, "ci", "s3cret");
    ok(push_cmd(t.path(), &rel, 2, &reference).env("DOCKER_CONFIG", &docker));
    // The containers tools' file, named by $REGISTRY_AUTH_FILE, with the wrong password.
    let wrong = t.path().join("wrong.json");
    auth_file(&wrong, &registry.host, "ci", "guess");
    let out = t.path().join("out.img");
    let err =
        fails(extract_cmd(t.path(), &rel, &reference, &out).env("REGISTRY_AUTH_FILE", &wrong));
    assert!(err.contains("refused the login of ci"), "{err}");
    assert!(err.contains("private/root"), "{err}");
    ok(extract_cmd(t.path(), &rel, &reference, &out)
        .env("BLOCKCAST_REGISTRY_USERNAME", "ci")
        .env("BLOCKCAST_REGISTRY_PASSWORD", "s3cret"));
    assert!(is_extracted(&out, &image("ext4", 2)));
}

/// A registry in `dir/registry` that takes the tokens `tokens` hands out.
fn token_registry(dir: &Path, tokens: &TokenServer) -> Registry {
    Registry::start(
        &dir.join("registry"),
        Access::Token {
            realm: tokens.realm.clone(),
            service: token::SERVICE.into(),
            issuer: token::ISSUER.into(),
            certificate: tokens.certificate.clone(),
        },
    )
}

#[test]
fn token_logins_ask_the_realm_and_anonymous_pulls_get_a_token_too() {
    let t = tempdir();
    let tokens = TokenServer::start(&t.path().join("token"), "ci", "s3cret", true, 300);
    let registry = token_registry(t.path(), &tokens);
    let rel = release(t.path(), "erofs");
    let reference = registry.oci("team/os:v2");
    // Anonymous: a pull token, which cannot push.
    let err = fails(&mut push_cmd(t.path(), &rel, 2, &reference));
    assert!(err.contains("needs a login"), "{err}");
    let home = t.path().join("home");
    auth_file(
        &home.join(".docker/config.json"),
        &registry.host,
        "ci",
        "s3cret",
    );
    ok(&mut push_cmd(&home, &rel, 2, &reference));
    let asked = tokens.asked();
    assert!(
        asked.iter().any(|a| a.user == Some(("ci".into(), true))
            && a.scopes.iter().any(|s| {
                let actions = s.strip_prefix("repository:team/os:").unwrap_or("");
                actions.contains("push") && actions.contains("pull")
            })),
        "{asked:?}"
    );
    // Another repository gets the packs by mounts: a token for both repositories.
    let report = json(&ok(push_cmd(
        &home,
        &rel,
        2,
        &registry.oci("team/mirror:v2"),
    )
    .args(["--mount-from", "team/os"])));
    assert_eq!(
        report["packs_mounted"],
        packs_of(&rel, 2).len() as u64,
        "{report}"
    );
    assert_eq!(report["packs_uploaded"], 0, "{report}");
    let mount = |(m, p, _): &&(String, String, u16)| {
        m == "POST" && p.contains("mount=") && p.contains("from=team%2Fos")
    };
    let packs = packs_of(&rel, 2).len();
    let mounts = registry.requests_after(0, |r| {
        r.iter().filter(mount).filter(|r| r.2 == 201).count() >= packs
    });
    let mounts: Vec<_> = mounts.iter().filter(mount).collect();
    // Each mounted once, after the 401s that asked for a token covering team/os too.
    let mounted = mounts.iter().filter(|r| r.2 == 201).count();
    assert_eq!(mounted, packs, "{mounts:?}");
    let out = t.path().join("mirror.img");
    ok(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("team/mirror:v2"),
        &out,
    ));
    assert!(is_extracted(&out, &image("erofs", 2)));
    // Anyone may pull: the anonymous token is enough.
    let out = t.path().join("out.img");
    let before = tokens.asked().len();
    ok(&mut extract_cmd(t.path(), &rel, &reference, &out));
    assert!(is_extracted(&out, &image("erofs", 2)));
    let anonymous = tokens.asked()[before..].to_vec();
    assert!(
        !anonymous.is_empty() && anonymous.iter().all(|a| a.user.is_none()),
        "{anonymous:?}"
    );
    // One token for the whole pull, not one a request.
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    // A wrong password is refused by the realm, which the error names.
    let bad = t.path().join("bad");
    auth_file(
        &bad.join(".docker/config.json"),
        &registry.host,
        "ci",
        "guess",
    );
    let err = fails(&mut extract_cmd(&bad, &rel, &reference, &out));
    assert!(err.contains("token realm") && err.contains("401"), "{err}");
}

/// PUTs `json` as a manifest under `tag` with curl.
fn put_manifest(registry: &Registry, repo: &str, tag: &str, json: &str, media: &str) {
    let out = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {media}"))
        .arg("--data-binary")
        .arg(json)
        .arg(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            registry.host
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_references_manifests_and_blobs_end_in_errors_naming_them() {
    let t = tempdir();
    let registry = Registry::start(&t.path().join("registry"), Access::Open);
    let rel = release(t.path(), "squashfs");
    ok(&mut push_cmd(t.path(), &rel, 2, &registry.oci("os/app:v2")));
    let out = t.path().join("out.img");

    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("os/app:v9"),
        &out,
    ));
    assert!(
        err.contains("no such manifest") && err.contains("v9"),
        "{err}"
    );
    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("os/app"),
        &out,
    ));
    assert!(err.contains("names no release"), "{err}");
    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        "oci://127.0.0.1/Bad",
        &out,
    ));
    assert!(err.contains("lowercase"), "{err}");

    // Another artifact under a tag of the repository.
    let manifest = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/os/app/manifests/v2", registry.host))
        .output()
        .unwrap();
    let text = String::from_utf8(manifest.stdout).unwrap();
    let media = "application/vnd.oci.image.manifest.v1+json";
    put_manifest(
        &registry,
        "os/app",
        "other",
        &text.replace(
            "application/vnd.blockcast.release.v1",
            "application/vnd.example.thing",
        ),
        media,
    );
    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("os/app:other"),
        &out,
    ));
    assert!(err.contains("not a blockcast release"), "{err}");

    // A manifest whose index layer is another release's (v1's, pushed too): its bytes
    // are not the index the manifest's annotation names.
    let report = json(&ok(&mut push_cmd(
        t.path(),
        &rel,
        1,
        &registry.oci("os/app:v1"),
    )));
    assert_eq!(report["signed"], true);
    let v1_blob = sha256_hex(&fs::read(&rel.indexes[0]).unwrap());
    let v2_blob = sha256_hex(&fs::read(&rel.indexes[1]).unwrap());
    let v1_size = fs::metadata(&rel.indexes[0]).unwrap().len();
    let v2_size = fs::metadata(&rel.indexes[1]).unwrap().len();
    let swapped = text.replace(&v2_blob, &v1_blob).replace(
        &format!("\"size\":{v2_size}"),
        &format!("\"size\":{v1_size}"),
    );
    assert_ne!(swapped, text);
    put_manifest(&registry, "os/app", "swapped", &swapped, media);
    let before = registry.requests().len();
    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("os/app:swapped"),
        &out,
    ));
    assert!(
        err.contains("not the intact index the manifest names"),
        "{err}"
    );
    // A layer whose size the manifest gives wrongly: the blob is refused, no pack read.
    let lying = text.replace(
        &format!("\"size\":{v2_size}"),
        &format!("\"size\":{}", v2_size - 1),
    );
    put_manifest(&registry, "os/app", "lying", &lying, media);
    let err = fails(&mut extract_cmd(
        t.path(),
        &rel,
        &registry.oci("os/app:lying"),
        &out,
    ));
    assert!(err.contains("os/app") && err.contains(&v2_blob), "{err}");
    let packs = packs_of(&rel, 2);
    let read_packs = registry.requests()[before..]
        .iter()
        .filter(|(m, p, _)| m == "GET" && packs.iter().any(|d| p.ends_with(d.as_str())))
        .count();
    assert_eq!(read_packs, 0, "a pack was read for a bad manifest");
}

/// Whether `seen` is a GET of a presigned URL (a redirect's target, not the registry's
/// own header-signed requests to the bucket).
fn presigned_get(seen: &Seen) -> bool {
    seen.method == "GET" && seen.target.contains("X-Amz-Signature=")
}

#[test]
fn a_registry_on_object_storage_is_asked_once_a_blob_its_login_stays_off_the_bucket_and_a_refused_redirect_is_asked_again(
) {
    let t = tempdir();
    let moto = Moto::start("blobs");
    // The bucket refuses the second presigned GET of each object, once, as an expired
    // URL would be refused.
    let bucket = Proxy::start(
        moto.url.trim_start_matches("http://"),
        Box::new(|before, this| {
            let path = |s: &Seen| s.target.split('?').next().unwrap_or("").to_string();
            let earlier = before
                .iter()
                .filter(|s| presigned_get(s) && path(s) == path(this))
                .count();
            (presigned_get(this) && earlier == 1).then_some(403)
        }),
    );
    let registry = Registry::start_on(
        &t.path().join("registry"),
        Access::Htpasswd {
            user: "ci".into(),
            password: "s3cret".into(),
        },
        Storage::S3 {
            endpoint: format!("http://{}", bucket.host),
            bucket: "blobs".into(),
        },
    );
    let login = |mut c: Command| {
        c.env("BLOCKCAST_REGISTRY_USERNAME", "ci")
            .env("BLOCKCAST_REGISTRY_PASSWORD", "s3cret");
        c
    };
    let rel = release(t.path(), "erofs");
    let reference = registry.oci("os/root:v2");
    ok(&mut login(push_cmd(t.path(), &rel, 2, &reference)));
    let before = registry.requests().len();
    let out = t.path().join("out.img");
    ok(&mut login(extract_cmd(t.path(), &rel, &reference, &out)));
    assert!(is_extracted(&out, &image("erofs", 2)));
    // The registry's login never went to the bucket's host.
    let leaked: Vec<Seen> = bucket
        .seen()
        .into_iter()
        .filter(|s| presigned_get(s) && s.authorized)
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // The blobs (by digest) whose kept redirect the bucket refused.
    let refused: BTreeSet<String> = bucket
        .seen()
        .iter()
        .filter(|s| s.answered == Some(403))
        .filter_map(|s| {
            s.target
                .split('?')
                .next()?
                .split('/')
                .rev()
                .nth(1)
                .map(String::from)
        })
        .collect();
    assert!(!refused.is_empty(), "no kept redirect was used twice");
    // The registry answered every blob GET with a redirect: each blob once, and a blob
    // whose redirect was refused once more, or a few times for the requests in flight
    // then (4 at most).
    let blob_gets: Vec<_> = registry
        .requests_after(before, |_| true)
        .into_iter()
        .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/sha256:"))
        .collect();
    assert!(blob_gets.iter().all(|(_, _, s)| *s == 307), "{blob_gets:?}");
    let blobs: BTreeSet<String> = blob_gets
        .iter()
        .map(|(_, p, _)| p.rsplit(':').next().unwrap().to_string())
        .collect();
    for blob in &blobs {
        let asked = blob_gets
            .iter()
            .filter(|(_, p, _)| p.ends_with(blob.as_str()))
            .count();
        match refused.contains(blob) {
            true => assert!((2..=5).contains(&asked), "{blob}: {asked}"),
            false => assert_eq!(asked, 1, "{blob}"),
        }
    }
    let presigned = bucket.seen().iter().filter(|s| presigned_get(s)).count();
    assert!(
        presigned > blob_gets.len(),
        "ranges went to the bucket straight away"
    );
}

/// The read side of a registry holding v`v` of `rel` as `os/app:v2`, as plain files for a
/// faulty server: `v2/os/app/manifests/v2` and `v2/os/app/blobs/sha256:HEX`. Returns the
/// hex digests of the index blob and of the release's packs.
fn static_registry(root: &Path, rel: &SignedReleases, v: usize) -> (String, BTreeSet<String>) {
    use blockcast::oci::{Blob, ReleaseManifest};
    let app = root.join("v2/os/app");
    fs::create_dir_all(app.join("manifests")).unwrap();
    fs::create_dir_all(app.join("blobs")).unwrap();
    // Each blob also under /elsewhere, with its bytes reversed: what a redirect to the
    // wrong place gives.
    let elsewhere = root.join("elsewhere/v2/os/app/blobs");
    fs::create_dir_all(&elsewhere).unwrap();
    let put = |bytes: &[u8]| {
        let blob = Blob::of(bytes);
        fs::write(app.join("blobs").join(&blob.digest), bytes).unwrap();
        let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
        fs::write(elsewhere.join(format!("{}.moved", blob.digest)), reversed).unwrap();
        blob
    };
    let index_path = &rel.indexes[v - 1];
    let index = blockcast::index::Index::open(index_path).unwrap();
    put(blockcast::oci::EMPTY_DATA);
    let map = put(&fs::read(rel.store.join(blockcast::pack::map_name(&index.digest()))).unwrap());
    let signature = put(&fs::read(blockcast::sign::signature_path(index_path)).unwrap());
    let index_blob = put(&fs::read(index_path).unwrap());
    let packs = packs_of(rel, v);
    let pack_blobs = packs
        .iter()
        .map(|hex| put(&fs::read(rel.store.join(format!("packs/{hex}.bcpack"))).unwrap()))
        .collect();
    let manifest = ReleaseManifest {
        index_digest: index.digest(),
        index: index_blob.clone(),
        pack_map: Some(map),
        packs: pack_blobs,
        signatures: vec![(blockcast::oci::MINISIGN.into(), signature)],
    };
    fs::write(app.join("manifests/v2"), manifest.to_json().unwrap()).unwrap();
    (
        index_blob.digest.trim_start_matches("sha256:").to_string(),
        packs,
    )
}

#[test]
fn registry_faults_end_byte_identical_or_in_errors_naming_the_reference_and_blob() {
    let t = tempdir();
    let rel = release(t.path(), "erofs");
    let root = t.path().join("static");
    let (index_blob, packs) = static_registry(&root, &rel, 2);
    let pack = packs.iter().next().unwrap().clone();
    let manifest = "/v2/os/app/manifests/v2";
    let out = t.path().join("out.img");
    let run = |cfg: Config| {
        let server = FaultyServer::start(cfg.ranges(Ranges::Multipart));
        let reference = format!(
            "oci://{}/os/app:v2",
            server.url().trim_start_matches("http://")
        );
        let _ = fs::remove_file(&out);
        let output = extract_cmd(t.path(), &rel, &reference, &out)
            .args(["--retries", "2"])
            .output()
            .unwrap();
        (output, server.settled())
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Asked to wait, the client waits and gets every byte.
    let (o, _) = run(Config::new(&root).rule(manifest, Fault::Status429, 1));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("429") && stderr(&o).contains("wait 1 s"),
        "{}",
        stderr(&o)
    );
    assert!(is_extracted(&out, &image("erofs", 2)));
    let (o, _) = run(Config::new(&root).rule(&pack, Fault::Status503, 2));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_extracted(&out, &image("erofs", 2)));

    // Failures that do not pass: named, and no pack read for a bad index.
    let cases = [
        (
            manifest,
            Fault::Status401,
            vec!["without a WWW-Authenticate challenge", "os/app"],
        ),
        (manifest, Fault::Status403, vec!["403 Forbidden", "os/app"]),
        (
            manifest,
            Fault::Status500,
            vec!["500", "os/app", "manifests/v2"],
        ),
        (
            index_blob.as_str(),
            Fault::RedirectElsewhere,
            vec!["do not hash", &index_blob],
        ),
        (
            index_blob.as_str(),
            Fault::RedirectToSelf,
            vec!["redirect", &index_blob],
        ),
        (
            index_blob.as_str(),
            Fault::FlipBytes,
            vec!["do not hash", &index_blob],
        ),
        (index_blob.as_str(), Fault::NotFound, vec!["os/app:v2"]),
    ];
    for (path, fault, wanted) in cases {
        let (o, stats) = run(Config::new(&root).always(path, fault));
        let err = stderr(&o);
        assert!(!o.status.success(), "{fault:?}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{fault:?}: {w:?} not in {err}");
        }
        let read: u32 = packs
            .iter()
            .filter_map(|p| stats.per_path.get(&format!("/v2/os/app/blobs/sha256:{p}")))
            .sum();
        assert_eq!(read, 0, "{fault:?}: packs read");
    }
    // Packs redirected to wrong bytes: their chunks fail their checks and come from the
    // next store, byte-identical.
    let cfg = Config::new(&root).ranges(Ranges::Multipart);
    let server = FaultyServer::start(
        packs
            .iter()
            .fold(cfg, |c, p| c.always(p, Fault::RedirectElsewhere)),
    );
    let reference = format!(
        "oci://{}/os/app:v2",
        server.url().trim_start_matches("http://")
    );
    let (repo, _) = reference.rsplit_once(':').unwrap();
    let _ = fs::remove_file(&out);
    let o = extract_cmd(t.path(), &rel, &reference, &out)
        .args(["--store", repo, "--store"])
        .arg(&rel.store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_extracted(&out, &image("erofs", 2)));
    let stats = server.settled();
    assert!(
        stats
            .faults
            .get(&Fault::RedirectElsewhere)
            .copied()
            .unwrap_or(0)
            > 0,
        "{stats:?}"
    );
}

#[test]
fn tokens_that_expire_during_a_run_are_renewed_and_helpers_give_logins() {
    let t = tempdir();
    // Tokens good for a second: every request of a run finds its token about to expire.
    let tokens = TokenServer::start(&t.path().join("token"), "ci", "s3cret", false, 1);
    let registry = token_registry(t.path(), &tokens);
    // The login comes from a credential helper the auth file names.
    let bin_dir = t.path().join("helpers");
    fs::create_dir_all(&bin_dir).unwrap();
    let helper = bin_dir.join("docker-credential-blockcast-test");
    fs::write(
        &helper,
        "#!/bin/sh\nread host\necho \"{\\\"ServerURL\\\":\\\"$host\\\",\\\"Username\\\":\\\"ci\\\",\\\"Secret\\\":\\\"s3cret\\\"}\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    // The registry is also reached through a slow link (300 ms a request).
    let slow = Proxy::slow(
        &registry.host,
        Box::new(|_, _| None),
        Duration::from_millis(300),
    );
    let home = t.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    let helpers = serde_json::json!({
        registry.host.clone(): "blockcast-test",
        slow.host.clone(): "blockcast-test",
    });
    fs::write(
        home.join(".docker/config.json"),
        serde_json::json!({ "credHelpers": helpers }).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let rel = release(t.path(), "squashfs");
    let reference = registry.oci("team/app:v2");
    ok(push_cmd(&home, &rel, 2, &reference).env("PATH", &path));
    // Pulled over the slow link, the run outlasts its first token.
    let before = tokens.asked().len();
    let out = t.path().join("out.img");
    let reference = format!("oci://{}/team/app:v2", slow.host);
    ok(extract_cmd(&home, &rel, &reference, &out)
        .args(["--concurrency", "1"])
        .env("PATH", &path));
    assert!(is_extracted(&out, &image("squashfs", 2)));
    let renewed = tokens.asked()[before..].to_vec();
    assert!(
        renewed.len() >= 2 && renewed.iter().all(|a| a.user == Some(("ci".into(), true))),
        "{renewed:?}"
    );
}
