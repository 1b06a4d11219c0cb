"""CLI worker options that compose: lanes per queue, autoscale, an embedded beat."""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub._loader import load_hub
from hubbub.worker.pools import describe_pools
from tests.e2e.conftest import Cli, wait_for

LANES_APP = textwrap.dedent('''
    import os, threading
    from datetime import timedelta
    from pathlib import Path
    from hubbub import Hub

    hub = Hub()
    LEDGER = Path(os.environ["LEDGER"])

    def note(kind):
        with open(LEDGER, "a") as f:
            f.write(f"{kind} {os.getpid()} {threading.current_thread().name}\\n")

    @hub.task(name="cpu", queue="cpu")
    def cpu() -> None:
        note("cpu")

    @hub.task(name="io", queue="io")
    async def io() -> None:
        note("io")

    @hub.periodic(every=timedelta(seconds=1), name="tick")
    def tick() -> None:
        note("tick")
''')


@pytest.fixture
def lanes_app(cli: Cli, tmp_path: Path) -> Iterator[Hub]:
    (tmp_path / "lanesapp.py").write_text(LANES_APP)
    cli.env["LEDGER"] = str(tmp_path / "ledger.txt")
    sys.modules.pop("lanesapp", None)
    import os

    os.environ["LEDGER"] = cli.env["LEDGER"]
    hub = load_hub("lanesapp:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("lanesapp", None)


def test_one_worker_runs_each_queue_on_its_own_pool_and_embeds_the_beat(
    cli: Cli, lanes_app: Hub, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    lanes_app.tasks["cpu"].delay_many([() for _ in range(5)])
    lanes_app.tasks["io"].delay_many([() for _ in range(5)])
    proc = cli.start_worker_app("lanesapp:hub", "--queue", "cpu=prefork:2",
                                "--queue", "io,default=async:50", "--beat")

    def lines() -> list[list[str]]:
        return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() \
            else []

    wait_for(lambda: sum(1 for kind, *_ in lines() if kind in {"cpu", "io"}) == 10,
             timeout=30, what="ten tasks")
    wait_for(lambda: any(kind == "tick" for kind, *_ in lines()), timeout=15,
             what="a periodic tick from the embedded beat")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    cpu_pids = {pid for kind, pid, _ in lines() if kind == "cpu"}
    io_pids = {pid for kind, pid, _ in lines() if kind == "io"}
    assert str(proc.pid) not in cpu_pids  # prefork children
    assert io_pids == {str(proc.pid)}  # coroutines on the worker's own loop


def test_lanes_refuse_the_single_pool_options(cli: Cli) -> None:
    done = cli.run("worker", "-A", "app:hub", "--queue", "a=threads", "--pool", "threads")
    assert done.returncode != 0
    assert "--queue lanes replace --pool" in done.stderr


def test_autoscale_is_checked(cli: Cli) -> None:
    done = cli.run("worker", "-A", "app:hub", "--autoscale", "2,8", "--pool", "threads")
    assert done.returncode != 0
    assert "MIN <= MAX" in done.stderr


def test_worker_help_lists_every_pool_with_its_summary(cli: Cli) -> None:
    done = cli.run("worker", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # click wraps the help text
    for kind, summary in describe_pools().items():
        assert f"{kind} ({summary})" in text
    assert "shrink to MIN when idle (threads and prefork)" in text


def test_autoscale_of_a_pool_that_cannot_resize_names_the_pools_that_can(cli: Cli) -> None:
    done = cli.run("worker", "-A", "app:hub", "--autoscale", "8,2", "--pool", "async")
    assert done.returncode == 2
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert error == ("Error: --autoscale needs a pool that can resize (threads, prefork); "
                     "the async pool cannot")
