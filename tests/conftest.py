from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub.results import ResultRecord
from hubbub.transports import Transport, open_transport
from tests import brokers
from tests.cluster import servers as cluster_servers
from tests.faults import conftest as faults


@dataclass
class Broker:
    """One isolated namespace on one broker for one test; opens connected transports."""

    name: str
    url: str
    results_url: str | None
    capabilities: object = None
    opened: list[Transport] = field(default_factory=list)

    async def open(self) -> Transport:
        transport = open_transport(self.url)
        await transport.connect()
        self.opened.append(transport)
        return transport


def _broker_params() -> list[object]:
    return [brokers.param(name) for name in brokers.NAMES if brokers.available(name)]


# Run one after another on a single xdist worker (beside the rest of the suite): each fault
# scenario runs several worker processes with up to hundreds of tasks and bounds its recovery
# time (in-flight work back within lease + slack); two at once on 2 cores pushed
# test_kill_9_mid_stream_loses_nothing past its bound (4.4 s for 4.2 s) in a trial.
SERIAL_DIRS = ("tests/faults/",)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh), keep each module with a
    module-scoped fixture (the docs site build, the dashboard's browser) on one worker, so
    that it is set up once rather than once per worker, and the fault suite on one worker
    (``SERIAL_DIRS``). Other tests spread freely."""
    for item in items:
        serial = next((d for d in SERIAL_DIRS if item.nodeid.startswith(d)), None)
        if serial is not None:
            item.add_marker(pytest.mark.xdist_group(serial))
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope in ("module", "package") for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session", autouse=True)
def _stop_cluster_servers() -> Iterator[None]:
    """Stop the clustered servers a broker module started during the session (none are
    started unless a test asks for such a broker)."""
    try:
        yield
    finally:
        cluster_servers.stop_all()


# -- xdist workers see the environment a serial run sees -------------------------------------
# A worker starts with COLUMNS=80 and LINES=24 that the run did not have; rich freezes them
# in the CLI's console when it is made, so a test's COLUMNS=200 (CliRunner env) was ignored
# and tables wrapped (test_inspect_active_shows_the_running_task_in_a_table_and_as_json).
TERMINAL_ENV = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)  # xdist, on the controller: hand over the run's values
def pytest_configure_node(node: Any) -> None:
    node.workerinput["terminal_env"] = {k: os.environ.get(k) for k in TERMINAL_ENV}


def pytest_configure(config: pytest.Config) -> None:
    terminal_env = getattr(config, "workerinput", {}).get("terminal_env")
    for name, value in (terminal_env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- the fault suites' ledger table (tests/faults, tests/cluster), printed once per run ----------
# Here, not in tests/faults/conftest.py: under xdist the controller collects nothing, so only
# this conftest runs there; each worker hands its rows over in ``workeroutput``.


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)
    if out is not None:  # an xdist worker
        out["fault_rows"] = [dataclasses.asdict(r)
                             for r in session.config.stash.get(faults.ROWS, [])]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: only called when xdist runs the session
def pytest_testnodedown(node: Any, error: object) -> None:
    rows = getattr(node, "workeroutput", {}).get("fault_rows", [])
    node.config.stash.setdefault(faults.ROWS, []).extend(faults.Row(**r) for r in rows)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(faults.ROWS, [])
    # Workers finish in any order: group by scenario (first seen), transports in suite order.
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    order = {n: i for i, n in enumerate(faults.TRANSPORTS)}
    rows = sorted(rows, key=lambda r: (scenarios.index(r.scenario), order.get(r.transport, 99)))
    faults.write_table(terminalreporter, rows)


@pytest.fixture(params=_broker_params())
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "t" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    b = Broker(request.param, url, module.results_url(tmp_path, run_id))
    try:
        yield b
    finally:
        for transport in b.opened:
            with contextlib.suppress(Exception):
                await transport.close()
        await module.cleanup(url)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true, failing after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


# -- a hub on a test's broker, and what it stored (for tests that run workers on every broker)


def make_hub(broker: Broker, tmp_path: Path, **options: Any) -> Hub:
    """A hub on ``broker``, keeping results beside it or, where it keeps none (RabbitMQ,
    Beanstalkd), in an SQLite file of the test's."""
    results = broker.results_url or f"sqlite:///{tmp_path / 'results.db'}"
    return Hub(broker.url, results=results, lease=5, **options)


# The hub's connections live on its bridge loop: reach them through it.

async def records(hub: Hub, ids: list[str]) -> dict[str, ResultRecord]:
    return await hub.bridge.run_async(hub.read_results(ids))


async def dead_reasons(hub: Hub) -> dict[str, str]:
    async def read() -> dict[str, str]:
        client = await hub.client()
        return {d.id: d.reason for d in await client.transport.list_dead()}

    return await hub.bridge.run_async(read())
