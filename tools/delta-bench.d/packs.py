#!/usr/bin/env python3
"""Helper of tools/bench-packs.

  packs.py record K=V...              one JSON line (numbers as numbers)
  packs.py logstat LOG FROM           requests and bytes after line FROM of an access log
  packs.py store-stats DIR            a store's files, as k=v words
  packs.py report [--json] META RECORDS
"""
import json
import os
import re
import statistics
import sys

PER_REQUEST = 1024
MIB = 1 << 20


def number(v):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def record(args):
    r = {}
    for a in args:
        k, _, v = a.partition("=")
        r[k] = number(v)
    print(json.dumps(r))


# blockcast serve -v:  PEER "GET /path HTTP/1.1" 206 12345 20.3ms
# nginx (bench fmt):   PEER "GET /path HTTP/1.1" 206 12345 0.020 "bytes=0-9" 12600
LINE = re.compile(r'"(\w+) (\S+)[^"]*" (\d{3}) (\S+)(?: [\d.]+ "([^"]*)" (\d+))?')


def logstat(path, start):
    start = int(start)
    s = dict(requests=0, body_bytes=0, wire_bytes=0, multi_range=0, ranged=0, status_200=0,
             status_206=0, status_other=0, req_index=0, req_packmap=0, req_pack=0, req_loose=0,
             index_body=0, packmap_body=0)
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n <= start:
                continue
            m = LINE.search(line)
            if not m:
                continue
            method, p, status, length, rng, sent = m.groups()
            s["requests"] += 1
            body = int(length) if length.isdigit() and method == "GET" else 0
            s["body_bytes"] += body
            s["wire_bytes"] += int(sent) if sent else body
            if rng and rng != "-":
                s["ranged"] += 1
                if "," in rng:
                    s["multi_range"] += 1
            key = {"200": "status_200", "206": "status_206"}.get(status, "status_other")
            s[key] += 1
            if p.endswith(".bcidx"):
                s["req_index"] += 1
                s["index_body"] += body
            elif p.endswith(".bcpmap"):
                s["req_packmap"] += 1
                s["packmap_body"] += body
            elif p.endswith(".bcpack"):
                s["req_pack"] += 1
            else:
                s["req_loose"] += 1
    print(" ".join(f"{k}={v}" for k, v in s.items()))


def store_stats(d):
    s = dict(loose_files=0, loose_bytes=0, packs=0, pack_bytes=0, packmaps=0, packmap_bytes=0,
             dirs=0, empty_dirs=0)
    for dirpath, dirnames, names in os.walk(d):
        s["dirs"] += 1
        if not dirnames and not names:
            s["empty_dirs"] += 1
        for name in names:
            size = os.path.getsize(os.path.join(dirpath, name))
            if name.endswith(".bcpack"):
                s["packs"] += 1
                s["pack_bytes"] += size
            elif name.endswith(".bcpmap"):
                s["packmaps"] += 1
                s["packmap_bytes"] += size
            elif not name.startswith("."):
                s["loose_files"] += 1
                s["loose_bytes"] += size
    print(" ".join(f"{k}={v}" for k, v in s.items()))


