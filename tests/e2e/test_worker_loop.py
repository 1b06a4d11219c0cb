"""``hubbub worker --loop``: the event loop a worker process runs, and the error without uvloop."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from hubbub._loader import load_hub
from tests.e2e.conftest import Cli

LOOP_APP = '''
import asyncio
from hubbub import Hub

hub = Hub()  # $HUBBUB_BROKER; results kept beside it

@hub.task(name="which")
async def which() -> str:
    await asyncio.sleep(0.01)
    return type(asyncio.get_running_loop()).__module__
'''


def hide_uvloop(cli: Cli, folder: Path) -> None:
    """Make ``import uvloop`` fail in the worker process, as when the extra is not installed."""
    folder.mkdir(exist_ok=True)
    (folder / "uvloop.py").write_text("raise ImportError('No module named uvloop')\n")
    cli.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder),
                                                          cli.env.get("PYTHONPATH")]))


def run_which(cli: Cli, tmp_path: Path, *options: str) -> tuple[str, str]:
    """(the loop module the task ran on, the worker's log), on a worker with ``options``."""
    (tmp_path / "loopapp.py").write_text(LOOP_APP)
    sys.modules.pop("loopapp", None)  # this test's file and broker, not an earlier test's
    hub = load_hub("loopapp:hub")
    try:
        result = hub.tasks["which"].delay()
        proc = cli.start_worker_app("loopapp:hub", "--pool", "async", *options)
        module = result.get(timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        hub.close()
        sys.modules.pop("loopapp", None)
    return module, cli.log(len(cli.procs) - 1)


def test_a_worker_started_with_loop_uvloop_runs_its_tasks_on_uvloop(
        cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")  # in the test extra: CI runs this

    module, log = run_which(cli, tmp_path, "--loop", "uvloop")

    assert module == "uvloop"
    assert "event loop uvloop (from the CLI)" in log


def test_auto_falls_back_to_asyncio_without_uvloop_and_says_so(
        cli: Cli, tmp_path: Path) -> None:
    hide_uvloop(cli, tmp_path / "hidden")

    module, log = run_which(cli, tmp_path)

    assert module.startswith("asyncio."), module
    assert "event loop asyncio (auto, default: uvloop is not installed" in log


def test_loop_uvloop_without_the_extra_is_one_line_naming_the_fix(
        cli: Cli, tmp_path: Path) -> None:
    hide_uvloop(cli, tmp_path / "hidden")

    done = cli.run("worker", "-A", "app:hub", "--pool", "async", "--loop", "uvloop",
                   timeout=60)

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error: ")]
    assert lines == ["error: event loop 'uvloop' needs an extra: "
                     "pip install 'hubbub[uvloop]'"], done.stderr


def test_hubbub_loop_sets_the_loop_and_the_cli_wins(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    cli.env["HUBBUB_LOOP"] = "uvloop"

    module, log = run_which(cli, tmp_path, "--loop", "asyncio")
    assert module.startswith("asyncio."), module

    module, log = run_which(cli, tmp_path)
    assert module == "uvloop"
    assert "event loop uvloop (from $HUBBUB_LOOP)" in log
