"""The ``hubbub`` command. Each group of subcommands lives in its own module."""

from __future__ import annotations

import click

from hubbub import __version__
from hubbub.cli._common import quiet_drivers
from hubbub.cli.beat import beat, schedule
from hubbub.cli.control import control, inspect
from hubbub.cli.dashboard import dashboard
from hubbub.cli.demo import demo
from hubbub.cli.events import events
from hubbub.cli.messages import call, dead, purge, status
from hubbub.cli.top import top
from hubbub.cli.worker import worker
from hubbub.cli.workers import workers


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubbub")
def main() -> None:
    """hubbub: a distributed task queue that starts with zero servers.

    Commands that talk to a broker take --app (the app, which knows its broker) or --broker
    (a URL); with neither they use $HUBBUB_BROKER, else the SQLite file hubbub.db here. Run
    hubbub COMMAND --help for each command's options.
    """
    quiet_drivers()


for command in (worker, workers, call, status, purge, dead, demo, beat, schedule):
    main.add_command(command)
main.add_command(inspect)  # remote control (hubbub.cli.control)
main.add_command(control)
main.add_command(events)
main.add_command(top)
main.add_command(dashboard)  # the web dashboard (hubbub.cli.dashboard)