# --- report --------------------------------------------------------------------
def med(rows, key):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def summarize(meta, records):
    delay, conc = meta["delay_ms"], meta["concurrency"]
    out = {}
    for kind in meta["kinds"]:
        rows = [r for r in records if r["kind"] == kind]

        def pick(layout, what, server=None, run_only=True):
            return [r for r in rows if r["layout"] == layout and r["what"] == what
                    and (server is None or r.get("server") == server)
                    and (not run_only or r.get("run") != "warmup")]

        k = {"layouts": {}}
        for layout in ("loose", "packed"):
            L = {}
            plan_i = pick(layout, "plan-install")[0]
            plan_u = pick(layout, "plan-update")[0]
            makes = {r["version"]: r for r in pick(layout, "make")}
            L["store_after_v2"] = {x: makes[2][x] for x in
                                   ("loose_files", "loose_bytes", "packs", "pack_bytes",
                                    "packmaps", "packmap_bytes", "dirs", "empty_dirs")}
            L["store_after_v3"] = {x: makes[3][x] for x in L["store_after_v2"]}
            L["make_seconds"] = [makes[v]["seconds"] for v in (1, 2, 3)]
            L["v3_chunk_files"] = plan_i["chunks"]
            L["v3_stored_bytes"] = plan_i["stored_bytes"]
            L["update_fetched"] = plan_u["chunks"]
            L["update_deltas"] = plan_u["deltas"]
            L["update_stored_bytes"] = plan_u["stored_bytes"]
            L["local_extract_s"] = med(pick(layout, "install", "local"), "seconds")
            for what in ("install", "update"):
                for server in ("serve", "serve0", "nginx"):
                    rs = pick(layout, what, server)
                    if not rs:
                        continue
                    f = {x: med(rs, x) for x in
                         ("seconds", "requests", "body_bytes", "wire_bytes", "multi_range",
                          "status_200", "status_206", "req_index", "req_packmap", "req_pack",
                          "req_loose", "index_body", "packmap_body", "index_bytes", "fetched", "from_deltas", "warnings")}
                    f["runs"] = len(rs)
                    f["cost"] = f["body_bytes"] + PER_REQUEST * f["requests"]
                    L[f"{what}_{server}"] = f
            for src in ("local", "serve"):
                rs = pick(layout, "mount", src)
                if rs:
                    L[f"mount_{src}"] = {"seconds": med(rs, "seconds"),
                                         "requests": med(rs, "requests"), "runs": len(rs)}
            k["layouts"][layout] = L
        lo, pk = k["layouts"]["loose"], k["layouts"]["packed"]
        t = {}

        def ratio(a, b):
            return None if a is None or not b else round(a / b, 3)

        for server in ("serve", "nginx"):
            i = pk.get(f"install_{server}")
            if i:
                t[f"install_requests_{server}"] = {
                    "value": i["requests"], "limit": pk["v3_chunk_files"] / 20,
                    "met": i["requests"] <= pk["v3_chunk_files"] / 20}
            u, ul = pk.get(f"update_{server}"), lo.get(f"update_{server}")
            if u and ul:
                t[f"update_requests_{server}"] = {
                    "value": u["requests"], "limit": pk["update_fetched"] / 5,
                    "met": u["requests"] <= pk["update_fetched"] / 5}
                t[f"update_bytes_{server}"] = {
                    "value": ratio(u["body_bytes"], ul["body_bytes"]), "limit": 1.1,
                    "met": u["body_bytes"] <= 1.1 * ul["body_bytes"]}
                t[f"update_cost_{server}"] = {
                    "value": ratio(u["cost"], ul["cost"]), "limit": 1.0,
                    "met": u["cost"] < ul["cost"]}
        i = pk.get("install_serve")
        if i and pk["local_extract_s"] is not None:
            limit = 1.25 * (i["requests"] * delay / 1000 / conc) + pk["local_extract_s"]
            t["install_time_serve"] = {"value": i["seconds"], "limit": round(limit, 3),
                                       "met": i["seconds"] <= limit}
            i0 = pk.get("install_serve0")
            if i0:
                floor = i0["seconds"] + 3 * delay / 1000
                t["install_floor_serve"] = {"value": ratio(i["seconds"], floor), "limit": 1.1,
                                            "met": i["seconds"] <= 1.1 * floor}
        if "mount_local" in pk and "mount_local" in lo:
            t["mount_local"] = {
                "value": ratio(pk["mount_local"]["seconds"], lo["mount_local"]["seconds"]),
                "limit": 1.0,
                "met": pk["mount_local"]["seconds"] <= lo["mount_local"]["seconds"]}
        if "mount_serve" in pk and "mount_serve" in lo:
            t["mount_serve"] = {
                "value": ratio(pk["mount_serve"]["seconds"], lo["mount_serve"]["seconds"]),
                "limit": 0.5,
                "met": pk["mount_serve"]["seconds"] <= lo["mount_serve"]["seconds"] / 2}
        s2 = pk["store_after_v2"]
        t["pair_packs"] = {"value": s2["packs"], "limit": round(s2["pack_bytes"] / (16 * MIB), 2),
                           "met": s2["packs"] <= s2["pack_bytes"] / (16 * MIB)}
        k["targets"] = t
        out[kind] = k
    return out


