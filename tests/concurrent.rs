//! Several `make` runs may write into one store at once.

mod common;

use common::*;

#[test]
fn concurrent_makes_share_a_store() {
    let t = tempdir();
    let store = t.path().join("store");
    let runs: Vec<_> = KINDS
        .iter()
        .flat_map(|k| [(k, 1), (k, 2), (k, 2)])
        .enumerate()
        .map(|(n, (kind, v))| {
            let idx = t.path().join(format!("{n}.bcidx"));
            let child = make_cmd(&image(kind, v), &store, &idx)
                .arg("-q")
                .spawn()
                .unwrap();
            (child, idx, image(kind, v))
        })
        .collect();
    for (mut child, idx, img) in runs {
        assert!(child.wait().unwrap().success());
        let out = t.path().join(format!("{}.out", idx.display()));
        extract(&idx, &store, &out, &[]);
        assert!(is_extracted(&out, &img));
    }
    let temps = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(temps, 0, "temporary chunk files left behind");
}
