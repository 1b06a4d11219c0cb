"""``hubbub top`` in a real terminal: started in tmux, its screen captured and read.

A live worker (with --events) and a queue nobody serves, holding seven tasks: the screen
shows the worker with its lane, the queue with its count, a task the worker runs, and the
keys work (s cycles the sort, f filters by queue, q quits). tmux is installed by
scripts/test.sh; the test installs nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.brokers import free_port, unavailable
from tests.e2e.conftest import Cli, open_app, start_online, wait_for


class Terminal:
    """A tmux server of the test's own (its own socket), one session running a command."""

    def __init__(self) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            unavailable("tmux is not installed (scripts/test.sh installs it)")
        self.tmux = [binary, "-L", f"hubbub-test-{uuid.uuid4().hex[:10]}", "-f", "/dev/null"]

    def start(self, cli: Cli, *args: str) -> None:
        env = {k: v for k, v in cli.env.items() if k.startswith("HUBBUB_")}
        env["PYTHONPATH"] = cli.env.get("PYTHONPATH", "")
        command = " ".join([
            # COLUMNS/LINES may be inherited from whoever started the tmux server: a real
            # terminal's size comes from the pane.
            "cd", shlex.quote(str(cli.folder)), "&&", "exec", "env", "-u", "COLUMNS", "-u",
            "LINES",
            *(shlex.quote(f"{k}={v}") for k, v in env.items()),
            shlex.quote(sys.executable), "-m", "hubbub", *map(shlex.quote, args)])
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "top", "-x", "180", "-y", "50",
                        command], check=True, timeout=30)

    def screen(self) -> str:
        done = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "top"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "top", *keys], check=True, timeout=30)

    def alive(self) -> bool:
        return subprocess.run([*self.tmux, "has-session", "-t", "top"], capture_output=True,
                              timeout=30).returncode == 0

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        term.kill()  # ends top too, whatever happened


@pytest.mark.timeout(120)
def test_top_shows_a_live_worker_and_a_queue_and_quits_on_q(
        cli: Cli, terminal: Terminal) -> None:
    cli.env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"),
                                                          str(cli.folder)]))
    start_online(cli, "--events", "--pool", "threads", "-c", "2", "-n", "w-top",
                 "--heartbeat", "0.5")
    for hub in open_app():
        hub.tasks["app.add"].apply_async((1, 2), queue="parked")  # nobody serves it
        for _ in range(6):
            hub.tasks["app.add"].apply_async((1, 2), queue="parked")
        hub.tasks["app.slow"].delay(str(cli.folder / "long"), 60)  # runs while top looks
    terminal.start(cli, "top", "-Q", "default,parked", "--interval", "0.5")

    def shows_everything() -> bool:
        screen = terminal.screen()
        parked = [line for line in screen.splitlines() if "│ parked" in line]
        return ("w-top" in screen and "default=threads:2" in screen
                and "app.slow[" in screen and bool(parked) and parked[0].split("│")[2].strip()
                == "7")

    try:
        wait_for(shows_everything, timeout=60, what="the worker, its lane and task, the queue")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the screen:\n{terminal.screen()}") from None
    terminal.keys("s")
    wait_for(lambda: "sort (running)" in terminal.screen(), what="s cycles the sort")
    terminal.keys("f")
    try:
        wait_for(lambda: "filter by queue (default)" in terminal.screen(), what="f filters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the screen:\n{terminal.screen()}") from None
    assert "│ parked" not in terminal.screen()  # filtered out
    terminal.keys("q")
    wait_for(lambda: not terminal.alive(), timeout=20, what="q quits top")


def test_top_on_an_unreachable_broker_is_one_line(cli: Cli) -> None:
    done = cli.run("top", "--broker", f"redis://127.0.0.1:{free_port()}/0", timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1


def test_top_once_prints_one_view(cli: Cli) -> None:
    done = cli.run("top", "--once", "-Q", "default,other", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "workers (0)" in done.stdout
    assert "other" in done.stdout
