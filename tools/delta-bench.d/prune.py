#!/usr/bin/env python3
"""Helper of tools/bench-prune.

  prune.py weekly TREE K            applies the weekly changes 1..K to TREE (a copy of a
                                    Debian tree); prints what week K changed, as JSON
  prune.py stats DIR                a store's files, as k=v words
  prune.py fields FILE              blockcast prune --json output, as k=v words
  prune.py record K=V...            one JSON line (numbers as numbers)
  prune.py report [--json] META RECORDS

The weekly change of week j is a function of j and of the paths and sizes in the tree
only (never of the order of a directory listing): files are picked in the order of
SHA-256("j/what/path"), so a pick stays the same when the base tree under it changes a
little (v1 to v2 to v3), and release k = base + weeks 1..k differs from release k-1 by
week k (and, where the base changes, by the base's own update).
"""
import hashlib
import json
import os
import random
import statistics
import sys

KIB = 1 << 10
MIB = 1 << 20
REWRITE_ROOTS = ("usr/share", "usr/lib", "var/lib")
REMOVE_ROOTS = ("usr/share/doc", "usr/share/locale", "usr/share/man", "usr/share/zoneinfo")
REWRITE_MIN, REWRITE_MAX = 16 * KIB, 2 * MIB


def number(v):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


# --- weekly changes ----------------------------------------------------------------
def regular_files(tree, roots):
    """{relative path: size} of the regular files (not symlinks) under roots."""
    out = {}
    for root in roots:
        top = os.path.join(tree, root)
        for dirpath, dirnames, names in os.walk(top):
            dirnames.sort()
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                out[os.path.relpath(p, tree)] = os.path.getsize(p)
    return out


def order(week, what, paths):
    return sorted(paths, key=lambda p: hashlib.sha256(f"{week}/{what}/{p}".encode()).digest())


def apply_week(tree, week, rewrite_pool, remove_pool):
    rng = random.Random(f"blockcast-bench-prune-week-{week}")
    target = rng.randint(1 * MIB, 4 * MIB)
    st = dict(week=week, target_bytes=target, rewritten=0, rewritten_bytes=0, patched=0,
              patched_file_bytes=0, patched_bytes=0, removed=0, removed_bytes=0, added=0,
              added_bytes=0)
    # Files rewritten: half of them wholly (new content, same size), half patched in
    # place (about an eighth of the file, in spans of 512 B to 4 KiB: a rebuilt binary).
    total = 0
    for p in order(week, "rewrite", [p for p, s in rewrite_pool.items()
                                     if REWRITE_MIN <= s <= REWRITE_MAX]):
        if total >= target:
            break
        size = rewrite_pool[p]
        frng = random.Random(f"{week}/{p}")
        path = os.path.join(tree, p)
        if frng.random() < 0.5:
            with open(path, "wb") as f:
                f.write(frng.randbytes(size))
            st["rewritten"] += 1
            st["rewritten_bytes"] += size
        else:
            with open(path, "r+b") as f:
                changed = 0
                while changed < size // 8:
                    n = frng.randint(512, 4096)
                    off = frng.randrange(0, max(1, size - n))
                    f.seek(off)
                    f.write(frng.randbytes(min(n, size - off)))
                    changed += n
            st["patched"] += 1
            st["patched_file_bytes"] += size
            st["patched_bytes"] += changed
        total += size
    # Files removed (documentation, locales: what a package update drops).
    for p in order(week, "remove", list(remove_pool))[: rng.randint(1, 3)]:
        os.unlink(os.path.join(tree, p))
        st["removed"] += 1
        st["removed_bytes"] += remove_pool.pop(p)
        rewrite_pool.pop(p, None)
    # Files added: data and a small list, kept in the later releases.
    adds = [(f"usr/share/weekly/{week:02d}-{i}.dat", rng.randint(4 * KIB, 256 * KIB))
            for i in range(rng.randint(1, 3))]
    for p, size in adds:
        path = os.path.join(tree, p)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
        os.chmod(path, 0o644)
        rewrite_pool[p] = size
        st["added"] += 1
        st["added_bytes"] += size
    lst = os.path.join(tree, f"var/lib/weekly/{week:02d}.list")
    os.makedirs(os.path.dirname(lst), mode=0o755, exist_ok=True)
    with open(lst, "w") as f:
        f.write("".join(f"{p} {s}\n" for p, s in adds))
    os.chmod(lst, 0o644)
    return st


def weekly(tree, k):
    k = int(k)
    rewrite_pool = regular_files(tree, REWRITE_ROOTS)
    remove_pool = regular_files(tree, REMOVE_ROOTS)
    st = None
    for week in range(1, k + 1):
        st = apply_week(tree, week, rewrite_pool, remove_pool)
    print(json.dumps(st))


