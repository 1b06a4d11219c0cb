"""The public API is typed: mypy checks a task's arguments and its result's type."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = textwrap.dedent('''
    from hubbub import Hub, Result

    hub = Hub("memory://typing")

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(queue="q", retries=2)
    async def fetch(url: str) -> bytes:
        return b""

    ok: Result[int] = add.delay(1, 2)
    value: int = ok.get(timeout=1)
    fetched: Result[bytes] = fetch.delay("u")
    add.delay(1, "x")  # line 17: wrong type
    add.delay(1)  # line 18: missing argument
    wrong: str = add.delay(1, 2).get()  # line 19: Result[int] gives an int
''')


@pytest.mark.timeout(120)
def test_mypy_checks_delay_arguments_and_result_types(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "snippet.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=110,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [17, 18, 19], done.stdout
