"""``hubbub.flask``: configuration from app.config, tasks declared before the app, and the
app context around every task on every pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask

from hubbub import Hub, TaskFailed
from hubbub.errors import ConfigurationError
from hubbub.flask import Hubbub
from tests.worker.scratch import running_worker, scratch_app

APP = '''
import os
from flask import Flask, current_app, g
from hubbub.flask import Hubbub

hubbub = Hubbub()   # before any app exists

def facts():
    g.touched = True   # g lives in the app context
    return dict(name=current_app.name, shop=current_app.config["SHOP"], pid=os.getpid())

@hubbub.task
def where():
    return facts()

@hubbub.task
async def where_async():
    return facts()

def create_app():
    app = Flask("shopapp", instance_path=os.path.join(os.path.dirname(__file__), "instance"))
    app.config.update(HUBBUB_BROKER="{url}", HUBBUB_LEASE=5, SHOP="corner shop")
    hubbub.init_app(app)
    return app

app = create_app()
hub = hubbub.hub
'''


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with scratch_app(tmp_path, APP, prefix="flaskapp") as module:
        yield module


@pytest.mark.parametrize("pool", ["solo", "threads", "async", "prefork", "hybrid", "gevent"])
def test_every_task_runs_inside_the_app_context(app: ModuleType, pool: str) -> None:
    with running_worker(app, pool):
        results = [app.where.delay(), app.where_async.delay()]
        facts = [r.get(timeout=30) for r in results]
    assert [(f["name"], f["shop"]) for f in facts] == [("shopapp", "corner shop")] * 2


def test_hub_settings_come_from_app_config(tmp_path: Path) -> None:
    ext = Hubbub()
    flask_app = Flask("cfg", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(HUBBUB_BROKER=f"sqlite:///{tmp_path / 'b.db'}", HUBBUB_LEASE=12,
                            HUBBUB_DEFAULT_QUEUE="web")
    ext.init_app(flask_app)
    assert ext.hub.settings.broker == f"sqlite:///{tmp_path / 'b.db'}"
    assert ext.hub.settings.lease == 12
    assert ext.hub.settings.default_queue == "web"
    assert flask_app.extensions["hubbub"] is ext
    ext.hub.close()


def test_without_a_broker_the_hub_uses_the_instance_folder(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBBUB_BROKER", raising=False)
    monkeypatch.delenv("HUBBUB_RESULTS", raising=False)
    ext = Hubbub(Flask("inst", instance_path=str(tmp_path / "one")))
    assert ext.hub.settings.broker.endswith(f"{tmp_path}/one/hubbub.db")
    ext.init_app(Flask("inst", instance_path=str(tmp_path / "two")))  # a test's fresh app
    assert ext.hub.settings.broker.endswith(f"{tmp_path}/two/hubbub.db")
    assert (tmp_path / "two").is_dir()
    ext.hub.close()


def test_a_misspelt_config_key_is_refused_with_the_right_one(tmp_path: Path) -> None:
    flask_app = Flask("typo", instance_path=str(tmp_path))
    flask_app.config["HUBBUB_BROKR"] = "sqlite:///x.db"
    with pytest.raises(ConfigurationError, match="did you mean 'HUBBUB_BROKER'"):
        Hubbub(flask_app)


def test_a_task_with_no_app_in_its_process_fails_saying_what_to_do(tmp_path: Path) -> None:
    ext = Hubbub(hub=Hub(f"sqlite:///{tmp_path / 'x.db'}"))

    @ext.task
    def needs_app() -> str:
        return "ran"

    with pytest.raises(TaskFailed, match="no init_app\\(app\\) ran in this process"):
        needs_app.apply().get()
    ext.hub.close()


def test_configure_is_refused_once_the_hub_has_connected(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'x.db'}")

    @hub.task
    def noop() -> None: ...

    noop.delay()
    with pytest.raises(ConfigurationError, match="must come before the hub sends"):
        hub.configure(lease=3)
    with pytest.raises(ConfigurationError, match="unknown setting 'leas'"):
        Hub(f"sqlite:///{tmp_path / 'y.db'}").configure(leas=3)
    hub.close()
