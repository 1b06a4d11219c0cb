"""The real ``hubbub`` command: a mistake or a broken broker is one line on stderr and a
non-zero exit, never a traceback; hostile data on a broker is shown, not obeyed."""

from __future__ import annotations

import asyncio
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest

from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from tests import brokers
from tests.e2e.conftest import Cli


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line the command printed; fails on a traceback or extra lines."""
    assert done.returncode in (1, 2), done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("app", "fix"),
    [
        ("", "names no module"),
        (":hub", "names no module"),
        (".rel:hub", "a relative module cannot be imported"),
        ("nosuchmodule:hub", "run from the folder that holds it"),
        ("json:nothing", "module 'json' has no 'nothing'"),
        ("app:hbu", "(did you mean 'hub'?)"),
    ],
)
def test_a_bad_app_path_is_one_line_naming_the_fix(cli: Cli, app: str, fix: str) -> None:
    assert fix in one_error_line(cli.run("worker", "-A", app))


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("redis://[::1/10", "an IPv6 address needs its closing ']'"),
        ("redis://127.0.0.1:70000", "the port must be a number from 1 to 65535"),
        ("amqp://guest:s3cret@127.0.0.1:70000/", "the port must be a number from 1 to 65535"),
        ("kafka://127.0.0.1:9092", "unknown transport URL scheme 'kafka'"),
        ("redis://localhost/0?password=s3cret&bogus=1", "unknown redis URL option"),
    ],
)
def test_a_bad_broker_url_is_one_line_naming_the_fix(cli: Cli, url: str, fix: str) -> None:
    line = one_error_line(cli.run("status", "--broker", url))
    assert fix in line
    assert "s3cret" not in line


@pytest.mark.parametrize(
    "args",
    [("status",), ("worker", "-A", "app:hub", "--pool", "async")],
    ids=["status", "worker"],
)
def test_unreachable_rabbitmq_is_one_line_without_driver_logs(
    cli: Cli, args: tuple[str, ...]
) -> None:
    cli.env["HUBBUB_BROKER"] = f"amqp://guest:guest@127.0.0.1:{brokers.free_port()}/"
    line = one_error_line(cli.run(*args, timeout=120))
    assert "RabbitMQ cannot be reached" in line


def test_status_and_dead_show_hostile_data_from_the_broker_as_text(cli: Cli) -> None:
    async def seed() -> None:
        transport = open_transport(cli.url)
        await transport.connect()
        try:
            await transport.publish([
                Outgoing("[/x]", b"[" * 100_000 + b"]" * 100_000, "deep"),
                Outgoing("bytes", b"\xff\xfe[/]", "bytes"),
            ])
            for queue, reason in (("[/x]", "boom [bold] [/]"), ("bytes", "[/x]")):
                got = await transport.fetch([queue], limit=1, lease=30, wait=0)
                await transport.dead_letter([DeadLetterRequest(d, reason) for d in got])
        finally:
            await transport.close()

    asyncio.run(seed())
    status = cli.run("status")
    assert status.returncode == 0, status.stderr
    assert "[/x]" in status.stdout
    dead = cli.run("dead")
    assert dead.returncode == 0, dead.stderr
    assert "boom [bold] [/]" in dead.stdout
    assert "Traceback" not in dead.stderr
    purge = cli.run("purge", "-y", "[/x]")
    assert purge.returncode == 0, purge.stderr
    assert "from [/x]" in purge.stdout


@pytest.mark.parametrize("broker_url", ["beanstalk"], indirect=True)
def test_a_foreign_record_in_the_beanstalk_dead_tube_is_passed_over(cli: Cli,
                                                                   broker_url: str) -> None:
    import greenstalk  # type: ignore[import-untyped]

    parts = urlsplit(broker_url)
    [prefix] = parse_qs(parts.query)["prefix"]
    with greenstalk.Client((parts.hostname, parts.port), use=f"{prefix}$dead") as client:
        client.put("not a hubbub record")  # the fixture's cleanup deletes it

    done = cli.run("dead")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
