"""A process pool's children import the hubbub their worker runs, whatever folder the worker
was started from."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hubbub import Hub, State
from tests.e2e.conftest import wait_for

APP = textwrap.dedent('''
    import os
    from hubbub import Hub

    hub = Hub()  # $HUBBUB_BROKER

    @hub.task
    def where() -> int:
        return os.getpid()
''')


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["prefork", "hybrid"])
def test_children_ignore_a_folder_named_hubbub_in_the_working_directory(
    tmp_path: Path, pool: str
) -> None:
    # The installed `hubbub` command does not look in the working directory; its children,
    # started with `python -c`, did, and imported a hubbub folder found there.
    (tmp_path / "app.py").write_text(APP)
    decoy = tmp_path / "hubbub"
    decoy.mkdir()
    (decoy / "__init__.py").write_text('raise ImportError("the hubbub folder of this project")\n')
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    sender = Hub(url)
    log = tmp_path / "worker.log"
    # -P: as the console script, the worker itself does not import from its folder.
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-P", "-m", "hubbub", "worker", "-A", "app:hub", "--pool", pool,
             "-c", "1"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**_environment(), "HUBBUB_BROKER": url})
    try:
        result = sender.send_task("app.where")
        wait_for(lambda: worker.poll() is not None or result.state == State.SUCCESS,
                 timeout=60, what="the task ran, or the worker gave up")
        assert worker.poll() is None, log.read_text()
        assert isinstance(result.get(timeout=5), int)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        sender.close()
    wait_for(lambda: worker.poll() is not None, what="worker stopped")
    assert "the hubbub folder of this project" not in log.read_text()


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
