"""``hubbub inspect`` / ``hubbub control`` against real worker processes, on every broker that
carries a control plane; and the autoscale banner and log lines of a real worker.

Every worker is one this test started; the fixtures kill what is left, even on failure, and
delete the test's broker namespace."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli, open_app, start_online, wait_for


@pytest.mark.timeout(90)
def test_autoscale_bounds_are_in_the_banner_and_every_resize_is_logged(
    cli: Cli, tmp_path: Path,
) -> None:
    worker = start_online(cli, "--pool", "threads", "--autoscale", "3,1")
    assert "autoscale default: 1..3 threads slots" in cli.log(0)
    hub = next(gen := open_app())
    try:
        slow = hub.tasks["app.slow"]
        results = [slow.delay(str(tmp_path / f"a{i}"), 1.0) for i in range(4)]
        wait_for(lambda: "lane default: pool threads 1 -> " in cli.log(0), what="a grow")
        assert [r.get(timeout=30) for r in results] == ["ok"] * 4
    finally:
        gen.close()
    # Idle for a while, the lane shrinks back a step at a time, each step logged.
    wait_for(lambda: " -> 1 (autoscale: 0 of 2 busy for" in cli.log(0), timeout=40,
             what="a shrink back to 1")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
