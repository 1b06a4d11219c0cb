"""A small Flask shop that counts words in the background with hubbub.

Run it (from examples/flask_app)::

    flask --app shop run                                   # the web app
    hubbub worker -A shop.worker:hub --pool prefork -c 2   # the worker

Both use the SQLite files in ``instance/`` (``$SHOP_INSTANCE`` moves them): ``shop.db`` for
the shop and ``hubbub.db`` as the broker. Set ``HUBBUB_BROKER=redis://...`` to use Redis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from shop import db, views
from shop.extensions import hubbub


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app: its database, the hubbub extension, its views."""
    instance = os.environ.get("SHOP_INSTANCE") or str(Path(__file__).parent.parent / "instance")
    app = Flask(__name__, instance_path=instance)
    app.config.update(DATABASE=os.path.join(instance, "shop.db"))
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)
    hubbub.init_app(app)  # HUBBUB_* from app.config; default broker: instance/hubbub.db
    db.init_app(app)
    app.register_blueprint(views.bp)
    return app
