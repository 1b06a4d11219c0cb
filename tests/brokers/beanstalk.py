"""Beanstalkd on loopback (scripts/test.sh starts it on 11300 with -z 1048576)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import greenstalk  # type: ignore[import-untyped]

SCHEME = "beanstalk"
HOST = "127.0.0.1"
PORT = int(os.environ.get("HUBBUB_TEST_BEANSTALK_PORT", "11300"))


def server() -> tuple[str, int]:
    return (HOST, PORT)


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"beanstalk://{HOST}:{PORT}/?prefix={run_id}"


def results_url(tmp_path: Path, run_id: str) -> None:
    return None  # beanstalkd keeps no results


def _delete_namespace(host: str, port: int, prefix: str) -> None:
    # A second client library on purpose: cleanup does not trust the code under test.
    with greenstalk.Client((host, port)) as client:
        for tube in client.tubes():
            if not (tube.startswith(prefix + ".") or tube == prefix + "$dead"):
                continue
            client.use(tube)
            for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                while True:
                    try:
                        job = peek()
                    except greenstalk.NotFoundError:
                        break
                    try:
                        client.delete(job)
                    except greenstalk.NotFoundError:
                        continue  # reserved by someone between peek and delete


async def cleanup(url: str) -> None:
    parts = urlsplit(url)
    [prefix] = parse_qs(parts.query)["prefix"]
    await asyncio.to_thread(_delete_namespace, parts.hostname or HOST, parts.port or PORT, prefix)
