"""How the cluster client's refusals reach hubbub: a request no cluster state can serve is a
failure (retrying it would never end), a cluster that cannot be reached is unavailable."""

from __future__ import annotations

import uuid

import pytest

from hubbub._redis import RedisURL, translate
from hubbub.errors import TransportError, TransportUnavailable
from tests import brokers
from tests.brokers import free_port
from tests.cluster import servers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_scripts_in_a_pipeline_fail_for_good() -> None:
    # redis-py's cluster client refuses scripts in a pipeline before sending them, with a
    # RedisClusterException, the class that also stands for a failover under way: it used to
    # be "unavailable", and a worker retried its chord join forever.
    brokers.require(brokers.load("redis_cluster"))
    config = RedisURL.parse(servers.redis_cluster().url("ce" + uuid.uuid4().hex[:10]))
    client = config.client(name="hubbub-test-errors")
    try:
        async def scripts_in_a_pipeline() -> None:
            with translate(config):
                pipe = client.pipeline(transaction=False)
                for key in ("{a}:one", "{b}:two"):
                    pipe.evalsha("e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, key)
                await pipe.execute()

        with pytest.raises(TransportError) as caught:
            await scripts_in_a_pipeline()
        assert not isinstance(caught.value, TransportUnavailable)
    finally:
        await client.aclose()


async def test_a_cluster_nobody_answers_for_is_unavailable() -> None:
    config = RedisURL.parse(f"redis+cluster://127.0.0.1:{free_port()}/0?prefix=gone")
    client = config.client(name="hubbub-test-errors")
    try:
        with pytest.raises(TransportUnavailable), translate(config):
            await client.get("anything")
    finally:
        await client.aclose()
