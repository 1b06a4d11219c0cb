"""How evenly a fleet-wide rate limit spaces the starts that tasks themselves see.

    python bench/rate_pacing.py                       # SQLite and Redis, 5 runs each
    python bench/rate_pacing.py --brokers redis --runs 10 --tasks 600

Two ``hubbub worker --pool threads -c 8`` processes drain ``--tasks`` tasks with
``rate_limit="50/s"``; each task appends ``time.monotonic()`` to a file as its first line.
Per run: the span from the first start to the last, and the most starts seen in any one-second
window (the rate's promise: at most 50) and in any window of 0.98 s. Starts are admitted
``(period + LAG_ALLOWANCE) / N`` apart (hubbub/limits/rate.py); what this measures is whether
the moment between admission and a task's first line varied by less than that allowance.
Not a test: the figures depend on the machine's load, which is printed with them.
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from hubbub import Hub
from hubbub.limits.rate import LAG_ALLOWANCE

RATE = 50
APP = '''
import os, time
from hubbub import Hub

hub = Hub()

@hub.task(name="paced", rate_limit="50/s")
def paced(i: int) -> None:
    with open(os.environ["PACING_STARTS"], "a") as out:
        out.write(f"{time.monotonic()}\\n")
'''


def most_in_window(starts: list[float], width: float) -> int:
    """The most starts in any half-open window [s, s + width)."""
    return max(bisect.bisect_left(starts, s + width) - i for i, s in enumerate(starts))


def broker_url(broker: str, folder: Path) -> str:
    if broker == "sqlite":
        return f"sqlite:///{folder / 'broker.db'}"
    return f"redis://127.0.0.1:6379/0?prefix=pace{uuid.uuid4().hex[:8]}"


def one_run(broker: str, tasks: int, folder: Path) -> tuple[float, int, int]:
    url = broker_url(broker, folder)
    results = url if broker == "redis" else f"sqlite:///{folder / 'results.db'}"
    starts_file = folder / "starts"
    env = {**os.environ, "HUBBUB_BROKER": url, "HUBBUB_RESULTS": results,
           "PACING_STARTS": str(starts_file), "PYTHONPATH": str(folder)}
    hub = Hub(url, results=results)
    paced = hub.task(name="paced", rate_limit=f"{RATE}/s")(lambda i: None)
    try:
        paced.delay_many([(i,) for i in range(tasks)])
        workers = [subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A",
                                     "pacing_app:hub", "--pool", "threads", "-c", "8", "-l",
                                     "error"], env=env, cwd=folder, start_new_session=True)
                   for _ in range(2)]
        try:
            deadline = time.monotonic() + 30 + tasks / RATE * 2
            while len(_read(starts_file)) < tasks:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{tasks} paced tasks did not all start")
                time.sleep(0.1)
        finally:
            for proc in workers:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in workers:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if broker == "redis":
            hub.bridge.run(_forget(url))
    finally:
        hub.close()
    starts = sorted(_read(starts_file))
    return starts[-1] - starts[0], most_in_window(starts, 1.0), most_in_window(starts, 0.98)


def _read(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


async def _forget(url: str) -> None:
    """Delete the run's keys (its own prefix) from the shared Redis."""
    import redis.asyncio as aioredis

    prefix = url.split("prefix=")[1]
    client = aioredis.Redis.from_url(url.split("?")[0])
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", nargs="+", default=["sqlite", "redis"],
                        choices=["sqlite", "redis"], help="where the tasks are queued")
    parser.add_argument("--runs", type=int, default=5, help="runs per broker")
    parser.add_argument("--tasks", type=int, default=300, help="paced tasks per run")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for broker in args.brokers:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "pacing_app.py").write_text(APP)
                span, most, most_short = one_run(broker, args.tasks, folder)
            ideal = (args.tasks - 1) * (1 + LAG_ALLOWANCE) / RATE
            print(f"{broker} run {run + 1}: span {span:.3f} s (admitted: {ideal:.3f} s), "
                  f"most in 1 s: {most} (promise: {RATE}), in 0.98 s: {most_short}, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"command: python bench/rate_pacing.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
