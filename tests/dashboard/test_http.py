"""Every page and action of the dashboard over HTTP (Starlette's TestClient), on every
broker: what the pages show comes from a real worker that ran real tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hubbub import Hub
from hubbub.testing import BackgroundWorker
from tests.conftest import Broker, make_hub
from tests.dashboard.conftest import add_tasks, csrf_of
from tests.worker.scratch import wait_until


def _post(client: Any, url: str, page: str, **fields: Any) -> Any:
    html = client.get(page).text
    return client.post(url, data={"csrf": csrf_of(html), "back": page, **fields})


async def test_every_page_shows_what_a_worker_did_and_actions_work(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    add_tasks(hub)
    try:
        client = client_for(hub)
        ok = hub.send_task("dash.add", [2, 3])
        bad = hub.send_task("dash.boom", ["hunter2"])
        with BackgroundWorker(hub):
            assert ok.get(timeout=30) == 5
            wait_until(lambda: bad.state == "FAILURE", "the failing task failed")
            wait_until(lambda: "No live worker" not in client.get("/workers").text,
                       "the worker shows")
            workers = client.get("/workers").text
            assert "shut down" in workers
            assert "grow" in workers
            # /metrics: the fleet as Prometheus sees it, behind the same login as the pages
            wait_until(lambda: "hubbub_workers_up 1.0" in client.get("/metrics").text,
                       "the fleet metrics count the worker")
            scraped = client.get("/metrics")
            assert scraped.headers["content-type"].startswith("text/plain")
            assert 'hubbub_queue_depth{queue="default",state="ready"}' in scraped.text

        overview = client.get("/")
        assert overview.status_code == 200
        assert "Throughput" in overview.text
        assert "<svg" in overview.text

        tasks = client.get("/tasks", params={"task": "dash.add"}).text
        failed = client.get("/tasks", params={"state": "FAILURE"}).text
        assert ok.id in tasks
        assert bad.id not in tasks
        assert bad.id in failed
        assert ok.id not in failed
        assert "is not one of" in client.get("/tasks", params={"state": "NOPE"}).text

        detail = client.get(f"/tasks/{ok.id}").text
        assert "SUCCESS" in detail
        assert "<code>5</code>" in detail
        failure = client.get(f"/tasks/{bad.id}").text
        assert "ValueError" in failure
        assert "hunter2" not in failure
        assert "***" in failure

        assert client.get("/queues").status_code == 200
        assert client.get("/dead").status_code == 200
        assert client.get("/schedules").status_code == 200
        assert broker.url.split("://")[0] in client.get("/").text

        # revoke a task that has not run: the store keeps REVOKED, and the page says so
        pending = hub.send_task("dash.add", [1, 1])
        answer = _post(client, f"/tasks/{pending.id}/revoke", f"/tasks/{pending.id}")
        assert answer.status_code == 303
        assert "revoked" in answer.headers["location"]
        assert "REVOKED" in client.get(f"/tasks/{pending.id}").text
        assert pending.state == "REVOKED"

        # purge asks for the queue's name first
        hub.send_task("dash.add", [1, 2])
        assert "default" in client.get("/queues").text
        refused = _post(client, "/queues/purge", "/queues", queue="default", confirm="")
        assert "not+purged" in refused.headers["location"]
        purged = _post(client, "/queues/purge", "/queues", queue="default", confirm="default")
        assert "purged+2" in purged.headers["location"]  # the revoked one and this one
    finally:
        hub.close()


async def test_dead_letters_are_listed_requeued_and_deleted(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    add_tasks(hub)
    try:
        client = client_for(hub)
        first = hub.send_task("dash.unknown", [1], kwargs={"api_token": "s3cret"})
        second = hub.send_task("dash.unknown", [2])
        with BackgroundWorker(hub):
            wait_until(lambda: client.get("/dead").text.count('type="checkbox"') == 2,
                       "both unknown tasks are dead letters")
        page = client.get("/dead").text
        assert first.id in page
        assert "dash.unknown" in page
        assert "s3cret" not in page
        requeued = _post(client, "/dead/requeue", "/dead", ids=[first.id])
        assert "requeued+1" in requeued.headers["location"]
        deleted = _post(client, "/dead/delete", "/dead", ids=[second.id])
        assert "deleted+1" in deleted.headers["location"]
        page = client.get("/dead").text
        assert second.id not in page
        assert first.id not in page
        assert any(s.ready == 1 for s in hub.bridge.run(_stats(hub)))
    finally:
        hub.close()


async def _stats(hub: Hub) -> Any:
    async with hub.open_transport() as transport:
        return await transport.stats()


def test_worker_actions_reach_a_live_worker(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub)
    with BackgroundWorker(sqlite_hub):
        wait_until(lambda: "No live worker" not in client.get("/workers").text,
                   "the worker is listed")
        name = next(iter(sqlite_hub.bridge.run(_workers(sqlite_hub))))
        grown = _post(client, "/workers/control", "/workers", worker=name,
                      command="pool_grow", n="2")
        assert f"pool_grow — {name}: ok" in _note(grown)
        assert '"concurrency":' in _note(grown)
        added = _post(client, "/workers/control", "/workers", worker=name,
                      command="add_queue", queue="extra")
        assert f"add_queue — {name}: ok" in _note(added)
        wait_until(lambda: "extra" in client.get("/workers").text, "the new queue shows")
        bad = _post(client, "/workers/control", "/workers", worker=name,
                    command="pool_grow", n="-1")
        assert "n must be a whole number" in _note(bad)
        unknown = _post(client, "/workers/control", "/workers", worker=name,
                        command="exec", n="1")
        assert "unknown worker action 'exec'" in _note(unknown)
        gone = _post(client, "/workers/control", "/workers", worker="nobody",
                     command="shutdown")
        assert "no reply to shutdown from worker 'nobody'" in _note(gone)


def _note(response: Any) -> str:
    return parse_qs(urlsplit(response.headers["location"]).query)["note"][0]


async def _workers(hub: Hub) -> dict[str, Any]:
    results = hub.open_results()
    assert results is not None
    await results.connect()
    try:
        return await results.workers()
    finally:
        await results.close()


def test_terminate_and_retry_from_the_task_page(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub)
    waiting = sqlite_hub.send_task("dash.add", [1, 1])
    stopped = _post(client, f"/tasks/{waiting.id}/terminate", f"/tasks/{waiting.id}")
    assert _note(stopped) == f"task {waiting.id} terminated"
    assert waiting.state == "REVOKED"

    nothing = _post(client, f"/tasks/{waiting.id}/retry", f"/tasks/{waiting.id}")
    assert "cannot be retried here" in _note(nothing)
    lost = sqlite_hub.send_task("dash.nowhere", [])
    with BackgroundWorker(sqlite_hub):
        wait_until(lambda: lost.id in client.get("/dead").text, "the unknown task died")
    again = _post(client, f"/tasks/{lost.id}/retry", f"/tasks/{lost.id}")
    assert _note(again) == f"task {lost.id} requeued from the dead letters"
    assert lost.id not in client.get("/dead").text


def test_bad_form_bodies_are_refused_in_one_line(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub)
    client.get("/")
    as_json = client.post("/queues/purge", json={"csrf": "x"})
    assert as_json.status_code == 400
    huge = client.post("/queues/purge", data={"csrf": "x" * 70_000})
    assert huge.status_code == 400
    assert huge.text == "a form is at most 64 KiB, url-encoded"
    since = client.get("/tasks", params={"since": "yesterday"}).text
    assert "since &#39;yesterday&#39; is not a time" in since


def test_the_task_search_bounds_by_time(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub)
    with BackgroundWorker(sqlite_hub):
        done = sqlite_hub.send_task("dash.add", [1, 2])
        assert done.get(timeout=30) == 3
    assert done.id in client.get("/tasks", params={"since": "2000-01-01T00:00"}).text
    assert done.id not in client.get("/tasks", params={"until": "2000-01-01T00:00"}).text
    assert done.id not in client.get("/tasks", params={"since": "4000000000"}).text
