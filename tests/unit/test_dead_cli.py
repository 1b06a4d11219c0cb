"""``hubbub dead --purge`` asks first on a terminal; durations read as 30s, 15m, 2h, 2d."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from hubbub.cli import main
from hubbub.cli import messages as cli_messages
from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from hubbub.transports import memory as memory_transport


@pytest.fixture
def url() -> Iterator[str]:
    name = f"memory://dead-{uuid.uuid4().hex[:8]}"

    async def seed() -> None:
        t = open_transport(name)
        await t.publish([Outgoing("q", b"{}", "one"), Outgoing("q", b"{}", "two")])
        got = await t.fetch(["q"], limit=2, lease=30, wait=0)
        await t.dead_letter([DeadLetterRequest(d, "refused") for d in got])

    asyncio.run(seed())
    try:
        yield name
    finally:
        memory_transport._STORES.pop(name, None)


def dead_count(url: str) -> int:
    return len(asyncio.run(open_transport(url).list_dead(None)))


def test_purge_on_a_terminal_deletes_nothing_when_the_answer_is_no(
    url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_messages, "interactive", lambda: True)
    result = CliRunner().invoke(main, ["dead", "--broker", url, "--purge", "--older-than", "2h"],
                                input="n\n")
    assert result.exit_code == 1
    assert "Delete every dead letter that died over 7200s ago for good?" in result.output
    assert dead_count(url) == 2


def test_purge_on_a_terminal_deletes_when_the_answer_is_yes(
    url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_messages, "interactive", lambda: True)
    result = CliRunner().invoke(main, ["dead", "--broker", url, "--purge", "-q", "q"],
                                input="y\n")
    assert result.exit_code == 0, result.output
    assert "purged 2 dead letters" in result.output
    assert dead_count(url) == 0


def test_purge_with_no_terminal_and_no_yes_refuses(url: str) -> None:
    result = CliRunner().invoke(main, ["dead", "--broker", url, "--purge"])
    assert result.exit_code == 1
    assert "stdin is not a terminal; pass --yes" in result.output
    assert dead_count(url) == 2


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("15m", 900.0), ("2h", 7200.0),
                                               ("2d", 172800.0), ("90", 90.0), ("1.5h", 5400.0),
                                               ("2D", 172800.0)])
def test_durations_read_with_their_unit(text: str, seconds: float) -> None:
    assert cli_messages.Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "d", "2w", "-1s", "nan", "inf", "two days"])
def test_durations_that_are_not_refuse_with_an_example(text: str) -> None:
    with pytest.raises(click.BadParameter, match=r"e\.g\. 30s, 15m, 2h or 2d"):
        cli_messages.Duration().convert(text, None, None)
