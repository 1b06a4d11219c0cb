"""Cluster and Sentinel URLs: what they parse into, and the one-line errors for bad ones.
No server needed."""

from __future__ import annotations

import re

import pytest

from hubbub._redis import RedisURL
from hubbub.errors import ConfigurationError
from hubbub.results import open_results
from hubbub.transports import open_transport


def test_a_cluster_url_keeps_every_start_node_and_the_wait_options() -> None:
    url = RedisURL.parse("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002"
                         "?prefix=shop&wait_replicas=1&wait_timeout=0.5")
    assert (url.mode, url.prefix, url.db) == ("cluster", "shop", 0)
    assert url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (url.wait_replicas, url.wait_timeout) == (1, 0.5)
    assert "s3cret" not in str(url)
    assert "s3cret" not in url.where


def test_a_sentinel_url_names_the_master_and_the_db() -> None:
    url = RedisURL.parse("rediss+sentinel://h1:26380,h2/mymaster/3?prefix=p")
    assert (url.mode, url.tls, url.service, url.db) == ("sentinel", True, "mymaster", 3)
    assert url.nodes == (("h1", 26380), ("h2", 26379))


@pytest.mark.parametrize(("url", "says"), [
    ("redis+cluster://a:7000/2", "a redis cluster has only db 0: remove /2"),
    ("redis+sentinel://a:26379", "no master name"),
    ("redis://a:1,b:2", "use redis+cluster:// or redis+sentinel://"),
    ("redis+cluster://a:port", "write host:port, separated by commas"),
    ("redis+cluster://a:1?wait_replicas=-1", "wait_replicas must be 0 or more"),
    ("redis+cluster://:pw@a:1?wait_replica=1", "did you mean 'wait_replicas'"),
])
def test_a_bad_cluster_or_sentinel_url_is_one_line_that_names_the_fix(url: str, says: str
                                                                       ) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)) as info:
        RedisURL.parse(url)
    assert "\n" not in str(info.value)
    assert ":pw@" not in str(info.value)


def test_the_schemes_open_the_redis_transport_and_result_store() -> None:
    url = "redis+cluster://127.0.0.1:1,127.0.0.1:2?prefix=x"
    assert type(open_transport(url)).__name__ == "RedisTransport"
    assert type(open_results(url)).__name__ == "RedisResults"
