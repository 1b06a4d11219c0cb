"""examples/plain end to end: a real worker (prefork) and the sending script, then the script
in eager mode with no worker."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.integrations.procs import hubbub, process, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain"


def test_the_script_gets_its_results_from_a_real_worker(tmp_path: Path) -> None:
    env = {"HUBBUB_BROKER": f"sqlite:///{tmp_path / 'broker.db'}",
           "PLAIN_STATS": str(tmp_path / "stats.db")}
    log = tmp_path / "worker.txt"
    worker = hubbub("worker", "-A", "tasks:hub", "--pool", "prefork", "-c", "2")
    with process(worker, EXAMPLE, log, env) as proc:
        sent = subprocess.run([sys.executable, "send.py"], cwd=EXAMPLE, capture_output=True,
                              text=True, timeout=120, env={**os.environ, **env})
        assert sent.returncode == 0, sent.stderr + log.read_text()
        assert stop(proc) == 0, log.read_text()
    assert sent.stdout.splitlines() == [
        "sums: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]",
        "words: 9",
        "shaky: succeeded on attempt 3",
    ]
    # The around_task hook timed every attempt, in the prefork children that ran them.
    with sqlite3.connect(tmp_path / "stats.db") as db:
        runs = db.execute("SELECT task, pid FROM runs").fetchall()
    assert len(runs) == 10 + 1 + 3
    assert proc.pid not in {pid for _, pid in runs}


def test_the_script_runs_eagerly_without_a_worker(tmp_path: Path) -> None:
    env = {**os.environ, "HUBBUB_BROKER": f"sqlite:///{tmp_path / 'broker.db'}",
           "PLAIN_STATS": str(tmp_path / "stats.db")}
    run = subprocess.run([sys.executable, "send.py", "--eager"], cwd=EXAMPLE,
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["add: 5", "shaky: succeeded on attempt 3"]
