"""Beanstalkd on loopback (scripts/test.sh starts it on 11300 with -z 1048576), and servers
a test starts for itself (``OwnServer``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import greenstalk  # type: ignore[import-untyped]

from tests import brokers

SCHEME = "beanstalk"
HOST = "127.0.0.1"
PORT = int(os.environ.get("HB_TEST_BEANSTALK_PORT", "11300"))


def server() -> tuple[str, int]:
    return (HOST, PORT)


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"beanstalk://{HOST}:{PORT}/?prefix={run_id}"


def results_url(tmp_path: Path, run_id: str) -> None:
    return None  # beanstalkd keeps no results


def _delete_namespace(host: str, port: int, prefix: str) -> None:
    # A second client library on purpose: cleanup does not trust the code under test.
    with greenstalk.Client((host, port), encoding=None) as client:  # bodies may be any bytes
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


class OwnServer:
    """A beanstalkd a test starts on a free loopback port (the same one across restarts), kills
    when it wants the server gone, and always stops at teardown. Extra ``args`` go to
    beanstalkd (``-b DIR`` keeps jobs across a restart)."""

    def __init__(self, *args: str) -> None:
        binary = shutil.which("beanstalkd")
        if binary is None:
            brokers.unavailable("beanstalkd is not installed")
        self.port = brokers.free_port()
        self.cmd = [binary, "-l", HOST, "-p", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str, **options: str) -> str:
        query = "".join(f"&{k}={v}" for k, v in options.items())
        return f"beanstalk://{HOST}:{self.port}/?prefix={prefix}{query}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not brokers.reachable(HOST, self.port, timeout=0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"beanstalkd did not start on port {self.port}")
            time.sleep(0.02)  # polling for the port to open, with a deadline

    def kill(self) -> None:
        """SIGKILL the server (the process this test started) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
