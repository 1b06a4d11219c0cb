"""The dashboard's ASGI app: pages, actions, login and the live-update stream.

Pages are rendered on the server (Jinja2, autoescaped); ``static/dashboard.js`` keeps them
live: it listens to ``/live`` (server-sent events) and, on each ``changed`` event, fetches
the page again and swaps the parts marked ``data-live``. Every action is a POST carrying
the session's CSRF token, answered with a redirect back to the page and a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hubbub._redact import redact
from hubbub.dashboard import pages
from hubbub.dashboard.config import DashboardConfig
from hubbub.dashboard.data import Source
from hubbub.dashboard.security import Session, Sessions
from hubbub.errors import ConfigurationError, HubbubError
from hubbub.hub import Hub
from hubbub.metrics import FleetMetrics

__all__ = ["create_app"]

HERE = Path(__file__).parent
LIVE_EVERY = 1.0  # seconds between looks for changes on the live stream
MIN_GAP = 0.5  # seconds at least between two looks (a busy fleet's events come in floods)
PRUNE_EVERY = 3600.0  # seconds between prunes of history older than the retention
OPEN = ("/static/", "/login")
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM = 64 * 1024  # bytes of a form we read  # paths served without a login


def create_app(hub: Hub, config: DashboardConfig) -> Starlette:
    """The dashboard for ``hub`` as an ASGI app (serve it with uvicorn).

    Args:
        hub: the app whose broker, result store, workers and schedules are shown.
        config: where it listens, who may see it, whether it may act.

    Raises:
        ConfigurationError: ``config`` serves beyond loopback without authentication.
    """
    config.check_exposure()
    source = Source(hub)
    sessions = Sessions(config)
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), enable_async=False)
    pages.install_filters(env)

    fleet: list[FleetMetrics] = []  # the fleet's metrics, made on the first scrape

    async def metrics(request: Request) -> Response:
        """Prometheus' view of the fleet (hubbub.metrics.FleetMetrics): workers up, their
        counters and slots, queue depths. Behind the same authentication as the pages."""
        try:
            if not fleet:
                fleet.append(FleetMetrics(hub))
            body, kind = await fleet[0].render()
        except ConfigurationError as exc:  # the metrics extra is not installed
            return PlainTextResponse(str(exc), status_code=501)
        except HubbubError as exc:
            return PlainTextResponse(redact(str(exc)), status_code=503)
        return Response(body, media_type=kind)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await source.open()
        pruner = asyncio.create_task(_prune(source, config.retention), name="dashboard-prune")
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            if fleet:
                await fleet[0].close()
            await source.close()

    def render(request: Request, template: str, **context: Any) -> HTMLResponse:
        session: Session | None = request.state.session
        body = env.get_template(template).render(
            request=request, path=request.url.path, csrf=session.csrf if session else "",
            read_only=config.read_only, note=request.query_params.get("note", ""),
            broker=redact(hub.settings.broker), auth=config.auth_required, **context)
        return HTMLResponse(body)

    def page(fn: Callable[[Request], Awaitable[dict[str, Any]]], template: str
             ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                context = await fn(request)
            except HubbubError as exc:
                return render(request, "error.html", error=redact(str(exc)))
            return render(request, template, **context)
        return endpoint

    def action(fn: Callable[[Request, dict[str, str]], Awaitable[str]]
               ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            fields = await _form(request)
            if fields is None:
                return PlainTextResponse("a form is at most 64 KiB, url-encoded",
                                         status_code=400)
            if not sessions.csrf_ok(request.state.session, fields.get("csrf")):
                return PlainTextResponse("missing or wrong CSRF token: reload the page and "
                                         "try again", status_code=403)
            if config.read_only:
                return PlainTextResponse("this dashboard is read-only (--read-only)",
                                         status_code=403)
            try:
                note = await fn(request, fields)
            except (HubbubError, ValueError) as exc:
                note = f"failed: {redact(str(exc))}"
            back = fields.get("back", "/")
            if not back.startswith("/") or back.startswith("//"):
                back = "/"  # never redirect off this dashboard
            sep = "&" if "?" in back else "?"
            return RedirectResponse(f"{back}{sep}{urlencode({'note': note})}", status_code=303)
        return endpoint

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"),
                      failed=False)

    async def login(request: Request) -> Response:
        fields = await _form(request) or {}
        if not sessions.csrf_ok(request.state.session, fields.get("csrf")):
            return PlainTextResponse("missing or wrong CSRF token: reload the login page",
                                     status_code=403)
        ok = sessions.check(token=fields.get("token") or None,
                            user=fields.get("user") or None,
                            password=fields.get("password") or None)
        if not ok:
            response = render(request, "login.html", next=fields.get("next", "/"), failed=True)
            response.status_code = 401
            return response
        target = fields.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        redirect = RedirectResponse(target, status_code=303)
        sessions.attach(redirect, sessions.new(authenticated=True))  # a fresh id on login
        return redirect

    async def logout(request: Request) -> Response:
        fields = await _form(request) or {}
        if not sessions.csrf_ok(request.state.session, fields.get("csrf")):
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        response = RedirectResponse("/login", status_code=303)
        sessions.attach(response, sessions.new(authenticated=False))
        return response

    async def live(request: Request) -> Response:
        # The first look comes before the stream opens (its headers are sent): the page
        # fetches itself again when it opens, for what changed since it was rendered, so a
        # change between that fetch and a first look taken later would be in neither.
        try:
            first: Any = await source.digest()
        except HubbubError:
            first = None

        async def stream() -> AsyncIterator[bytes]:
            # A change is seen at once through the events workers publish (hubbub worker
            # --events), else within a second through the digest; at most two a second.
            last = first
            quiet = 0.0
            events = 0  # events that came since the last look
            yield b"retry: 2000\n\n"
            async with source.events() as wait:
                while not await request.is_disconnected():
                    started = time.monotonic()
                    try:
                        now = await source.digest()
                    except HubbubError:
                        now = last  # the broker is away: say nothing until it is back
                    if last is not None and (now != last or events):
                        yield b"event: changed\ndata: {}\n\n"
                        quiet = 0.0
                    elif quiet >= 15.0:
                        yield b": still here\n\n"
                        quiet = 0.0
                    last = now
                    events = await wait(LIVE_EVERY)
                    await asyncio.sleep(max(0.0, MIN_GAP - (time.monotonic() - started)))
                    quiet += time.monotonic() - started
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    guard = Middleware(BaseHTTPMiddleware, dispatch=_guard(sessions, config))
    views = pages.Views(source, config)
    routes = [
        Route("/", page(views.overview, "overview.html")),
        Route("/workers", page(views.workers, "workers.html")),
        Route("/tasks", page(views.tasks, "tasks.html")),
        Route("/tasks/{id:path}/revoke", action(views.revoke), methods=["POST"]),
        Route("/tasks/{id:path}/terminate", action(views.terminate), methods=["POST"]),
        Route("/tasks/{id:path}/retry", action(views.retry), methods=["POST"]),
        Route("/tasks/{id:path}", page(views.task, "task.html")),
        Route("/queues", page(views.queues, "queues.html")),
        Route("/queues/purge", action(views.purge), methods=["POST"]),
        Route("/dead", page(views.dead, "dead.html")),
        Route("/dead/requeue", action(views.requeue), methods=["POST"]),
        Route("/dead/delete", action(views.delete), methods=["POST"]),
        Route("/schedules", page(views.schedules, "schedules.html")),
        Route("/workers/control", action(views.control), methods=["POST"]),
        Route("/live", live),
        Route("/metrics", metrics),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[guard], lifespan=lifespan)


def _guard(sessions: Sessions, config: DashboardConfig
           ) -> Callable[[Request, RequestResponseEndpoint], Awaitable[Response]]:
    """Middleware: give every visitor a session; let in only the logged-in (when
    credentials are configured); set security headers on every answer."""

    async def dispatch(request: Request, call_next: RequestResponseEndpoint) -> Response:
        session = sessions.read(request)
        fresh = session is None
        if session is None:
            session = sessions.new(authenticated=not config.auth_required)
        request.state.session = session
        path = request.url.path
        allowed = (not config.auth_required or session.authenticated
                   or sessions.credentials_ok(request) or path.startswith(OPEN))
        if not allowed:
            if request.method == "GET" and path != "/live":
                response: Response = RedirectResponse(
                    "/login?next=" + quote(request.url.path), status_code=303)
            else:
                response = PlainTextResponse("log in first", status_code=401)
        else:
            response = await call_next(request)
        if fresh:
            sessions.attach(response, session)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'")
        return response

    return dispatch


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form of a POST, a repeated field's values joined by spaces (the
    checked ids of a list); None when the body is too big or not a form."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        pairs = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: " ".join(v) for k, v in pairs.items()}


async def _prune(source: Source, retention: float) -> None:
    """Drop history older than the retention now and then, while the dashboard runs."""
    while True:
        if source.results is not None:
            with contextlib.suppress(HubbubError):
                await source.results.prune_history(time.time() - retention)
        await asyncio.sleep(PRUNE_EVERY)
