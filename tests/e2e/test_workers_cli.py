"""``hubbub workers`` and ``hubbub status`` against real worker processes, on SQLite, Redis,
RabbitMQ and Beanstalkd (those two with results in SQLite): workers appear with their lanes,
one killed with SIGKILL drops out within three heartbeats, one stopped with SIGTERM at once.
Every worker is one this test started; the fixtures kill what is left, even on failure."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Cli, start_online, wait_for

BEAT = 1.0  # seconds between the test workers' heartbeats


def listed(cli: Cli) -> dict[str, dict[str, Any]]:
    done = cli.run("workers", "--json", timeout=30)
    assert done.returncode == 0, done.stderr
    return {entry["name"]: entry for entry in map(json.loads, done.stdout.splitlines())}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("broker_url", ["sqlite", "redis", "amqp", "beanstalk"], indirect=True)
def test_workers_are_listed_with_their_lanes_and_drop_out_when_killed_or_stopped(
    cli: Cli, broker_url: str,
) -> None:
    beat = ["--heartbeat", str(BEAT)]
    first = start_online(cli, "--pool", "threads", "-c", "3", "-Q", "alpha,beta", "-n", "w-one",
                         *beat)
    second = start_online(cli, "--queue", "gamma=async:7", "--queue", "delta=solo", "-n",
                          "w-two", *beat)
    wait_for(lambda: set(listed(cli)) == {"w-one", "w-two"}, timeout=15,
             what="both workers listed")
    entries = listed(cli)
    assert entries["w-one"]["lanes"] == [{"queues": ["alpha", "beta"], "pool": "threads",
                                          "concurrency": 3, "autoscale": None}]
    assert [(lane["queues"], lane["pool"], lane["concurrency"])
            for lane in entries["w-two"]["lanes"]] == [(["gamma"], "async", 7),
                                                        (["delta"], "solo", 1)]
    assert entries["w-two"]["pid"] == second.pid
    assert entries["w-one"]["processed"] == entries["w-one"]["failed"] == 0

    cli.env["COLUMNS"] = "200"  # the table, as wide as a terminal would show it
    table = cli.run("workers", timeout=30)
    assert table.returncode == 0, table.stderr
    assert "w-one" in table.stdout
    assert "alpha,beta=threads:3" in table.stdout
    assert "gamma=async:7" in table.stdout
    status = cli.run("status", timeout=30)
    assert status.returncode == 0, status.stderr
    assert "w-two" in status.stdout

    os.kill(second.pid, signal.SIGKILL)  # a process this test started
    second.wait(10)
    killed_at = time.monotonic()
    # The entry lives three beats past the last one: a listing that began by then no longer
    # shows it. Each `hubbub workers` run is a new process, slow on a loaded machine, so the
    # bound is taken at the start of the listing that first missed the entry, and allows
    # the run before it (which may have begun just before the entry expired).
    last_run = 0.0
    while True:
        began = time.monotonic()
        names = set(listed(cli))
        if names == {"w-one"}:
            break
        assert names == {"w-one", "w-two"}, names
        assert began - killed_at < 15, "the killed worker was still listed after 15 s"
        last_run = time.monotonic() - began
    assert began - killed_at < 3 * BEAT + last_run + 1.0

    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0
    assert listed(cli) == {}  # at once: a clean stop deletes the entry


def test_a_hub_without_results_says_it_keeps_no_registry(cli: Cli) -> None:
    cli.env["HUBBUB_RESULTS"] = "none"
    done = cli.run("workers", timeout=30)
    assert done.returncode == 0
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no worker registry" in done.stderr


def test_an_unreachable_registry_is_one_line(cli: Cli) -> None:
    cli.env["HUBBUB_RESULTS"] = "redis://127.0.0.1:1/0"
    done = cli.run("workers", timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error:")
