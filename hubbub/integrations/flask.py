"""Flask: ``Hubbub(app)`` or ``init_app(app)``; every task runs inside the app's context.

::

    # shop/extensions.py: tasks can be declared before any app exists
    hubbub = Hubbub()

    @hubbub.task
    def send_receipt(order_id: int) -> None:
        order = db.session.get(Order, order_id)   # an app context is pushed: this works
        ...

    # shop/__init__.py
    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_mapping(HUBBUB_BROKER="redis://127.0.0.1:6379/0")
        hubbub.init_app(app)
        return app

    # shop/worker.py: what `hubbub worker -A shop.worker:hub` imports (and each child)
    app = create_app()
    hub = hubbub.hub

The app context is pushed by an ``around_task`` hook (:mod:`hubbub.hooks`), so it is there in
the process and thread that run the task on every pool, prefork's children included, as long
as the module ``-A`` names creates the app.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask

from hubbub._suggest import did_you_mean
from hubbub.context import TaskContext
from hubbub.errors import ConfigurationError
from hubbub.hub import Hub
from hubbub.settings import sqlite_url

__all__ = ["CONFIG_KEYS", "Hubbub"]

# app.config key -> Hub setting. HUBBUB_LIMITS takes a hubbub.Limits.
CONFIG_KEYS = {f"HUBBUB_{name.upper()}": name for name in (
    "broker", "results", "lease", "serializer", "accept", "result_ttl", "default_queue",
    "limits", "signing_keys", "dead_letter_failures")}


class Hubbub:
    """The Flask extension: a :class:`~hubbub.Hub` configured from ``app.config``.

    Args:
        app: the app, or None to call :meth:`init_app` later (app factories).
        hub: a hub of your own to configure (default: a new one).

    Attributes:
        hub: the hub: ``-A`` points the worker at it; ``task`` is its ``hub.task``.
        app: the app bound by the last ``init_app``, or None.
    """

    def __init__(self, app: Flask | None = None, *, hub: Hub | None = None) -> None:
        self.hub = hub if hub is not None else Hub()
        self.app: Flask | None = None
        self.task = self.hub.task
        self._instance_broker = False  # the broker is the one init_app put in the instance folder
        self.hub.around_task(self._app_context)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure the hub from ``app.config`` and run every task in ``app``'s context.

        Keys: ``HUBBUB_BROKER``, ``HUBBUB_RESULTS``, ``HUBBUB_LEASE``, ``HUBBUB_SERIALIZER``,
        ``HUBBUB_ACCEPT``, ``HUBBUB_RESULT_TTL``, ``HUBBUB_DEFAULT_QUEUE``, ``HUBBUB_LIMITS``,
        ``HUBBUB_SIGNING_KEYS``, ``HUBBUB_DEAD_LETTER_FAILURES``. Without a broker from the
        config, the environment (``$HUBBUB_BROKER``) or the hub's own code, the broker is the
        SQLite file ``hubbub.db`` in the app's instance folder. Calling it again (a test
        that makes a fresh app) closes the hub's connections and binds the new app.

        Raises:
            ConfigurationError: an unknown ``HUBBUB_*`` key (with the closest one), or an
                invalid setting.
        """
        given: dict[str, Any] = {}
        for key, value in app.config.items():
            if not key.startswith("HUBBUB_"):
                continue
            if key not in CONFIG_KEYS:
                raise ConfigurationError(f"unknown Flask config key {key!r}"
                                         f"{did_you_mean(key, CONFIG_KEYS)}")
            given[CONFIG_KEYS[key]] = value
        if given.get("broker") is None and (self._instance_broker
                                            or self.hub.settings.source("broker") == "default"):
            folder = Path(app.instance_path)
            folder.mkdir(parents=True, exist_ok=True)
            given["broker"] = sqlite_url(folder)
            self._instance_broker = True
        else:
            self._instance_broker = False
        self.hub.close()  # a previous app's connections; the next use opens new ones
        self.hub.configure(**given)
        self.app = app
        app.extensions["hubbub"] = self

    @contextlib.contextmanager
    def _app_context(self, ctx: TaskContext) -> Iterator[None]:
        if self.app is None:
            raise ConfigurationError(
                f"task {ctx.task} needs a Flask app, but no init_app(app) ran in this process "
                f"(pid {os.getpid()}): point the worker's -A at a module that creates the app, "
                "e.g. shop/worker.py with app = create_app(); hub = hubbub.hub")
        with self.app.app_context():
            yield
