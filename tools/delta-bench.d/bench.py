#!/usr/bin/env python3
"""Helpers of tools/delta-bench (Python 3 standard library only).

  bench.py caibx-cost OLD.caibx NEW.caibx STORE   what casync fetches for NEW given OLD
  bench.py new-blocks OLD.img NEW.img COUNTFILE   NEW's 4 KiB blocks that OLD lacks, to stdout
  bench.py new-files OLD_DIR NEW_DIR COUNTFILE    NEW's files whose content OLD lacks, to stdout
  bench.py changed-packages OLD.list NEW.list     packages added, removed or changed
  bench.py bita ARCHIVE CLONE_LOG INFO_LOG        bita's figures from its archive and logs
  bench.py fetched-blocks OLD.img NEW.img OLD.bcidx NEW.bcidx
                                                  what the chunk files blockcast fetches
                                                  hold: blocks OLD lacks, blocks it has
  bench.py report [--json] META.json RESULTS.json...
                                                  a table per scenario (or one JSON object)
"""
import bisect
import hashlib
import json
import os
import re
import stat
import statistics
import struct
import sys

BLOCK = 4096


# --- casync ----------------------------------------------------------------------------
# A caibx is a CaFormatIndex (48 bytes: size, type, feature flags, chunk size min/avg/max),
# a CaFormatTable header (16 bytes: size = UINT64_MAX, type), items of 40 bytes (u64 end
# offset of the chunk in the blob, 32-byte chunk id) and a 40-byte tail (two zero u64s,
# the table's offset, its size and the table tail marker).
CA_INDEX = 0x96824D9C7B129FF9
CA_TABLE = 0xE75B9E112F17417D
CA_TAIL_MARKER = 0x4B4F050E5549ECD1


