"""What checking the arguments against the task's signature costs ``delay()``.

    python bench/delay_overhead.py                  # 20,000 calls, median of 5 runs
    python bench/delay_overhead.py --calls 50000 --runs 7

Sends no-op tasks one by one with ``delay()`` on the in-memory broker (the cheapest publish
there is, so the check's share is as large as it gets), once with the check and once with it
switched off, in turns (alternating which goes first), and prints the median time per call
of each and their ratio. Also times ``Signature.bind`` alone. Not a test: nothing here
asserts timings.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
import uuid
from typing import Any

from hubbub import Hub


def per_call(task: Any, calls: int, *, check: bool) -> float:
    """Seconds per ``delay()`` over ``calls`` calls."""
    task._signature = False if check else None  # False: read on first use; None: no check
    started = time.perf_counter()
    for i in range(calls):
        task.delay(i, i, sku="A-1")
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()

    hub = Hub(f"memory://bench-delay-{uuid.uuid4().hex}", results="none")

    @hub.task
    def order(x: int, y: int, *, sku: str, note: str = "") -> None:
        """A task with the usual shape: positional and keyword arguments, a default."""

    try:
        per_call(order, 1000, check=True)  # warm up: connect, read the signature
        checked, unchecked = [], []
        for run in range(options.runs):
            # Alternate which goes first: the first of a pair measured consistently slower.
            for check in (True, False) if run % 2 else (False, True):
                (checked if check else unchecked).append(
                    per_call(order, options.calls, check=check))
    finally:
        hub.close()
    signature = inspect.signature(order.fn)
    started = time.perf_counter()
    for i in range(options.calls):
        signature.bind(i, i, sku="A-1")
    bind = (time.perf_counter() - started) / options.calls

    with_check, without = statistics.median(checked), statistics.median(unchecked)
    print(f"delay() one by one on memory://, {options.calls} calls, median of {options.runs} "
          f"runs, load average {os.getloadavg()[0]:.2f}")
    print(f"  with the check:    {with_check * 1e6:7.1f} us per call")
    print(f"  without the check: {without * 1e6:7.1f} us per call")
    print(f"  ratio:             {with_check / without:7.3f}")
    print(f"  Signature.bind alone: {bind * 1e6:.1f} us per call")


if __name__ == "__main__":
    main()
