"""A small HTTP/1.1 server on loopback that serves numbered pages and counts every hit.

    python server.py    # prints the port it listens on; serves until its stdin closes

``GET /<run>/<n>`` answers a small HTML page and counts one hit for page ``n`` of run
``<run>`` (any word: the crawler uses one per pool). ``GET /_stats/<run>?n=N`` answers, as
JSON, how many pages of that run were served and the first and last hit's time on this
process's monotonic clock; with ``n=N``, also how many of ``0..N-1`` were never fetched or
fetched more than once (with a few examples of each). So the crawl's rate is measured
where the pages are served.

It is a plain asyncio server with keep-alive rather than a framework, so that the server is
not what limits the crawl on a small machine. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MAX_HEADER_BYTES = 16 * 1024


@dataclass
class Run:
    """The hits of one crawl."""

    hits: Counter[int] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None

    served: int = 0

    def hit(self, page: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.hits[page] += 1
        self.served += 1

    def stats(self, n: int) -> dict[str, object]:
        """Pages served; with ``n``, also which of ``0..n-1`` were missed or served twice
        (that walks every page: the crawler asks once, at the end)."""
        found: dict[str, object] = {"served": self.served, "first": self.first,
                                    "last": self.last}
        if n:
            missing = [i for i in range(n) if self.hits.get(i, 0) == 0]
            twice = sorted(i for i, count in self.hits.items() if count > 1)
            outside = sorted(i for i in self.hits if not 0 <= i < n)
            found.update(distinct=len(self.hits), missing=len(missing),
                         missing_examples=missing[:10], duplicated=len(twice),
                         duplicated_examples=twice[:10], outside=len(outside))
        return found


RUNS: dict[str, Run] = {}


def respond(status: str, body: bytes, content_type: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


def answer(target: str) -> bytes:
    parts = urlsplit(target)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) == 2 and segments[0] == "_stats":
        query = parse_qs(parts.query)
        n = int(query.get("n", ["0"])[0])
        body = json.dumps(RUNS.setdefault(segments[1], Run()).stats(n)).encode()
        return respond("200 OK", body, "application/json")
    if len(segments) == 2 and segments[1].isdigit():
        RUNS.setdefault(segments[0], Run()).hit(int(segments[1]))
        body = f"<html><body><h1>page {segments[1]}</h1></body></html>".encode()
        return respond("200 OK", body, "text/html")
    return respond("404 Not Found", b"not found", "text/plain")


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                writer.write(respond("431 Request Header Fields Too Large", b"", "text/plain"))
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            target = rest.rpartition(" ")[0] or rest
            if method != "GET":
                writer.write(respond("405 Method Not Allowed", b"", "text/plain"))
                return
            writer.write(answer(target))
            if b"connection: close" in head.lower():
                await writer.drain()
                return
            await writer.drain()
    finally:
        writer.close()


def exit_with_parent() -> None:
    """Exit when standard input closes: the crawler that started us stopped or died."""
    sys.stdin.buffer.read()
    os._exit(0)


async def main() -> None:
    threading.Thread(target=exit_with_parent, daemon=True).start()
    server = await asyncio.start_server(serve_connection, "127.0.0.1", 0,
                                        limit=MAX_HEADER_BYTES, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
