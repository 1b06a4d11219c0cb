"""The task page's history details, from real workers on every broker: the arguments
(masked, cut), the workflow links, each attempt, a FAILURE sent again as a new task, and
what the dashboard says when history is off."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hubbub import Hub, Result, chord
from hubbub.results.history import MAX_ARGS
from hubbub.testing import BackgroundWorker
from hubbub.worker.history import MASK, preview
from tests.conftest import Broker, make_hub
from tests.dashboard.conftest import csrf_of
from tests.worker.scratch import wait_until


def _tasks(hub: Hub) -> None:
    @hub.task(name="page.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @hub.task(name="page.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @hub.task(name="page.flaky", retries=2, retry_backoff=0.1, retry_backoff_max=0.2)
    def flaky(x: int, label: str = "") -> None:
        raise ValueError(f"flaky {x} {label}")

    @hub.task(name="page.login")
    def login(user: str, password: str, options: dict[str, Any]) -> str:
        return user


def _post(client: Any, url: str, page: str) -> Any:
    html = client.get(page).text
    return client.post(url, data={"csrf": csrf_of(html), "back": page})


# -- the preview (pure) ---------------------------------------------------------------------


def test_preview_masks_secret_looking_keys_and_url_passwords_and_is_then_not_exact() -> None:
    text, exact = preview(["redis://u:hunter2@db/0"], {"api_key": "k1", "nested": {
        "Password": "p1", "fine": 1}, "opts": [{"auth_token": "t1"}]})
    for secret in ("hunter2", "k1", "p1", "t1"):
        assert secret not in text
    assert text.count(MASK) == 4
    assert '"fine":1' in text.replace(" ", "")
    assert exact is False


def test_preview_is_exact_only_for_plain_json_arguments_that_fit() -> None:
    assert preview([1, "a", [2.5, None]], {"b": True}) == (
        '{"args":[1,"a",[2.5,null]],"kwargs":{"b":true}}', True)
    big, exact = preview(["x" * 5000], {})
    assert len(big) <= MAX_ARGS
    assert "cut" in big
    assert exact is False
    assert preview([object()], {})[1] is False  # not JSON: shown as repr, never resent
    long, _ = preview(["redis://u:s3cr3t@db/0", "x" * 100_000], {})
    assert "s3cr3t" not in long
    assert len(long) <= MAX_ARGS


def test_preview_masks_a_positional_argument_by_its_parameters_name() -> None:
    text, exact = preview(["ann", "hunter2"], {}, ("user", "password"))
    assert "hunter2" not in text
    assert "ann" in text
    assert exact is False


# -- the task page, from a real worker ------------------------------------------------------


async def test_task_page_shows_arguments_masked_and_each_attempt(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    _tasks(hub)
    try:
        client = client_for(hub)
        secret = hub.send_task("page.login", ["ann", "hunter2"], {"options": {"token": "t0k"}})
        flaky = hub.send_task("page.flaky", [7], {"label": "seven"}, queue="default")
        with BackgroundWorker(hub):
            assert secret.get(timeout=30) == "ann"
            wait_until(lambda: flaky.state == "FAILURE", "the flaky task failed for good")
            wait_until(lambda: client.get(f"/tasks/{flaky.id}").text.count("<tr><td") == 3,
                       "three attempts on the page")
        page = client.get(f"/tasks/{secret.id}").text
        assert "Arguments" in page
        assert "ann" in page
        for text in ("hunter2", "t0k"):
            assert text not in page
        assert "cut or masked" in page  # and so no resend is offered for it

        page = client.get(f"/tasks/{flaky.id}").text
        assert re.search(r"&#34;label&#34;: ?&#34;seven&#34;", page)
        rows = re.findall(r"<tr><td class=\"n\">(\d+)</td>.*?</tr>", page, re.S)
        assert rows == ["1", "2", "3"]
        assert page.count("retried</td>") == 2
        assert "ValueError: flaky 7 seven" in page
        assert 'state failure">FAILURE' in page
    finally:
        hub.close()


async def test_a_failure_is_sent_again_as_a_new_task_linked_both_ways(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    _tasks(hub)
    try:
        client = client_for(hub)
        read_only = client_for(hub, read_only=True)
        failed = hub.send_task("page.flaky", [3], {"label": "x"}, queue="default")
        with BackgroundWorker(hub):
            wait_until(lambda: failed.state == "FAILURE", "the task failed")
            page = f"/tasks/{failed.id}"
            assert "send again as a new task" in client.get(page).text
            assert "/retry" not in read_only.get(page).text
            html = read_only.get(page).text
            refused = read_only.post(f"{page}/retry", data={"csrf": csrf_of(html),
                                                            "back": page})
            assert refused.status_code == 403

            answer = _post(client, f"{page}/retry", page)
            assert answer.status_code == 303
            assert "sent+again+as+task" in answer.headers["location"]
            again = re.search(r"retried as</dt><dd><a href=\"/tasks/([^\"]+)\"",
                              client.get(page).text)
            assert again is not None
            new_id = again.group(1)
            assert new_id != failed.id
            wait_until(lambda: Result(hub, new_id).state == "FAILURE", "the retry ran")
        retry_page = client.get(f"/tasks/{new_id}").text
        assert f'retry of</dt><dd><a href="/tasks/{failed.id}"' in retry_page
        assert "page.flaky" in retry_page
        assert "&#34;label&#34;" in retry_page
    finally:
        hub.close()


async def test_a_chain_steps_pages_link_parent_and_child(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    _tasks(hub)
    try:
        client = client_for(hub)
        add = hub.tasks["page.add"]
        step = (add.s(1, 2) | add.s(10)).delay()
        with BackgroundWorker(hub):
            assert step.get(timeout=30) == 13
        assert step.parent is not None
        first = client.get(f"/tasks/{step.parent.id}").text
        assert f'class="child" href="/tasks/{step.id}"' in first
        second = client.get(f"/tasks/{step.id}").text
        assert f'parent</dt><dd><a href="/tasks/{step.parent.id}"' in second
    finally:
        hub.close()


async def test_a_chord_members_page_links_its_chord_and_the_body_it_starts(
        broker: Broker, tmp_path: Path, client_for: Any) -> None:
    hub = make_hub(broker, tmp_path)
    _tasks(hub)
    try:
        client = client_for(hub)
        add, total = hub.tasks["page.add"], hub.tasks["page.total"]
        body = chord([add.s(1, 1), add.s(2, 2)], total.s()).delay()
        with BackgroundWorker(hub):
            assert body.get(timeout=30) == 6
        assert body.parent is not None
        for member in body.parent:
            page = client.get(f"/tasks/{member.id}").text
            assert "chord</dt>" in page
            assert f'class="child" href="/tasks/{body.id}"' in page
    finally:
        hub.close()


async def test_with_history_off_workers_write_none_and_the_pages_say_so(
        tmp_path: Path, client_for: Any) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'off.db'}", history=False)
    _tasks(hub)
    try:
        client = client_for(hub)
        done = hub.send_task("page.add", [1, 2])
        with BackgroundWorker(hub):
            assert done.get(timeout=30) == 3
        tasks = client.get("/tasks", params={"task": "page.add"}).text
        assert "task history is off" in tasks
        assert "no task matches" not in tasks
        page = client.get(f"/tasks/{done.id}").text
        assert "SUCCESS" in page  # the result record is still kept
        assert "task history is off" in page
        assert "task history is off" in client.get("/").text
        on = Hub(f"sqlite:///{tmp_path / 'off.db'}")  # a reader with history on finds none
        try:
            assert "no task matches" in client_for(on).get("/tasks").text
        finally:
            on.close()
    finally:
        hub.close()
