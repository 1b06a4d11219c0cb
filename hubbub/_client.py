"""The producer side of a ``Hub``: its connections and the encoding of what it publishes.

A producer process holds one ``Client`` (a transport and a result store) on the hub's bridge
loop, opened on first use by a ``Connector``; a forked child has another process id and opens
its own. ``revoke`` writes what ``Hub.revoke`` stores. ``encode_all`` runs the publish
middleware and encodes the envelopes into the batch one ``Transport.publish`` sends;
``encode_now`` does the same for sync code when no middleware wraps publishing. Every other
event loop that sends gets a ``LoopClient`` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING

from hubbub._redact import redact
from hubbub.codecs import Codec
from hubbub.errors import ErrorKind, ResultError
from hubbub.message import Envelope, encode
from hubbub.middleware import Middleware, chain_publish
from hubbub.results import ResultBackend, ResultRecord, State
from hubbub.results.base import ErrorInfo
from hubbub.signing import Signer
from hubbub.transports import Outgoing, Transport

if TYPE_CHECKING:
    from hubbub.control.sent import SentEvents


class Client:
    """The producer side's connections, living on the bridge loop of one process."""

    def __init__(self, transport: Transport, results: ResultBackend | None) -> None:
        self.transport = transport
        self.results = results
        self.pid = os.getpid()
        self.max_size: int | None = None  # the hub's limit on this transport, once known

    async def close(self) -> None:
        await self.transport.close()
        if self.results is not None:
            await self.results.close()


class Connector:
    """Opens this process's ``Client`` on first use and shares it between callers.

    Args:
        open_transport: makes a new, unconnected transport.
        open_results: makes a new, unconnected result store, or None when none is kept.
        broker: the broker's URL, named (masked) when there is no result store.
    """

    def __init__(self, open_transport: Callable[[], Transport],
                 open_results: Callable[[], ResultBackend | None], broker: str) -> None:
        self._open_transport = open_transport
        self._open_results = open_results
        self._broker = broker
        self._client: Client | None = None
        self._connecting: tuple[int, asyncio.Future[Client]] | None = None

    @property
    def opened(self) -> bool:
        """Whether this process has opened (or is opening) its client."""
        pid = os.getpid()
        return ((self._client is not None and self._client.pid == pid)
                or (self._connecting is not None and self._connecting[0] == pid))

    async def client(self) -> Client:
        """This process's client, connected by the first caller; the others wait for it."""
        pid = os.getpid()
        if self._client is not None and self._client.pid == pid:
            return self._client
        if self._connecting is None or self._connecting[0] != pid:
            self._connecting = (pid, asyncio.ensure_future(self._connect()))
        connecting = self._connecting[1]
        try:
            self._client = await asyncio.shield(connecting)
        except BaseException:
            if connecting.done():  # it failed: the next call tries again (a caller that
                self._connecting = None  # was cancelled leaves it to the next one)
            raise
        return self._client

    async def results(self) -> ResultBackend:
        """This process's result store, connected.

        Raises:
            ResultError: the hub keeps no results.
        """
        client = await self.client()
        if client.results is None:
            raise ResultError(
                f"this hub keeps no results (broker {redact(self._broker)}); "
                "pass results='redis://...' or 'sqlite:///results.db' to Hub()"
            )
        return client.results

    async def _connect(self) -> Client:
        # No half-open client, even when cancelled (a loop that shuts down cancels this
        # task): the next call starts over, and nothing is left open.
        transport = self._open_transport()
        try:
            await transport.connect()
            results = self._open_results()
            if results is not None:
                await results.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await transport.close()
            raise
        # Kept here, not only by the caller that awaits it: one cancelled meanwhile would
        # leave it for nobody to close (``detach`` finds it).
        self._client = Client(transport, results)
        return self._client

    def current(self) -> Client | None:
        """This process's client if it is connected (no waiting, from any thread)."""
        client = self._client
        return client if client is not None and client.pid == os.getpid() else None

    def detach(self) -> Client | None:
        """This process's client, forgotten here for the caller to close; None when this
        process has none (a forked child does not close its parent's connections)."""
        client, self._client = self._client, None
        if self._connecting is not None and self._connecting[1].done():
            self._connecting = None  # or the next caller would be handed the detached client
        return client if client is not None and client.pid == os.getpid() else None


