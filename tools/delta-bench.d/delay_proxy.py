#!/usr/bin/env python3
"""A delaying HTTP/1.1 proxy for benchmarks: every request waits DELAY_MS before it is
passed to the upstream, as `blockcast serve --delay` waits before answering. Keeps
connections alive (one upstream connection per client connection) and relays bodies by
Content-Length or chunked encoding, so a client's connection reuse is what it would be
without the proxy. Loopback only.

    delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS

Prints "listening PORT" once it accepts connections (port 0 picks a free one).
"""

import asyncio
import sys


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return head, lines[0], headers


async def relay_body(reader, writer, headers, no_body):
    if no_body:
        return
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        return
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    left = int(headers.get("content-length", "0"))
    while left > 0:
        piece = await reader.read(min(left, 1 << 20))
        if not piece:
            raise ConnectionError("upstream closed mid-body")
        writer.write(piece)
        left -= len(piece)
        await writer.drain()


async def handle(client_r, client_w, upstream_port, delay):
    up_r = up_w = None
    try:
        while True:
            try:
                head, request_line, headers = await read_head(client_r)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            body = b""
            if "content-length" in headers:
                body = await client_r.readexactly(int(headers["content-length"]))
            await asyncio.sleep(delay)
            if up_w is None:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
            up_w.write(head + body)
            await up_w.drain()
            rhead, status_line, rheaders = await read_head(up_r)
            client_w.write(rhead)
            status = int(status_line.split()[1])
            no_body = request_line.startswith("HEAD ") or status in (204, 304) or 100 <= status < 200
            await relay_body(up_r, client_w, rheaders, no_body)
            await client_w.drain()
            if rheaders.get("connection", "").lower() == "close":
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        client_w.close()
        if up_w is not None:
            up_w.close()


async def main():
    port, upstream_port, delay_ms = (int(a) for a in sys.argv[1:4])
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream_port, delay_ms / 1000), "127.0.0.1", port
    )
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
