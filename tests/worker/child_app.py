"""An app module for process-pool tests: written to a scratch folder that child processes can
import, the way ``hubbub worker -A`` finds a user's app."""

from __future__ import annotations

import textwrap
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

from tests.worker.scratch import scratch_app

SOURCE = textwrap.dedent('''
    import asyncio, ctypes, os, resource, sys, time
    from pathlib import Path
    from hubbub import Hub, SoftTimeLimitExceeded

    hub = Hub({url!r}, lease=5)
    kept = []  # memory a task keeps, to make its child grow

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task
    def pid() -> int:
        return os.getpid()

    @hub.task
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @hub.task
    async def async_pid() -> int:
        await asyncio.sleep(0.01)
        return os.getpid()

    @hub.task
    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    @hub.task
    def segfault() -> None:
        ctypes.string_at(0)

    @hub.task
    def exit_now(code: int) -> None:
        os._exit(code)

    @hub.task
    def escape() -> None:
        raise KeyboardInterrupt("escapes the task runner")

    @hub.task
    def hog(headroom_mib: int) -> None:
        # Only this child's address space is limited, so only this child runs out.
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        used = pages * os.sysconf("SC_PAGE_SIZE")
        limit = used + headroom_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        chunks = []
        while True:
            chunks.append(b"x" * 2**23)

    @hub.task
    def grow(mib: int) -> int:
        kept.append(b"x" * (mib * 2**20))
        return os.getpid()

    @hub.task(timeout=0.5)
    def forever(marker: str) -> None:
        Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(0.01)

    @hub.task(soft_timeout=0.2, timeout=10)
    def soft_in_c_call() -> str:
        try:
            time.sleep(8)  # the alarm interrupts the C call at once
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not interrupted"

    @hub.task
    def nap(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    @hub.task
    def nap_span(seconds: float) -> tuple[int, float, float]:
        """Its pid, and when it began and ended its nap (the system's monotonic clock)."""
        began = time.monotonic()
        time.sleep(seconds)
        return os.getpid(), began, time.monotonic()

    @hub.task
    async def async_nap(seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()

    @hub.task(timeout=0.5)
    async def hogs_the_loop() -> None:
        time.sleep(30)  # blocks its child's loop: only killing the child stops it

    @hub.task(timeout=0.5)
    async def overslept() -> None:
        await asyncio.sleep(30)  # cancelled at the limit, inside its child

    @hub.task
    def wait_for_file(marker: str, seconds: float) -> str:
        Path(marker + ".pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + seconds
        while not Path(marker + ".go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "done"

    # -- containment: whatever a task raises or returns is an outcome ----------------------

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    class Unspeakable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def raise_it(what: str) -> None:
        if what == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if what == "SystemExit":
            sys.exit(3)
        if what == "GeneratorExit":
            raise GeneratorExit("from a task")
        if what == "CancelledError":
            raise asyncio.CancelledError("raised by the task itself")
        if what == "Unprintable":
            raise Unprintable()
        if what == "Unspeakable":
            raise Unspeakable()
        if what == "surrogate":
            raise ValueError("bad byte \\udcff here")
        if what == "huge":
            raise ValueError("x" * 2**20)
        raise AssertionError(what)

    @hub.task
    def raises(what: str) -> None:
        raise_it(what)

    @hub.task
    async def async_raises(what: str) -> None:
        await asyncio.sleep(0)
        raise_it(what)

    def unencodable(kind: str) -> object:
        if kind == "deep":
            value: list = []
            for _ in range(985):
                value = [value]
            return value
        if kind == "set":
            return set([1, 2])
        if kind == "object":
            return object()
        if kind == "nan":
            return float("nan")
        if kind == "inf":
            return [1.0, dict(x=-float("inf"))]
        raise AssertionError(kind)

    @hub.task
    def returns(kind: str) -> object:
        return unencodable(kind)

    @hub.task
    async def async_returns(kind: str) -> object:
        await asyncio.sleep(0)
        return unencodable(kind)

    @hub.task
    def fork_sleeper(busy: float) -> int:
        pid = os.fork()
        if pid == 0:  # the grandchild
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        time.sleep(busy)
        return pid

    @hub.task
    def fork_from_c() -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        pid = libc.fork()  # no Python at-fork hooks run: the grandchild keeps every fd
        if pid == 0:
            libc.sleep(30)
            libc._exit(0)
        return pid

    @hub.task
    def fork_and_return(marker: str) -> str:
        pid = os.fork()
        if pid == 0:
            Path(marker).write_text(str(os.getpid()))
            return "grandchild"
        return "child"

    @hub.task
    async def fork_and_return_async(marker: str) -> str:
        pid = os.fork()
        if pid == 0:
            Path(marker).write_text(str(os.getpid()))
            return "grandchild"
        return "child"

    @hub.task
    def balloon(up_to_mib: int) -> int:
        chunks = []
        for _ in range(up_to_mib // 10):
            chunks.append(b"x" * (10 * 2**20))  # written, so resident
            time.sleep(0.05)
        return len(chunks)
''')


def child_app(folder: Path) -> AbstractContextManager[ModuleType]:
    """Write the app into ``folder``, put it on ``sys.path`` and load it as ``-A`` would."""
    return scratch_app(folder, SOURCE, "childapp")
