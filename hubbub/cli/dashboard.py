"""``hubbub dashboard``: the web dashboard, served by uvicorn."""

from __future__ import annotations

import click

from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, friendly, open_hub
from hubbub.errors import ConfigurationError
from hubbub.results.base import HISTORY_TTL


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("-b", "--broker", default=None, help=BROKER_HELP)
@click.option("--bind", default="127.0.0.1:5555", show_default=True,
              help="host:port to listen on. Beyond loopback it needs HUBBUB_DASHBOARD_TOKEN "
                   "or HUBBUB_DASHBOARD_USER and HUBBUB_DASHBOARD_PASSWORD.")
@click.option("--read-only", is_flag=True, help="Show everything; hide and refuse actions.")
@click.option("--retention", type=float, default=HISTORY_TTL, show_default=True,
              help="Seconds of task history to keep; older rows are pruned.")
@friendly
def dashboard(app: str | None, broker: str | None, bind: str, read_only: bool,
              retention: float) -> None:
    """Serve the web dashboard: workers, tasks and their history, queues, dead letters,
    schedules; live, with actions (unless --read-only)."""
    try:
        import uvicorn

        from hubbub.dashboard import DashboardConfig, create_app
    except ImportError as exc:  # the extra is optional: say how to get it
        raise ConfigurationError("the dashboard needs an extra: pip install hubbub[dashboard]"
                                 ) from exc
    config = DashboardConfig.from_environment(bind=bind, read_only=read_only,
                                              retention=retention)
    hub = open_hub(app, broker)
    try:
        asgi = create_app(hub, config)
        host = f"[{config.host}]" if ":" in config.host else config.host
        console.print(f"hubbub dashboard on http://{host}:{config.port}/ for "
                      f"{redact(hub.settings.broker)}"
                      + (" (read-only)" if read_only else "")
                      + (" (login required)" if config.auth_required else ""),
                      highlight=False, markup=False)
        uvicorn.run(asgi, host=config.host, port=config.port, log_level="warning",
                    access_log=False, lifespan="on")
    finally:
        hub.close()
