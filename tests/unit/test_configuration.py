"""Configuration that does not surprise: the code wins over the environment, the default SQLite
file does not move with the working directory, and the banner says where each setting came
from."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubbub import Hub, Limits
from hubbub.cli import main
from hubbub.cli._common import settings_lines
from hubbub.settings import resolve, sqlite_url

HERE = Path(__file__).resolve().parent


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    made: list[Hub] = []
    try:
        yield made
    finally:
        for hub in made:
            hub.close()


def import_file(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


# -- where each setting comes from -------------------------------------------------------------


def test_each_setting_remembers_whether_the_cli_the_code_or_the_environment_set_it() -> None:
    settings = resolve(
        {"broker": "memory://code", "lease": None, "limits": Limits(max_deliveries=2)},
        cli={"default_queue": "cli"},
        environ={"HUBBUB_BROKER": "memory://env", "HUBBUB_LEASE": "4",
                 "HUBBUB_DEFAULT_QUEUE": "env"},
    )

    assert (settings.broker, settings.lease, settings.default_queue) == (
        "memory://code", 4.0, "cli")
    assert [settings.source(n) for n in ("broker", "lease", "default_queue", "result_ttl",
                                         "limits.max_deliveries")] == [
        "code", "environment", "CLI", "default", "code"]


def test_the_banner_says_where_each_non_default_setting_came_from(
    monkeypatch: pytest.MonkeyPatch, hubs: list[Hub],
) -> None:
    monkeypatch.setenv("HUBBUB_LEASE", "12")
    monkeypatch.setenv("HUBBUB_DEFAULT_QUEUE", "env-queue")
    hub = Hub("memory://banner", default_queue="code-queue",
              signing_keys={"k1": "s3cret-s3cret-s3cret"}, limits=Limits(max_deliveries=3))
    hubs.append(hub)

    lines = settings_lines(hub, {"lease": 2.0})

    assert lines == [
        "broker memory://banner (from the code)",
        "lease 2.0 (from the CLI)",
        "default_queue code-queue (from the code)",
        "signing_keys k1 (from the code)",
        "limits.max_deliveries 3 (from the code)",
    ]
    assert "s3cret" not in "\n".join(lines)
    assert settings_lines(hub)[1] == "lease 12.0 (from $HUBBUB_LEASE)"


def test_the_banner_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, hubs: list[Hub],
) -> None:
    monkeypatch.setenv("HUBBUB_BROKER", "memory://from-env")
    monkeypatch.setenv("HUBBUB_RESULT_TTL", "60")
    hub = Hub()
    hubs.append(hub)

    assert settings_lines(hub) == ["broker memory://from-env (from $HUBBUB_BROKER)",
                                   "result_ttl 60.0 (from $HUBBUB_RESULT_TTL)"]


# -- the default SQLite file -------------------------------------------------------------------


def test_the_default_broker_is_an_absolute_file_next_to_the_module_that_made_the_hub(
    hubs: list[Hub],
) -> None:
    hub = Hub()
    hubs.append(hub)

    assert hub.settings.broker == sqlite_url(HERE) == f"sqlite:///{HERE}/hubbub.db"
    assert hub.settings.results == hub.settings.broker
    assert hub.anchor == Path(__file__).resolve()


def test_a_web_process_and_a_worker_in_different_folders_agree_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "shop.py").write_text("from hubbub import Hub\nhub = Hub()\n")
    urls = []
    for cwd in (tmp_path, app, HERE):
        monkeypatch.chdir(cwd)
        hub = import_file(app / "shop.py", "shop").hub  # type: ignore[attr-defined]
        urls.append(hub.settings.broker)
        hub.close()

    assert urls == [f"sqlite:///{app}/hubbub.db"] * 3


def test_an_interactive_hub_puts_the_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    session: dict[str, object] = {"Hub": Hub, "__name__": "__main__"}  # no __file__

    exec("hub = Hub()", session)  # a stand-in for the REPL
    hub = session["hub"]

    assert isinstance(hub, Hub)
    assert (hub.anchor, hub.settings.broker) == (None, f"sqlite:///{tmp_path.resolve()}/hubbub.db")
    assert settings_lines(hub)[0] == (f"broker sqlite:///{tmp_path.resolve()}/hubbub.db = "
                                      f"{tmp_path.resolve()}/hubbub.db "
                                      "(default: in the working directory)")
    hub.close()


def test_a_path_with_url_characters_is_quoted_and_still_names_the_file(tmp_path: Path) -> None:
    from hubbub._sqlite import sqlite_path

    odd = tmp_path / "a b?c#d%"
    odd.mkdir()

    assert sqlite_path(sqlite_url(odd)) == f"{odd.resolve()}/hubbub.db"


def test_the_banner_shows_the_absolute_file_and_the_module_it_sits_next_to(
    hubs: list[Hub],
) -> None:
    hub = Hub()
    hubs.append(hub)

    assert settings_lines(hub) == [
        f"broker sqlite:///{HERE}/hubbub.db = {HERE}/hubbub.db "
        f"(default: next to {Path(__file__).resolve()}, the module that made the Hub)"]


def test_status_shows_the_absolute_path_of_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)

    outcome = CliRunner().invoke(main, ["status"])

    assert outcome.exit_code == 0, outcome.output
    assert f"sqlite:///{tmp_path.resolve()}/hubbub.db" in "".join(outcome.output.split())
