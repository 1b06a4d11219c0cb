"""The shop's SQLite database: one connection per app context, closed when it ends."""

from __future__ import annotations

import sqlite3

from flask import Flask, current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    words INTEGER NOT NULL,
    pid INTEGER NOT NULL
)
"""


def get_db() -> sqlite3.Connection:
    """This app context's connection (a web request's, or a task's: hubbub pushes one)."""
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"], timeout=30)
        g.db.row_factory = sqlite3.Row
    db: sqlite3.Connection = g.db
    return db


def close_db(error: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
    with app.app_context():
        get_db().execute(SCHEMA)
