"""examples/flask_app end to end: the form sends work, a real worker process (prefork) runs
it inside the app context and writes to the app's SQLite database, the page's JSON polls it."""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.integrations.procs import hubbub, process, stop, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_app"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("SHOP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.delenv("HUBBUB_BROKER", raising=False)
    monkeypatch.delenv("HUBBUB_RESULTS", raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import shop  # the example's package

    try:
        yield shop
    finally:
        shop.hubbub.hub.close()
        for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
            del sys.modules[name]


def test_the_form_sends_work_that_a_worker_runs_in_the_app_context(
    shop: ModuleType, tmp_path: Path,
) -> None:
    app = shop.create_app()
    web = app.test_client()
    assert b"<form" in web.get("/").data
    assert web.post("/reports", data={"text": "   "}).status_code == 400

    worker = hubbub("worker", "-A", "shop.worker:hub", "--pool", "prefork", "-c", "2")
    log = tmp_path / "worker.txt"
    with process(worker, EXAMPLE, log) as proc:
        sent = web.post("/reports", data={"text": "the quick brown fox"})
        assert sent.status_code == 302
        match = re.fullmatch(r"/reports/(\w+)", sent.headers["Location"])
        assert match is not None
        task_id = match.group(1)
        page = web.get(sent.headers["Location"]).data.decode()
        assert f"/api/reports/{task_id}" in page  # the page polls this

        def finished() -> bool:
            return bool(web.get(f"/api/reports/{task_id}").json["state"] == "SUCCESS")

        wait_until(finished, "the report is counted", proc=proc, log=log)
        body = web.get(f"/api/reports/{task_id}").json
        assert body["result"]["words"] == 4
        assert stop(proc) == 0, log.read_text()
    with sqlite3.connect(tmp_path / "instance" / "shop.db") as db:
        row = db.execute("SELECT text, words, pid FROM reports WHERE task_id = ?",
                         (task_id,)).fetchone()
    text, words, pid = row
    assert (text, words) == ("the quick brown fox", 4)
    assert pid not in (os.getpid(), proc.pid)  # a prefork child wrote it, in the app context
    assert task_id in web.get("/").data.decode()  # the index lists it
