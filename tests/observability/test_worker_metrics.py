"""``hubbub worker --metrics-port``: a real worker process, scraped after a known workload."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import hubbub
from hubbub import Hub
from tests.e2e.conftest import Cli, open_app, wait_for

APP = textwrap.dedent('''
    from pathlib import Path
    from hubbub import Hub, Reject, Retry

    hub = Hub()  # $HUBBUB_BROKER, set by the test

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task
    def boom() -> None:
        raise RuntimeError("kaput")

    @hub.task(retries=3)
    def flaky(marker: str) -> str:
        first = not Path(marker).exists()
        Path(marker).write_text("tried")
        if first:
            raise Retry(countdown=0)
        return "ok"

    @hub.task
    def refuse() -> None:
        raise Reject("not for us")
''')


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    (tmp_path / "app.py").write_text(APP)
    c = Cli(tmp_path)
    monkeypatch.setenv("HUBBUB_BROKER", c.url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def app(cli: Cli) -> Iterator[Hub]:
    yield from open_app()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url`` by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metrics_url(cli: Cli, index: int = 0) -> str:
    found: list[str] = []

    def listening() -> bool:
        found[:] = re.findall(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", cli.log(index))
        return bool(found)

    wait_for(listening, what="the worker's metrics server")
    return found[0]


def test_a_scrape_after_a_known_workload_counts_every_outcome(
        cli: Cli, app: Hub, tmp_path: Path) -> None:
    tasks = app.tasks
    done = [tasks["app.add"].delay(i, 1) for i in range(10)]
    failed = [tasks["app.boom"].delay() for _ in range(2)]
    retried = tasks["app.flaky"].delay(str(tmp_path / "flaky.marker"))
    tasks["app.refuse"].delay()  # Reject: a FAILURE, and a dead letter
    app.send_task("app.unknown")  # refused at admission: a dead letter
    worker = cli.start_worker("--pool", "prefork", "-c", "2", "--metrics-port", "0")
    url = metrics_url(cli)
    assert [r.get(timeout=30) for r in done] == list(range(1, 11))
    for r in failed:
        assert r.get(timeout=30, propagate=False) is not None
    assert retried.get(timeout=30) == "ok"

    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    expected = {
        key("hubbub_tasks_total", task="app.add", state="SUCCESS"): 10.0,
        key("hubbub_tasks_total", task="app.boom", state="FAILURE"): 2.0,
        key("hubbub_tasks_total", task="app.refuse", state="FAILURE"): 1.0,
        key("hubbub_tasks_total", task="app.flaky", state="RETRY"): 1.0,
        key("hubbub_tasks_total", task="app.flaky", state="SUCCESS"): 1.0,
        key("hubbub_task_retries_total", task="app.flaky"): 1.0,
        key("hubbub_task_runtime_seconds_count", task="app.add"): 10.0,
        key("hubbub_task_runtime_seconds_count", task="app.boom"): 2.0,
        key("hubbub_task_runtime_seconds_count", task="app.flaky"): 2.0,
        key("hubbub_task_wait_seconds_count", task="app.add"): 10.0,
        key("hubbub_task_wait_seconds_count", task="app.flaky"): 2.0,
        key("hubbub_dead_letters_total", queue="default"): 2.0,  # the unknown task, Reject
        key("hubbub_pool_slots", lane="default", pool="prefork"): 2.0,
    }
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def counted() -> bool:  # the dead letter may settle just after the results
        samples.update(scrape(url))
        return all(samples.get(k) == v for k, v in expected.items())

    try:
        wait_for(counted, what="the counters of the workload")
    except AssertionError:
        raise AssertionError({k: (samples.get(k), v) for k, v in expected.items()
                              if samples.get(k) != v}) from None
    assert not [k for k in samples if k[0] == "hubbub_tasks_total"
                and k not in expected and samples[k]]  # nothing counted twice or wrongly
    # Histograms: every run of app.add took under 10 s; its buckets end at the count.
    assert samples[key("hubbub_task_runtime_seconds_bucket", task="app.add", le="10.0")] == 10.0
    assert samples[key("hubbub_task_runtime_seconds_sum", task="app.add")] < 10.0
    assert samples[key("hubbub_pool_utilisation", lane="default", pool="prefork")] <= 1.0
    wait_for(lambda: scrape(url).get(key("hubbub_queue_depth", queue="default",
                                         state="ready")) == 0.0, what="queue depth read")
    worker.terminate()
    assert worker.wait(20) == 0


def test_the_server_listens_on_loopback_by_default(cli: Cli) -> None:
    cli.start_worker("--pool", "solo", "--metrics-port", "0")
    url = metrics_url(cli)  # the log names 127.0.0.1 (the pattern asks for it)
    assert scrape(url)[("hubbub_pool_slots", (("lane", "default"), ("pool", "solo")))] == 1.0


def test_metrics_without_the_extra_is_one_error_line_naming_it(cli: Cli, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "prometheus_client").mkdir(parents=True)
    (blocked / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('not installed (test)')\n")
    env = {**cli.env, "PYTHONPATH": f"{blocked}:{cli.env.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "hubbub", "worker", "-A", "app:hub",
                           "--metrics-port", "0"], cwd=cli.folder, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: metrics need an extra: pip install hubbub[metrics] (prometheus-client)"]


def test_hubbub_imports_and_runs_without_either_extra(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    for name in ("prometheus_client", "opentelemetry"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    code = textwrap.dedent('''
        import hubbub, hubbub.metrics, hubbub.tracing, hubbub.cli.worker
        from hubbub.testing import drain
        hub = hubbub.Hub("memory://")
        @hub.task
        def add(x, y):
            return x + y
        add.delay(1, 2)
        drain(hub)
        try:
            hubbub.tracing.instrument(hub)
        except hubbub.ConfigurationError as exc:
            print(exc)
    ''')
    source_root = Path(hubbub.__file__).parent.parent  # this checkout of hubbub
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{blocked}:{source_root}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("tracing needs an extra: pip install hubbub[otel] "
                                   "(opentelemetry-api)")
