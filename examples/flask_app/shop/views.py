"""A form that sends work to the worker, and a page that polls for its result."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from hubbub import Result, State
from shop.db import get_db
from shop.extensions import hubbub
from shop.tasks import count_words

bp = Blueprint("shop", __name__)


@bp.get("/")
def index() -> str:
    reports = get_db().execute(
        "SELECT task_id, words FROM reports ORDER BY id DESC LIMIT 10").fetchall()
    return render_template("index.html", reports=reports)


@bp.post("/reports")
def create_report() -> Response:
    text = request.form.get("text", "").strip()
    if not text:
        abort(400, "write some text to count")
    result = count_words.delay(text)
    return redirect(url_for("shop.report", task_id=result.id))


@bp.get("/reports/<task_id>")
def report(task_id: str) -> str:
    return render_template("report.html", task_id=task_id)


@bp.get("/api/reports/<task_id>")
def report_state(task_id: str) -> dict[str, Any]:
    result: Result[dict[str, int]] = Result(hubbub.hub, task_id, count_words.name)
    state = result.state
    body: dict[str, Any] = {"id": task_id, "state": str(state)}
    if state == State.SUCCESS:
        body["result"] = result.get(timeout=5)
    elif state == State.FAILURE:
        body["error"] = str(result.result)
    return body
