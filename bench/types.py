"""What tagged argument and result types cost: this checkout against an older one.

    git worktree add /tmp/types-before $(git merge-base HEAD main)
    python bench/types.py --before /tmp/types-before          # median of 5 runs each
    python bench/types.py --before /tmp/types-before --runs 9 --loops 50000
    git worktree remove /tmp/types-before

Each run is a fresh interpreter with ``PYTHONPATH`` set to one checkout (``--measure``
mode), timing ``--loops`` round trips of each case; the runs of the two checkouts are
taken in turns, so other work on the machine disturbs both alike. Figures are medians in
microseconds per round trip, and the ratio is after / before (1.00: no change). A case the
older code cannot run (it refused datetimes) is shown as "refused". Not a test: nothing
here asserts timings.

Cases:

- envelope, plain JSON: ``message.encode`` + ``message.decode`` of a task call with
  arguments ``[1, "x", {"a": [1, 2]}]``, on the json codec (the default).
- envelope, datetimes: the same with three aware datetimes, a date and a timedelta.
- envelope, datetimes as strings: what a caller had to send before (ISO strings, parsed
  back by the task): the JSON cost of the same information without tags.
- result, plain JSON: the worker's check of a return value (``execute.unencodable``), then
  ``encode_record`` + ``decode_record`` of ``{"total": 12.5, "items": [1, 2, 3]}``.
- decode only: ``message.decode`` of the plain envelope, ``decode_record`` of the record:
  what a payload without tags pays on the reading side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def cases() -> dict[str, Callable[[], Any]]:
    """One round trip per case, using only names both checkouts have."""
    import datetime as dt

    from hubbub.codecs import get_codec
    from hubbub.message import Envelope, decode, encode
    from hubbub.results.base import ResultRecord, State, decode_record, encode_record
    from hubbub.worker.execute import unencodable

    codec = get_codec("json")
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    plain = Envelope("shop.charge", (1, "x", {"a": [1, 2]}))
    dated = Envelope("shop.charge", (1, "x", {"a": [when, when, when]},
                                     dt.date(2024, 5, 6), dt.timedelta(seconds=90)))
    strings = Envelope("shop.charge", (1, "x", {"a": [when.isoformat()] * 3}, "2024-05-06", 90.0))
    value = {"total": 12.5, "items": [1, 2, 3]}
    record = ResultRecord("6f1c", State.SUCCESS, task="shop.charge", value=value,
                          finished_at=1.5)

    def envelope(env: Envelope) -> Callable[[], Any]:
        return lambda: decode(encode(env, codec))

    plain_body, plain_record = encode(plain, codec), encode_record(record)

    def result() -> Any:
        assert unencodable(value) is None
        return decode_record(encode_record(record))

    return {
        "envelope, plain JSON": envelope(plain),
        "envelope, datetimes": envelope(dated),
        "envelope, datetimes as strings": envelope(strings),
        "result, plain JSON": result,
        "decode only: envelope, plain": lambda: decode(plain_body),
        "decode only: result, plain": lambda: decode_record(plain_record),
    }


def measure(loops: int) -> dict[str, float | None]:
    """Microseconds per round trip of each case, in this interpreter; None if refused."""
    timings: dict[str, float | None] = {}
    for name, case in cases().items():
        try:
            case()
        except Exception:  # the older code refuses this payload
            timings[name] = None
            continue
        for _ in range(loops // 10):  # warm up
            case()
        started = time.perf_counter()
        for _ in range(loops):
            case()
        timings[name] = (time.perf_counter() - started) / loops * 1e6
    return timings


def run_in(checkout: Path, loops: int) -> dict[str, float | None]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", "--loops", str(loops)],
        env=env, check=True, capture_output=True, text=True, cwd=checkout,
    ).stdout
    return dict(json.loads(out))


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--runs", type=int, default=5, help="runs per checkout (median)")
    parser.add_argument("--loops", type=int, default=20_000, help="round trips per run")
    parser.add_argument("--measure", action="store_true",
                        help="time this interpreter's hubbub and print JSON (used by runs)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.loops)))
        return
    sides = {"after": HERE}
    if args.before is not None:
        sides = {"before": args.before.resolve(), **sides}
    runs: dict[str, list[dict[str, float | None]]] = {side: [] for side in sides}
    for _ in range(args.runs):
        for side, checkout in sides.items():
            runs[side].append(run_in(checkout, args.loops))
    names = list(runs["after"][0])
    head = f"{'case':32} " + " ".join(f"{side + ' (us)':>12}" for side in sides)
    print(head + ("  after/before" if "before" in sides else ""))
    for name in names:
        figures = {side: median([r[name] for r in runs[side]]) for side in sides}
        cells = " ".join(f"{'refused' if v is None else f'{v:.2f}':>12}" for v in figures.values())
        ratio = ""
        before, after = figures.get("before"), figures["after"]
        if before is not None and after is not None:
            ratio = f"  {after / before:.2f}"
        print(f"{name:32} {cells}{ratio}")
    print(f"median of {args.runs} runs of {args.loops} round trips each; "
          f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
