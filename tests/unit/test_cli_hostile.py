"""The CLI prints what brokers hold as plain text and never trusts its shape."""

from __future__ import annotations

import asyncio
import uuid

import click
import pytest
from click.testing import CliRunner

from hubbub._loader import load_hub
from hubbub.cli import main
from hubbub.cli.messages import task_name
from hubbub.codecs import json_dumps
from hubbub.errors import ConfigurationError
from hubbub.signing import Signer
from hubbub.transports import DeadLetterRequest, Outgoing, open_transport

DEEP = b"[" * 100_000 + b"]" * 100_000
SIGNER = Signer({"k1": "0123456789abcdef0123"})


def _seed(url: str, bodies: dict[str, tuple[bytes, str | None]]) -> None:
    """Publish one body per queue; dead-letter it with the reason when one is given."""

    async def go() -> None:
        transport = open_transport(url)
        await transport.connect()
        try:
            await transport.publish([Outgoing(queue, body, f"id-{i}")
                                     for i, (queue, (body, _)) in enumerate(bodies.items())])
            for queue, (_, reason) in bodies.items():
                if reason is None:
                    continue
                got = await transport.fetch([queue], limit=1, lease=30, wait=0)
                await transport.dead_letter([DeadLetterRequest(d, reason) for d in got])
        finally:
            await transport.close()

    asyncio.run(go())


@pytest.fixture
def url() -> str:
    return f"memory://hostile-{uuid.uuid4().hex}"


def test_status_shows_a_queue_named_like_markup_as_is(url: str) -> None:
    _seed(url, {"[/x]": (b"{}", None), "[bold]q": (b"{}", None)})

    result = CliRunner().invoke(main, ["status", "--broker", url])

    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output
    assert "[bold]q" in result.output


def test_purge_of_a_queue_named_like_markup_reports_it_as_is(url: str) -> None:
    _seed(url, {"[/x]": (b"{}", None)})

    result = CliRunner().invoke(main, ["purge", "-y", "[/x]", "--broker", url])

    assert result.exit_code == 0, result.output
    assert "purged 1 messages from [/x]" in result.output


def test_dead_lists_hostile_bodies_and_reasons_without_crashing(url: str) -> None:
    _seed(url, {
        "deep": (DEEP, "boom [bold] [/]"),
        "bytes": (b"\xff\xfe[/]\x00", "[/x] not utf-8"),
        "array": (b"[1, 2]", "[red]"),
        "escape": (b'{"task": "\\u001b[31mred"}', "\x1b[2Jcleared"),
    })

    result = CliRunner().invoke(main, ["dead", "--broker", url])

    assert result.exit_code == 0, result.output
    for reason in ("boom [bold] [/]", "[/x] not utf-8", "[red]"):
        assert reason in result.output
    assert "\x1b" not in result.output  # a terminal escape is shown, never sent
    assert "\\x1b[2Jcleared" in result.output
    assert "\\x1b[31mred" in result.output


def test_dead_names_the_task_of_a_signed_message(url: str) -> None:
    body = SIGNER.sign(json_dumps({"v": 1, "task": "shop.add", "id": "x"}))
    _seed(url, {"default": (body, "refused")})

    result = CliRunner().invoke(main, ["dead", "--broker", url])

    assert result.exit_code == 0, result.output
    assert "shop.add" in result.output


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (SIGNER.sign(b'{"task": "shop.add"}'), "shop.add"),
        (b'{"task": "shop.add"}', "shop.add"),
        (b'{"task": "[/]"}', "[/]"),
        pytest.param(DEEP, "?", id="nested-100000-deep"),
        (b"\xff\xfe", "?"),
        (b"[1]", "?"),
        (b'{"task": 3}', "?"),
        (b'{"task": ""}', "?"),
        (b"", "?"),
        (b"hubbub-sig1 k1 abc", "?"),
    ],
)
def test_task_name_reads_any_body_and_gives_a_question_mark_when_it_cannot(
    body: bytes, name: str
) -> None:
    assert task_name(body) == name


@pytest.mark.parametrize(
    ("path", "fix"),
    [
        ("", "names no module"),
        (":hub", "names no module"),
        (".rel:hub", "a relative module cannot be imported"),
        ("a..b:hub", "is not a module path"),
        ("json:x-y", "is not a Python name"),
        ("nosuchmodule_hubbub:hub", "run from the folder that holds it"),
        ("json:nothing", "module 'json' has no 'nothing'"),
        ("json:loads", "json.loads is a function, not a hubbub.Hub"),
    ],
)
def test_a_bad_app_path_is_a_configuration_error_naming_the_fix(path: str, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix):
        load_hub(path)


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [(prefix or "hubbub", group)]
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


@pytest.mark.parametrize(("path", "command"), _commands(main), ids=lambda v: str(v))
def test_every_command_and_option_explains_itself_in_help(
    path: str, command: click.Command
) -> None:
    assert command.help, f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{path} {param.opts[0]} has no help text"
    args = [] if path == "hubbub" else path.split()
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
