"""Every Python block of docs/tasks.md runs, so the page cannot drift from the code.

A block whose first line is ``# file: NAME.py`` is written into the scratch folder of every
example (the app the examples import); one whose first line is ``# example: NAME`` is run as
a script in a fresh interpreter, in its own scratch folder, with ``HUBBUB_BROKER`` pointing to
an SQLite file there. An example fails the test by exiting non-zero: an exception, or one of
its own ``assert`` lines. Every Python block must carry one of the two markers, so a block
cannot silently go unrun. Shell blocks are command references and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tasks.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"#\s*(example|file):\s*(\S+)\s*$")
RUN_TIMEOUT = 45.0  # below the per-test timeout, so a hang reports the example's output


@dataclass(frozen=True)
class Block:
    kind: str  # "example" or "file"
    name: str
    code: str
    line: int  # where the block starts on the page, for messages


def blocks(text: str) -> list[Block]:
    found = []
    for match in BLOCK.finditer(text):
        code = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        first = code.split("\n", 1)[0]
        marker = MARKER.fullmatch(first.strip())
        if marker is None:
            raise AssertionError(f"docs/tasks.md:{line}: a python block must start with "
                                 f"'# example: NAME' or '# file: NAME.py', not {first!r}")
        found.append(Block(marker.group(1), marker.group(2), code, line))
    return found


PAGE_BLOCKS = blocks(PAGE.read_text())
FILES = [b for b in PAGE_BLOCKS if b.kind == "file"]
EXAMPLES = [b for b in PAGE_BLOCKS if b.kind == "example"]


def test_every_python_block_is_marked_and_named_once() -> None:
    names = [b.name for b in PAGE_BLOCKS]
    assert EXAMPLES, "docs/tasks.md has no runnable examples"
    assert len(names) == len(set(names)), f"duplicate block names: {names}"
    assert all(b.name.endswith(".py") for b in FILES), [b.name for b in FILES]


def environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env["HUBBUB_BROKER"] = f"sqlite:///{folder / 'broker.db'}"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("example", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_example_on_the_page_runs(example: Block, tmp_path: Path) -> None:
    for file in FILES:
        (tmp_path / file.name).write_text(file.code)
    script = tmp_path / f"example_{example.name.replace('-', '_')}.py"
    script.write_text(example.code)
    try:
        done = subprocess.run([sys.executable, script.name], cwd=tmp_path,
                              env=environment(tmp_path), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"docs/tasks.md:{example.line}: example {example.name!r} ran past "
                    f"{RUN_TIMEOUT}s\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    assert done.returncode == 0, (
        f"docs/tasks.md:{example.line}: example {example.name!r} failed\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
