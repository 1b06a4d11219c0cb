"""The real CLI worker on Redis: kill -9 mid-task loses nothing, and two live workers on one
queue never run the same message twice. Runs against the shared Redis at 127.0.0.1:6379 under
a key prefix of its own, deleted afterwards; it kills only the workers it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub._loader import load_hub
from tests import brokers
from tests.e2e.conftest import APP, Cli, wait_for

LEDGER_TASK = '''

@hub.task
def record(ledger: str, n: int) -> None:
    time.sleep(0.005)  # long enough for both workers to hold work at the same time
    with open(ledger, "a") as f:  # one short O_APPEND write per line: lines never interleave
        f.write(f"{n} {os.getpid()}\\n")
'''


@pytest.fixture
def redis_url(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points the scratch app and every worker the test starts at a fresh Redis prefix."""
    broker = brokers.load("redis")
    brokers.require(broker)
    url = broker.make_url(tmp_path, "e2e" + uuid.uuid4().hex[:10])
    (tmp_path / "app.py").write_text(APP + LEDGER_TASK)
    cli.url = url
    cli.env["HUBBUB_BROKER"] = url
    monkeypatch.setenv("HUBBUB_BROKER", url)
    try:
        yield url
    finally:
        cli.stop_all()  # before deleting the keys, so no worker writes them again
        asyncio.run(broker.cleanup(url))


@pytest.fixture
def app(redis_url: str) -> Iterator[Hub]:
    sys.modules.pop("app", None)
    hub = load_hub("app:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("app", None)


def queue_stats(hub: Hub) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = await hub.client()
        [s] = await client.transport.stats(["default"])
        return {"ready": s.ready, "leased": s.leased, "delayed": s.delayed, "dead": s.dead}

    return hub.bridge.run(read())


def start_online(cli: Cli, *args: str) -> int:
    """Start a worker and wait until it says it is online; returns its index in ``cli.procs``."""
    cli.start_worker(*args)
    index = len(cli.procs) - 1
    wait_for(lambda: " online: broker " in cli.log(index), what=f"worker {index} online")
    return index


def test_a_worker_killed_mid_task_on_redis_loses_nothing(cli: Cli, app: Hub, tmp_path: Path
                                                        ) -> None:
    marker = str(tmp_path / "job")
    pid_file = Path(marker + ".pid")
    result = app.tasks["app.slow"].delay(marker, 1.0)
    first = cli.start_worker("--lease", "1", "--pool", "threads")
    # Non-empty, not just there: the task creates the file, then writes its pid into it.
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "",
             what="task started in the first worker")
    assert pid_file.read_text() == str(first.pid)
    second = cli.procs[start_online(cli, "--lease", "1", "--pool", "threads")]
    pid_file.unlink()
    os.kill(first.pid, signal.SIGKILL)  # the worker we started, mid-task
    first.wait(10)
    assert result.get(timeout=30) == "ok"  # the second worker took it once the lease ran out
    assert pid_file.read_text() == str(second.pid)
    assert Path(marker + ".runs").read_text() == "done\n"  # the killed run never finished
    wait_for(lambda: queue_stats(app) == {"ready": 0, "leased": 0, "delayed": 0, "dead": 0},
             what="the message acked and gone")


def test_two_live_workers_never_run_one_message_twice(cli: Cli, app: Hub, tmp_path: Path
                                                     ) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    workers = [cli.procs[start_online(cli, "--pool", "threads", "-c", "4")] for _ in range(2)]
    app.tasks["app.record"].delay_many([(str(ledger), n) for n in range(300)])
    wait_for(lambda: len(ledger.read_text().splitlines()) >= 300, timeout=30,
             what="300 tasks run")
    # Once nothing is ready or leased, every message is acked and none can run again.
    wait_for(lambda: queue_stats(app) == {"ready": 0, "leased": 0, "delayed": 0, "dead": 0},
             what="every message acked")
    assert all(w.poll() is None for w in workers)  # both stayed alive throughout
    rows = [line.split() for line in ledger.read_text().splitlines()]
    runs = Counter(int(n) for n, _ in rows)
    assert sorted(runs) == list(range(300))
    assert [n for n, times in runs.items() if times > 1] == []
    assert {pid for _, pid in rows} == {str(w.pid) for w in workers}  # both took a share
