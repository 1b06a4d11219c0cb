"""bench/report.py, the generator of docs/benchmarks.md, builds its tables from measurements
it is given, without running hubbub's workers or any peer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def page(report: ModuleType, samples: dict, failures: dict | None = None) -> str:
    return str(report.render(
        tables=report.TABLES, samples=samples, failures=failures or {}, runs=3, n=500,
        command="python bench/report.py --runs 3", started="2026-11-30 04:00", ended="04:10",
        machine={"cores": "2", "cpu": "Test CPU", "memory": "24 GiB", "os": "Linux 6",
                 "python": "3.11.7", "redis": "7.0.15", "rabbitmq": "3.10.8"},
        versions={"hubbub": "0.1.0 (commit abc1234)", "celery": "5.4.0"},
        load=((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)), quick=False))


def test_a_row_shows_the_median_the_min_max_and_hubbubs_ratio_over_it(
        report: ModuleType) -> None:
    samples = {("drain-noop", "prefork"): [900.0, 1000.0, 1100.0],
               ("drain-noop", "celery"): [400.0, 500.0, 650.0]}

    text = page(report, samples)

    assert "| hubbub | `hubbub worker --pool prefork -c 2`, a sync task | 1,000 | 900-1,100 | 3 |" \
        in text
    assert "| 500 | 400-650 | 3 | 2.00x (vs prefork) |" in text


def test_a_row_without_measurements_says_so_and_a_failed_run_is_reported(
        report: ModuleType) -> None:
    samples = {("enqueue", "delay"): [600.0, 610.0], ("enqueue", "rq"): [300.0]}
    failures = {("enqueue", "delay"): ["timed out after 300s"],
                ("enqueue", "celery"): ["ConnectionError"]}

    text = page(report, samples, failures)

    assert "| hubbub | `task.delay()` | 605 | 600-610 | 2 of 3 |" in text
    assert "| Celery | `task.delay()` | - | - | 0 of 3 (failed) | |" in text
    assert "| Dramatiq | `actor.send()` | - | - | 0 (not run) | |" in text
    assert "| 300 | 300-300 | 1 | 2.02x (vs delay) |" in text
    assert "Failed runs: Celery (celery): ConnectionError; hubbub (delay): timed out" in text


def test_the_page_states_the_command_the_machine_the_versions_and_the_workload(
        report: ModuleType) -> None:
    text = page(report, {})

    assert "```sh\npython bench/report.py --runs 3\n```" in text
    assert "500 tasks per measurement (5,000 in \"Drain of no-op tasks on Redis\", " in text
    assert "\"Enqueue one by one, from one thread\", " in text
    assert "; RQ and arq drain 500)" in text
    assert "; medians of 3 runs" in text
    assert "2 cores (Test CPU)" in text
    assert "Redis 7.0.15" in text
    assert "hubbub 0.1.0 (commit abc1234), celery 5.4.0." in text
    assert "1.00 2.00 3.00 at the start, 4.00 5.00 6.00 at the end" in text
    for table in report.TABLES:
        assert f"## {table.title}" in text


def test_every_peer_is_compared_with_a_hubbub_row_of_its_table_and_every_driver_exists(
        report: ModuleType) -> None:
    for table in report.TABLES:
        hubbub_rows = {row.key for row in table.rows if row.is_hubbub}
        assert hubbub_rows, table.key
        assert len({row.key for row in table.rows}) == len(table.rows), table.key
        for row in table.rows:
            assert (ROOT / "bench" / "peers" / row.script).is_file(), row.script
            if row.is_hubbub:
                assert row.versus is None
            else:
                assert row.versus in hubbub_rows, (table.key, row.key)
    systems = {row.system for table in report.TABLES for row in table.rows}
    assert {"Celery", "Dramatiq", "Huey", "Taskiq", "arq", "RQ"} <= systems


def test_a_latency_ratio_is_the_rows_median_over_hubbubs_so_above_one_hubbub_did_better(
        report: ModuleType) -> None:
    samples = {("latency-p50", "prefork"): [10.0, 12.0, 14.0],
               ("latency-p50", "celery"): [30.0, 48.0, 60.0]}

    text = page(report, samples)

    assert "| ms (median) | min-max | runs | this ÷ hubbub |" in text
    assert "| 48.0 | 30.0-60.0 | 3 | 4.00x (vs prefork) |" in text


def test_latencies_under_a_millisecond_keep_two_decimals(report: ModuleType) -> None:
    samples = {("latency-p50", "prefork"): [0.26, 0.27, 0.3],
               ("latency-p50", "huey"): [0.33, 0.34, 0.4]}

    text = page(report, samples)

    assert "| 0.27 | 0.26-0.30 | 3 |  |" in text  # 0.27 and 0.34 would both read 0.3
    assert "| 0.34 | 0.33-0.40 | 3 | 1.26x (vs prefork) |" in text
