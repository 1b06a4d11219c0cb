"""Redis past one node: clients for Redis Cluster and Sentinel, and the WAIT for replicas.

``redis+cluster://host:port[,host:port...]?prefix=...`` talks to a Redis Cluster through
redis-py's asyncio :class:`~redis.asyncio.cluster.RedisCluster`: the addresses are only
where to start, the client learns the slot map and follows MOVED/ASK and failovers.
``redis+sentinel://host:port[,host:port...]/<service>[/db]?...`` asks the sentinels for
the master of ``<service>`` (redis-py's :class:`~redis.asyncio.sentinel.Sentinel`) and
asks again when the master fails or turns into a replica.

Replication in Redis is asynchronous: a write the master confirmed can be lost when the
master dies before a replica has it. :func:`wait_for_replicas` narrows that window to
nothing for the writes that matter (``?wait_replicas=N``): after a write it makes one more
write in the same hash slot and runs ``WAIT`` on that same connection. Redis replicates
one ordered stream per master, so once a replica acknowledged the marker it also has every
write that finished before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from hubbub.errors import ConfigurationError, TransportUnavailable

Address = tuple[str, int]


def parse_nodes(text: str, default_port: int, shown: str) -> tuple[Address, ...]:
    """``host:port,host:port`` (IPv6 as ``[::1]:port``) into addresses.

    Raises:
        ConfigurationError: no address, or a port that is not a number from 1 to 65535.
    """
    nodes: list[Address] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            port = 0
        if not host or not 0 < port < 65536:
            raise ConfigurationError(
                f"bad address {part!r} in {shown}: write host:port, separated by commas")
        nodes.append((host, port))
    if not nodes:
        raise ConfigurationError(f"no address in {shown}: write host:port[,host:port...]")
    return tuple(nodes)


def cluster_client(nodes: Sequence[Address], *, name: str, username: str | None,
                   password: str | None, tls: bool, options: dict[str, Any]) -> aioredis.Redis:
    """A Redis Cluster client that starts from ``nodes``.

    The result is typed as :class:`redis.asyncio.Redis` because hubbub only uses the
    commands both share (scripts on one slot, pipelines without transactions across slots,
    single-slot transactions, XREAD on one slot); RedisCluster routes each by its keys.
    """
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username, password=password, ssl=tls, client_name=name,
        # The cluster client retries MOVED, TRYAGAIN and lost nodes itself, refreshing the
        # slot map between attempts; longer outages (a failover) reach the worker loop as
        # TransportUnavailable and it retries with its own backoff.
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=3),
        require_full_coverage=False, **options,
    )
    return cast("aioredis.Redis", client)


class _MasterClient(aioredis.Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()


def sentinel_client(nodes: Sequence[Address], service: str, *, name: str, db: int,
                    username: str | None, password: str | None, tls: bool,
                    options: dict[str, Any]) -> aioredis.Redis:
    """A client for the current master of ``service``, as the sentinels at ``nodes`` say.

    The password is the master's (and its replicas'); the sentinels are asked without one.
    """
    sentinels = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(list(nodes), sentinel_kwargs=sentinels)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(
        service, redis_class=_MasterClient, db=db, username=username, password=password,
        ssl=tls, client_name=name,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2), **options)
    return client


async def wait_for_replicas(client: aioredis.Redis, marker: str, replicas: int,
                            timeout: float, where: str) -> None:
    """Block until ``replicas`` replicas have every write finished so far in ``marker``'s
    hash slot (on a cluster) or on the master (otherwise).

    Args:
        client: the transport's client (cluster or not).
        marker: a key in the slot of the writes to secure; INCR'd, then WAIT'ed for.
        replicas: how many replicas must acknowledge.
        timeout: seconds to wait for them.
        where: names the server in the error.

    Raises:
        TransportUnavailable: fewer replicas acknowledged within ``timeout``; the writes are
            on the master but may not survive its failure.
    """
    ms = max(1, int(timeout * 1000))
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(marker)
        if node is None:
            raise TransportUnavailable(f"redis cluster at {where}: no master for {marker!r}")
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(conn.pack_commands([("INCR", marker),
                                                                ("WAIT", replicas, ms)]))
            await conn.read_response()
            acked = int(await conn.read_response())
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)
    else:
        pipe = client.pipeline(transaction=False)  # one connection for both commands
        pipe.incr(marker)
        pipe.wait(replicas, ms)
        _, acked = await pipe.execute()
    if int(acked) < replicas:
        raise TransportUnavailable(
            f"redis at {where}: {acked} of {replicas} replicas acknowledged within "
            f"{timeout:g}s (wait_replicas); the write may not survive a failover")
