"""examples/crawler runs end to end: every URL fetched exactly once on each pool.

The example starts its own page server (which counts hits) and its own workers on an
embedded SQLite broker; here it crawls 2,000 URLs instead of 200,000. It runs in a process
group of its own, so that a hang kills the example, its server and its workers together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "crawler" / "run.py"
URLS = 2_000
BOUND = 240.0  # seconds for both pools, including worker starts, on a busy 2-core machine


@pytest.mark.timeout(BOUND + 30)
def test_crawler_fetches_every_url_exactly_once_on_hybrid_and_gevent(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("HUBBUB_BROKER", None)  # the example makes its own broker
    command = [sys.executable, str(EXAMPLE), "--urls", str(URLS), "--processes", "2",
               "--coroutines", "200", "--greenlets", "200", "--json", "--logs", str(tmp_path),
               "--timeout", str(BOUND / 2)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("worker-*.log")}
    assert proc.returncode == 0, f"exit {proc.returncode}\n{err[-3000:]}\n{logs}"

    crawls = {c["pool"]: c for c in map(json.loads, out.splitlines())}
    assert set(crawls) == {"hybrid", "gevent"}, out
    for pool, crawl in crawls.items():
        assert crawl["urls"] == URLS
        assert crawl["served"] == URLS, (pool, crawl, logs)
        assert crawl["missing"] == 0, (pool, crawl, logs)
        assert crawl["duplicated"] == 0, (pool, crawl, logs)
        assert crawl["dead"] == 0, (pool, crawl, logs)
        assert crawl["pages_per_second"] > 0, (pool, crawl)
