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
# worker command (its module), the app, the pools, and the SQLite transport and store.
PROBE = textwrap.dedent('''
    import json, sys
    from hubbub.cli import main
    main.get_command(None, "worker")
    import app, hubbub.worker.pools, hubbub.transports.sqlite, hubbub.results.sqlite
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
              "hubbub.cli.demo", "hubbub.cli.control", "hubbub.cli.events"]


@pytest.mark.timeout(60)
def test_a_worker_imports_no_other_command_and_no_optional_machinery(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    source_root = Path(hubbub.__file__).parent.parent  # this checkout of hubbub
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{source_root}",
           "HUBBUB_BROKER": f"sqlite:///{tmp_path / 'broker.db'}"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=50, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))

    assert "hubbub.cli.worker" in loaded  # the probe did load the worker command
    assert [name for name in NOT_NEEDED if name in loaded] == []


def test_every_command_is_still_listed_and_found() -> None:
    from hubbub.cli import COMMANDS, main

    ctx = click.Context(main, info_name="hubbub")
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.name == name
