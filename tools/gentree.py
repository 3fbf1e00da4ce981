#!/usr/bin/env python3
"""Generate a deterministic directory tree that looks like a small root
filesystem / application layer, for building blockcast test images.

Usage: gentree.py OUTDIR VERSION      (VERSION is 1 or 2)

OUTDIR must not exist or must be empty.  The result depends only on VERSION:
every byte is derived from fixed seeds (per-path seeds, so adding or removing
one entry never changes the content of another), all modes are set
explicitly (the umask does not matter) and every mtime/atime is set to a
fixed epoch.

Version 2 is version 1 plus a realistic update:
  * in-place changes: small edits in text files, a few bytes patched in
    binaries, records rewritten in a database, one large log grows by
    appending, one file changes mode;
  * added files (a new package, new config, new cache objects, ...);
  * removed files (an obsolete tool, a legacy config, a cache object);
  * a library replaced by a new version (old file removed, new file with a
    slightly patched copy of the old content, symlink retargeted);
  * a directory moved to another parent with its contents unchanged
    (usr/share/blockcast/plugins -> usr/lib/blockcast/plugins).
Every file not listed as changed is byte-identical between the versions.

Python 3.9+ standard library only.
"""

import hashlib
import os
import random
import stat
import struct
import sys

EPOCH = 1700000000  # 2023-11-14T22:13:20Z

# --------------------------------------------------------------------------
# deterministic helpers
# --------------------------------------------------------------------------


def seed_for(name):
    d = hashlib.sha256(("blockcast-gentree:" + name).encode()).digest()
    return int.from_bytes(d[:8], "big")


def rng_for(name):
    return random.Random(seed_for(name))


VOCAB = """
the of and to in is for on with as by at from that this be are it or an
block blocks cast image images layer layers file files filesystem inode inodes
extent extents chunk chunks delta deltas update updates stream streams
offset offsets length size sizes checksum checksums digest hash manifest
superblock directory directories symlink symlinks metadata data payload
compress compression decompress zstd lz4 squashfs erofs ext4 device devices
mount mounts read write readonly writable cache cached buffer buffers page
pages cluster clusters sector sectors partition partitions volume volumes
verify verified signature signatures key keys trust root tree trees leaf
node nodes parent child children merkle index indexes table tables record
records entry entries header headers footer trailer magic version versions
config configuration option options default defaults value values setting
network server client request response transfer transfers bandwidth latency
retry retries timeout timeouts error errors warning warnings info debug
service services daemon daemons process processes thread threads worker
pool queue queues schedule scheduler job jobs task tasks state status
install installed remove removed upgrade upgraded package packages library
libraries binary binaries executable shared static link linked loader path
paths prefix suffix target source destination local remote mirror origin
fast slow small large minimal maximal optional required stable experimental
new old current previous next first last every each all some many few
when while after before during until unless because although however
should must may can will would could might does did done make makes made
""".split()


def pick_word(rng):
    # skewed distribution so text looks a bit natural and compresses like text
    i = int(len(VOCAB) * (rng.random() ** 2.2))
    return VOCAB[i]


def sentence(rng, lo=6, hi=18):
    n = rng.randrange(lo, hi)
    w = [pick_word(rng) for _ in range(n)]
    w[0] = w[0].capitalize()
    return " ".join(w) + rng.choice([".", ".", ".", ".", "!", "?", ";", ":"])[:1]


def wrap(words_text, width=72):
    out, line = [], ""
    for w in words_text.split():
        if line and len(line) + 1 + len(w) > width:
            out.append(line)
            line = w
        else:
            line = (line + " " + w) if line else w
    if line:
        out.append(line)
    return "\n".join(out)


def paragraph(rng):
    return wrap(" ".join(sentence(rng) for _ in range(rng.randrange(2, 7))))


def fit_text(text, size):
    """Cut or extend text to exactly `size` bytes, ending in a newline."""
    b = text.encode()
    if len(b) >= size:
        b = b[: size - 1] + b"\n"
    return b


