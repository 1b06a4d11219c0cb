"""The canvas is typed where the task is known: mypy checks ``.si`` arguments like
``delay``'s, and a signature's, chain's and chord's Result carries the last task's type."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = textwrap.dedent('''
    from hubbub import GroupResult, Hub, Result, chord, group

    hub = Hub("memory://typing")

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task
    def name(x: int) -> str:
        return str(x)

    one: Result[int] = add.si(1, 2).delay()
    piped: Result[str] = (add.s(1, 2) | name.s()).delay()
    body: Result[str] = chord([add.s(1, 1)], name.s()).delay()
    many: GroupResult = group(add.s(1, 1), add.s(2, 2)).delay()
    add.si(1, "x")  # line 18: wrong type
    add.si(1)  # line 19: missing argument
    wrong: Result[int] = (add.s(1, 2) | name.s()).delay()  # line 20: the chain gives a str
''')


@pytest.mark.timeout(120)
def test_mypy_checks_immutable_signatures_and_canvas_result_types(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "snippet.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=110,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [18, 19, 20], done.stdout
