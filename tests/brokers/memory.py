from __future__ import annotations

from pathlib import Path

SCHEME = "memory"


def server() -> None:
    return None


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"memory://{run_id}"


def results_url(tmp_path: Path, run_id: str) -> str:
    return f"memory://{run_id}"


async def cleanup(url: str) -> None:
    from hubbub.results import memory as results_memory
    from hubbub.transports import memory

    memory._STORES.pop(url, None)
    results_memory._STORES.pop(url, None)