def report(args):
    as_json = args and args[0] == "--json"
    if as_json:
        args = args[1:]
    meta_path, rec_path = args
    meta = json.load(open(meta_path))
    records = [json.loads(l) for l in open(rec_path) if l.strip()]
    res = summarize(meta, records)
    if as_json:
        meta["results"] = res
        print(json.dumps(meta, indent=2))
        return

    def mib(n):
        return "-" if n is None else f"{n / MIB:.2f}"

    def sec(n):
        return "-" if n is None else f"{n:.2f}"

    def num(n):
        return "-" if n is None else f"{n:g}"

    rows = [["kind", "layout", "what", "server", "requests", "multi", "objects", "MiB",
             "seconds", "cost MiB", "note"]]
    for kind, k in res.items():
        for layout in ("loose", "packed"):
            L = k["layouts"][layout]
            rows.append([kind, layout, "install", "local", "-", "-", str(L["v3_chunk_files"]),
                         mib(L["v3_stored_bytes"]), sec(L["local_extract_s"]), "-", "plan: stored bytes"])
            for what in ("install", "update"):
                objects = L["v3_chunk_files"] if what == "install" else L["update_fetched"]
                for server in ("serve", "serve0", "nginx"):
                    f = L.get(f"{what}_{server}")
                    if not f:
                        continue
                    note = f"{num(f['req_pack'])} pack + {num(f['req_loose'])} loose reqs"
                    if what == "update":
                        note += f", {num(L['update_deltas'])} deltas"
                    if f["warnings"]:
                        note += f", {num(f['warnings'])} warnings"
                    rows.append([kind, layout, what, server, num(f["requests"]), num(f["multi_range"]),
                                 str(objects), mib(f["body_bytes"]), sec(f["seconds"]),
                                 mib(f["cost"]) if what == "update" else "-", note])
            for src in ("local", "serve"):
                m = L.get(f"mount_{src}")
                if m:
                    rows.append([kind, layout, "mount", src, num(m["requests"]) if src == "serve" else "-",
                                 "-", "-", mib(meta["v3_file_bytes"]), sec(m["seconds"]), "-",
                                 f"{meta['v3_file_bytes'] / MIB / m['seconds']:.1f} MiB/s"])
            s = L["store_after_v2"]
            rows.append([kind, layout, "store v1+v2", "-", "-", "-",
                         f"{s['loose_files']} files, {s['packs']} packs", mib(s["loose_bytes"] + s["pack_bytes"]),
                         "-", "-", f"{s['packmaps']} pack maps, {s['packmap_bytes']} B, {s['empty_dirs']} empty dirs"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i in (0, 1, 2, 3, 10) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    print()
    print(f"Medians of {meta['runs']} runs; serve = blockcast serve --delay {meta['delay_ms']}, "
          f"serve0 and nginx without delay; client --concurrency {meta['concurrency']}. requests and MiB "
          "(bodies) from the server's access log, index and pack map included; objects = chunk "
          "files (install) or chunk files and deltas (update) to fetch, from plan; cost = bytes "
          f"+ {PER_REQUEST} B per request. multi = requests asking for several ranges.")
    print(f"mount = blockcast mount of v3, page cache dropped, all {meta['v3_file_bytes'] / MIB:.1f} MiB "
          "of files read by 4 readers.")
    print()
    print("Targets (packed):")
    for kind, k in res.items():
        for name, t in k["targets"].items():
            print(f"  {kind:14} {name:24} {t['value']!s:>10}  limit {t['limit']!s:>10}  "
                  f"{'met' if t['met'] else 'MISSED'}")
    print(f"blockcast {meta['blockcast']} (git {meta['git']}), nginx {meta['nginx']}; v1 "
          f"{meta['packages']['v1']} packages, v2 changes {meta['changed_v2']}, v3 adds "
          f"{meta['v3_packages']} ({meta['changed_v3']} packages).")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "record":
        record(args)
    elif cmd == "logstat" and len(args) == 2:
        logstat(*args)
    elif cmd == "store-stats" and len(args) == 1:
        store_stats(*args)
    elif cmd == "report":
        report(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
