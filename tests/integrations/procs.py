"""Real processes for integration tests: a ``hubbub worker``, a web server; each stopped (and
killed if it will not stop) when its block ends, even when the test failed."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

STOP_WAIT = 20.0  # seconds a process gets to stop on SIGTERM before it is killed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0,
               proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until true; fail after ``timeout`` or as soon as ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def process(args: list[str], folder: Path, log: Path,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` run in ``folder`` with output to ``log``; SIGTERM (then SIGKILL) at the end."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=folder, env=environment, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait, SIGKILL if it hangs; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def hubbub(*args: str) -> list[str]:
    """The ``hubbub`` command with ``args``, as this interpreter runs it."""
    return [sys.executable, "-m", "hubbub", *args]


@contextlib.contextmanager
def imported(folder: Path, name: str) -> Iterator[ModuleType]:
    """Import the app module ``name`` from ``folder`` as the web process or a producer would;
    forgotten (and its hub closed) at the end."""
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(name)
        try:
            yield module
        finally:
            hub = getattr(module, "hub", None)
            if hub is not None:
                hub.close()
    finally:
        sys.path.remove(str(folder))
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            sys.modules.pop(loaded, None)
