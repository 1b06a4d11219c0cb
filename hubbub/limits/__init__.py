"""Unique jobs and fleet-wide rate and concurrency limits, kept in the result store.

``rate`` parses ``"100/m"`` and holds the rate rule; ``keys`` derives keys from a task's
arguments; ``store`` is the seam (``LimitStore``) each result store implements in
``memory``, ``sqlite`` and ``redis``; ``unique`` is the producer's side of unique jobs. The
worker's side is :mod:`hubbub.worker.gates`. See docs/limits.md.
"""

from hubbub.limits.keys import KeyFrom, check_key_from, derive_key
from hubbub.limits.rate import Rate, Reservation, parse_rate
from hubbub.limits.store import LimitStore, Slot

__all__ = ["KeyFrom", "LimitStore", "Rate", "Reservation", "Slot", "check_key_from",
           "derive_key", "parse_rate"]
