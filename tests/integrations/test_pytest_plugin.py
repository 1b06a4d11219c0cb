"""The pytest plugin as a user runs it: ``pytest -p hubbub.testing`` in a project of their
own, with the app named in its ini file, in a separate pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = '''
from pathlib import Path
from hubbub import Hub

hub = Hub(lease=5)   # the fixtures point it at a temporary SQLite file per test

@hub.task
def add(x, y):
    return x + y

@hub.task
def add_later(x):
    """Sends another task from wherever it runs (a prefork child, in one test)."""
    return add.apply_async((x, 1), countdown=3600).id

@hub.task(retries=3, retry_backoff=3600, retry_jitter=False)
def flaky(counter):
    path = Path(counter)
    tries = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(tries))
    if tries < 3:
        raise ConnectionError("not yet")
    return tries
'''

TESTS = '''
import time
import shop_tasks

def test_a_task_runs_on_the_worker(hubbub_worker):
    assert shop_tasks.add.delay(2, 3).get(timeout=20) == 5

def test_a_countdown_is_fast_forwarded(hubbub_worker):
    later = shop_tasks.add.apply_async((7, 1), countdown=3600)
    started = time.monotonic()
    hubbub_worker.drain(timeout=20)
    assert later.get(timeout=1) == 8
    assert time.monotonic() - started < 20

def test_retry_backoff_is_fast_forwarded(hubbub_worker, tmp_path):
    result = shop_tasks.flaky.delay(str(tmp_path / "tries"))
    hubbub_worker.drain(timeout=20)
    assert result.get(timeout=1) == 3

def test_each_test_has_its_own_broker_file(hubbub_hub, tmp_path):
    assert hubbub_hub is shop_tasks.hub
    assert str(tmp_path) in hubbub_hub.settings.broker
    assert hubbub_hub.settings.results == hubbub_hub.settings.broker

def test_fast_forward_says_how_many_were_delayed(hubbub_worker):
    shop_tasks.add.apply_async((1, 1), countdown=3600)
    shop_tasks.add.apply_async((2, 2), countdown=7200)
    assert hubbub_worker.fast_forward() == 2
    hubbub_worker.drain(timeout=20)
'''

CHILD_TESTS = '''
import os
import shop_tasks

def test_a_task_runs_in_a_prefork_child(hubbub_worker):
    assert shop_tasks.add.delay(20, 22).get(timeout=30) == 42

def test_what_a_child_sends_reaches_the_tests_broker(hubbub_worker, hubbub_hub):
    sent_id = shop_tasks.add_later.delay(41).get(timeout=30)
    hubbub_worker.drain(timeout=30)
    from hubbub import Result
    assert Result(hubbub_hub, sent_id).get(timeout=5) == 42
'''

FRESH_TESTS = '''
def test_without_an_app_the_hub_is_fresh(hubbub_hub, hubbub_worker):
    @hubbub_hub.task
    def double(x):
        return 2 * x
    assert double.delay(21).get(timeout=20) == 42
'''


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # As a user runs it: not as an xdist worker of this run (PYTEST_XDIST_WORKER would make a
    # pytest-benchmark on the machine disable itself with a warning, an error here).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hubbub.testing", "-p", "no:cacheprovider",
         "-q", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=240)


def project(folder: Path, tests: str, ini: str) -> Path:
    (folder / "shop_tasks.py").write_text(APP)
    (folder / "test_shop.py").write_text(tests)
    (folder / "pytest.ini").write_text(textwrap.dedent(ini))
    return folder


def test_the_plugins_fixtures_run_a_users_tasks_and_skip_delays(tmp_path: Path) -> None:
    folder = project(tmp_path, TESTS, """
        [pytest]
        hubbub_app = shop_tasks:hub
        filterwarnings = error
    """)
    run = run_pytest(folder)
    assert "5 passed" in run.stdout, run.stdout + run.stderr
    assert not (folder / "hubbub.db").exists()  # the app's own broker file was never used


@pytest.mark.parametrize("pool", ["prefork"])
def test_the_worker_fixture_takes_a_process_pool(tmp_path: Path, pool: str) -> None:
    folder = project(tmp_path, CHILD_TESTS, f"""
        [pytest]
        hubbub_app = shop_tasks:hub
        hubbub_pool = {pool}
    """)
    run = run_pytest(folder)
    assert "2 passed" in run.stdout, run.stdout + run.stderr
    assert not (folder / "hubbub.db").exists()  # the app's own broker file was never used


def test_without_an_app_the_fixtures_give_a_fresh_hub(tmp_path: Path) -> None:
    folder = project(tmp_path, FRESH_TESTS, """
        [pytest]
    """)
    run = run_pytest(folder)
    assert "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_failing_test_fails_and_the_worker_still_stops(tmp_path: Path) -> None:
    folder = project(tmp_path, '''
import shop_tasks

def test_wrong(hubbub_worker):
    assert shop_tasks.add.delay(1, 1).get(timeout=20) == 3
''', "[pytest]\nhubbub_app = shop_tasks:hub\n")
    run = run_pytest(folder)
    assert run.returncode == 1
    assert "1 failed" in run.stdout, run.stdout + run.stderr
