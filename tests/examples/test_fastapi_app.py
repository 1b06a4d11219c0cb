"""examples/fastapi_app end to end: uvicorn serves the API, a real worker (async pool) runs
what its async endpoint sent, the API reports the results; both stop cleanly."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.integrations.procs import free_port, hubbub, process, stop, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"


def test_the_api_sends_work_that_a_worker_runs(tmp_path: Path) -> None:
    env = {"HUBBUB_BROKER": f"sqlite:///{tmp_path / 'broker.db'}"}
    port = free_port()
    server = [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1",
              "--port", str(port)]
    api_log, worker_log = tmp_path / "api.txt", tmp_path / "worker.txt"
    with process(server, EXAMPLE, api_log, env) as api, httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10) as web:

        def up() -> bool:
            try:
                return web.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, "the API answers", proc=api, log=api_log)
        assert web.post("/jobs", json={"text": ""}).status_code == 422
        texts = ["a b a", "one two three four", "x"]
        sent = [web.post("/jobs", json={"text": text}) for text in texts]
        assert [r.status_code for r in sent] == [202] * 3
        ids = [r.json()["id"] for r in sent]
        assert web.get(f"/jobs/{ids[0]}").json()["state"] == "PENDING"  # no worker yet

        worker = hubbub("worker", "-A", "tasks:hub", "--pool", "async")
        with process(worker, EXAMPLE, worker_log, env) as proc:
            def done() -> bool:
                return all(web.get(f"/jobs/{i}").json()["state"] == "SUCCESS" for i in ids)

            wait_until(done, "the jobs finish", proc=proc, log=worker_log)
            assert stop(proc) == 0, worker_log.read_text()
        results = [web.get(f"/jobs/{i}").json()["result"] for i in ids]
        assert results == [{"words": 3, "most_common": "a"},
                           {"words": 4, "most_common": "one"},
                           {"words": 1, "most_common": "x"}]
        # uvicorn shuts down gracefully, then re-raises SIGTERM on itself (recent versions).
        assert stop(api) in (0, -15), api_log.read_text()
    assert "Application shutdown complete" in api_log.read_text()  # the lifespan closed
    assert not (EXAMPLE / "hubbub.db").exists()  # everything went to the test's broker