# --- stores -------------------------------------------------------------------------
def stats(d):
    """files and their bytes; du -sb (apparent, directories included); disk bytes
    (allocated blocks, directories included); by kind."""
    s = dict(files=0, file_bytes=0, du_bytes=0, disk_bytes=0, dirs=0, empty_dirs=0,
             packs=0, pack_bytes=0, indexes=0)
    for dirpath, dirnames, names in os.walk(d):
        st = os.lstat(dirpath)
        s["dirs"] += 1
        s["du_bytes"] += st.st_size
        s["disk_bytes"] += st.st_blocks * 512
        if not dirnames and not names:
            s["empty_dirs"] += 1
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            s["files"] += 1
            s["file_bytes"] += st.st_size
            s["du_bytes"] += st.st_size
            s["disk_bytes"] += st.st_blocks * 512
            if n.endswith(".bcpack"):
                s["packs"] += 1
                s["pack_bytes"] += st.st_size
            elif n.endswith(".bcidx"):
                s["indexes"] += 1
    print(" ".join(f"{k}={v}" for k, v in s.items()))


def fields(path):
    """The figures of blockcast prune --json, as k=v words (bc_ prefixed)."""
    with open(path) as f:
        j = json.load(f)
    out = {}
    for k in ("deleted_objects", "deleted_bytes", "repacked_packs", "removed_releases"):
        v = j.get(k)
        if isinstance(v, (int, float)):
            out[f"bc_{k}"] = v
    kept = j.get("kept_releases")
    if isinstance(kept, list):
        out["bc_kept"] = len(kept)
        names = []
        for r in kept:
            if isinstance(r, dict):
                r = r.get("release", r.get("index", "?"))
            names.append(str(r))
        out["bc_kept_releases"] = ",".join(names) or "-"
    print(" ".join(f"{k}={v}" for k, v in out.items()))


def record(args):
    r = {}
    for a in args:
        k, _, v = a.partition("=")
        r[k] = number(v)
    print(json.dumps(r))


# --- report -------------------------------------------------------------------------
TOOLS = ("casync", "loose", "packed")


def med(rows, key):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if not vals:
        return None
    m = statistics.median(vals)
    return int(m) if float(m).is_integer() else m


def summarize(meta, records):
    out = dict(meta=meta, prune={}, dry_run={}, make={}, size_check={}, checks=[])
    for tool in TOOLS:
        for mode in ("cold", "warm"):
            rows = [r for r in records if r.get("what") == "prune" and r.get("tool") == tool
                    and r.get("mode") == mode]
            if not rows:
                continue
            fig = dict(runs=len(rows))
            for k in ("seconds", "seconds_sync", "files_before", "files_after",
                      "file_bytes_before", "file_bytes_after", "du_bytes_before",
                      "du_bytes_after", "disk_bytes_before", "disk_bytes_after",
                      "freed_file_bytes", "freed_disk_bytes", "bc_deleted_objects",
                      "bc_deleted_bytes", "bc_repacked_packs", "bc_removed_releases",
                      "bc_kept"):
                v = med(rows, k)
                if v is not None:
                    fig[k] = v
            fig["seconds_all"] = [r["seconds"] for r in rows]
            kept = {r.get("bc_kept_releases") for r in rows} - {None}
            if kept:
                fig["bc_kept_releases"] = sorted(kept)
            out["prune"].setdefault(tool, {})[mode] = fig
        rows = [r for r in records if r.get("what") == "dry-run" and r.get("tool") == tool]
        if rows:
            out["dry_run"][tool] = {k: v for k, v in rows[0].items() if k not in ("what", "tool")}
        rows = [r for r in records if r.get("what") == "make" and r.get("tool") == tool]
        if rows:
            last = max(rows, key=lambda r: r["release"])
            out["make"][tool] = dict(
                releases=len(rows), seconds_total=round(sum(r["seconds"] for r in rows), 3),
                seconds_median=med(rows, "seconds"), store_file_bytes=last["file_bytes"],
                store_files=last["files"], store_disk_bytes=last["disk_bytes"])
        fresh = [r for r in records if r.get("what") == "fresh" and r.get("tool") == tool]
        cold = out["prune"].get(tool, {}).get("cold") or out["prune"].get(tool, {}).get("warm")
        if fresh:
            f = fresh[0]
            sc = dict(fresh_file_bytes=f["file_bytes"], fresh_files=f["files"],
                      fresh_disk_bytes=f["disk_bytes"])
            if cold:
                sc["pruned_file_bytes"] = cold["file_bytes_after"]
                sc["pruned_disk_bytes"] = cold["disk_bytes_after"]
                sc["ratio"] = round(cold["file_bytes_after"] / f["file_bytes"], 4) if f["file_bytes"] else None
            out["size_check"][tool] = sc
    out["checks"] = [r for r in records if r.get("what") == "check"]
    out["weeks"] = [r for r in records if r.get("what") == "week"]
    return out


