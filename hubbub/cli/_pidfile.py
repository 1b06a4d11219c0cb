"""``--pidfile``: one worker per file, refused while another live process holds it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hubbub.errors import ConfigurationError


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