def read_caibx(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 48 + 16 + 40 or (len(data) - 48 - 16 - 40) % 40:
        sys.exit(f"{path}: not a caibx (size {len(data)})")
    size, kind = struct.unpack_from("<QQ", data, 0)
    if size != 48 or kind != CA_INDEX:
        sys.exit(f"{path}: bad CaFormatIndex header")
    tsize, tkind = struct.unpack_from("<QQ", data, 48)
    if tsize != 2**64 - 1 or tkind != CA_TABLE:
        sys.exit(f"{path}: bad table header")
    marker = struct.unpack_from("<Q", data, len(data) - 8)[0]
    if marker != CA_TAIL_MARKER:
        sys.exit(f"{path}: bad table tail marker")
    items = []
    end = 0
    for off in range(64, len(data) - 40, 40):
        new_end, cid = struct.unpack_from("<Q32s", data, off)
        if new_end <= end:
            sys.exit(f"{path}: chunk offsets not increasing at item {len(items)}")
        items.append((new_end - end, cid.hex()))
        end = new_end
    return items


def caibx_cost(old, new, store):
    old_ids = {cid for _, cid in read_caibx(old)}
    new_items = read_caibx(new)
    sizes = {cid: size for size, cid in new_items}
    fetch = sorted(sizes.keys() - old_ids)
    stored = 0
    for cid in fetch:
        path = os.path.join(store, cid[:4], cid + ".cacnk")
        try:
            stored += os.stat(path).st_size
        except FileNotFoundError:
            sys.exit(f"casync store {store} lacks chunk {cid}")
    print(json.dumps({
        "chunks": len(new_items),
        "distinct_chunks": len({cid for _, cid in new_items}),
        "fetch_chunks": len(fetch),
        "fetch_stored_bytes": stored,
        "fetch_bytes": sum(sizes[cid] for cid in fetch),
    }))


# --- bounds ----------------------------------------------------------------------------
def blocks(path):
    """The image's aligned 4 KiB blocks; a short last block is zero-padded."""
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                return
            yield b.ljust(BLOCK, b"\0")


def new_blocks(old, new, countfile):
    """Writes each distinct block of NEW that is no block of OLD once, in image order."""
    seen = {hashlib.sha256(b).digest() for b in blocks(old)}
    out = sys.stdout.buffer
    n = total = 0
    for b in blocks(new):
        total += 1
        d = hashlib.sha256(b).digest()
        if d in seen:
            continue
        seen.add(d)
        out.write(b)
        n += 1
    out.flush()
    with open(countfile, "w") as f:
        json.dump({"new_blocks": n, "blocks": total}, f)


# --- blockcast's fetched chunk files ---------------------------------------------------
# Read as docs/FORMAT.md specifies: a 512-byte header, then 56-byte records (chunk
# table, tree table, gather table, delta table) and, from version 6 on, the base-run
# table: for each delta record in turn, base_count entries of 36 bytes (chunk id, size).
FLAG_ZERO, FLAG_GATHERED = 1, 2
HEADER, RECORD, BASE_RUN = 512, 56, 36
VERSIONS = (3, 4, 5, 6)


def read_bcidx(path):
    """(records, gathered, deltas): records as (offset, size, stored_size, flags, id),
    gathered chunks as (first part offset, stored_size, id), deltas as (offset,
    stored_size, base id, base size, base run) where the base run is a list of (id, size)
    (version 6; empty before, when the base is the one chunk named)."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < HEADER or b[:8] != b"BCASTIDX":
        sys.exit(f"{path}: not a blockcast index")
    version = struct.unpack_from("<I", b, 8)[0]
    if version not in VERSIONS:
        sys.exit(f"{path}: index version {version}; this reads versions {VERSIONS}")
    chunks, trees = struct.unpack_from("<Q", b, 32)[0], struct.unpack_from("<Q", b, 88)[0]
    gathers = struct.unpack_from("<Q", b, 466)[0] if version >= 4 else 0
    deltas = struct.unpack_from("<I", b, 474)[0] if version >= 5 else 0
    runs_at = HEADER + RECORD * (chunks + trees + gathers + deltas)
    if runs_at > len(b):
        sys.exit(f"{path}: {len(b)} bytes, too short for the tables its header counts")

    def record(i):
        at = HEADER + RECORD * i
        off, size, stored, flags = struct.unpack_from("<QIII", b, at)
        return off, size, stored, flags, b[at + 24:at + 56]

    records = [record(i) for i in range(chunks)]
    gathered = [record(chunks + trees + i) for i in range(gathers)]
    delta_list = []
    run = runs_at
    for i in range(deltas):
        # Bytes 16..20 are base_count from version 6 on (flags, zero, before).
        off, base_size, stored, base_count, base_id = record(chunks + trees + gathers + i)
        runs = []
        if version >= 6:
            if run + BASE_RUN * base_count > len(b):
                sys.exit(f"{path}: delta {i}'s base run goes past the end of the file")
            for at in range(run, run + BASE_RUN * base_count, BASE_RUN):
                runs.append((b[at:at + 32], struct.unpack_from("<I", b, at + 32)[0]))
            run += BASE_RUN * base_count
        delta_list.append((off, stored, base_id, base_size, runs))
    if run != len(b):
        sys.exit(f"{path}: {len(b)} bytes, its tables make {run}")
    return records, [(g[0], g[2], g[4]) for g in gathered], delta_list


def fetched_blocks(old_img, new_img, old_idx, new_idx):
    """Splits the bytes of the chunk files an update from OLD fetches (those holding a
    record whose id OLD's index lacks, as a seed cut the same way would) into 4 KiB
    blocks OLD lacks ("changed") and blocks OLD has somewhere ("carried"). A chunk file
    more carried than changed is "sparse". Only meaningful when the cuts are 4 KiB-aligned
    (not squashfs, whose units sit at any offset): "aligned" says whether they are."""
    align = struct.unpack_from("<I", open(new_idx, "rb").read(64), 60)[0]
    have = {hashlib.sha256(b).digest() for b in blocks(old_img)}
    old_ids = {r[4] for r in read_bcidx(old_idx)[0]}
    records, gathered, _ = read_bcidx(new_idx)
    starts = [g[0] for g in gathered]
    def unit(r):
        if r[3] == FLAG_GATHERED:
            g = gathered[bisect.bisect_right(starts, r[0]) - 1]
            return g[2], g[1]
        return r[4], r[2]

    wanted = {unit(r) for r in records if r[3] != FLAG_ZERO and r[4] not in old_ids}
    per_unit = {}
    with open(new_img, "rb") as f:
        for r in records:
            u = unit(r)
            if r[3] == FLAG_ZERO or u not in wanted:
                continue
            t = per_unit.setdefault(u, [0, 0])
            first, end = r[0] // BLOCK * BLOCK, r[0] + r[1]
            for at in range(first, end, BLOCK):
                f.seek(at)
                block = f.read(BLOCK).ljust(BLOCK, b"\0")
                overlap = min(at + BLOCK, end) - max(at, r[0])
                t[0 if hashlib.sha256(block).digest() not in have else 1] += overlap
    sparse = [(u, t) for u, t in per_unit.items() if t[1] > t[0]]
    print(json.dumps({
        "aligned": align % BLOCK == 0,
        "files": len(per_unit),
        "changed_bytes": sum(t[0] for t in per_unit.values()),
        "carried_bytes": sum(t[1] for t in per_unit.values()),
        "sparse_files": len(sparse),
        "sparse_changed_bytes": sum(t[0] for _, t in sparse),
        "sparse_carried_bytes": sum(t[1] for _, t in sparse),
        "sparse_stored_bytes": sum(u[1] for u, _ in sparse),
    }))


def regular_files(root):
    """(relative path, sha256) of the tree's regular files, sorted by path."""
    result = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for piece in iter(lambda: f.read(1 << 20), b""):
                    h.update(piece)
            result.append((os.path.relpath(path, root), h.digest()))
    result.sort()
    return result


def new_files(old, new, countfile):
    """Writes each distinct content of a NEW file that no OLD file has once, by path."""
    seen = {d for _, d in regular_files(old)}
    out = sys.stdout.buffer
    n = size = 0
    paths = []
    for rel, d in regular_files(new):
        if d in seen:
            continue
        seen.add(d)
        with open(os.path.join(new, rel), "rb") as f:
            data = f.read()
        out.write(data)
        n += 1
        size += len(data)
        paths.append(rel)
    out.flush()
    with open(countfile, "w") as f:
        json.dump({"new_files": n, "new_file_bytes": size, "paths": paths}, f)


# --- bita ------------------------------------------------------------------------------
def human_bytes(line):
    """The exact count in bita's human_size! text: '1.1 MiB (1191936 bytes)' -> 1191936."""
    m = re.search(r"\((\d+) bytes\)", line)
    if m:
        return int(m.group(1))
    m = re.search(r"(\d+) bytes", line)
    if m:
        return int(m.group(1))
    sys.exit(f"no byte count in bita's line: {line!r}")


def bita_figures(archive, clone_log, info_log):
    # The archive starts with its header: "BITA1\0", the dictionary's size (u64), the
    # dictionary, the chunk data offset (u64) and a BLAKE2b-512 of all that: the index.
    with open(archive, "rb") as f:
        pre = f.read(14)
    if pre[:6] != b"BITA1\0":
        sys.exit(f"{archive}: not a bita archive")
    index_bytes = 14 + struct.unpack_from("<Q", pre, 6)[0] + 8 + 64
    fetch_chunks = fetch_stored = None
    with open(clone_log) as f:
        for line in f:
            m = re.search(r"Fetching (\d+) chunks from", line)
            if m:
                fetch_chunks = int(m.group(1))
            if "Successfully cloned archive using" in line:
                fetch_stored = human_bytes(line.split(" from archive")[0])
                seed_bytes = human_bytes(line.split(" from archive")[1])
    chunks = None
    with open(info_log) as f:
        for line in f:
            m = re.search(r"Chunks in source: (\d+) \(unique: (\d+)\)", line)
            if m:
                chunks, unique = int(m.group(1)), int(m.group(2))
    if None in (fetch_chunks, fetch_stored, chunks):
        sys.exit(f"bita's output lacks the fetched chunks, bytes or chunk count ({clone_log}, {info_log})")
    print(json.dumps({
        "fetch_stored_bytes": fetch_stored,
        "fetch_chunks": fetch_chunks,
        "seed_bytes": seed_bytes,
        "chunks": chunks,
        "distinct_chunks": unique,
        "index_bytes": index_bytes,
    }))


# --- packages --------------------------------------------------------------------------
def read_packages(path):
    pkgs = {}
    with open(path) as f:
        for line in f:
            name, _, version = line.rstrip("\n").partition("\t")
            if name and version:  # dpkg-query -W lists removed-but-configured ones bare
                pkgs[name] = version
    return pkgs


def changed_packages(old, new):
    a, b = read_packages(old), read_packages(new)
    for name in sorted(a.keys() | b.keys()):
        if a.get(name) != b.get(name):
            print(f"{name}\t{a.get(name, '-')}\t{b.get(name, '-')}")


# --- report ----------------------------------------------------------------------------
# Targets: the ratio each is on, its limit, and the kinds (by prefix) it applies to.
TARGETS = {
    "bc_over_4k": ("bc_over_4k", 1.3, "<=", ("erofs", "ext4")),
    "bc_over_file": ("bc_over_file", 1.5, "<=", ("squashfs",)),
    "bc_over_casync": ("bc_over_casync", 1.0, "<", ("",)),
    "bc_over_casync_erofs": ("bc_over_casync", 0.5, "<=", ("erofs",)),
    "bc_over_bita": ("bc_over_bita", 1.0, "<", ("",)),
    "fetched_over_static": ("fetched_over_static", 1.5, "<=", ("erofs", "ext4")),
    "cost_over_static": ("cost_over_static", 2.0, "<=", ("erofs", "ext4")),
    "cost_over_static_squashfs": ("cost_over_static", 1.1, "<=", ("squashfs",)),
    "extract_deltas_over_plain": ("extract_deltas_over_plain", 1.5, "<=", ("",)),
}
# make --delta-from against a plain make, on one image.
MAKE_TARGET = ("make_deltas_over_plain", 3.0, "<=")


def check(value, limit, op):
    return value <= limit if op == "<=" else value < limit


def median(samples):
    return round(statistics.median(samples), 3) if samples else None


def evaluate(r):
    per_chunk = r["per_chunk_overhead"]

    def cost(tool):
        t = r.get(tool)
        if not t:
            return None
        return t["fetch_stored_bytes"] + per_chunk * t["fetch_chunks"] + t["index_bytes"]

    costs = {t: cost(t) for t in ("blockcast", "casync", "bita")}

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    def peer(name):
        return (r.get(name) or {}).get("zstd_bytes")

    bc = costs["blockcast"]
    static = (r.get("static") or {}).get("bytes")
    timing = r.get("timing")
    if timing:
        timing["extract_deltas_median_s"] = median(timing["extract_deltas_s"])
        timing["extract_plain_median_s"] = median(timing["extract_plain_s"])
    ratios = {
        "bc_over_4k": ratio(bc, peer("bound_4k")),
        "bc_over_file": ratio(bc, peer("bound_file")),
        "bc_over_casync": ratio(bc, costs["casync"]),
        "bc_over_bita": ratio(bc, costs["bita"]),
        "fetched_over_static": ratio(r["blockcast"]["fetch_stored_bytes"], static),
        "cost_over_static": ratio(bc, static),
        "extract_deltas_over_plain": ratio(timing["extract_deltas_median_s"],
                                           timing["extract_plain_median_s"]) if timing else None,
    }
    targets = {}
    for name, (on, limit, op, prefixes) in TARGETS.items():
        if ratios[on] is not None and any(r["kind"].startswith(p) for p in prefixes):
            targets[name] = check(ratios[on], limit, op)
    r["cost"] = costs
    r["ratios"] = ratios
    r["targets_met"] = targets
    return r


def mib(n):
    return "-" if n is None else f"{n / 1048576:.2f}"


def print_table(cols, rows, indent=""):
    table = [[name for name, _ in cols]] + [[str(f(r)) for _, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip())


def describe(s):
    """The scenario's changes, in a line or two."""
    if s.get("added_packages") is not None:
        added = s["added_packages"]
        line = f"{len(added)} packages added: " + ", ".join(
            f"{p['package']} {p['version']}" for p in added)
        other = [p for p in s.get("changed_packages", []) if p["old"] != "-"]
        if other:
            line += "; also changed: " + ", ".join(
                f"{p['package']} {p['old']} -> {p['new']}" for p in other)
        return line
    if s.get("changed_packages") is not None:
        ch = s["changed_packages"]
        return f"{len(ch)} packages changed: " + ", ".join(
            f"{p['package']} {p['old']} -> {p['new']}" for p in ch)
    if s.get("wheels") is not None:
        return "wheels: " + ", ".join(f"{w['name']} {w['old']} -> {w['new']}" for w in s["wheels"])
    return ""


def report(args):
    as_json = args and args[0] == "--json"
    if as_json:
        args = args[1:]
    meta, *files = args
    with open(meta) as f:
        head = json.load(f)
    results = []
    for path in files:
        with open(path) as f:
            results.append(evaluate(json.load(f)))
    scenarios = head.get("scenarios", {})
    for name, s in scenarios.items():
        s["kinds"] = {r["kind"]: r for r in results if r["scenario"] == name}
    mt = head.get("make_timing")
    if mt:
        mt["deltas_median_s"] = median(mt["deltas_s"])
        mt["plain_median_s"] = median(mt["plain_s"])
        mt["ratio"] = round(mt["deltas_median_s"] / mt["plain_median_s"], 3)
        mt["target_met"] = check(mt["ratio"], MAKE_TARGET[1], MAKE_TARGET[2])
    if as_json:
        head["targets"] = {k: {"ratio": v[0], "limit": v[1], "op": v[2], "kinds": list(v[3])}
                           for k, v in TARGETS.items()}
        head["targets"]["make_deltas_over_plain"] = {"limit": MAKE_TARGET[1], "op": MAKE_TARGET[2]}
        print(json.dumps(head, indent=2))
        return

    def fetch(r, tool):
        t = r.get(tool)
        return "-" if not t else f"{mib(t['fetch_stored_bytes'])} ({t['fetch_chunks']})"

    def ratio_cell(r, on):
        v = r["ratios"][on]
        if v is None:
            return "-"
        missed = any(TARGETS[name][0] == on and not ok for name, ok in r["targets_met"].items())
        return f"{v:.2f}" + ("!" if missed else "")

    cols = [
        ("kind", lambda r: r["kind"]),
        ("image", lambda r: mib(r["image_bytes"])),
        ("full bc", lambda r: mib(r["full"]["blockcast_stored_bytes"])),
        ("full zstd", lambda r: mib(r["full"]["zstd3_bytes"])),
        ("static", lambda r: mib(r["static"]["bytes"])),
        ("bc fetch (n)", lambda r: fetch(r, "blockcast")),
        ("deltas", lambda r: str(r["blockcast"]["fetch_deltas"])),
        ("bc idx", lambda r: mib(r["blockcast"]["index_bytes"])),
        ("cost bc", lambda r: mib(r["cost"]["blockcast"])),
        ("fetched/static", lambda r: ratio_cell(r, "fetched_over_static")),
        ("cost/static", lambda r: ratio_cell(r, "cost_over_static")),
    ]
    peer_cols = [
        ("ca fetch (n)", lambda r: fetch(r, "casync")),
        ("ca idx", lambda r: mib(r["casync"]["index_bytes"]) if r.get("casync") else "-"),
        ("bita fetch (n)", lambda r: fetch(r, "bita")),
        ("bita idx", lambda r: mib(r["bita"]["index_bytes"]) if r.get("bita") else "-"),
        ("4K bound", lambda r: mib((r.get("bound_4k") or {}).get("zstd_bytes"))),
        ("file bound", lambda r: mib((r.get("bound_file") or {}).get("zstd_bytes"))),
        ("chunks bc/ca/bita", lambda r: "/".join(
            str(r[t]["chunks"]) if r.get(t) else "-" for t in ("blockcast", "casync", "bita"))),
        ("cost ca", lambda r: mib(r["cost"]["casync"])),
        ("cost bita", lambda r: mib(r["cost"]["bita"])),
        ("bc/4K", lambda r: ratio_cell(r, "bc_over_4k")),
        ("bc/file", lambda r: ratio_cell(r, "bc_over_file")),
        ("bc/ca", lambda r: ratio_cell(r, "bc_over_casync")),
        ("bc/bita", lambda r: ratio_cell(r, "bc_over_bita")),
    ]
    for name, s in scenarios.items():
        rows = list(s["kinds"].values())
        if not rows:
            continue
        print(f"== {name}: {s['title']} ({s['old']} -> {s['new']}) ==")
        print(describe(s))
        with_peers = any(r.get("casync") for r in rows)
        print_table(cols + (peer_cols if with_peers else []), rows)
        if not with_peers:
            print("(casync, bita and the 4K and file bounds: measured on the security scenario only)")
        for r in rows:
            kind = r["kind"]
            if r.get("blockcast_layout"):
                line = f"{kind}: blockcast layout {r['blockcast_layout']}"
                if r.get("blockcast_warnings"):
                    line += "; warnings: " + " | ".join(r["blockcast_warnings"])
                print(line)
            by = r.get("blockcast_new_by_region")
            if by:
                parts = [
                    f"{label} {mib(by[key]['bytes'])} MiB ({by[key]['chunks']} chunks)"
                    for key, label in [("metadata", "metadata"), ("data", "file data"),
                                       ("compressed", "units"), ("shared_units", "shared units")]
                    if by[key]["bytes"]
                ]
                parts.append(f"{by['mixed_chunks']} mixed chunks")
                print(f"{kind}: blockcast's new chunks hold " + ", ".join(parts))
            fb = r.get("blockcast_fetched_blocks")
            if fb and fb["aligned"]:
                deltas = r["blockcast"].get("fetch_deltas", 0)
                print(f"{kind}: the {fb['files']} chunk files fetched ({deltas} of them as deltas) "
                      f"hold {mib(fb['changed_bytes'])} MiB "
                      f"of blocks {s['old']} lacks and {mib(fb['carried_bytes'])} MiB of blocks it has; "
                      f"{fb['sparse_files']} of them carry more than they change "
                      f"({mib(fb['sparse_carried_bytes'])} MiB carried, "
                      f"{mib(fb['sparse_changed_bytes'])} MiB changed, "
                      f"{mib(fb['sparse_stored_bytes'])} MiB as whole chunk files)")
        print()

    timed = [(name, r) for name, s in scenarios.items() for r in s["kinds"].values() if r.get("timing")]
    if timed:
        print("== extract with the old image as seed: seconds, median of 5 (warm page cache) ==")
        print_table([
            ("scenario", lambda x: x[0]),
            ("kind", lambda x: x[1]["kind"]),
            ("image", lambda x: mib(x[1]["image_bytes"])),
            ("deltas s", lambda x: f"{x[1]['timing']['extract_deltas_median_s']:.2f}"),
            ("plain s", lambda x: f"{x[1]['timing']['extract_plain_median_s']:.2f}"),
            ("deltas/plain", lambda x: ratio_cell(x[1], "extract_deltas_over_plain")),
            ("fetched deltas/plain", lambda x: f"{mib(x[1]['blockcast']['fetch_stored_bytes'])}/"
                                               f"{mib(x[1]['timing']['plain_fetch_stored_bytes'])}"),
        ], timed)
        print()
    if mt:
        print(f"make of {mt['scenario']} {mt['kind']} {mt['new']} ({mib(mt['image_bytes'])} MiB) into a store "
              f"holding {mt['old']}: --delta-from {mt['deltas_median_s']:.2f} s, plain "
              f"{mt['plain_median_s']:.2f} s (median of 3): {mt['ratio']:.2f}x"
              + ("" if mt["target_met"] else " (target <= 3 missed)"))
    print("Sizes in MiB, (n) = requests (chunk files and deltas fetched), deltas = how many of "
          "them are deltas. cost = stored bytes fetched + "
          f"{head['per_chunk_overhead']} B per request + index. static = zstd -19 --long=28 "
          "--patch-from=OLD of NEW.")
    print("Targets: fetched/static <= 1.5 and cost/static <= 2 (erofs*, ext4), cost/static <= 1.1 "
          "(squashfs*); bc/4K <= 1.3 (erofs*, ext4), bc/file <= 1.5 (squashfs*), bc/ca < 1 (all) "
          "and <= 0.5 (erofs*), bc/bita < 1 (all); extract deltas/plain <= 1.5; make "
          "--delta-from/plain <= 3; ! = missed.")
    missed = [(name, r["kind"], k) for name, s in scenarios.items() for r in s["kinds"].values()
              for k, v in r["targets_met"].items() if v is False]
    met = sum(v for s in scenarios.values() for r in s["kinds"].values()
              for v in r["targets_met"].values())
    if mt:
        met += mt["target_met"]
        if not mt["target_met"]:
            missed.append((mt["scenario"], mt["kind"], "make_deltas_over_plain"))
    print(f"Targets met: {met}; not met: {len(missed)}"
          + (": " + ", ".join(f"{s} {kind} {name}" for s, kind, name in missed) if missed else ""))
    for note in head.get("notes", []):
        print(note)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "caibx-cost" and len(args) == 3:
        caibx_cost(*args)
    elif cmd == "new-blocks" and len(args) == 3:
        new_blocks(*args)
    elif cmd == "new-files" and len(args) == 3:
        new_files(*args)
    elif cmd == "changed-packages" and len(args) == 2:
        changed_packages(*args)
    elif cmd == "bita" and len(args) == 3:
        bita_figures(*args)
    elif cmd == "fetched-blocks" and len(args) == 4:
        fetched_blocks(*args)
    elif cmd == "report":
        report(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
