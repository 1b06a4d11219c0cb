"""docs/tutorial.md runs as written: every file is written, every ``$`` command is run, in
order, in an empty folder, and the output shown under a command is checked.

- A ``python`` block must start with ``# file: NAME``; it is written to NAME (a later block
  with the same name replaces the file, as the reader would edit it).
- A ``console`` block holds ``$ command`` lines, each followed by the output expected from
  it: each expected line must match a line of the output, in order (``...`` matches any
  text). ``hubbub worker`` and ``hubbub beat`` run in the background, as in a second
  terminal, until the next one replaces them or the page ends; they are always stopped,
  even when the test fails.
- A ``sh`` block holds commands that need servers the page does not start: each ``hubbub``
  line in it is checked against the command line's options (run with ``--help`` appended,
  which exits 0 only when every option it was given exists).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BACKGROUND = ("worker", "beat")
COMMAND_TIMEOUT = 60.0


@dataclass
class Step:
    kind: str  # "file", "run" or "check"
    text: str  # the file's name, or the command
    body: str = ""  # the file's content
    expected: list[str] = field(default_factory=list)


def steps(page: str) -> Iterator[Step]:
    for match in FENCE.finditer(page):
        lang, body = match.group(1), match.group(2)
        line = page.count("\n", 0, match.start()) + 1
        if lang == "python":
            first = body.split("\n", 1)[0]
            marker = re.fullmatch(r"# file: (\S+)", first.strip())
            assert marker, f"tutorial.md:{line}: a python block starts with '# file: NAME'"
            yield Step("file", marker.group(1), body)
        elif lang == "console":
            run: Step | None = None
            for text in body.splitlines():
                if text.startswith("$ "):
                    if run:
                        yield run
                    run = Step("run", text[2:])
                elif text.strip():
                    assert run, f"tutorial.md:{line}: output before any '$ ' command"
                    run.expected.append(text)
            assert run, f"tutorial.md:{line}: a console block without a '$ ' command"
            yield run
        elif lang == "sh":
            for text in body.splitlines():
                if text.startswith("hubbub "):
                    yield Step("check", text.split("  #", 1)[0].strip())
        else:
            raise AssertionError(f"tutorial.md:{line}: unexpected block language {lang!r}")


def argv_and_env(command: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    words = shlex.split(command)
    env = dict(env)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[0] == "hubbub":
        words[:1] = [sys.executable, "-m", "hubbub"]  # this checkout's, not an installed one
    elif words[0] == "python":
        words[0] = sys.executable
    return words, env


def matches(expected: list[str], output: str) -> bool:
    lines = iter(output.splitlines())
    for want in expected:
        pattern = re.compile(".*".join(map(re.escape, want.split("..."))))
        if not any(pattern.fullmatch(line.rstrip()) for line in lines):
            return False
    return True


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_page_has_files_commands_and_checks() -> None:
    kinds = [s.kind for s in steps(PAGE.read_text())]
    assert kinds.count("file") >= 5
    assert kinds.count("run") >= 6
    assert "check" in kinds


@pytest.mark.timeout(300)
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HUBBUB_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "160"  # a terminal wide enough that tables do not wrap their cells
    background: list[subprocess.Popen[bytes]] = []
    try:
        for n, step in enumerate(steps(PAGE.read_text())):
            if step.kind == "file":
                (tmp_path / step.text).write_text(step.body)
                continue
            argv, step_env = argv_and_env(step.text, env)
            if step.kind == "check":
                done = subprocess.run([*argv, "--help"], cwd=tmp_path, env=step_env,
                                      capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
                assert done.returncode == 0, f"{step.text}\n{done.stderr}"
            elif argv[3:4] and argv[3] in BACKGROUND:
                for proc in background:
                    stop(proc)  # Ctrl-C in the second terminal
                with (tmp_path / f"background-{n}.log").open("wb") as log:
                    running = subprocess.Popen(argv, cwd=tmp_path, env=step_env, stdout=log,
                                               stderr=log, start_new_session=True)
                background.append(running)
            else:
                done = subprocess.run(argv, cwd=tmp_path, env=step_env, capture_output=True,
                                      text=True, timeout=COMMAND_TIMEOUT)
                logs = "".join(p.read_text() for p in tmp_path.glob("background-*.log"))
                assert done.returncode == 0, (
                    f"$ {step.text}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}\n"
                    f"worker logs:\n{logs[-3000:]}")
                assert matches(step.expected, done.stdout), (
                    f"$ {step.text}\nexpected:\n" + "\n".join(step.expected)
                    + f"\ngot:\n{done.stdout}")
        assert background, "the page starts no worker"
        assert background[-1].poll() is None, f"{background[-1].args} exited early"
    finally:
        for proc in background:
            stop(proc)