def doc_text(name, size, title=None):
    rng = rng_for(name)
    parts = []
    if title:
        parts.append(title + "\n" + "=" * len(title) + "\n")
    total = sum(len(p) + 1 for p in parts)
    sec = 1
    while total < size + 200:
        if rng.random() < 0.25:
            h = "%d. %s %s" % (sec, pick_word(rng).capitalize(), pick_word(rng))
            sec += 1
            p = h + "\n" + "-" * len(h) + "\n"
        else:
            p = paragraph(rng) + "\n"
        parts.append(p)
        total += len(p) + 1
    return fit_text("\n".join(parts), size)


def config_text(name, nkeys, style="ini", extra=""):
    rng = rng_for(name)
    lines = ["# %s" % name, "# generated for blockcast test images", ""]
    section = None
    for i in range(nkeys):
        if style == "ini" and (section is None or rng.random() < 0.15):
            section = pick_word(rng)
            lines.append("")
            lines.append("[%s]" % section)
        key = "%s_%s" % (pick_word(rng), pick_word(rng))
        r = rng.random()
        if r < 0.3:
            val = str(rng.randrange(0, 65536))
        elif r < 0.5:
            val = rng.choice(["yes", "no", "true", "false", "auto"])
        elif r < 0.7:
            val = "/" + "/".join(pick_word(rng) for _ in range(rng.randrange(1, 4)))
        else:
            val = " ".join(pick_word(rng) for _ in range(rng.randrange(1, 5)))
        if rng.random() < 0.1:
            lines.append("# " + sentence(rng, 4, 10))
        if style == "ini":
            lines.append("%s = %s" % (key, val))
        else:
            lines.append("%s=%s" % (key.upper(), val))
    return ("\n".join(lines) + "\n" + extra).encode()


def script_text(name, nlines):
    rng = rng_for(name)
    lines = ["#!/bin/sh", "# %s" % name, "set -e", ""]
    for i in range(nlines):
        r = rng.random()
        if r < 0.2:
            lines.append("%s() {" % pick_word(rng))
            lines.append("    echo \"%s\"" % sentence(rng, 3, 8))
            lines.append("}")
        elif r < 0.4:
            lines.append("if [ -e /%s/%s ]; then" % (pick_word(rng), pick_word(rng)))
            lines.append("    %s --%s" % (pick_word(rng), pick_word(rng)))
            lines.append("fi")
        elif r < 0.5:
            lines.append("# " + sentence(rng))
        else:
            lines.append("%s=\"%s\"" % (pick_word(rng).upper(), pick_word(rng)))
    lines.append("exit 0")
    return ("\n".join(lines) + "\n").encode()


def log_lines(rng, start_ts, n):
    out = []
    ts = start_ts
    for i in range(n):
        ts += rng.randrange(0, 4)
        d = ts // 86400
        s = ts % 86400
        # tiny civil-from-days (valid for these dates)
        y, doy = 2023, d - 19358  # 19358 = days to 2023-01-01
        mdays = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        m = 0
        while doy >= mdays[m % 12]:
            doy -= mdays[m % 12]
            m += 1
            if m == 12:
                m, y = 0, y + 1
        lvl = rng.choice(["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"])
        proc = rng.choice(["blockcastd", "installer", "pkgdb", "kernel", "init"])
        out.append(
            "%04d-%02d-%02dT%02d:%02d:%02dZ host %s[%d]: %s %s"
            % (y, m + 1, doy + 1, s // 3600, s // 60 % 60, s % 60, proc,
               100 + rng.randrange(900), lvl, sentence(rng, 4, 14))
        )
    return out, ts


def log_text(name, size):
    rng = rng_for(name)
    out, ts = [], EPOCH - 86400 * 30
    total = 0
    while total < size:
        lines, ts = log_lines(rng, ts, 50)
        for l in lines:
            out.append(l)
            total += len(l) + 1
    return fit_text("\n".join(out) + "\n", size)


