"""The shop's tasks. They use the app's database as any view does: hubbub runs each one
inside the app context, in whatever process the worker's pool runs it."""

from __future__ import annotations

import os

from hubbub import current_task, get_task_logger
from shop.db import get_db
from shop.extensions import hubbub

log = get_task_logger(__name__)


@hubbub.task(retries=2)
def count_words(text: str) -> dict[str, int]:
    """Count the words of ``text`` and keep a report of it in the database."""
    words = len(text.split())
    db = get_db()
    with db:
        cursor = db.execute(
            "INSERT INTO reports (task_id, text, words, pid) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET words = excluded.words",
            (current_task().id, text, words, os.getpid()))
    log.info("counted %d words", words)
    return {"report": int(cursor.lastrowid or 0), "words": words}
