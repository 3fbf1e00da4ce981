//! Every test image survives make → extract byte for byte, with and without seeds, into a
//! new file and in place over the previous version.

mod common;

use common::*;

#[test]
fn every_image_round_trips() {
    let t = tempdir();
    let store = t.path().join("store");
    for kind in KINDS {
        for v in [1, 2] {
            let img = image(kind, v);
            let idx = t.path().join(format!("{kind}-{v}.bcidx"));
            make(&img, &store, &idx);
            let out = t.path().join(format!("{kind}-{v}.out"));
            let r = extract(&idx, &store, &out, &[]);
            assert!(is_extracted(&out, &img), "{kind} v{v} differs");
            assert_eq!(r["updated_in_place"], false);
            let info = json(&ok(bin().arg("info").arg(&idx).arg("--json")));
            let fs = if kind == "erofs-lz4hc" { "erofs" } else { kind };
            assert_eq!(info["filesystem"], fs);
            assert_eq!(info["image_size"], std::fs::metadata(&img).unwrap().len());
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn seeds_supply_shared_chunks() {
    let t = tempdir();
    for kind in KINDS {
        let store = t.path().join(format!("store-{kind}"));
        let v1 = t.path().join(format!("{kind}-1.bcidx"));
        let v2 = t.path().join(format!("{kind}-2.bcidx"));
        make(&image(kind, 1), &store, &v1);
        make(&image(kind, 2), &store, &v2);
        let full = json(&ok(bin()
            .args(["plan", "--json", "--store"])
            .arg(&store)
            .arg(&v2)));
        let seeded = json(&ok(bin()
            .args(["plan", "--json", "--store"])
            .arg(&store)
            .arg(&v2)
            .arg("--seed")
            .arg(image(kind, 1))));
        let full_bytes = full["store"]["stored_bytes"].as_u64().unwrap();
        let seeded_bytes = seeded["store"]["stored_bytes"].as_u64().unwrap();
        assert!(seeded_bytes < full_bytes, "{kind}: seed saved nothing");
        assert_eq!(seeded["missing_from_stores"], 0);

        for extra in [
            vec![],
            vec!["--seed-index".to_string(), v1.display().to_string()],
        ] {
            let out = t.path().join(format!("{kind}-{}.out", extra.len()));
            let mut args = vec!["--seed".to_string(), image(kind, 1).display().to_string()];
            args.extend(extra.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = extract(&v2, &store, &out, &args);
            assert!(is_extracted(&out, &image(kind, 2)), "{kind} {args:?}");
            assert_eq!(r["plan"]["store"], seeded["store"], "{kind} {args:?}");
        }
    }
}

#[test]
fn existing_output_is_updated_in_place() {
    let t = tempdir();
    for kind in KINDS {
        let store = t.path().join("store");
        let v1 = t.path().join(format!("{kind}-1.bcidx"));
        let v2 = t.path().join(format!("{kind}-2.bcidx"));
        make(&image(kind, 1), &store, &v1);
        make(&image(kind, 2), &store, &v2);
        let dev = t.path().join(format!("{kind}.dev"));
        std::fs::copy(image(kind, 1), &dev).unwrap();
        let up = extract(&v2, &store, &dev, &[]);
        assert!(is_extracted(&dev, &image(kind, 2)), "{kind} upgrade");
        assert_eq!(up["updated_in_place"], true);
        let reused = up["plan"]["in_place"]["bytes"].as_u64().unwrap()
            + up["plan"]["output"]["bytes"].as_u64().unwrap();
        assert!(reused > 0, "{kind}: nothing reused from the old output");
        let down = extract(&v1, &store, &dev, &[]);
        assert!(is_extracted(&dev, &image(kind, 1)), "{kind} downgrade");
        assert!(down["plan"]["store"]["chunks"].as_u64().unwrap() > 0);
        let again = extract(&v1, &store, &dev, &[]);
        assert!(is_extracted(&dev, &image(kind, 1)));
        assert_eq!(again["plan"]["store"]["chunks"], 0, "{kind}: up to date");
    }
}

/// A new version whose content moved: halves swapped (a cycle of copies) and a shift.
#[test]
fn moved_chunks_are_copied_within_the_output() {
    let t = tempdir();
    let store = t.path().join("store");
    let old = noise(7, 8 << 20);
    let mut swapped = old[4 << 20..].to_vec();
    swapped.extend_from_slice(&old[..4 << 20]);
    let mut shifted = noise(9, 12288);
    shifted.extend_from_slice(&old[..(8 << 20) - 12288]);
    for (name, new) in [("swapped", swapped), ("shifted", shifted)] {
        let new_img = t.path().join(format!("{name}.img"));
        std::fs::write(&new_img, &new).unwrap();
        let idx = t.path().join(format!("{name}.bcidx"));
        make(&new_img, &store, &idx);
        for spill in ["256M", "0"] {
            let dev = t.path().join(format!("{name}-{spill}.dev"));
            std::fs::write(&dev, &old).unwrap();
            let r = extract(&idx, &store, &dev, &["--spill-limit", spill]);
            assert!(is_extracted(&dev, &new_img), "{name} spill {spill}");
            let moved = r["plan"]["output"]["bytes"].as_u64().unwrap();
            assert!(moved > 6 << 20, "{name}: only {moved} bytes reused");
            if name == "swapped" && spill == "256M" {
                assert!(r["spilled_bytes"].as_u64().unwrap() > 0);
                assert_eq!(r["refetched_chunks"], 0);
            }
            if name == "swapped" && spill == "0" {
                assert!(r["refetched_chunks"].as_u64().unwrap() > 0);
            }
        }
    }
}

#[test]
fn zero_runs_are_neither_stored_nor_fetched() {
    let t = tempdir();
    let store = t.path().join("store");
    let mut data = noise(3, 1 << 20);
    data.extend(vec![0u8; 5 << 20]);
    data.extend(noise(4, 300_001));
    let img = t.path().join("zeros.img");
    std::fs::write(&img, &data).unwrap();
    let idx = t.path().join("zeros.bcidx");
    let m = make(&img, &store, &idx);
    assert!(m["zero_chunks"].as_u64().unwrap() >= 5);
    let stored: u64 = chunk_files(&store)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(stored < 1_400_000, "zeros were stored: {stored}");
    let info = json(&ok(bin().arg("info").arg(&idx).arg("--json")));
    assert_eq!(
        info["zero_records"], 1,
        "adjacent zero chunks form one record"
    );
    assert_eq!(info["zero_bytes"].as_u64().unwrap() % 4096, 0);
    let out = t.path().join("zeros.out");
    let r = extract(&idx, &store, &out, &[]);
    assert!(is_extracted(&out, &img));
    // A new output starts as holes: the zero run is already in place.
    let in_place = r["plan"]["in_place"]["bytes"].as_u64().unwrap();
    assert!(in_place >= 4 << 20, "{in_place}");
    let fetched = r["plan"]["store"]["bytes"].as_u64().unwrap();
    assert_eq!(fetched + in_place, data.len() as u64);
    // Over an output full of other data, the zero run must really be written.
    let dev = t.path().join("zeros.dev");
    std::fs::write(&dev, noise(5, data.len())).unwrap();
    let r = extract(&idx, &store, &dev, &[]);
    assert_eq!(r["plan"]["zero"]["bytes"].as_u64().unwrap(), in_place);
    assert!(is_extracted(&dev, &img));
}

#[test]
fn make_is_reproducible() {
    let t = tempdir();
    for kind in KINDS {
        let a = t.path().join(format!("{kind}-a.bcidx"));
        let b = t.path().join(format!("{kind}-b.bcidx"));
        let c = t.path().join(format!("{kind}-c.bcidx"));
        make(&image(kind, 2), &t.path().join("s1"), &a);
        make(&image(kind, 2), &t.path().join("s2"), &b);
        make(&image(kind, 2), &t.path().join("s1"), &c);
        assert!(same_bytes(&a, &b), "{kind}: fresh stores differ");
        assert!(same_bytes(&a, &c), "{kind}: warm store differs");
    }
    let files = |s: &str| -> Vec<Vec<u8>> {
        chunk_files(&t.path().join(s))
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect()
    };
    assert_eq!(files("s1"), files("s2"));
}

#[test]
fn block_device_output() {
    let t = tempdir();
    let store = t.path().join("store");
    let idx = t.path().join("v2.bcidx");
    make(&image("erofs", 2), &store, &idx);
    let size = std::fs::metadata(image("erofs", 2)).unwrap().len();
    let backing = t.path().join("disk");
    std::fs::write(&backing, noise(11, (size + (1 << 20)) as usize)).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let result = std::panic::catch_unwind(|| {
        extract(&idx, &store, std::path::Path::new(&dev), &[]);
    });
    let _ = std::process::Command::new("losetup")
        .args(["-d", &dev])
        .status();
    result.unwrap();
    let written = std::fs::read(&backing).unwrap();
    assert_eq!(
        &written[..size as usize],
        &std::fs::read(image("erofs", 2)).unwrap()[..]
    );
}