def records_blob(name, size, magic=b"BCDB"):
    """Structured binary records: compressible, binary-ish."""
    rng = rng_for(name)
    rec = struct.Struct("<IIHH24sdQ")  # 52 bytes
    n = max(1, (size - 16) // rec.size)
    head = magic + struct.pack("<HHII", 1, rec.size, n, seed_for(name) & 0xFFFFFFFF)
    body = []
    parent = 0
    for i in range(n):
        if rng.random() < 0.1:
            parent = i
        nm = ("%s.%s" % (pick_word(rng), pick_word(rng))).encode()[:24]
        body.append(rec.pack(i + 1, parent, rng.randrange(8), 0, nm.ljust(24, b"\0"),
                             round(rng.random() * 1000, 3), rng.getrandbits(16) << 8))
    b = head + b"".join(body)
    return (b + bytes(size))[:size]


OPCODES = [
    b"\x55", b"\x48\x89\xe5", b"\x48\x83\xec", b"\x48\x8b\x45", b"\x89\x7d",
    b"\xe8", b"\xc3", b"\x5d", b"\x31\xc0", b"\x48\x8d\x3d", b"\x0f\x1f\x44\x00\x00",
    b"\x74", b"\x75", b"\xeb", b"\x48\x85\xc0", b"\x41\x54", b"\x41\x5c", b"\x53",
    b"\x5b", b"\x48\x89\xc7", b"\xff\x15", b"\x66\x90", b"\x90", b"\x83\xf8",
]


def elf_like(name, size):
    """Executable-looking blob: header, 'code', string table, symbol table,
    a little high-entropy data and zero padding.  Moderately compressible."""
    rng = rng_for(name)
    hdr = b"\x7fELF\x02\x01\x01" + bytes(9)
    hdr += struct.pack("<HHIQQQIHHHHHH", 3, 0x3E, 1, 0x1040, 64, 0, 0, 64, 56,
                       4, 64, 8, 7)
    out = bytearray(hdr)
    code_end = int(size * 0.5)
    while len(out) < code_end:
        out += rng.choice(OPCODES)
        if rng.random() < 0.35:
            k = rng.choice([1, 4])
            out += rng.getrandbits(8 * k).to_bytes(k, "little")
    while len(out) % 64:
        out.append(0)
    str_end = int(size * 0.7)
    syms = []
    while len(out) < str_end:
        s = ("%s_%s" % (pick_word(rng), pick_word(rng))).encode()
        syms.append((len(out), s))
        out += s + b"\0"
    sym = struct.Struct("<IBBHQQ")
    sym_end = int(size * 0.9)
    i = 0
    while len(out) < sym_end:
        off = syms[i % len(syms)][0] if syms else 0
        out += sym.pack(off, 0x12, 0, 1 + i % 7, 0x1040 + 16 * i, rng.randrange(16, 512))
        i += 1
    out += rng.randbytes(max(0, int(size * 0.95) - len(out)))
    out += bytes(max(0, size - len(out)))
    return bytes(out[:size])


def random_blob(name, size, magic=b""):
    rng = rng_for(name)
    return (magic + rng.randbytes(size))[:size]


def pem_text(name, nbytes):
    import base64
    raw = random_blob(name, nbytes)
    b64 = base64.b64encode(raw).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) +
            "\n-----END CERTIFICATE-----\n").encode()


def header_text(name, n):
    rng = rng_for(name)
    guard = name.upper().replace("/", "_").replace(".", "_")
    lines = ["/* %s -- %s */" % (name, sentence(rng, 4, 9)), "#ifndef %s" % guard,
             "#define %s" % guard, "", "#include <stdint.h>", ""]
    for i in range(n):
        if rng.random() < 0.3:
            lines.append("struct bc_%s {" % pick_word(rng))
            for _ in range(rng.randrange(2, 6)):
                lines.append("    %s %s;" % (rng.choice(["uint32_t", "uint64_t", "uint16_t", "uint8_t"]),
                                             pick_word(rng)))
            lines.append("};")
        else:
            lines.append("int bc_%s_%s(%s *%s, size_t %s);" % (
                pick_word(rng), pick_word(rng), rng.choice(["void", "uint8_t", "struct bc_ctx"]),
                pick_word(rng), pick_word(rng)))
    lines += ["", "#endif", ""]
    return "\n".join(lines).encode()


# --------------------------------------------------------------------------
# tree description
# --------------------------------------------------------------------------
# entries: path -> ("f", bytes, mode) | ("l", target, None) | ("d", None, mode)

PKGS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
DOC_PKGS = ["base-files", "busybox", "libc6", "zlib1g", "blockcast",
            "ca-certificates"] + ["lib" + p for p in PKGS]