class LoopClient:
    """The producer connections of an event loop other than the bridge's (and its task-sent
    events' plane), opened on first use and closed when that loop shuts down its async
    generators (``asyncio.run`` and ``asyncio.Runner`` do as they finish, so do uvicorn and
    pytest-asyncio), or by ``close``.

    Args:
        connector: opens the connections (on this loop).
        sent: the loop's task-sent events, with events on; their plane closes with the rest.
    """

    def __init__(self, connector: Connector, sent: SentEvents | None) -> None:
        self.connector = connector
        self.sent = sent
        self._closer: AsyncGenerator[None, None] | None = None

    async def client(self) -> Client:
        """The loop's client, connected (the first call also arms the closing)."""
        if self._closer is None:
            self._closer = self._close_at_shutdown()
            await anext(self._closer)  # now known to the loop, which finalizes it
        return await self.connector.client()

    async def close(self) -> None:
        """Close the connections now, on their loop (``Hub.connected`` at the end of its
        block); nothing is left for the loop's shutdown."""
        if self._closer is not None:
            await self._closer.aclose()

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            client = self.connector.detach()
            try:
                if client is not None:
                    await client.close()
            finally:
                if self.sent is not None:
                    await self.sent.close()


async def encode_all(envelopes: Sequence[Envelope], middleware: Sequence[Middleware],
                     codec: Codec, limit: int, signer: Signer | None) -> list[Outgoing]:
    """``envelopes`` through each ``around_publish``, then encoded, in order.

    Raises:
        MessageError: an envelope cannot be encoded, or is larger than ``limit`` bytes.
    """
    outgoing: list[Outgoing] = []

    async def collect(envelope: Envelope) -> None:
        outgoing.append(_outgoing(envelope, codec, limit, signer))

    send_one = chain_publish(middleware, collect)
    for envelope in envelopes:
        await send_one(envelope)
    return outgoing


def encode_now(envelopes: Sequence[Envelope], codec: Codec, limit: int,
               signer: Signer | None) -> list[Outgoing]:
    """``encode_all`` without middleware, for sync code: only when no middleware has an
    ``around_publish`` (see ``wraps_publish``).

    Raises:
        MessageError: an envelope cannot be encoded, or is larger than ``limit`` bytes.
    """
    return [_outgoing(envelope, codec, limit, signer) for envelope in envelopes]


def wraps_publish(middleware: Sequence[Middleware]) -> bool:
    """Whether any of ``middleware`` has its own ``around_publish`` (a coroutine: such a
    publish goes through an event loop)."""
    return any(type(mw).around_publish is not Middleware.around_publish for mw in middleware)


def _outgoing(envelope: Envelope, codec: Codec, limit: int, signer: Signer | None) -> Outgoing:
    body = encode(envelope, codec, limit, signer)
    return Outgoing(envelope.queue, body, envelope.id, envelope.priority, envelope.eta)


async def revoke(backend: ResultBackend, ids: Sequence[str], *, terminate: bool,
                 ttl: float | None) -> list[str]:
    """Store REVOKED for ``ids`` unless a task finished (or, without ``terminate``, started);
    the ids it was stored for (see ``Hub.revoke``)."""
    error = (ErrorInfo(ErrorKind.TERMINATED, "revoked with terminate=True") if terminate
             else ErrorInfo(ErrorKind.REVOKED, "revoked"))
    records = [ResultRecord(i, State.REVOKED, error=error) for i in ids]
    too_late = {State.SUCCESS, State.FAILURE} | (set() if terminate else {State.STARTED})
    return await backend.store_unless(records, ttl=ttl, unless=frozenset(too_late))
