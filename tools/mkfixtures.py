#!/usr/bin/env python3
"""Derives the deliberately broken index fixtures in tests/fixtures/ from v3-tiny.bcidx.

v3-tiny.bcidx itself is `blockcast make tests/fixtures/tiny.img --chunk-size 16K`.
Fixtures whose point is a semantic check (not the digest) get a recomputed digest, so
the reader must catch them by the check they are named after.
"""
import hashlib
import pathlib
import random
import struct

FIX = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
HEADER, RECORD, DIGEST = 512, 56, 480


def redigest(b: bytearray) -> bytes:
    b[DIGEST:DIGEST + 32] = bytes(32)
    b[DIGEST:DIGEST + 32] = hashlib.sha256(bytes(b)).digest()
    return bytes(b)


def patch(b: bytes, off: int, fmt: str, value) -> bytearray:
    b = bytearray(b)
    struct.pack_into(fmt, b, off, value)
    return b


good = (FIX / "v3-tiny.bcidx").read_bytes()
out = {
    "empty.bcidx": b"",
    "garbage.bcidx": random.Random(1).randbytes(4096),
    "v3-truncated-header.bcidx": good[:100],
    "v3-truncated-table.bcidx": good[:HEADER + RECORD * 2 + 17],
    "v3-flipped-table.bcidx": bytes(patch(good, HEADER + RECORD + 30, "<B", good[HEADER + RECORD + 30] ^ 1)),
    "v3-flipped-header.bcidx": bytes(patch(good, 24, "<B", good[24] ^ 1)),
    "v7-future-version.bcidx": redigest(patch(good, 8, "<I", 7)),
    "v3-gather-count.bcidx": redigest(patch(good, 466, "<Q", 1)),
    "v4-delta-count.bcidx": redigest(patch(patch(good, 8, "<I", 4), 474, "<I", 1)),
    "v3-absurd-count.bcidx": redigest(patch(good, 32, "<Q", 1 << 60)),
    "v3-absurd-chunk-size.bcidx": redigest(patch(good, HEADER + 8, "<I", 0xFFFF_FFF0)),
    "v3-absurd-largest-chunk.bcidx": redigest(patch(good, 64, "<I", 0xFFFF_FFF0)),
    "v3-gap-in-table.bcidx": redigest(patch(good, HEADER + RECORD, "<Q", struct.unpack_from("<Q", good, HEADER + RECORD)[0] + 4096)),
    "v3-bad-chunk-params.bcidx": redigest(patch(good, 52, "<I", 12345)),
    "v3-wrong-tree-size.bcidx": redigest(patch(good, 104, "<Q", 8192)),
    "v3-long-salt.bcidx": redigest(patch(good, 160, "<H", 300)),
    "v3-unknown-layout.bcidx": redigest(patch(good, 71, "<B", 7)),
}
for name, data in out.items():
    (FIX / name).write_bytes(data)
    print(name, len(data))