class Tree:
    def __init__(self):
        self.e = {}

    def d(self, path, mode=0o755):
        parts = path.split("/")
        for i in range(1, len(parts)):
            p = "/".join(parts[:i])
            self.e.setdefault(p, ("d", None, 0o755))
        if path in self.e and self.e[path][0] == "d" and mode == 0o755:
            return
        self.e[path] = ("d", None, mode)

    def f(self, path, data, mode=0o644):
        self.d(os.path.dirname(path)) if "/" in path else None
        self.e[path] = ("f", bytes(data), mode)

    def l(self, path, target):
        self.d(os.path.dirname(path)) if "/" in path else None
        self.e[path] = ("l", target, None)

    def rm(self, path):
        assert path in self.e, path
        del self.e[path]

    def mv(self, src, dst):
        """Move a directory (or file) with all its contents."""
        moved = {}
        for p in list(self.e):
            if p == src or p.startswith(src + "/"):
                moved[dst + p[len(src):]] = self.e.pop(p)
        assert moved, src
        self.d(os.path.dirname(dst))
        self.e.update(moved)


def build_v1():
    t = Tree()
    # --- top-level skeleton -------------------------------------------------
    for d in ["boot", "dev", "home", "mnt", "opt", "proc", "run", "srv",
              "sys", "var/cache", "var/mail", "var/opt", "var/spool/cron"]:
        t.d(d)
    t.d("root", 0o700)
    t.d("tmp", 0o1777)
    t.d("var/tmp", 0o1777)
    t.l("lib", "usr/lib")
    t.l("sbin", "usr/sbin")
    t.l("bin", "usr/bin")

    # --- etc ------------------------------------------------------------------
    t.f("etc/hostname", b"blockcast-test\n")
    t.f("etc/hosts", b"127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
                     b"127.0.1.1\tblockcast-test\n")
    users = ["root:x:0:0:root:/root:/bin/sh"] + [
        "%s:x:%d:%d:%s:/var/lib/%s:/usr/sbin/nologin" % (u, i, i, u, u)
        for i, u in enumerate(["daemon", "bin", "sys", "sync", "blockcast", "cache",
                               "pkgdb", "network", "nobody"], start=1)]
    t.f("etc/passwd", ("\n".join(users) + "\n").encode())
    t.f("etc/group", ("\n".join("%s:x:%d:" % (u.split(":")[0], i)
                               for i, u in enumerate(users)) + "\n").encode())
    t.f("etc/shadow", ("\n".join("%s:*:19675:0:99999:7:::" % u.split(":")[0]
                                for u in users) + "\n").encode(), 0o640)
    t.f("etc/fstab", b"# <file system> <mount point> <type> <options> <dump> <pass>\n"
                     b"/dev/root / erofs ro 0 0\ntmpfs /tmp tmpfs nosuid,nodev 0 0\n")
    t.f("etc/machine-id", b"", 0o444)
    t.f("etc/motd", doc_text("etc/motd", 420))
    t.f("etc/profile", script_text("etc/profile", 18))
    t.f("etc/shells", b"# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/sh\n")
    t.f("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n")
    t.f("etc/ld.so.conf.d/libc.conf", b"/usr/local/lib\n")
    t.f("etc/ld.so.conf.d/x86_64-linux-gnu.conf", b"/usr/local/lib/x86_64-linux-gnu\n"
        b"/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n")
    t.l("etc/os-release", "../usr/lib/os-release")
    t.l("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")  # dangling
    t.l("etc/localtime", "/usr/share/zoneinfo/UTC")  # absolute
    for n in ["grub", "locale", "useradd", "keyboard", "blockcastd"]:
        t.f("etc/default/" + n, config_text("etc/default/" + n, 6, style="env"))
    t.f("etc/blockcast/blockcast.conf", config_text(
        "etc/blockcast/blockcast.conf", 40,
        extra="\n[cache]\ncache_size = 64M\ncache_dir = /var/lib/blockcast/cache\n"))
    for n, k in [("10-network", 12), ("20-storage", 16), ("30-cache", 8),
                 ("40-logging", 10), ("90-legacy", 14)]:
        t.f("etc/blockcast/conf.d/%s.conf" % n, config_text("conf.d/" + n, k))
    for n, k in [("blockcastd", 40), ("networking", 30), ("rcS", 20), ("cron", 12)]:
        t.f("etc/init.d/" + n, script_text("etc/init.d/" + n, k), 0o755)
    for i, n in enumerate(["ca-alpha", "ca-beta", "ca-gamma", "ca-delta"]):
        t.f("etc/ssl/certs/%s.pem" % n, pem_text("cert/" + n, 900 + 150 * i))
        t.l("etc/ssl/certs/%08x.0" % (seed_for(n) & 0xFFFFFFFF), "%s.pem" % n)
    t.f("etc/ssl/private/.keep", b"")
    t.d("etc/ssl/private", 0o700)
    t.f("etc/cron.d/.placeholder", b"")
    t.f("etc/skel/.profile", script_text("skel/.profile", 8))
    t.f("etc/skel/.shrc", script_text("skel/.shrc", 5))
    t.f("root/.profile", script_text("root/.profile", 8))

    # --- usr/lib ---------------------------------------------------------------
    osrel = ('PRETTY_NAME="Blockcast Test OS 1.0"\nNAME="Blockcast Test OS"\n'
             'VERSION_ID="1.0"\nVERSION="1.0 (anvil)"\nID=bctest\n'
             'HOME_URL="https://example.invalid/"\n')
    t.f("usr/lib/os-release", osrel.encode())
    gnu = "usr/lib/x86_64-linux-gnu/"
    t.f(gnu + "libc.so.6", elf_like(gnu + "libc.so.6", 200 * 1024), 0o755)
    t.f(gnu + "ld-linux-x86-64.so.2", elf_like(gnu + "ld", 16 * 1024), 0o755)
    t.f(gnu + "libz.so.1.2.13", elf_like(gnu + "libz", 16 * 1024))
    t.l(gnu + "libz.so.1", "libz.so.1.2.13")
    t.f(gnu + "libm.so.6", elf_like(gnu + "libm", 12 * 1024))
    t.l("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    for i, p in enumerate(PKGS):
        base = "usr/lib/%s/" % p
        ver = "1.%d.%d" % (i, 3 + i)
        so = "lib%s.so.%s" % (p, ver)
        t.f(base + so, elf_like(base + so, (3 + 2 * i) * 1024))
        t.l(base + "lib%s.so.1" % p, so)
        t.l(base + "lib%s.so" % p, "lib%s.so.1" % p)
        t.f(base + "%s.conf" % p, config_text(base + "conf", 5 + i))
        t.f(base + "data/%s.dat" % p, records_blob(base + "dat", 1024 + 800 * i))
        t.f(base + "data/schema.txt", doc_text(base + "schema", 300 + 100 * i))
    t.f("usr/lib/blockcast/index.db", records_blob("usr/lib/blockcast/index.db", 200 * 1024))
    for i, m in enumerate(["fs-erofs", "fs-squashfs", "fs-ext4", "codec-lz4", "codec-zstd",
                           "net-http", "net-local", "verity"]):
        t.f("usr/lib/blockcast/modules/%s.mod" % m,
            elf_like("mod/" + m, 900 + 350 * i))
    t.f("usr/lib/blockcast/modules/modules.list",
        ("\n".join("%s.mod" % m for m in ["fs-erofs", "fs-squashfs", "fs-ext4", "codec-lz4",
                                          "codec-zstd", "net-http", "net-local", "verity"])
         + "\n").encode())

    # --- usr/bin, usr/sbin -----------------------------------------------------
    t.f("usr/bin/busybox", elf_like("usr/bin/busybox", 32 * 1024), 0o755)
    for a in ["sh", "ls", "cat", "cp", "mv", "rm", "vi", "grep", "sed", "tar"]:
        t.l("usr/bin/" + a, "busybox")
    for n, sz in [("blockcast", 24), ("blockcastd", 30), ("bcctl", 10), ("oldtool", 6)]:
        t.f("usr/bin/" + n, elf_like("usr/bin/" + n, sz * 1024), 0o755)
    t.f("usr/bin/bc-report", script_text("usr/bin/bc-report", 35), 0o755)
    t.f("usr/sbin/blockcast-admin", elf_like("usr/sbin/blockcast-admin", 12 * 1024), 0o755)
    t.l("usr/sbin/mkfs.blockcast", "../bin/blockcast")
    t.f("usr/sbin/nologin", elf_like("usr/sbin/nologin", 2 * 1024), 0o755)

    # --- usr/include -----------------------------------------------------------
    for i, h in enumerate(["blockcast", "image", "extent", "chunk", "delta", "manifest",
                           "codec", "verity", "io", "cache", "net", "log", "config",
                           "error", "version", "util"]):
        t.f("usr/include/blockcast/%s.h" % h, header_text("include/" + h, 6 + (i * 7) % 20))

    # --- usr/share -------------------------------------------------------------
    pl = "usr/share/blockcast/plugins/"
    t.f(pl + "compress.so", elf_like(pl + "compress.so", 10 * 1024), 0o755)
    t.f(pl + "checksum.so", elf_like(pl + "checksum.so", 6 * 1024), 0o755)
    t.f(pl + "manifest.json", ('{\n  "plugins": [\n' + ",\n".join(
        '    {"name": "%s", "abi": %d, "enabled": %s}' % (n, 3, "true")
        for n in ["compress", "checksum", "filters/dedupe", "filters/sparse"])
        + '\n  ]\n}\n').encode())
    t.f(pl + "README", doc_text(pl + "README", 1500, "Blockcast plugins"))
    t.f(pl + "filters/dedupe.so", elf_like(pl + "filters/dedupe.so", 5000), 0o755)
    t.f(pl + "filters/sparse.so", elf_like(pl + "filters/sparse.so", 3300), 0o755)
    t.f(pl + "filters/.enabled", b"")
    t.f("usr/share/blockcast/assets/logo.png",
        random_blob("assets/logo.png", 10 * 1024, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"))
    t.f("usr/share/blockcast/assets/font.bin", random_blob("assets/font.bin", 12 * 1024))
    t.f("usr/share/blockcast/assets/palette.dat", records_blob("assets/palette", 3000, b"PAL1"))
    for p in DOC_PKGS:
        base = "usr/share/doc/%s/" % p
        rng = rng_for(base)
        t.f(base + "copyright", doc_text("copyright-template", 1400,
                                         "Copyright notice") + ("\nPackage: %s\n" % p).encode())
        t.f(base + "README", doc_text(base + "README", rng.randrange(600, 3800), p))
        t.f(base + "changelog.gz", random_blob(base + "changelog.gz", rng.randrange(300, 1200),
                                               b"\x1f\x8b\x08\x00\0\0\0\0\x02\x03"))
    t.f("usr/share/doc/blockcast/manual.txt",
        doc_text("usr/share/doc/blockcast/manual.txt", 12 * 1024, "Blockcast manual"))
    for sec, names in [("1", ["blockcast", "bcctl", "bc-report", "busybox"]),
                       ("5", ["blockcast.conf", "os-release"]),
                       ("8", ["blockcastd", "blockcast-admin", "mkfs.blockcast"])]:
        for n in names:
            t.f("usr/share/man/man%s/%s.%s" % (sec, n, sec),
                (".TH %s %s\n.SH NAME\n%s\n.SH DESCRIPTION\n" % (n.upper(), sec, n)).encode()
                + doc_text("man/" + n, 1200))
    for lang in ["de", "fr", "es", "ja"]:
        t.f("usr/share/locale/%s/LC_MESSAGES/blockcast.mo" % lang,
            records_blob("mo/" + lang, 2100, b"\xde\x12\x04\x95"))
    t.f("usr/share/zoneinfo/UTC", b"TZif2" + bytes(15) + b"\0\0\0\1" * 6 + b"UTC\0\nUTC0\n")
    t.l("usr/share/zoneinfo/Etc/UTC", "../UTC")
    t.d("usr/local/bin")
    t.d("usr/local/lib")

    # --- var -------------------------------------------------------------------
    status = []
    for p in DOC_PKGS + ["blockcast-plugins", "ca-certificates-extra"]:
        rng = rng_for("status/" + p)
        status.append("Package: %s\nStatus: install ok installed\nPriority: optional\n"
                      "Installed-Size: %d\nVersion: %d.%d-%d\nDescription: %s\n %s\n"
                      % (p, rng.randrange(10, 9000), rng.randrange(1, 5), rng.randrange(20),
                         rng.randrange(1, 4), sentence(rng, 3, 8),
                         wrap(" ".join(sentence(rng) for _ in range(8))).replace("\n", "\n ")))
    t.f("var/lib/pkgdb/status", "\n".join(status).encode())
    for p in DOC_PKGS:
        t.f("var/lib/pkgdb/info/%s.list" % p,
            ("/.\n/usr\n/usr/share\n/usr/share/doc\n/usr/share/doc/%s\n"
             "/usr/share/doc/%s/README\n/usr/share/doc/%s/copyright\n"
             "/usr/share/doc/%s/changelog.gz\n" % (p, p, p, p)).encode())
        t.f("var/lib/pkgdb/info/%s.md5sums" % p,
            "".join("%s  usr/share/doc/%s/%s\n" % (
                hashlib.md5((p + f).encode()).hexdigest(), p, f)
                for f in ["README", "copyright", "changelog.gz"]).encode())
    t.f("var/lib/blockcast/state.json", b'{"generation": 1, "image": "v1", "clean": true}\n')
    for i, sz in enumerate([4096, 6000, 9000, 8192, 3000, 2500]):
        t.f("var/lib/blockcast/cache/obj-%02d.bin" % i,
            random_blob("cache/obj-%02d" % i, sz), 0o600)
    t.d("var/lib/blockcast/cache", 0o700)
    t.f("var/log/install.log", log_text("var/log/install.log", 200 * 1024), 0o640)
    t.f("var/log/blockcastd.log", b"", 0o640)
    t.f("var/log/lastlog", b"", 0o664)
    t.d("var/lib/misc")
    return t


# offsets/edits used by version 2 --------------------------------------------

def patch(data, off, new):
    assert off + len(new) <= len(data)
    return data[:off] + new + data[off + len(new):]


def build_v2():
    t = build_v1()
    e = t.e

    def fdata(p):
        assert e[p][0] == "f", p
        return e[p][1]

    def fset(p, data, mode=None):
        m = e[p][2] if mode is None else mode
        e[p] = ("f", data, m)

    # 1. small text edits in place
    c = fdata("etc/blockcast/blockcast.conf")
    assert b"cache_size = 64M" in c
    fset("etc/blockcast/blockcast.conf", c.replace(b"cache_size = 64M", b"cache_size = 256M"))
    osr = fdata("usr/lib/os-release")
    fset("usr/lib/os-release", osr.replace(b"1.0", b"1.1"))
    rd = fdata("usr/share/doc/blockcast/README")
    mid = rd.index(b"\n", len(rd) // 2) + 1
    fset("usr/share/doc/blockcast/README",
         rd[:mid] + b"Version 1.1 adds delta streams and a new metrics exporter.\n" + rd[mid:])
    st = fdata("var/lib/blockcast/state.json")
    fset("var/lib/blockcast/state.json", st.replace(b'"generation": 1', b'"generation": 2')
         .replace(b'"v1"', b'"v2"'))

    # 2. a few bytes changed in binaries / records rewritten in place
    b = fdata("usr/bin/blockcastd")
    b = patch(b, 0x1234, b"\xde\xad\xbe\xef\x01\x02\x03\x04")
    b = patch(b, 30000, b"\x90\x90\x90\x90")
    fset("usr/bin/blockcastd", b)
    db = fdata("usr/lib/blockcast/index.db")
    rec = 52
    for i in (7, 1500, 3900):
        off = 16 + rec * i + 36  # the float value field
        db = patch(db, off, struct.pack("<d", 4242.0 + i))
    fset("usr/lib/blockcast/index.db", db)

    # 3. large file grows by appending
    log = fdata("var/log/install.log")
    rng = rng_for("var/log/install.log/v2-append")
    more, _ = log_lines(rng, EPOCH - 3600, 300)
    fset("var/log/install.log", log + ("\n".join(more) + "\n").encode())
    pkgst = fdata("var/lib/pkgdb/status")
    fset("var/lib/pkgdb/status", pkgst + b"\nPackage: libeta\nStatus: install ok installed\n"
         b"Priority: optional\nInstalled-Size: 77\nVersion: 1.0.0-1\n"
         b"Description: eta support library\n Added in image version 2.\n")

    # 4. mode change only
    fset("etc/init.d/cron", fdata("etc/init.d/cron"), 0o644)

    # 5. files removed
    t.rm("usr/bin/oldtool")
    t.rm("etc/blockcast/conf.d/90-legacy.conf")
    t.rm("var/lib/blockcast/cache/obj-03.bin")
    t.rm("usr/share/man/man1/busybox.1")

    # 6. library upgrade: new file name, slightly patched content, symlink moved
    old = "usr/lib/gamma/libgamma.so.1.2.5"
    so = fdata(old)
    t.rm(old)
    so = patch(so, 0x200, b"\x48\x31\xc0\xc3")
    so = patch(so, len(so) // 2, b"gamma_v1_2_6\0")
    t.f("usr/lib/gamma/libgamma.so.1.2.6", so, 0o644)
    t.l("usr/lib/gamma/libgamma.so.1", "libgamma.so.1.2.6")

    # 7. files added
    t.f("usr/lib/eta/libeta.so.1.0.0", elf_like("usr/lib/eta/libeta.so.1.0.0", 14 * 1024))
    t.l("usr/lib/eta/libeta.so.1", "libeta.so.1.0.0")
    t.f("usr/lib/eta/data/eta.dat", records_blob("usr/lib/eta/data/eta.dat", 5000))
    t.f("usr/share/doc/libeta/README", doc_text("usr/share/doc/libeta/README", 1800, "libeta"))
    t.f("usr/share/doc/libeta/copyright", doc_text("copyright-template", 1400, "Copyright notice")
        + b"\nPackage: libeta\n")
    t.f("var/lib/pkgdb/info/libeta.list", b"/.\n/usr/lib/eta\n/usr/lib/eta/libeta.so.1.0.0\n")
    t.f("etc/blockcast/conf.d/50-metrics.conf", config_text("conf.d/50-metrics", 9))
    t.f("usr/bin/bcstat", elf_like("usr/bin/bcstat", 18 * 1024), 0o755)
    t.f("usr/share/man/man1/bcstat.1", b".TH BCSTAT 1\n.SH NAME\nbcstat\n.SH DESCRIPTION\n"
        + doc_text("man/bcstat", 900))
    t.f("var/lib/blockcast/cache/obj-06.bin", random_blob("cache/obj-06", 7000), 0o600)
    t.f("usr/share/blockcast/assets/splash.bin", random_blob("assets/splash.bin", 9000))

    # 8. directory reorganised: moved to another parent, contents unchanged
    t.mv("usr/share/blockcast/plugins", "usr/lib/blockcast/plugins")
    return t


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def write_tree(t, outdir):
    if os.path.lexists(outdir):
        if not os.path.isdir(outdir) or os.listdir(outdir):
            sys.exit("gentree: %s exists and is not an empty directory" % outdir)
    else:
        os.makedirs(outdir)
    os.chmod(outdir, 0o755)
    paths = sorted(t.e)
    for p in paths:  # parents sort before children
        kind, data, mode = t.e[p]
        full = os.path.join(outdir, p)
        if kind == "d":
            os.mkdir(full)
        elif kind == "f":
            with open(full, "wb") as fh:
                fh.write(data)
        else:
            os.symlink(data, full)
    # modes and times: deepest first so directory mtimes are not disturbed
    for p in sorted(paths, key=lambda s: (-s.count("/"), s), reverse=False):
        kind, data, mode = t.e[p]
        full = os.path.join(outdir, p)
        if kind != "l":
            os.chmod(full, mode)
        os.utime(full, (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(outdir, (EPOCH, EPOCH))


def main(argv):
    if len(argv) != 3 or argv[2] not in ("1", "2"):
        sys.exit("usage: gentree.py OUTDIR VERSION   (VERSION is 1 or 2)")
    t = build_v1() if argv[2] == "1" else build_v2()
    write_tree(t, argv[1])
    nf = sum(1 for v in t.e.values() if v[0] == "f")
    nl = sum(1 for v in t.e.values() if v[0] == "l")
    nd = sum(1 for v in t.e.values() if v[0] == "d")
    tot = sum(len(v[1]) for v in t.e.values() if v[0] == "f")
    print("gentree: v%s: %d files, %d symlinks, %d dirs, %d bytes of file data"
          % (argv[2], nf, nl, nd, tot), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
