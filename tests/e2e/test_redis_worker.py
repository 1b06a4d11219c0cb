"""The real CLI worker on Redis: two live workers on one queue never run the same message
twice. Runs against the shared Redis at 127.0.0.1:6379 under a key prefix of its own, deleted
afterwards; it kills only the workers it started. (Kill -9 mid-task, on every networked
broker, is in test_kill_9_per_broker.py.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from tests.e2e.conftest import APP, EMPTY, Cli, open_app, queue_stats, start_online, wait_for

pytestmark = pytest.mark.parametrize("broker_url", ["redis"], indirect=True)

LEDGER_TASK = '''

@hub.task
def record(ledger: str, n: int) -> None:
    time.sleep(0.005)  # long enough for both workers to hold work at the same time
    with open(ledger, "a") as f:  # one short O_APPEND write per line: lines never interleave
        f.write(f"{n} {os.getpid()}\\n")
'''


@pytest.fixture
def app(broker_url: str, tmp_path: Path) -> Iterator[Hub]:
    (tmp_path / "app.py").write_text(APP + LEDGER_TASK)
    yield from open_app()


def test_two_live_workers_never_run_one_message_twice(cli: Cli, app: Hub, tmp_path: Path
                                                     ) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    workers = [start_online(cli, "--pool", "threads", "-c", "4") for _ in range(2)]
    app.tasks["app.record"].delay_many([(str(ledger), n) for n in range(300)])
    wait_for(lambda: len(ledger.read_text().splitlines()) >= 300, timeout=30,
             what="300 tasks run")
    # Once nothing is ready or leased, every message is acked and none can run again.
    wait_for(lambda: queue_stats(app) == EMPTY, what="every message acked")
    assert all(w.poll() is None for w in workers)  # both stayed alive throughout
    rows = [line.split() for line in ledger.read_text().splitlines()]
    runs = Counter(int(n) for n, _ in rows)
    assert sorted(runs) == list(range(300))
    assert [n for n, times in runs.items() if times > 1] == []
    assert {pid for _, pid in rows} == {str(w.pid) for w in workers}  # both took a share
