from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

import hubbub

# Changing this list changes the public API: do it on purpose, with a CHANGELOG entry.
PUBLIC = [
    "ConfigurationError",
    "DispatchContext",
    "GroupResult",
    "Hub",
    "HubbubError",
    "Limits",
    "MessageError",
    "MessageTooLarge",
    "Middleware",
    "Reject",
    "Result",
    "ResultError",
    "ResultTimeout",
    "ResultUnavailable",
    "Retry",
    "ScheduleError",
    "Signature",
    "SoftTimeLimitExceeded",
    "State",
    "Task",
    "TaskContext",
    "TaskCrashed",
    "TaskError",
    "TaskFailed",
    "TaskFilter",
    "TaskOptions",
    "TaskRevoked",
    "TaskTimedOut",
    "TransportError",
    "TransportUnavailable",
    "WorkerLoop",
    "WriteBackFailed",
    "__version__",
    "chain",
    "chord",
    "current_task",
    "get_task_logger",
    "group",
    "run_worker",
]

PACKAGE_DIR = Path(hubbub.__file__).parent


def test_the_public_api_is_exactly_the_documented_set() -> None:
    assert sorted(hubbub.__all__) == PUBLIC


def test_the_public_api_lists_each_name_once_in_sorted_order() -> None:
    assert hubbub.__all__ == sorted(set(hubbub.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_can_be_imported(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from hubbub import {name}", namespace)

    assert namespace[name] is getattr(hubbub, name)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from hubbub import *", namespace)

    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_every_public_name_has_a_docstring(name: str) -> None:
    assert inspect.getdoc(getattr(hubbub, name))


def test_every_public_error_has_a_common_root() -> None:
    steering = {hubbub.Retry, hubbub.Reject}
    errors = [
        obj
        for obj in (getattr(hubbub, n) for n in PUBLIC)
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj not in steering
    ]

    assert len(errors) == 17
    assert all(issubclass(e, hubbub.HubbubError) for e in errors)


def test_retry_and_reject_steer_the_worker_and_are_not_hubbub_errors() -> None:
    assert not issubclass(hubbub.Retry, hubbub.HubbubError)
    assert not issubclass(hubbub.Reject, hubbub.HubbubError)


def test_timeouts_are_also_timeout_errors() -> None:
    assert issubclass(hubbub.TaskTimedOut, TimeoutError)
    assert issubclass(hubbub.ResultTimeout, TimeoutError)
    assert issubclass(hubbub.ResultUnavailable, ConnectionError)
    assert issubclass(hubbub.TransportUnavailable, ConnectionError)


def test_the_version_is_a_string() -> None:
    assert isinstance(hubbub.__version__, str)
    assert hubbub.__version__


def test_the_version_matches_the_project_metadata() -> None:
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("running from an installed package, not the source tree")

    assert tomllib.loads(pyproject.read_text())["project"]["version"] == hubbub.__version__


def test_the_package_ships_its_type_marker() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()


# The module each extra's distribution is imported as.
EXTRA_MODULES = {"orjson": "orjson", "msgpack": "msgpack", "redis": "redis",
                 "aio-pika": "aio_pika", "croniter": "croniter", "gevent": "gevent",
                 "flask": "flask", "fastapi": "fastapi",
                 "prometheus-client": "prometheus_client", "opentelemetry-api": "opentelemetry",
                 "starlette": "starlette", "uvicorn": "uvicorn", "jinja2": "jinja2",
                 "amqp": "amqp", "uvloop": "uvloop"}
# Installed for another package's sake, never imported by hubbub: redis-py's C parser.
USED_BY_A_DEPENDENCY = {"hiredis": "redis"}


def _extras() -> dict[str, list[str]]:
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("running from an installed package, not the source tree")
    extras: dict[str, list[str]] = tomllib.loads(pyproject.read_text())["project"][
        "optional-dependencies"]
    return extras


def test_every_extra_installs_only_what_the_package_imports() -> None:
    source = "\n".join(p.read_text() for p in PACKAGE_DIR.rglob("*.py"))
    for extra, requirements in _extras().items():
        if extra in ("all", "test", "docs", "examples"):
            continue  # groups of extras, and tools for the docs site and examples/
        for requirement in requirements:
            dist = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
            if dist in USED_BY_A_DEPENDENCY:
                assert USED_BY_A_DEPENDENCY[dist] in " ".join(requirements), (extra, dist)
                continue
            module = EXTRA_MODULES.get(dist)
            assert module is not None, f"extra {extra!r}: say in EXTRA_MODULES what {dist} is"
            assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), (extra, dist)


def test_the_beanstalk_extra_is_kept_but_installs_nothing() -> None:
    # The transport has its own asyncio client; the extra stays so install lines keep working.
    assert _extras()["beanstalk"] == []


def test_result_get_raises_the_specific_error_and_it_is_still_a_task_failed() -> None:
    assert issubclass(hubbub.TaskCrashed, hubbub.TaskFailed)
    assert issubclass(hubbub.TaskTimedOut, hubbub.TaskFailed)
    assert hubbub.TaskCrashed("child died").type == "TaskCrashed"


def test_the_old_event_name_still_imports_with_a_deprecation_warning() -> None:
    from hubbub import events

    with pytest.warns(DeprecationWarning, match="TaskAttemptFailed"):
        old = events.TaskFailed
    assert old is events.TaskAttemptFailed
