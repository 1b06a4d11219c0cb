"""Failover over a RabbitMQ cluster's URLs with backoff: which URL to try, when to pause and
for how long, and the error once ``connect_timeout`` has passed. One piece for the transport's
async connection (``Link``) and its sync publisher (``AMQPSyncPublisher``), which differ only
in how they connect, what their driver raises, and how they wait and read the clock; those
stay with them, so this module neither sleeps nor reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from hubbub._redact import redact
from hubbub.errors import TransportUnavailable

# The pause after the first round of failures, doubled after every round up to the cap: a
# broker that restarts is found again within a second or two, and a cluster that stays down
# is asked no more than once every two seconds per URL.
FIRST_PAUSE = 0.05
MAX_PAUSE = 2.0


class Failover:
    """The URLs of a cluster and the one to try next, kept across connections.

    A new connection starts at the URL the last one ended on: the one that worked stays in
    use, and a dead member that made the last attempt move on is not tried first again.

    Args:
        urls: the brokers of a cluster, tried in turn.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self._next = 0  # counts every failure; the URL to try is this modulo len(urls)

    def attempt(self, deadline: float) -> ConnectAttempt:
        """A new attempt to connect, which gives up at ``deadline`` (on the caller's clock).

        Args:
            deadline: the instant after which no new round is started.

        Returns:
            The attempt, starting at the URL the last attempt ended on.
        """
        return ConnectAttempt(self, deadline)


class ConnectAttempt:
    """One attempt to connect: the URL to try now, the failures so far, and the backoff.

    The caller loops: connect to ``url``; on a driver error, ``failed(exc)``; then sleep for
    ``backoff(now)`` if it is not zero. ``failed`` records and ``backoff`` raises, in two
    steps, so that the final error is raised outside the caller's ``except`` block: it
    names the last round's failures itself and is not chained to the last one alone.

    Args:
        failover: the URLs and the one to try next, which this attempt moves on.
        deadline: the instant after which no new round is started.
    """

    def __init__(self, failover: Failover, deadline: float) -> None:
        self._failover = failover
        self.deadline = deadline
        self._pause = FIRST_PAUSE
        self._failures: list[str] = []

    @property
    def index(self) -> int:
        """The position in ``urls`` of the URL to try now."""
        return self._failover._next % len(self._failover.urls)

    @property
    def url(self) -> str:
        """The URL to try now, with its password (for the driver only)."""
        return self._failover.urls[self.index]

    @property
    def where(self) -> str:
        """The URL to try now with its secrets masked, for messages."""
        return redact(self.url)

    def failed(self, exc: BaseException) -> None:
        """Record that connecting to the current URL failed with ``exc`` and move on to the
        next URL (for this attempt and the next one)."""
        self._failures.append(f"{self.where}: {redact(str(exc)) or type(exc).__name__}")
        self._failover._next += 1

    def backoff(self, now: float) -> float:
        """The seconds to wait before the next try, after a failure: zero within a round,
        and once the tries are back at the first URL (a round ended, the first one perhaps
        after fewer URLs, as the attempt started where the last one ended) a pause doubled
        every round up to ``MAX_PAUSE``.

        Args:
            now: the current instant, on the clock ``deadline`` is on.

        Returns:
            Seconds to sleep; zero means try the next URL at once.

        Raises:
            TransportUnavailable: a round ended and its pause would pass the deadline; the
                message names the failures of the last round only (a cluster tried for a
                minute would otherwise list hundreds), passwords masked.
        """
        if self.index != 0:
            return 0.0
        if now + self._pause > self.deadline:
            last_round = self._failures[-len(self._failover.urls):]
            raise TransportUnavailable(
                f"RabbitMQ cannot be reached ({'; '.join(last_round)});"
                " is it running and are the credentials right?"
            )
        pause, self._pause = self._pause, min(self._pause * 2, MAX_PAUSE)
        return pause