def report(args):
    as_json = args and args[0] == "--json"
    if as_json:
        args = args[1:]
    with open(args[0]) as f:
        meta = json.load(f)
    with open(args[1]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    s = summarize(meta, records)
    if as_json:
        print(json.dumps(s, indent=1))
        return

    def mib(n):
        return "-" if n is None else f"{n / MIB:.1f}"

    def sec(n):
        return "-" if n is None else f"{n:.3f}"

    def num(n):
        return "-" if n is None else str(int(n)) if float(n).is_integer() else f"{n:.1f}"

    m = meta
    n = m["releases"]
    print(f"blockcast prune beside casync gc: {n} releases of a bookworm minbase erofs image "
          f"(uncompressed, {mib(m['image_bytes_median'])} MiB median); releases on "
          f"{m['bases']}; each release = its base + the weekly changes 1..k "
          f"(median {mib(m['week_bytes_median'])} MiB of files touched a week).")
    print(f"Kept: releases {n - 1} and {n} (casync gc {n - 1}.caibx {n}.caibx; blockcast prune "
          f"--keep-last 2 --grace 0). Medians of {m['runs']} runs, each on a fresh copy of "
          f"the store; cold = page cache dropped before the run, warm = right after the copy.")
    if not m.get("blockcast_prune"):
        print("NOTE: this blockcast has no `prune` command: the blockcast rows are missing.")
    print()
    hdr = (f"{'store':<8} {'cache':<5} {'seconds':>8} {'s+sync':>8} {'files':>15} "
           f"{'MiB (files)':>17} {'freed MiB':>9} {'disk freed':>10} {'deleted':>8} {'repacked':>8}")
    print(hdr)
    print("-" * len(hdr))
    for tool in TOOLS:
        for mode in ("cold", "warm"):
            f = s["prune"].get(tool, {}).get(mode)
            if not f:
                continue
            files = f"{num(f['files_before'])} > {num(f['files_after'])}"
            size = f"{mib(f['file_bytes_before'])} > {mib(f['file_bytes_after'])}"
            print(f"{tool:<8} {mode:<5} {sec(f['seconds']):>8} {sec(f.get('seconds_sync')):>8} "
                  f"{files:>15} {size:>17} {mib(f['freed_file_bytes']):>9} "
                  f"{mib(f['freed_disk_bytes']):>10} {num(f.get('bc_deleted_objects')):>8} "
                  f"{num(f.get('bc_repacked_packs')):>8}")
    print()
    for tool, d in s["dry_run"].items():
        extra = ""
        if "would_remove" in d:
            extra = f", would remove {num(d['would_remove'])} chunk files"
        if "bc_deleted_objects" in d:
            extra = (f", would delete {num(d['bc_deleted_objects'])} objects, "
                     f"{mib(d.get('bc_deleted_bytes'))} MiB")
        print(f"dry run  {tool:<7} {sec(d['seconds'])} s{extra}; store unchanged: "
              f"{'yes' if d.get('unchanged') else 'NO'}")
    for c in s["checks"]:
        print(f"check    {c['tool']:<7} release {c['release']} extracted from the pruned store: "
              f"{c['result']}")
    print()
    for tool, sc in s["size_check"].items():
        if "pruned_file_bytes" in sc:
            print(f"size     {tool:<7} pruned {mib(sc['pruned_file_bytes'])} MiB, a fresh store of "
                  f"releases {n - 1} and {n} {mib(sc['fresh_file_bytes'])} MiB: ratio "
                  f"{sc['ratio']:.3f} (disk {mib(sc['pruned_disk_bytes'])} against "
                  f"{mib(sc['fresh_disk_bytes'])} MiB)")
        else:
            print(f"size     {tool:<7} a fresh store of releases {n - 1} and {n}: "
                  f"{mib(sc['fresh_file_bytes'])} MiB")
    for tool, mk in s["make"].items():
        print(f"make     {tool:<7} {mk['releases']} releases in {mk['seconds_total']:.1f} s "
              f"(median {mk['seconds_median']:.2f} s); store {mib(mk['store_file_bytes'])} MiB in "
              f"{mk['store_files']} files ({mib(mk['store_disk_bytes'])} MiB on disk)")
    print()
    print(f"blockcast {m['blockcast']} (git {m['git']}), {m['casync']}; "
          f"file system of the work directory: {m['fstype']}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "weekly" and len(args) == 2:
        weekly(*args)
    elif cmd == "stats" and len(args) == 1:
        stats(*args)
    elif cmd == "fields" and len(args) == 1:
        fields(*args)
    elif cmd == "record":
        record(args)
    elif cmd == "report":
        report(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
