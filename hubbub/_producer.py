"""The producer side of a ``Hub``: its connections, what is sent over them (``publish``,
``send_task``, ...) and what is read back (results, groups, revokes).

``Hub`` is the one class built on ``Producer``; it is a module of its own only to keep the
hub's configuration and registry apart from the connections and the per-send path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Self

from hubbub._bridge import Bridge, lives_for_one_job
from hubbub._client import (
    Client,
    Connector,
    LoopClient,
    encode_all,
    encode_now,
    revoke,
    wraps_publish,
)
from hubbub._send_options import new_task_id
from hubbub.codecs import Codec
from hubbub.context import maybe_current_task
from hubbub.control.plane import Plane
from hubbub.control.planes import open_plane
from hubbub.limits import parse_rate
from hubbub.limits.unique import UNIQUE_HEADER, claim, unclaim
from hubbub.message import Envelope, Parts, encode_fields
from hubbub.middleware import Middleware
from hubbub.result import Result
from hubbub.results import ResultBackend, ResultRecord, open_results
from hubbub.settings import Settings
from hubbub.signing import Signer
from hubbub.task import Task
from hubbub.transports import Outgoing, Transport, open_transport

if TYPE_CHECKING:
    from hubbub.compat.celery.producer import CeleryProducer
    from hubbub.control.sent import SentEvents
    from hubbub.tracing import SendTracing

class Producer:
    """Connections to the broker and result store, and the sending and reading done over
    them; the base of :class:`~hubbub.hub.Hub`, which sets the settings these read."""

    # Set by Hub (from its settings; see Hub._settle).
    settings: Settings
    codec: Codec
    signer: Signer | None
    tasks: dict[str, Task[Any, Any]]
    middleware: list[Middleware]
    _connector: Connector
    _sent: SentEvents | None  # task-sent events, with events on

    def __init__(self) -> None:
        # -- tracing (issue 15): send spans, once hubbub.tracing.instrument(hub) ran
        self.tracing: SendTracing | None = None
        self.bridge = Bridge()
        self._celery_producers: dict[int, CeleryProducer] = {}  # send_task(protocol="celery")
        # Producer connections of the event loops other than the bridge's that sent (or
        # entered connected()): an async send never hops threads (issue #18).
        self._loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = (
            weakref.WeakKeyDictionary())
        self._loops_connected = False  # whether any loop opened connections (configure())

    # -- sending -------------------------------------------------------------------------

    async def _celery_send(self, envelope: Envelope) -> None:
        # One producer per process, on the bridge loop (a forked child opens its own).
        producer = self._celery_producers.get(os.getpid())
        if producer is None:  # -- Celery bridge (issue 17), imported when used
            from hubbub.compat.celery.producer import CeleryProducer, broker_url

            producer = CeleryProducer(broker_url(self.settings), origin=f"hubbub@{os.getpid()}")
            self._celery_producers = {os.getpid(): producer}
        await producer.send(envelope)

    def publish(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """Encode and publish envelopes in one batch, from sync code.

        This is what a ``Task`` sends through (the ``Publisher`` protocol in task.py).

        Args:
            envelopes: built by ``hubbub.task.build_envelope``; each goes to its own queue.

        Returns:
            One Result per envelope, in order.

        Raises:
            MessageError: an envelope cannot be encoded, or is larger than the limit.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self.tracing is not None:  # -- tracing (issue 15): in the caller's thread
            with self.tracing.sending(envelopes) as traced:
                owners = self._publish_sync(traced)
        else:
            owners = self._publish_sync(envelopes)
        if not owners:  # the common case: every envelope was sent as it is
            return [self._result_for(e) for e in envelopes]
        return [self._result_for(replace(e, id=owners[e.id]) if e.id in owners else e)
                for e in envelopes]

    def _needs_envelopes(self) -> bool:
        """Whether a send must build its Envelopes and go through ``publish``: tracing,
        task-sent events and ``around_publish`` middleware all work on envelopes."""
        return (self.tracing is not None or self._sent is not None
                or bool(self.middleware and wraps_publish(self.middleware)))

    def send_now(self, task: Task[Any, Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Result[Any] | None:
        """Send one plain call of ``task`` (arguments checked) as ``publish`` would, on the
        caller's thread, without building an ``Envelope``: the task's fixed body fields are
        worked out once (``Task.plain_fields``), a send fills in its id and time.

        Returns:
            Its Result; None, having sent nothing, when the quick path does not apply: the
            call is not plain (times, headers, a unique job), or the send needs an envelope
            or an event loop (tracing, task-sent events, ``around_publish`` middleware, a
            broker without a sync publisher, no connection yet).

        Raises:
            MessageError: an argument cannot be encoded, or the message is too large.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self._needs_envelopes():
            return None
        client = self._connector.current()
        if client is None:
            return None
        direct = client.transport.sync_publisher()
        fields = task.plain_fields()
        if direct is None or fields is None:
            return None
        body = fields.copy()
        id = body["id"] = new_task_id()
        body["created_at"] = time.time()
        parent = maybe_current_task()
        if parent is not None:  # sent from a running task: its child
            body["parent_id"], body["root_id"] = parent.id, parent.root_id or parent.id
        limit = client.max_size
        if limit is None:
            limit = client.max_size = self.max_message_size(client.transport)
        direct.publish([Outgoing(body["queue"], encode_fields(
            body, args, kwargs, self.codec, limit, self.signer), id, body["priority"])])
        name = body["task"]
        registered = self.tasks.get(name)
        if registered is None:
            return Result(self, id, name, ignored=self.settings.results is None)
        spec = registered.spec
        return Result(self, id, name, ignored=self.settings.results is None
                      or bool(spec.ignore_result), raises=spec.raises)

    def publish_parts(self, parts: Sequence[Parts]) -> bool:
        """Encode and publish messages given as their parts (``message.Parts``: what a canvas
        send builds, see ``canvas.send.Launcher.parts``) in one batch, on the caller's
        thread, without an ``Envelope`` each: the bytes are ``encode``'s of
        ``envelope_of_parts(p)``. The field dicts are filled in (they are each message's own).

        Returns:
            True once sent; False, having sent nothing, when the messages need envelopes or
            an event loop (as ``send_now``: tracing, task-sent events, ``around_publish``
            middleware, a broker without a sync publisher): ``publish`` them then.

        Raises:
            MessageError: an argument cannot be encoded, or a message is too large.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self._needs_envelopes():
            return False
        client = self._connector.current() or self.bridge.run(self.client())
        direct = client.transport.sync_publisher()
        if direct is None:
            return False
        limit = client.max_size
        if limit is None:
            limit = client.max_size = self.max_message_size(client.transport)
        codec, signer = self.codec, self.signer
        direct.publish([
            Outgoing(fields["queue"], encode_fields(fields, args, kwargs, codec, limit, signer,
                                                    canvas),
                     fields["id"], fields["priority"], fields["eta"])
            for fields, args, kwargs, canvas in parts])
        return True

    def _publish_sync(self, envelopes: Sequence[Envelope]) -> dict[str, str]:
        """``publish_async``'s work from sync code: on the caller's thread when the broker
        has a sync publisher (SQLite, one Redis server) and nothing needs an event loop (no
        ``around_publish`` middleware, no unique job), else through the bridge loop.

        Returns:
            As ``publish_async``: the unique envelopes not sent, each with its owner's id.
        """
        client = self._connector.current() or self.bridge.run(self.client())
        direct = client.transport.sync_publisher()
        if (direct is None or (self.middleware and wraps_publish(self.middleware))
                or any(e.headers and UNIQUE_HEADER in e.headers for e in envelopes)):
            return self.bridge.run(self.publish_async(envelopes))
        direct.publish(encode_now(envelopes, self.codec,
                                  self.max_message_size(client.transport), self.signer))
        if self._sent is not None:  # task-sent events stay on the bridge loop, after the send
            self.bridge.run(self._sent.sent(envelopes))
        return {}

    def _result_for(self, envelope: Envelope) -> Result[Any]:
        task = self.tasks.get(envelope.task)
        ignored = self.settings.results is None or bool(task and task.spec.ignore_result)
        return Result(self, envelope.id, envelope.task, ignored=ignored,
                      raises=task.spec.raises if task else ())

    async def publish_async(self, envelopes: Sequence[Envelope]) -> dict[str, str]:
        """Encode and publish from any loop, on that loop's own connections (opened by its
        first send, closed when it shuts down: see ``_loop_client``), task-sent events
        included: nothing is handed to the bridge thread. On the bridge loop (sync
        callers), on the bridge's connections.

        Returns:
            The unique envelopes that were not sent because another live job holds their
            key: envelope id -> that job's id (see docs/limits.md).

        Raises:
            MessageError: an envelope cannot be encoded, or is larger than the limit.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        loop = asyncio.get_running_loop()
        own = self._loop_clients.get(loop)
        if own is not None:
            client, sent = await own.client(), own.sent
        elif self.bridge.runs(loop):
            client, sent = await self.client(), self._sent
        elif lives_for_one_job(loop):  # an async task's own loop in a thread or a child
            return await self.bridge.run_async(self.publish_async(envelopes))
        else:
            own = self._loop_client(loop)
            client, sent = await own.client(), own.sent
        # -- limits: unique jobs claim their keys first --
        envelopes, owners, claimed = await claim(client.results, envelopes,
                                                 self.settings.broker)
        try:
            if not envelopes:
                return owners  # every one a duplicate of a live job
            await client.transport.publish(await encode_all(
                envelopes, self.middleware, self.codec, self.max_message_size(client.transport),
                self.signer))
        except BaseException:
            await unclaim(client.results, claimed)
            raise
        if sent is not None:  # on the plane of the loop that sent
            await sent.sent(envelopes)
        return owners

    def _loop_client(self, loop: asyncio.AbstractEventLoop) -> LoopClient:
        """``loop``'s producer connections, made (not yet opened) if it has none: its own
        transport, result store and task-sent plane, which close when the loop shuts down
        its async generators (see ``LoopClient``). One per loop, because a connection
        belongs to the loop it was opened on; a loop of one ``asyncio.run`` pays for
        opening them on its first send."""
        own = self._loop_clients.get(loop)
        if own is None:
            own = self._loop_clients[loop] = LoopClient(
                Connector(self.open_transport, self.open_results, self.settings.broker),
                None if self._sent is None else self._sent.for_another_loop())
            self._loops_connected = True
        return own

    async def send_async(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """``publish`` for async code (what ``Task.delay_async`` sends through).

        Raises:
            MessageError: an envelope cannot be encoded, or is larger than the limit.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self.tracing is not None:  # -- tracing (issue 15): in the caller's task
            with self.tracing.sending(envelopes) as traced:
                owners = await self.publish_async(traced)
        else:  # -- limits: a duplicate's is the owner's
            owners = await self.publish_async(envelopes)
        return [self._result_for(replace(e, id=owners[e.id]) if e.id in owners else e)
                for e in envelopes]

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Self]:
        """Open producer connections on the running event loop for the block.

        Sends from any loop (``await task.delay_async(...)``, ``hub.send_async``) go to the
        broker from the loop itself, on connections the loop opens with its first send and
        closes when it shuts down. This opens them up front, so that a broker that cannot
        be reached fails the start (an ASGI app's lifespan: ``hubbub.fastapi.lifespan``),
        and closes them at the end of the block. Entered again on the same loop, or on a
        loop that sent already, it uses the loop's connections and leaves them open.

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """
        loop = asyncio.get_running_loop()
        if loop in self._loop_clients:
            await self._loop_clients[loop].client()
            yield self
            return
        own = self._loop_client(loop)
        try:
            await own.client()
            yield self
        finally:
            if self._loop_clients.get(loop) is own:
                del self._loop_clients[loop]
            await own.close()

    def max_message_size(self, transport: Transport) -> int:
        """Bytes a message may have on ``transport``: ``limits.max_message_size``, lowered to
        the broker's own cap where it has one."""
        cap = transport.capabilities.max_message_size
        limit = self.settings.limits.max_message_size
        return limit if cap is None else min(limit, cap)

    # -- connections -----------------------------------------------------------------------

    def open_transport(self) -> Transport:
        """A new, unconnected transport for the broker (one per event loop), keeping dead
        letters as ``limits`` says (a URL's ``dead_ttl``/``dead_max`` win)."""
        limits = self.settings.limits
        return open_transport(self.settings.broker, dead_ttl=limits.dead_letter_ttl,
                              dead_max=limits.max_dead_letters)

    def open_results(self) -> ResultBackend | None:
        """A new, unconnected result backend, or None when results are not kept."""
        url = self.settings.results
        if url is None:
            return None
        backend = open_results(url)
        if not self.settings.history:  # -- history: off, so no rows are written or read
            backend.history_ttl = None
        return backend

    def open_plane(self) -> Plane:
        """A new, unconnected control plane (events, control commands and replies) over the
        broker: Redis streams, RabbitMQ fanout exchanges, a table in the SQLite file; on
        Beanstalkd, the result store (Redis or SQLite).

        Raises:
            ConfigurationError: the broker carries no plane (Beanstalkd without a Redis or
                SQLite result store), or its extra is missing.
        """
        return open_plane(self.settings.broker, self.settings.results)

    async def client(self) -> Client:
        """This process's producer connections (on the bridge loop), opened on first use."""
        return await self._connector.client()

    # -- results ---------------------------------------------------------------------------
    #
    # Public: they are what a Result is built on (the ResultsClient protocol in result.py),
    # and the async, batched way to read many results in one round trip, which a Result
    # (one id, sync or async) cannot offer; the demo, the benchmarks and the tests use them.
    # Like everything that uses the producer connections, they run on the hub's bridge loop.

    async def read_results(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The stored records of ``ids``, in one round trip.

        A coroutine for the hub's bridge loop: ``hub.bridge.run(hub.read_results(ids))``
        from sync code, ``await hub.bridge.run_async(hub.read_results(ids))`` from a loop.

        Args:
            ids: task ids.

        Returns:
            id -> record, for the ids that have a record (none yet, or expired: left out).

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await (await self._connector.results()).get(ids)

    async def wait_result(self, id: str, timeout: float | None) -> ResultRecord | None:
        """Wait until task ``id`` is ready (SUCCESS, FAILURE or REVOKED); on the bridge loop.

        Args:
            id: the task id.
            timeout: seconds to wait; None waits as long as it takes.

        Returns:
            The ready record, or None when ``timeout`` ran out first.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await (await self._connector.results()).wait(id, timeout=timeout)

    async def revoke(self, ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        """Revoke tasks, in one call however many; on the bridge loop.

        A revoked task that has not started never starts: a worker skips it when it fetches
        it, and drops it if it was already waiting for a slot (within about half a second).
        A running task is stopped only with ``terminate=True`` (see docs/tasks.md for how
        each pool stops one); otherwise it runs to the end. A task that already finished
        keeps its result, and so does one that finishes before a terminate reaches it.

        Args:
            ids: task ids.
            terminate: also stop the tasks among ``ids`` that are running now.

        Returns:
            The ids the revoke took effect for: not finished, and not running unless
            ``terminate``.

        Raises:
            ResultError: this hub keeps no results (revokes live there), or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await revoke(await self._connector.results(), ids, terminate=terminate,
                            ttl=self.settings.result_ttl)

    async def forget_results(self, ids: Sequence[str]) -> None:
        """Delete the stored records of ``ids`` (a missing one is no error); on the bridge loop.

        Args:
            ids: task ids.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        await (await self._connector.results()).forget(ids)

    # -- limits ------------------------------------------------------------------------------

    async def set_rate_limit(self, task: str, rate: str | None) -> None:
        """Change ``task``'s rate limit for the whole fleet, now; on the bridge loop.

        Kept in the result store, where every worker reads it (within about two seconds);
        it wins over the task's ``rate_limit`` option, and also limits a task that has none.

        Args:
            task: the task's name.
            rate: ``"100/m"`` (also ``/s``, ``/h``); None goes back to the task's option.

        Raises:
            ConfigurationError: ``rate`` is not a rate.
            ResultError: this hub keeps no results (limits live there), or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
        """
        if rate is not None:
            rate = parse_rate(rate).text
        await (await self._connector.results()).limits().set_rate(task, rate)

    async def save_groups(self, groups: Sequence[tuple[str, list[str]]]) -> None:
        """Keep each group's member ids in the result store; on the bridge loop.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store cannot be reached.
        """
        store = await self._connector.results()
        for group, ids in groups:
            await store.save_group(group, ids, ttl=self.settings.result_ttl)

    async def read_group(self, id: str) -> list[str] | None:
        """The member ids saved for group ``id``; on the bridge loop.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store cannot be reached.
        """
        return await (await self._connector.results()).read_group(id)

    def close(self) -> None:
        """Close the producer connections and stop the bridge thread."""
        client = self._connector.detach()
        if client is not None:
            self.bridge.run(client.close())
        if self._sent is not None and self._sent.opened:
            self.bridge.run(self._sent.close())
        celery = self._celery_producers.pop(os.getpid(), None)
        if celery is not None:
            self.bridge.run(celery.close())
        self.bridge.stop()

