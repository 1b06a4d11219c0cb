"""The ``hubbub`` command. Each group of subcommands lives in its own module, imported only
when one of its commands runs (or ``--help`` lists them): ``hubbub worker`` loads no
dashboard, top, demo or control code, and no rich (issue #18: idle worker memory)."""

from __future__ import annotations

import importlib

import click

from hubbub import __version__
from hubbub.cli._common import quiet_drivers

# command name -> the module that defines it (as an attribute of that name)
COMMANDS = {
    "worker": "hubbub.cli.worker", "workers": "hubbub.cli.workers",
    "call": "hubbub.cli.messages", "status": "hubbub.cli.messages",
    "purge": "hubbub.cli.messages", "dead": "hubbub.cli.messages",
    "demo": "hubbub.cli.demo", "beat": "hubbub.cli.beat", "schedule": "hubbub.cli.beat",
    "inspect": "hubbub.cli.control",  # remote control
    "control": "hubbub.cli.control",
    "events": "hubbub.cli.events", "top": "hubbub.cli.top",
    "dashboard": "hubbub.cli.dashboard",  # the web dashboard
}


class LazyGroup(click.Group):
    """A click group whose commands are imported from ``COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            command = getattr(importlib.import_module(COMMANDS[cmd_name]), cmd_name)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubbub")
def main() -> None:
    """hubbub: a distributed task queue that starts with zero servers.

    Commands that talk to a broker take --app (the app, which knows its broker) or --broker
    (a URL); with neither they use $HUBBUB_BROKER, else the SQLite file hubbub.db here. Run
    hubbub COMMAND --help for each command's options.
    """
    quiet_drivers()
