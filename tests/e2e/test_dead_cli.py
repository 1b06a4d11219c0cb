"""``hubbub dead``: delete, purge (with its confirmation) and requeue, run as the real command
against SQLite and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from tests import brokers
from tests.e2e.conftest import Cli

BROKERS = ["sqlite", "redis"]


def envelope(task: str) -> bytes:
    return json.dumps({"v": 1, "id": uuid.uuid4().hex, "task": task, "args": []}).encode()


def seed(url: str, letters: list[tuple[str, str, bytes]]) -> None:
    """Dead-letter ``(queue, id, body)`` messages on the broker at ``url``."""

    async def go() -> None:
        transport = open_transport(url)
        await transport.connect()
        try:
            await transport.publish([Outgoing(q, body, ident) for q, ident, body in letters])
            queues = sorted({q for q, _, _ in letters})
            got: list = []
            while len(got) < len(letters):
                got += await transport.fetch(queues, limit=len(letters), lease=30, wait=1)
            await transport.dead_letter([DeadLetterRequest(d, "refused") for d in got])
        finally:
            await transport.close()

    asyncio.run(go())


def listed(cli: Cli, *args: str) -> str:
    done = cli.run("dead", "--limit", "100", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(params=BROKERS)
def url(request: pytest.FixtureRequest, cli: Cli, tmp_path: Path) -> Iterator[str]:
    """The broker of the test: ``cli``'s own SQLite file, or a fresh Redis namespace that is
    deleted afterwards, even on failure."""
    if request.param == "sqlite":
        yield cli.url
        return
    broker = brokers.load(request.param)
    brokers.require(broker)
    url = broker.make_url(tmp_path, "e2e" + uuid.uuid4().hex[:10])
    cli.url = cli.env["HUBBUB_BROKER"] = url
    try:
        yield url
    finally:
        asyncio.run(broker.cleanup(url))


def test_delete_removes_only_the_named_dead_letters(cli: Cli, url: str) -> None:
    seed(url, [("q", "keep-me", envelope("shop.pay")), ("q", "drop-a", envelope("shop.pay")),
               ("q2", "drop-b", b"\xff not a message")])
    refused = cli.run("dead", "--delete", "drop-a")  # no terminal to ask, and no --yes
    assert refused.returncode == 1
    assert "without confirmation" in refused.stderr
    assert "drop-a" in listed(cli)
    done = cli.run("dead", "--delete", "drop-a", "--delete", "drop-b", "--delete", "nope",
                   "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 2 dead letters" in done.stdout
    shown = listed(cli)
    assert "keep-me" in shown
    assert "drop-a" not in shown
    assert "drop-b" not in shown


def test_purge_by_task_and_queue_asks_nothing_with_yes(cli: Cli, url: str) -> None:
    seed(url, [("q", "pay-1", envelope("shop.pay")), ("q", "ship-1", envelope("shop.ship")),
               ("q2", "pay-2", envelope("shop.pay")), ("q", "raw-1", b"\x00 foreign")])
    done = cli.run("dead", "--purge", "--task", "shop.pay", "-q", "q", "--yes")
    assert done.returncode == 0, done.stderr
    assert "purged 1 dead letters" in done.stdout
    shown = listed(cli)
    assert ("pay-1" not in shown, "ship-1" in shown, "pay-2" in shown) == (True, True, True)
    young = cli.run("dead", "--purge", "--older-than", "2d", "-y")
    assert "purged 0 dead letters" in young.stdout, young.stderr
    everything = cli.run("dead", "--purge", "--older-than", "0s", "-y")
    assert "purged 3 dead letters" in everything.stdout, everything.stderr
    assert "raw-1" not in listed(cli)


def test_purge_without_a_terminal_or_yes_refuses_in_one_line(cli: Cli, url: str) -> None:
    seed(url, [("q", "stays", envelope("shop.pay"))])
    done = cli.run("dead", "--purge")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "pass --yes" in done.stderr
    assert "stays" in listed(cli)


def test_requeue_still_sends_a_dead_letter_back(cli: Cli, url: str) -> None:
    seed(url, [("q", "again", envelope("shop.pay"))])
    done = cli.run("dead", "--requeue", "again")
    assert done.returncode == 0, done.stderr
    assert "requeued 1 dead letters" in done.stdout
    assert "again" not in listed(cli)


def test_bad_duration_and_mixed_actions_are_usage_errors(cli: Cli) -> None:
    bad = cli.run("dead", "--purge", "--older-than", "2 weeks", "--yes")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr
    mixed = cli.run("dead", "--purge", "--delete", "x", "--yes")
    assert mixed.returncode == 2
    assert "one of" in mixed.stderr
    lonely = cli.run("dead", "--task", "shop.pay")
    assert lonely.returncode == 2
    assert "add --purge" in lonely.stderr
