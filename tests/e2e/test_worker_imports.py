"""An idle worker loads only what serving needs (issue #18: idle memory): the other
subcommands, rich, the cron parser, metrics, the beat and the Celery bridge wait until used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

import hubbub

# What `hubbub worker -A app --pool async` imports before it serves: the CLI group, the
# worker command (its module), the app, the async pool, and the broker's transport, result
# store and control plane.
PROBE = textwrap.dedent('''
    import json, sys
    from hubbub.cli import main
    main.get_command(None, "worker")
    import app, hubbub.worker.pools.coroutines
    for module in sys.argv[1:]:
        __import__(module)
    print(json.dumps(sorted(sys.modules)))
''')
APP = textwrap.dedent('''
    from hubbub import Hub
    hub = Hub()  # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None
''')
NOT_NEEDED = ["rich", "croniter", "zoneinfo", "difflib", "logging.handlers", "hubbub.metrics",
              "hubbub.schedule.beat", "hubbub.compat.celery.bridge",
              "hubbub.compat.celery.producer", "hubbub.cli.top", "hubbub.cli.dashboard",
              "hubbub.cli.demo", "hubbub.cli.control", "hubbub.cli.events",
              # the pools not chosen (the CLI reads their help only for --help), and what
              # only a Celery message on a hubbub queue or a queue name from remote control
              # needs
              "hubbub.worker.pools.prefork", "hubbub.worker.pools.hybrid",
              "hubbub.worker.pools.gevent", "hubbub.worker.pools.threads",
              "hubbub.worker.pools._children", "hubbub.worker.pools._child",
              "hubbub.compat.celery.protocol", "unicodedata"]
# What one broker's worker needs of nothing but another's, or of its sync publisher.
BROKERS = {
    "sqlite": (["hubbub.transports.sqlite", "hubbub.results.sqlite",
                "hubbub.control.planes.sqlite"],
               ["redis", "hubbub._redis", "hubbub.transports._redis_sync"]),
    "redis": (["hubbub.transports.redis", "hubbub.results.redis",
               "hubbub.control.planes.redis"],
              ["sqlite3", "hubbub._sqlite", "hubbub.transports._redis_sync"]),
}


def loaded_by_probe(tmp_path: Path, broker: str, modules: list[str]) -> set[str]:
    (tmp_path / "app.py").write_text(APP)
    source_root = Path(hubbub.__file__).parent.parent  # this checkout of hubbub
    url = (f"sqlite:///{tmp_path / 'broker.db'}" if broker == "sqlite"
           else "redis://127.0.0.1:6379/0?prefix=imports-probe")  # never connected to
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{source_root}",
           "HUBBUB_BROKER": url}
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], env=env,
                          capture_output=True, text=True, timeout=50, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_a_worker_imports_no_other_command_and_no_optional_machinery(
        tmp_path: Path, broker: str) -> None:
    modules, not_needed = BROKERS[broker]
    loaded = loaded_by_probe(tmp_path, broker, modules)

    assert "hubbub.cli.worker" in loaded  # the probe did load the worker command
    assert set(modules) <= loaded
    assert [name for name in NOT_NEEDED + not_needed if name in loaded] == []


def test_every_command_is_still_listed_and_found() -> None:
    from hubbub.cli import COMMANDS, main

    ctx = click.Context(main, info_name="hubbub")
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.name == name
