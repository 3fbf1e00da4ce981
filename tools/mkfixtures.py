#!/usr/bin/env python3
"""Derives the deliberately broken index fixtures in tests/fixtures/ from v1-tiny.bcidx.

v1-tiny.bcidx itself is `blockcast make tests/fixtures/tiny.img --chunk-size 16K`.
Fixtures whose point is a semantic check (not the digest) get a recomputed digest, so
the reader must catch them by the check they are named after.
"""
import hashlib
import pathlib
import random
import struct

FIX = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
HEADER, RECORD, DIGEST = 256, 56, 224


def redigest(b: bytearray) -> bytes:
    b[DIGEST:DIGEST + 32] = bytes(32)
    b[DIGEST:DIGEST + 32] = hashlib.sha256(bytes(b)).digest()
    return bytes(b)


def patch(b: bytes, off: int, fmt: str, value) -> bytearray:
    b = bytearray(b)
    struct.pack_into(fmt, b, off, value)
    return b


good = (FIX / "v1-tiny.bcidx").read_bytes()
out = {
    "empty.bcidx": b"",
    "garbage.bcidx": random.Random(1).randbytes(4096),
    "v1-truncated-header.bcidx": good[:100],
    "v1-truncated-table.bcidx": good[:HEADER + RECORD * 2 + 17],
    "v1-flipped-table.bcidx": bytes(patch(good, HEADER + RECORD + 30, "<B", good[HEADER + RECORD + 30] ^ 1)),
    "v1-flipped-header.bcidx": bytes(patch(good, 24, "<B", good[24] ^ 1)),
    "v2-future-version.bcidx": redigest(patch(good, 8, "<I", 2)),
    "v1-absurd-count.bcidx": redigest(patch(good, 32, "<Q", 1 << 60)),
    "v1-absurd-chunk-size.bcidx": redigest(patch(good, HEADER + 8, "<I", 0xFFFF_FFF0)),
    "v1-absurd-largest-chunk.bcidx": redigest(patch(good, 64, "<I", 0xFFFF_FFF0)),
    "v1-gap-in-table.bcidx": redigest(patch(good, HEADER + RECORD, "<Q", struct.unpack_from("<Q", good, HEADER + RECORD)[0] + 4096)),
    "v1-bad-chunk-params.bcidx": redigest(patch(good, 52, "<I", 12345)),
}
for name, data in out.items():
    (FIX / name).write_bytes(data)
    print(name, len(data))
