"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser). Skipped where either is missing, failed under CI=true.

With DASHBOARD_SCREENSHOTS=<folder> set, the tests save a screenshot of each main page there
(docs/img/ holds the ones in the docs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub.dashboard import DashboardConfig, create_app
from hubbub.testing import BackgroundWorker
from tests.brokers import unavailable
from tests.dashboard.conftest import serving
from tests.worker.scratch import wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000  # how long the browser waits for what a test expects


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not _has_playwright():
        unavailable("browser tests need /usr/bin/chromium and playwright (scripts/test.sh "
                    "installs both)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS,
                                      headless=True, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def page(browser: Any, sqlite_hub: Hub) -> Iterator[tuple[Any, str]]:
    with serving(create_app(sqlite_hub, DashboardConfig())) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(WAIT_MS)
        tab = context.new_page()
        try:
            yield tab, url
        finally:
            context.close()


def _shot(tab: Any, name: str) -> None:
    folder = os.environ.get("DASHBOARD_SCREENSHOTS")
    if folder:
        tab.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


def test_the_overview_loads_with_its_charts(page: tuple[Any, str], sqlite_hub: Hub) -> None:
    tab, url = page
    with BackgroundWorker(sqlite_hub):
        for i in range(20):
            sqlite_hub.send_task("dash.add", [i, i])
        failed = sqlite_hub.send_task("dash.boom", ["pw"])
        wait_until(lambda: failed.state == "FAILURE", "the failing task ran")
        tab.goto(url + "/")
        assert tab.title() == "Overview · hubbub"
        assert tab.locator("svg.chart").count() == 2
        tab.wait_for_selector("#live-status.on")  # the event stream is connected
        _shot(tab, "overview")
        for name in ("workers", "tasks", "queues", "schedules"):
            tab.goto(f"{url}/{name}")
            _shot(tab, name)
        tab.goto(f"{url}/tasks/{failed.id}")
        _shot(tab, "task")


def test_a_task_sent_now_appears_without_a_reload(page: tuple[Any, str],
                                                  sqlite_hub: Hub) -> None:
    tab, url = page
    tab.goto(url + "/tasks")
    tab.wait_for_selector("#live-status.on")
    tab.evaluate("window.notReloaded = true")
    with BackgroundWorker(sqlite_hub):
        result = sqlite_hub.send_task("dash.add", [20, 22])
        assert result.get(timeout=30) == 42
        tab.wait_for_selector(f'tr[data-id="{result.id}"]')
    assert tab.evaluate("window.notReloaded") is True
    assert "SUCCESS" in tab.locator(f'tr[data-id="{result.id}"]').inner_text()


def test_revoke_from_the_task_page(page: tuple[Any, str], sqlite_hub: Hub) -> None:
    tab, url = page
    result = sqlite_hub.send_task("dash.add", [1, 1])  # no worker: it waits
    tab.goto(f"{url}/tasks/{result.id}")
    tab.get_by_role("button", name="revoke", exact=True).click()
    tab.wait_for_selector("p.note")
    assert f"task {result.id} revoked" in tab.locator("p.note").inner_text()
    assert "REVOKED" in tab.locator("#task").inner_text()
    assert result.state == "REVOKED"


def test_requeue_from_the_dead_letters_page(page: tuple[Any, str], sqlite_hub: Hub) -> None:
    tab, url = page
    lost = sqlite_hub.send_task("dash.nowhere", [1])
    with BackgroundWorker(sqlite_hub):
        tab.goto(url + "/dead")
        tab.wait_for_selector(f'tr[data-id="{lost.id}"]')  # dead-lettered, shown live
    _shot(tab, "dead")
    tab.check(f'input[name="ids"][value="{lost.id}"]')
    tab.get_by_role("button", name="requeue chosen").click()
    tab.wait_for_selector("p.note")
    assert "requeued 1 dead letter" in tab.locator("p.note").inner_text()
    assert tab.locator(f'tr[data-id="{lost.id}"]').count() == 0

    async def ready() -> int:
        async with sqlite_hub.open_transport() as transport:
            return sum(s.ready for s in await transport.stats())

    assert sqlite_hub.bridge.run(ready()) == 1
