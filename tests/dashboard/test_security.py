"""Who may see and steer the dashboard: login, sessions, CSRF, read-only, the bind rule,
and that secrets never reach a page."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub.dashboard import DashboardConfig
from hubbub.errors import ConfigurationError
from tests.dashboard.conftest import csrf_of

TOKEN = "t0ken-for-tests"


def test_without_credentials_only_loopback_binds_are_allowed() -> None:
    assert DashboardConfig.from_environment({}, bind="127.0.0.1:5555").host == "127.0.0.1"
    assert DashboardConfig.from_environment({}, bind="[::1]:5555").host == "::1"
    with pytest.raises(ConfigurationError, match="without authentication"):
        DashboardConfig.from_environment({}, bind="0.0.0.0:5555")
    exposed = DashboardConfig.from_environment({"HUBBUB_DASHBOARD_TOKEN": TOKEN},
                                               bind="0.0.0.0:5555")
    assert exposed.auth_required
    assert exposed.secure_cookies
    with pytest.raises(ConfigurationError, match="HUBBUB_DASHBOARD_PASSWORD"):
        DashboardConfig.from_environment({"HUBBUB_DASHBOARD_USER": "ann"}, bind="0.0.0.0:1")
    with pytest.raises(ConfigurationError, match="not host:port"):
        DashboardConfig.from_environment({}, bind="localhost")
    with pytest.raises(ConfigurationError, match="--retention must be more than 0"):
        DashboardConfig.from_environment({}, retention=0)
    assert TOKEN not in repr(exposed)


def test_the_command_refuses_a_public_bind_without_credentials_in_one_line(
        tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd()), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "hubbub", "dashboard", "--broker",
         f"sqlite:///{tmp_path / 'x.db'}", "--bind", "0.0.0.0:5599"],
        capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "refusing to serve the dashboard on 0.0.0.0" in lines[0]
    assert "HUBBUB_DASHBOARD_TOKEN" in lines[0]


def test_a_token_login_opens_a_session_and_logout_ends_it(sqlite_hub: Hub,
                                                          client_for: Any) -> None:
    client = client_for(sqlite_hub, token=TOKEN, secure_cookies=False)
    first = client.get("/tasks")
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=/tasks"
    assert client.post("/workers/control", data={"csrf": "x"}).status_code == 401
    assert client.get("/live").status_code == 401
    assert client.get("/static/dashboard.css").status_code == 200

    login = client.get("/login")
    csrf = csrf_of(login.text)
    wrong = client.post("/login", data={"csrf": csrf, "token": "nope", "next": "/tasks"})
    assert wrong.status_code == 401
    assert "not right" in wrong.text
    no_csrf = client.post("/login", data={"token": TOKEN})
    assert no_csrf.status_code == 403
    ok = client.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/tasks"})
    assert ok.status_code == 303
    assert ok.headers["location"] == "/tasks"
    assert client.get("/tasks").status_code == 200
    assert "secure" in client_for(sqlite_hub, token=TOKEN, secure_cookies=True).get(
        "/").headers["set-cookie"].lower()

    page = client.get("/").text
    assert client.post("/logout", data={"csrf": csrf_of(page)}).status_code == 303
    assert client.get("/").status_code == 303


def test_basic_auth_and_bearer_headers_let_scripts_in(sqlite_hub: Hub,
                                                      client_for: Any) -> None:
    client = client_for(sqlite_hub, user="ann", password="pw", token=TOKEN)
    basic = base64.b64encode(b"ann:pw").decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    bad = base64.b64encode(b"ann:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 303
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer x"}).status_code == 303


def test_a_session_cookie_signed_with_another_secret_is_not_accepted(
        sqlite_hub: Hub, client_for: Any) -> None:
    other = client_for(sqlite_hub, token=TOKEN, secret="one")
    csrf = csrf_of(other.get("/login").text)
    assert other.post("/login", data={"csrf": csrf, "token": TOKEN}).status_code == 303
    stolen = other.cookies.get("hubbub_session")
    client = client_for(sqlite_hub, token=TOKEN, secret="two")
    client.cookies.set("hubbub_session", stolen)
    assert client.get("/").status_code == 303
    client.cookies.set("hubbub_session", stolen[:-3] + "AAA")
    assert client.get("/").status_code == 303


def test_every_action_needs_the_session_csrf_token(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub)
    result = sqlite_hub.send_task("dash.add", [1, 2])
    client.get("/")  # a session
    for url in (f"/tasks/{result.id}/revoke", f"/tasks/{result.id}/terminate",
                f"/tasks/{result.id}/retry", "/queues/purge", "/dead/requeue",
                "/dead/delete", "/workers/control"):
        assert client.post(url, data={"queue": "default", "confirm": "default"}
                           ).status_code == 403, url
        assert client.post(url, data={"csrf": "forged", "queue": "default"}
                           ).status_code == 403, url
    assert result.state == "PENDING"  # nothing was revoked
    other = client_for(sqlite_hub)  # another visitor's token is not this one's
    stranger = csrf_of(other.get("/tasks").text)
    assert client.post(f"/tasks/{result.id}/revoke", data={"csrf": stranger}
                       ).status_code == 403
    client.get(f"/tasks/{result.id}/revoke")  # a GET never acts
    assert result.state == "PENDING"


def test_read_only_hides_and_refuses_actions(sqlite_hub: Hub, client_for: Any) -> None:
    client = client_for(sqlite_hub, read_only=True)
    result = sqlite_hub.send_task("dash.add", [1, 2])
    page = client.get(f"/tasks/{result.id}").text
    assert "revoke" not in page
    assert "read-only" in page
    assert "purge" not in client.get("/queues").text
    answer = client.post(f"/tasks/{result.id}/revoke", data={"csrf": csrf_of(page)})
    assert answer.status_code == 403
    assert "read-only" in answer.text
    assert result.state == "PENDING"


def test_an_action_never_redirects_off_the_dashboard(sqlite_hub: Hub,
                                                     client_for: Any) -> None:
    client = client_for(sqlite_hub)
    csrf = csrf_of(client.get("/queues").text)
    for back in ("https://evil.example/", "//evil.example/"):
        answer = client.post("/queues/purge", data={"csrf": csrf, "queue": "q",
                                                    "confirm": "no", "back": back})
        assert answer.headers["location"].startswith("/?note=")


def test_broker_passwords_and_signing_keys_never_reach_a_page(tmp_path: Path,
                                                              client_for: Any) -> None:
    hub = Hub("memory://user:hunter2@dash-secrets", signing_keys={"k1": "k3y-s3cret-v4lue"})
    try:
        client = client_for(hub)
        for page in ("/", "/workers", "/tasks", "/queues", "/dead", "/schedules"):
            text = client.get(page).text
            assert "hunter2" not in text, page
            assert "k3y-s3cret" not in text, page
            assert "memory://user:***@" in client.get("/").text
    finally:
        hub.close()


def test_security_headers_are_set(sqlite_hub: Hub, client_for: Any) -> None:
    headers = client_for(sqlite_hub).get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_a_hub_started_beside_the_dashboard_credentials_accepts_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUBBUB_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("HUBBUB_DASHBOARD_SECRET", "s")
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        assert TOKEN not in repr(hub.settings)
    finally:
        hub.close()
    assert DashboardConfig.from_environment(bind="0.0.0.0:5555").token == TOKEN
