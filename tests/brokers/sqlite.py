from __future__ import annotations

from pathlib import Path

SCHEME = "sqlite"


def server() -> None:
    return None


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"sqlite:///{tmp_path / 'broker.db'}"


def results_url(tmp_path: Path, run_id: str) -> str:
    return f"sqlite:///{tmp_path / 'broker.db'}"


async def cleanup(url: str) -> None:
    return None  # the file lives in pytest's tmp_path
