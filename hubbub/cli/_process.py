"""What a long-running command (``hubbub worker``, ``hubbub beat``) shares for running as a
service: ``--log-format``, ``--logfile`` and ``--pidfile`` (one process per file, refused
while another live process holds it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click

from hubbub.cli._common import quiet_drivers
from hubbub.errors import ConfigurationError
from hubbub.logs import FORMATS, configure

F = TypeVar("F", bound=Callable[..., object])


def service_options(fn: F) -> F:
    """The ``--log-format``, ``--logfile`` and ``--pidfile`` options of a command."""
    for option in reversed((
        click.option("--log-format", type=click.Choice(FORMATS), default="text",
                     show_default=True,
                     help="Log lines as text, or as JSON objects (one per line) with task_id "
                          "and task_name for records logged inside a task."),
        click.option("--logfile", default=None, metavar="PATH",
                     help="Append logs (child processes' too) to this file instead of "
                          "stderr; reopened when logrotate moves it."),
        click.option("--pidfile", default=None, metavar="PATH",
                     help="Write the process id here; refuse to start while a live process "
                          "holds it; removed on exit."),
    )):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def as_service(loglevel: str, log_format: str, logfile: str | None,
               pidfile: str | None) -> Iterator[None]:
    """Configure logging and hold the pidfile for the block.

    Raises:
        ConfigurationError: a log file or pidfile that cannot be written, or a pidfile held
            by a live process.
    """
    configure(loglevel, log_format, logfile)
    quiet_drivers(loglevel)
    held = Pidfile(pidfile) if pidfile else None
    if held is not None:
        held.acquire()
    try:
        yield
    finally:
        if held is not None:
            held.release()


class Pidfile:
    """Holds ``path`` for this process: created on ``acquire``, removed on ``release``.

    A file naming a live process refuses the start; one naming a dead process (left by a
    kill -9 or a crash) is taken over.

    Args:
        path: where the process id is written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pid = os.getpid()

    def acquire(self) -> None:
        """Write this process's id to the file.

        Raises:
            ConfigurationError: a live process holds the file, or it cannot be written.
        """
        for _ in range(3):  # a stale file removed, or lost a race with another starter
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if holder is not None and _alive(holder):
                    raise ConfigurationError(
                        f"pidfile {self.path} is held by running process {holder}: stop that "
                        "worker first, or give this one another --pidfile") from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
                continue
            except OSError as exc:
                raise ConfigurationError(f"cannot create pidfile {self.path}: {exc.strerror}; "
                                         "check the path and its folder's permissions") from None
            with os.fdopen(fd, "w") as file:
                file.write(f"{self.pid}\n")
            return
        raise ConfigurationError(f"pidfile {self.path} keeps reappearing: another worker is "
                                 "starting with it; give this one another --pidfile")

    def release(self) -> None:
        """Remove the file if it still names this process."""
        if _holder(self.path) == self.pid:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
