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
  bench.py report [--json] RESULTS.json...        the table (or one JSON object)
"""
import bisect
import hashlib
import json
import os
import re
import stat
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
# Targets for blockcast's cost, by ratio and kind prefix (the kinds they apply to).
TARGETS = {
    "bc_over_4k": (1.3, "<=", ("erofs", "ext4")),
    "bc_over_file": (1.5, "<=", ("squashfs",)),
    "bc_over_casync": (1.0, "<", ("",)),
    "bc_over_casync_erofs": (0.5, "<=", ("erofs",)),
    "bc_over_bita": (1.0, "<", ("",)),
}


def met(name, value, kind):
    limit, op, prefixes = TARGETS[name]
    if value is None or not any(kind.startswith(p) for p in prefixes):
        return None
    return value <= limit if op == "<=" else value < limit


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

    bc = costs["blockcast"]
    ratios = {
        "bc_over_4k": ratio(bc, r["bound_4k"]["zstd_bytes"]),
        "bc_over_file": ratio(bc, r["bound_file"]["zstd_bytes"]),
        "bc_over_casync": ratio(bc, costs["casync"]),
        "bc_over_bita": ratio(bc, costs["bita"]),
    }
    targets = {}
    for name in ("bc_over_4k", "bc_over_file", "bc_over_casync", "bc_over_bita"):
        targets[name] = met(name, ratios[name], r["kind"])
    erofs = met("bc_over_casync_erofs", ratios["bc_over_casync"], r["kind"])
    if erofs is not None:
        targets["bc_over_casync_erofs"] = erofs
    r["cost"] = costs
    r["ratios"] = ratios
    r["targets_met"] = {k: v for k, v in targets.items() if v is not None}
    return r


def mib(n):
    return "-" if n is None else f"{n / 1048576:.2f}"


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
    if as_json:
        head["kinds"] = {r["kind"]: r for r in results}
        head["targets"] = {k: {"limit": v[0], "op": v[1], "kinds": list(v[2])}
                           for k, v in TARGETS.items()}
        print(json.dumps(head, indent=2))
        return

    def fetch(r, tool):
        t = r.get(tool)
        return "-" if not t else f"{mib(t['fetch_stored_bytes'])} ({t['fetch_chunks']})"

    def ratio_cell(r, name, extra=None):
        v = r["ratios"][name]
        if v is None:
            return "-"
        flags = [r["targets_met"].get(name)]
        if extra:
            flags.append(r["targets_met"].get(extra))
        return f"{v:.2f}" + ("!" if False in flags else "")

    cols = [
        ("kind", lambda r: r["kind"]),
        ("image", lambda r: mib(r["image_bytes"])),
        ("full bc", lambda r: mib(r["full"]["blockcast_stored_bytes"])),
        ("full zstd", lambda r: mib(r["full"]["zstd3_bytes"])),
        ("bc fetch (n)", lambda r: fetch(r, "blockcast")),
        ("bc idx", lambda r: mib(r["blockcast"]["index_bytes"])),
        ("ca fetch (n)", lambda r: fetch(r, "casync")),
        ("ca idx", lambda r: mib(r["casync"]["index_bytes"]) if r.get("casync") else "-"),
        ("bita fetch (n)", lambda r: fetch(r, "bita")),
        ("bita idx", lambda r: mib(r["bita"]["index_bytes"]) if r.get("bita") else "-"),
        ("4K bound", lambda r: mib(r["bound_4k"]["zstd_bytes"])),
        ("file bound", lambda r: mib(r["bound_file"]["zstd_bytes"])),
        ("chunks bc/ca/bita", lambda r: "/".join(
            str(r[t]["chunks"]) if r.get(t) else "-" for t in ("blockcast", "casync", "bita"))),
        ("cost bc", lambda r: mib(r["cost"]["blockcast"])),
        ("cost ca", lambda r: mib(r["cost"]["casync"])),
        ("cost bita", lambda r: mib(r["cost"]["bita"])),
        ("bc/4K", lambda r: ratio_cell(r, "bc_over_4k")),
        ("bc/file", lambda r: ratio_cell(r, "bc_over_file")),
        ("bc/ca", lambda r: ratio_cell(r, "bc_over_casync", "bc_over_casync_erofs")),
        ("bc/bita", lambda r: ratio_cell(r, "bc_over_bita")),
    ]
    table = [[name for name, _ in cols]] + [[str(f(r)) for _, f in cols] for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    print()
    print("Sizes in MiB, (n) = chunks fetched. cost = stored bytes fetched + "
          f"{head['per_chunk_overhead']} B per chunk fetched + index.")
    print("Targets for blockcast's cost: bc/4K <= 1.3 (erofs*, ext4), bc/file <= 1.5 (squashfs*), "
          "bc/ca < 1 (all) and <= 0.5 (erofs*), bc/bita < 1 (all); ! = missed.")
    missed = [(r["kind"], k) for r in results for k, v in r["targets_met"].items() if v is False]
    if missed:
        print("Missed: " + ", ".join(f"{kind} {name}" for kind, name in missed))
    for r in results:
        if r.get("blockcast_layout"):
            line = f"{r['kind']}: blockcast layout {r['blockcast_layout']}"
            if r.get("blockcast_warnings"):
                line += "; warnings: " + " | ".join(r["blockcast_warnings"])
            print(line)
        by = r.get("blockcast_new_by_region")
        if by:
            parts = [
                f"{name} {mib(by[key]['bytes'])} MiB ({by[key]['chunks']} chunks)"
                for key, name in [("metadata", "metadata"), ("data", "file data"),
                                  ("compressed", "units"), ("shared_units", "shared units")]
                if by[key]["bytes"]
            ]
            parts.append(f"{by['mixed_chunks']} mixed chunks")
            print(f"{r['kind']}: blockcast's new chunks hold " + ", ".join(parts))
        fb = r.get("blockcast_fetched_blocks")
        if fb and fb["aligned"]:
            deltas = r["blockcast"].get("fetch_deltas", 0)
            print(f"{r['kind']}: the {fb['files']} chunk files fetched ({deltas} of them as deltas) "
                  f"hold {mib(fb['changed_bytes'])} MiB "
                  f"of blocks v1 lacks and {mib(fb['carried_bytes'])} MiB of blocks it has; "
                  f"{fb['sparse_files']} of them carry more than they change "
                  f"({mib(fb['sparse_carried_bytes'])} MiB carried, {mib(fb['sparse_changed_bytes'])} MiB "
                  f"changed, {mib(fb['sparse_stored_bytes'])} MiB as whole chunk files)")
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
