"""The documentation site builds with ``mkdocs build --strict``, has its pages, fetches
nothing from the network, and its configuration page says what settings.py does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hubbub.settings import _PARSERS, Limits, Settings, environment_variable

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 240.0

PAGES = [
    "index.html", "tutorial.html", "configuration.html", "security.html",
    "coming-from-celery.html", "benchmarks.html", "internals.html",
    "tasks.html", "types.html", "pools.html", "scheduling.html", "reliability.html",
    "operations.html", "redis.html", "amqp.html", "beanstalk.html",
    "api/index.html", "api/hub.html", "api/task.html", "api/result.html", "api/errors.html",
    "api/events.html", "api/middleware.html", "api/codecs.html", "api/schedule.html",
    "api/control.html", "api/worker.html", "api/canvas.html", "api/limits.html",
    "api/hooks.html", "api/metrics.html", "api/integrations.html", "api/testing.html",
    "workflows.html", "limits.html", "dashboard.html", "metrics.html", "celery.html",
    "flask.html", "testing.html", "deployment.html", "scaling.html",
]
# What each API page must document (an anchor mkdocstrings writes for the object).
API_OBJECTS = {
    "api/hub.html": ["hubbub.Hub", "hubbub.Limits"],
    "api/task.html": ["hubbub.Task", "hubbub.TaskOptions", "hubbub.current_task"],
    "api/result.html": ["hubbub.Result", "hubbub.State"],
    "api/errors.html": ["hubbub.HubbubError", "hubbub.Retry", "hubbub.Reject"],
    "api/events.html": ["hubbub.events.TaskAttemptFailed", "hubbub.events.EventBus"],
    "api/middleware.html": ["hubbub.Middleware", "hubbub.DispatchContext"],
    "api/codecs.html": ["hubbub.codecs.register_type"],
    "api/schedule.html": ["hubbub.schedule.ScheduleEntry", "hubbub.schedule.beat.Beat"],
    "api/control.html": ["hubbub.control.Registry", "hubbub.control.WorkerInfo",
                         "hubbub.control.Control", "hubbub.control.Reply"],
    "api/worker.html": ["hubbub.WorkerLoop"],
    "api/canvas.html": ["hubbub.Signature", "hubbub.chain", "hubbub.group", "hubbub.chord",
                        "hubbub.GroupResult"],
    "api/limits.html": ["hubbub.limits.Rate", "hubbub.limits.LimitStore"],
    "api/hooks.html": ["hubbub.hooks.Hooks"],
    "api/metrics.html": ["hubbub.metrics.WorkerMetrics", "hubbub.metrics.FleetMetrics",
                         "hubbub.tracing.instrument"],
    "api/integrations.html": ["hubbub.integrations.flask.Hubbub",
                              "hubbub.integrations.fastapi.lifespan"],
    "api/testing.html": ["hubbub.testing.drain", "hubbub.testing.BackgroundWorker"],
}
EXTERNAL_ASSET = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return out


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_strict_build_has_every_page(site: Path) -> None:
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing, missing


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_api_pages_document_the_public_names(site: Path) -> None:
    for page, objects in API_OBJECTS.items():
        html = (site / page).read_text()
        absent = [name for name in objects if f'id="{name}"' not in html]
        assert not absent, (page, absent)


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_site_loads_nothing_from_the_network(site: Path) -> None:
    offenders = {str(p.relative_to(site)): EXTERNAL_ASSET.findall(p.read_text())
                 for p in site.rglob("*.html")}
    assert not {k: v for k, v in offenders.items() if v}
    css = "".join(p.read_text() for p in site.rglob("*.css"))
    assert "fonts.googleapis" not in css
    assert "@import url(http" not in css


def build_small_site(folder: Path, page: str) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of a one-page site that uses this repository's hook."""
    (folder / "docs").mkdir()
    (folder / "docs" / "index.md").write_text(page)
    (folder / "lonely.py").write_text('"""A module."""\n\n\ndef bare() -> None:\n    pass\n')
    (folder / "mkdocs.yml").write_text(
        "site_name: t\nhooks:\n  - " + str(ROOT / "scripts" / "mkdocs_hooks.py") + "\n"
        "plugins:\n  - mkdocstrings:\n      handlers:\n        python:\n"
        "          paths: [\".\"]\n")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(folder / "out")], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_missing_docstring_fails_the_strict_build(tmp_path: Path) -> None:
    """The hook turns an undocumented public function on an API page into a failure."""
    done = build_small_site(tmp_path, "# x\n\n::: lonely\n")
    assert done.returncode != 0
    assert "lonely.bare has no docstring" in done.stderr


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    done = build_small_site(tmp_path, "# x\n\nSee [the guide](no-such-page.md).\n")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr


def test_configuration_page_is_written_from_settings() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "configuration_table.py"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_configuration_page_names_every_setting_and_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for variable in _PARSERS:
        assert f"`{variable}`" in page, variable
    names = [f.name for f in Settings.__dataclass_fields__.values()
             if f.name not in {"sources", "limits"}]
    names += [f"limits.{name}" for name in Limits.__dataclass_fields__]
    for name in names:
        row = next((line for line in page.splitlines() if line.startswith(f"| `{name}` |")),
                   None)
        assert row is not None, f"no row for {name}"
        variable = environment_variable(name)
        assert variable is None or f"`{variable}`" in row, (name, row)


def test_coming_from_celery_snippets_run(tmp_path: Path) -> None:
    """The page's Python blocks, joined in order, run (on the memory broker instead of the
    Redis its app names), and a task it declares runs on a worker."""
    page = (ROOT / "docs" / "coming-from-celery.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)
    assert len(blocks) >= 3
    code = "\n".join(blocks)
    assert 'Hub("redis://localhost:6379/0")' in code
    code = code.replace('Hub("redis://localhost:6379/0")', 'Hub("memory://")')
    code += (
        "\nfrom hubbub.events import TaskAttemptFailed\n"
        "from hubbub.testing import drain\n"
        "sent = sync_stock.delay('A-1')\n"
        "drain(hub)\n"
        "assert sent.get(timeout=10) is None\n"
        "alert(TaskAttemptFailed('id1', 'shop.x', 0.1, 'w', 'boom', False))\n")
    (tmp_path / "shop.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "shop.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "shop.x id1 failed for good: boom" in done.stdout
