"""Task fields on log records, on every pool, and the worker's --log-format json, --logfile
and --pidfile, with the real ``hubbub worker`` command."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from hubbub import Hub, get_task_logger
from hubbub.cli._process import Pidfile
from hubbub.errors import ConfigurationError
from hubbub.logs import JsonFormatter, TaskFilter
from tests.integrations.procs import hubbub, imported, process, stop, wait_until

APP = '''
import logging
from hubbub import Hub, get_task_logger

hub = Hub("sqlite:///{db}", lease=5)
log = get_task_logger("app.tasks")
plain = logging.getLogger("app.plain")

@hub.task
def shout(word):
    log.warning("shouting %s", word)
    plain.warning("plainly %s", word)
    return word.upper()

@hub.task
async def shout_async(word):
    log.warning("shouting %s", word)
    return word.upper()
'''


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_records_logged_inside_a_task_carry_its_id_and_name(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'h.db'}")
    log = get_task_logger("tests.tasklog")
    capture = Capture()
    log.addHandler(capture)
    try:
        @hub.task
        def work() -> None:
            log.warning("inside")

        result = work.apply()
        log.warning("outside")
    finally:
        log.removeHandler(capture)
        hub.close()
    inside, outside = capture.records
    assert (inside.task_id, inside.task_name) == (result.id, work.name)  # type: ignore[attr-defined]
    assert outside.task_id is None  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(inside))
    assert line["task_id"] == result.id
    assert line["message"] == "inside"
    assert line["level"] == "WARNING"
    assert TaskFilter().filter(outside)


@pytest.mark.parametrize("pool", ["solo", "threads", "async", "prefork", "hybrid", "gevent"])
def test_worker_writes_json_lines_with_task_fields_to_its_logfile(tmp_path: Path,
                                                                  pool: str) -> None:
    (tmp_path / "logapp.py").write_text(APP.format(db=tmp_path / "broker.db"))
    logfile, pidfile = tmp_path / "worker.log", tmp_path / "worker.pid"
    args = hubbub("worker", "-A", "logapp:hub", "--pool", pool, "-c", "1",
                  "--log-format", "json", "--logfile", str(logfile), "--pidfile", str(pidfile))
    with process(args, tmp_path, tmp_path / "out.txt") as proc:
        wait_until(pidfile.exists, "pidfile written", proc=proc, log=tmp_path / "out.txt")
        assert int(pidfile.read_text()) == proc.pid
        with imported(tmp_path, "logapp") as logapp:
            sent = [logapp.shout.delay(f"w{i}") for i in range(3)]
            sent.append(logapp.shout_async.delay("coro"))
            assert [r.get(timeout=30) for r in sent] == ["W0", "W1", "W2", "CORO"]
        assert stop(proc) == 0
    assert not pidfile.exists()  # removed on exit
    lines = [json.loads(line) for line in logfile.read_text().splitlines()]
    by_task = {line["task_id"]: line for line in lines
               if line["logger"] == "app.tasks" and line["task_id"]}
    for result in sent:
        assert by_task[result.id]["task_name"] == result.task
        assert by_task[result.id]["message"].startswith("shouting")
    plain = [line for line in lines if line["logger"] == "app.plain"]
    # A plain logger's records get the fields too: the filter sits on the worker's handler.
    assert {line["task_id"] for line in plain} == {r.id for r in sent[:3]}
    assert any("online" in line["message"] for line in lines)  # the worker's own lines too
    # The worker's lines about a task carry its fields too (written outside the task).
    settled = {line["task_id"] for line in lines
               if line["logger"] == "hubbub.worker" and "succeeded" in line["message"]}
    assert settled == {r.id for r in sent}
    pids = {line["process"] for line in by_task.values()}
    assert (pids == {proc.pid}) == (pool in ("solo", "threads", "async"))


def test_a_pidfile_held_by_a_live_worker_refuses_a_second_one(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP.format(db=tmp_path / "broker.db"))
    pidfile = tmp_path / "worker.pid"
    first = hubbub("worker", "-A", "logapp:hub", "--pool", "solo", "--pidfile", str(pidfile))
    with process(first, tmp_path, tmp_path / "first.txt") as proc:
        wait_until(pidfile.exists, "pidfile written", proc=proc, log=tmp_path / "first.txt")
        second = subprocess.run(hubbub("worker", "-A", "logapp:hub", "--pool", "solo",
                                       "--pidfile", str(pidfile)),
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"pidfile {pidfile} is held by running process {proc.pid}" in second.stderr
        assert int(pidfile.read_text()) == proc.pid  # untouched
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert not pidfile.exists()


def test_a_stale_pidfile_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "w.pid"
    path.write_text(f"{dead.pid}\n")
    held = Pidfile(path)
    held.acquire()
    assert int(path.read_text()) == os.getpid()
    with pytest.raises(ConfigurationError, match="held by running process"):
        Pidfile(path).acquire()  # this very process holds it now
    held.release()
    assert not path.exists()


def test_a_bad_log_format_or_logfile_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP.format(db=tmp_path / "broker.db"))
    bad = subprocess.run(hubbub("worker", "-A", "logapp:hub", "--logfile",
                                str(tmp_path / "missing" / "w.log")),
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "error: cannot open log file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_text_lines_name_the_task_they_were_logged_in(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP.format(db=tmp_path / "broker.db"))
    logfile = tmp_path / "worker.log"
    args = hubbub("worker", "-A", "logapp:hub", "--pool", "prefork", "-c", "1",
                  "--logfile", str(logfile))
    with process(args, tmp_path, tmp_path / "out.txt") as proc:
        with imported(tmp_path, "logapp") as logapp:
            result = logapp.shout.delay("hey")
            assert result.get(timeout=30) == "HEY"
        assert stop(proc) == 0
    text = logfile.read_text()
    label = f"{result.task}[{result.id}]"
    # In the prefork child (which names its pid), a plain logger's line inside the task:
    assert re.search(rf"WARNING app\.plain\[\d+\] {re.escape(label)}: plainly hey$", text, re.M)
    # and the worker's own line about the task:
    assert f"hubbub.worker {label}: task {label} succeeded" in text


BEAT_APP = '''
from hubbub import Hub

hub = Hub("sqlite:///{db}")

@hub.periodic(every=0.5)
def tick():
    return "tick"
'''


def test_beat_takes_the_same_service_options(tmp_path: Path) -> None:
    (tmp_path / "beatapp.py").write_text(BEAT_APP.format(db=tmp_path / "broker.db"))
    logfile, pidfile = tmp_path / "beat.log", tmp_path / "beat.pid"
    args = hubbub("beat", "-A", "beatapp:hub", "--log-format", "json", "--logfile",
                  str(logfile), "--pidfile", str(pidfile))
    with process(args, tmp_path, tmp_path / "out.txt") as proc:
        wait_until(pidfile.exists, "pidfile written", proc=proc, log=tmp_path / "out.txt")
        assert int(pidfile.read_text()) == proc.pid

        def announced() -> bool:
            return logfile.exists() and "beat for beatapp:hub" in logfile.read_text()

        wait_until(announced, "the beat logs as JSON", proc=proc, log=tmp_path / "out.txt")
        assert stop(proc) == 0
    assert not pidfile.exists()
    lines = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert any(line["logger"] == "hubbub.beat" for line in lines)
