"""The brokers the suites run against, one module each (memory, sqlite, redis, amqp, beanstalk).

Every module defines:

    SCHEME: str
    def server() -> tuple[str, int] | None      # (host, port) it needs, or None for embedded
    def make_url(tmp_path: Path, run_id: str) -> str   # an isolated namespace for one test
    def results_url(tmp_path: Path, run_id: str) -> str | None
    async def cleanup(url: str) -> None         # remove everything the namespace created

and may define:

    def start() -> None     # start its servers once per session (tests/cluster/servers.py)
    SLOW: bool              # True: its params are marked slow (scripts/test.sh runs them)

A server that cannot be reached skips the test locally and fails it under CI=true.
"""

from __future__ import annotations

import importlib
import os
import socket
from types import ModuleType
from typing import NoReturn

NAMES = ["memory", "sqlite", "redis", "amqp", "beanstalk", "redis_cluster", "redis_sentinel"]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"tests.brokers.{name}")


def available(name: str) -> ModuleType | None:
    """The broker module if its code exists here (a transport may not have landed yet)."""
    try:
        return load(name)
    except ModuleNotFoundError as exc:
        if exc.name == f"tests.brokers.{name}":
            return None
        raise


def param(name: str) -> object:
    """A pytest param for broker ``name``, marked slow if its module says so."""
    import pytest

    module = available(name)
    slow = module is not None and getattr(module, "SLOW", False)
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: skip locally, fail under CI=true (where a suite
    must never pass by skipping)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a suite must not skip)")
    pytest.skip(message)


def require(module: ModuleType) -> None:
    """Skip (locally) or fail (CI=true) when the broker's server is not reachable."""
    start = getattr(module, "start", None)
    if start is not None:
        try:
            start()
        except Exception as exc:  # the servers' own error says why; fail or skip with it
            unavailable(str(exc))
    address = module.server()
    if address is None or reachable(*address):
        return
    unavailable(f"{module.SCHEME} server at {address[0]}:{address[1]} is not reachable")
