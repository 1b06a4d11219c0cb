"""Unique jobs, the producer's side: claim each unique key in the store before publishing.

A unique envelope carries its key in the ``hubbub.unique`` header (and how long the key is
kept in ``hubbub.unique_for``). The publisher claims the key for the envelope's id; when
another live job holds it, that envelope is not published and its Result is the holder's.
The worker gives the key back when the job reaches a final state
(:mod:`hubbub.worker.gates`), only while the key still names that job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hubbub._redact import redact
from hubbub.errors import ConfigurationError
from hubbub.limits.keys import KeyFrom, derive_key
from hubbub.limits.options import DEFAULT_UNIQUE_FOR, check_unique_for
from hubbub.message import Envelope
from hubbub.results.base import ResultBackend

UNIQUE_HEADER = "hubbub.unique"
UNIQUE_FOR_HEADER = "hubbub.unique_for"


def with_unique(envelope: Envelope, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: Mapping[str, Any], *, key_from: KeyFrom | None,
                task_ttl: float | None, key: str | None,
                ttl: float | timedelta | None) -> Envelope:
    """``envelope`` marked unique when a key is given (``key``) or derived (``key_from``);
    unchanged otherwise.

    Raises:
        ConfigurationError: ``unique_for`` without a key, a bad ``unique_for``, a bad key.
    """
    if key is None and key_from is None:
        if ttl is not None:
            raise ConfigurationError("unique_for needs unique_key=... (or the task option "
                                     "unique=...): the key that makes the job unique")
        return envelope
    if key is None:
        assert key_from is not None
        key = f"{envelope.task}:{derive_key(key_from, fn, args, kwargs, 'unique')}"
    elif not isinstance(key, str) or not key:
        raise ConfigurationError(f"unique_key must be a non-empty str, not {key!r}")
    keep = check_unique_for(ttl) or task_ttl or DEFAULT_UNIQUE_FOR
    return replace(envelope, headers={**envelope.headers, UNIQUE_HEADER: key,
                                      UNIQUE_FOR_HEADER: keep})


def unique_key(envelope: Envelope) -> str | None:
    """The unique key ``envelope`` carries, if any (a worker reads it to give it back)."""
    key = envelope.headers.get(UNIQUE_HEADER)
    return key if isinstance(key, str) else None


async def claim(results: ResultBackend | None, envelopes: Sequence[Envelope], broker: str
                ) -> tuple[list[Envelope], dict[str, str], list[tuple[str, str]]]:
    """Claim the unique keys of ``envelopes``.

    Returns:
        The envelopes to publish; the ids of those that were not (another job holds their
        key), each with the holder's id; the (key, id) claims made, to give back should the
        publish fail.

    Raises:
        ConfigurationError: a unique envelope on a hub that keeps no results.
    """
    marked = [e for e in envelopes if UNIQUE_HEADER in e.headers]
    if not marked:
        return list(envelopes), {}, []
    if results is None:
        raise ConfigurationError(
            f"unique jobs keep their keys in the result store, and this hub keeps none; pass "
            f"results='redis://...' or 'sqlite:///results.db' to Hub() ({redact(broker)})")
    holders = await results.limits().claim_uniques([
        (e.headers[UNIQUE_HEADER], e.id,
         float(e.headers.get(UNIQUE_FOR_HEADER) or DEFAULT_UNIQUE_FOR)) for e in marked])
    owners: dict[str, str] = {}
    claimed: list[tuple[str, str]] = []
    for envelope, holder in zip(marked, holders, strict=True):
        if holder == envelope.id:
            claimed.append((envelope.headers[UNIQUE_HEADER], envelope.id))
        else:
            owners[envelope.id] = holder
    return [e for e in envelopes if e.id not in owners], owners, claimed


async def unclaim(results: ResultBackend | None, claimed: Sequence[tuple[str, str]]) -> None:
    """Give back keys claimed for envelopes whose publish failed."""
    if results is not None and claimed:
        await results.limits().release_unique(claimed)
