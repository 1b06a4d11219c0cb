"""An idle ``hubbub worker --pool async`` on Redis loads none of what it has no use for yet
(issue #18): every module left out is memory each worker process keeps while it waits.

Each test runs the real CLI in a subprocess, against the shared Redis, with an app that
writes ``sys.modules`` one second after the worker comes online (its first fetch is then
under way), and stops the worker itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import brokers

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0

# Loaded on first use only: the control client (``hub.control``, ``hubbub inspect``), schedule
# entries (``hub.schedule``/``periodic``) and the beat, the Decimal type (a "decimal" tag or a
# Decimal value), the other pools, SQLite, the sync Redis publisher (``delay()`` from sync
# code), task-sent events (events off), the Celery bridge, metrics, tracing, the dashboard and
# rich (other subcommands).
NOT_WHEN_IDLE = (
    "hubbub.control.client", "hubbub.schedule", "hubbub.schedule.entries",
    "hubbub.schedule.beat", "croniter", "zoneinfo", "decimal", "numbers",
    "hubbub.worker.pools.prefork", "hubbub.worker.pools.threads", "sqlite3", "hubbub._sqlite",
    "hubbub.transports._redis_sync", "hubbub.compat.celery", "hubbub.metrics",
    "hubbub.tracing", "hubbub.dashboard", "hubbub.control.monitor", "hubbub.control.sent",
    "rich",
)

APP = textwrap.dedent("""
    import asyncio, json, os, sys

    from hubbub import Hub
    from hubbub.events import WorkerOnline

    hub = Hub()   # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None

    def _dump() -> None:
        with open(os.environ["MODULES_OUT"] + ".tmp", "w") as out:
            json.dump(sorted(sys.modules), out)
        os.replace(os.environ["MODULES_OUT"] + ".tmp", os.environ["MODULES_OUT"])

    @hub.events.subscribe
    def _online(event: object) -> None:
        if isinstance(event, WorkerOnline):
            asyncio.get_running_loop().call_later(1.0, _dump)
""")


@pytest.fixture
def redis_url() -> Iterator[str]:
    module = brokers.load("redis")
    brokers.require(module)
    url = module.make_url(Path(), f"idle-{uuid.uuid4().hex[:8]}")
    yield url
    import asyncio

    asyncio.run(module.cleanup(url))


def idle_modules(folder: Path, redis_url: str) -> set[str]:
    """The modules of an idle async worker on ``redis_url``, its app written in ``folder``."""
    (folder / "idleapp.py").write_text(APP)
    out = folder / "modules.json"
    env = {**os.environ, "HUBBUB_BROKER": redis_url, "MODULES_OUT": str(out),
           "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubbub", "worker", "-A", "idleapp:hub", "--pool", "async",
         "-l", "error"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not out.exists():
            if proc.poll() is not None:
                pytest.fail(f"the worker exited with {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker wrote no module list within {TIMEOUT:g}s")
            time.sleep(0.05)
        return set(json.loads(out.read_text()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_idle_async_worker_on_redis_loads_nothing_it_does_not_use(
        tmp_path: Path, redis_url: str) -> None:
    modules = idle_modules(tmp_path, redis_url)
    assert "hubbub.worker.loop" in modules  # the list is a serving worker's
    assert "hubbub.transports.redis" in modules
    assert sorted(set(NOT_WHEN_IDLE) & modules) == []


def test_deferred_names_still_import_where_they_were() -> None:
    code = textwrap.dedent("""
        import sys
        import hubbub.control.registry  # as a worker does
        assert "hubbub.control.client" not in sys.modules
        from hubbub.control import (Control, ControlTimeout, Inspector, LaneEntry, Registry,
                                    Reply, TaskSummary, WorkerInfo)
        import hubbub.control
        assert Control.__module__ == "hubbub.control.client"
        assert set(hubbub.control.__all__) <= set(dir(hubbub.control))
        from hubbub import Hub
        hub = Hub("memory://")
        assert type(hub.control) is Control
        assert "hubbub.schedule.entries" not in sys.modules
        hub.schedule(hub.task(name="t")(lambda: None), every=60)
        assert "hubbub.schedule.entries" in sys.modules
        try:
            hubbub.control.Missing
        except AttributeError:
            pass
        else:
            raise AssertionError("an unknown name must raise AttributeError")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


DECIMAL_CASES = {
    "a Decimal made after hubbub loaded is packed as before": """
        from decimal import Decimal
        assert codecs.pack({"d": Decimal("1.5")}) == {"d": {"__hubbub__": "decimal", "v": "1.5"}}
        assert codecs.pack({"d": type("D", (Decimal,), {})("2")})["d"]["v"] == "2"
    """,
    "a decimal tag decodes without decimal imported first": """
        value = codecs.unpack({"__hubbub__": "decimal", "v": "1.5"})
        assert repr(value) == "Decimal('1.5')", repr(value)
    """,
    "the name decimal stays taken by the built-in type": """
        try:
            codecs.register_type(type("Money", (), {}), name="decimal", encode=str, decode=str)
        except ConfigurationError as exc:
            assert "built-in" in str(exc), exc
        else:
            raise AssertionError("registering the name 'decimal' must fail")
    """,
    "Decimal itself travels without registering": """
        import decimal
        try:
            codecs.register_type(decimal.Decimal, name="money", encode=str, decode=str)
        except ConfigurationError as exc:
            assert "without registering" in str(exc), exc
        else:
            raise AssertionError("registering Decimal must fail")
    """,
}


@pytest.mark.parametrize("case", DECIMAL_CASES)
def test_decimal_is_a_built_in_type_before_decimal_is_imported(case: str) -> None:
    code = textwrap.dedent("""
        import sys
        import hubbub.codecs as codecs
        from hubbub.errors import ConfigurationError
        assert "decimal" not in sys.modules
    """) + textwrap.dedent(DECIMAL_CASES[case])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
