"""What the Redis broker, result store and schedule store share: the URL and its client,
and the translation of driver errors into hubbub's.

``RedisURL.parse`` reads ``redis://`` and ``rediss://`` URLs, and ``redis+cluster://`` and
``redis+sentinel://`` ones (:mod:`hubbub._redis_cluster`); ``RedisURL.client`` builds a
pooled asyncio client from one (``sync_client`` a thread-safe sync one, for producers);
``translate`` turns redis-py's exceptions into the caller's
"unavailable" and "failed" errors with the password scrubbed from the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from hubbub._redact import redact
from hubbub._redis_cluster import (
    Address,
    cluster_client,
    parse_nodes,
    sentinel_client,
    wait_for_replicas,
)
from hubbub._suggest import did_you_mean
from hubbub.errors import (
    ConfigurationError,
    HubbubError,
    TransportError,
    TransportUnavailable,
)

# Seconds a one-by-one send from a plain thread polls for Redis's reply before sleeping: see
# RedisSyncPublisher. About twice a loopback round trip; polls that time out back off.
SPIN = 100e-6
_SSL_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname")
_OPTIONS = ("prefix", "db", "socket_timeout", "socket_connect_timeout", "max_connections",
            "wait_replicas", "wait_timeout", "spin_us", *_SSL_OPTIONS)
# scheme -> (mode, TLS)
_SCHEMES = {"redis": ("single", False), "rediss": ("single", True),
            "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
            "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True)}


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed ``redis://`` or ``rediss://`` URL. ``str()`` never shows the password.

    Attributes:
        host, port, db, username: where to connect.
        password: kept out of ``repr``; shown nowhere.
        prefix: first part of every key name (default ``hubbub``).
        tls: True for ``rediss://``.
        options: keyword arguments for ``redis.asyncio.Redis`` (timeouts, TLS files).
        mode: ``single``, ``cluster`` (``redis+cluster://``) or ``sentinel``
            (``redis+sentinel://``).
        nodes: every address of the URL: cluster nodes to start from, or the sentinels.
        service: the master's name the sentinels know (sentinel mode only).
        wait_replicas: replicas that must have a publish or an ack before it returns
            (``?wait_replicas=N``; 0 keeps Redis's asynchronous replication).
        wait_timeout: seconds to wait for them (``?wait_timeout=``, default 2).
        spin: seconds a send from a plain thread polls its socket for the reply before it
            sleeps in ``recv`` (``?spin_us=``, in microseconds, default 100; 0 never
            polls). See ``RedisSyncPublisher``.
    """

    host: str
    port: int
    db: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    redacted: str = ""
    mode: str = "single"
    nodes: tuple[Address, ...] = ()
    service: str | None = None
    wait_replicas: int = 0
    wait_timeout: float = 2.0
    spin: float = SPIN

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """Read ``url``.

        Raises:
            ConfigurationError: not a Redis URL, a bad number, or an unknown option
                (with the closest known one as a suggestion).
        """
        scheme, _, rest = url.partition("://")
        userinfo, at, address = rest.rpartition("@")
        # Shown in errors: nothing of what stands before the last '@', which may be secret,
        # and no secret-looking query value (?password=... is not an option here, so it is
        # exactly what an unknown-option error would otherwise print).
        shown = redact(f"{scheme}://{'***@' if at else ''}{address}")
        if scheme not in _SCHEMES:
            raise ConfigurationError(f"not a redis URL: {shown}")
        mode, tls = _SCHEMES[scheme]
        if any(c in userinfo for c in "/?#"):
            raise ConfigurationError(f"malformed redis URL {shown}: percent-encode '/', '?', "
                                     "'#' and '@' in the user name and password")
        # urlsplit cannot read a list of hosts: give it the first, keep the whole list.
        cut = min((i for i in (address.find("/"), address.find("?")) if i >= 0),
                  default=len(address))
        hosts, rest = address[:cut], address[cut:]
        nodes = parse_nodes(hosts, 26379 if mode == "sentinel" else 6379, shown)
        if mode == "single" and len(nodes) > 1:
            raise ConfigurationError(f"one address only in {shown}: for several, use "
                                     "redis+cluster:// or redis+sentinel://")
        first = nodes[0][0] if ":" not in nodes[0][0] else f"[{nodes[0][0]}]"
        path, qmark, query_text = rest.partition("?")
        service = None
        if mode == "sentinel":
            service, _, db_text = path.strip("/").partition("/")
            if not service:
                raise ConfigurationError(f"no master name in {shown}: write "
                                         "redis+sentinel://host:port[,host:port]/<master name>")
            path = "/" + db_text
        tail = path + qmark + query_text
        userpart = f"{userinfo}@" if at else ""
        parts = urlsplit(f"{'rediss' if tls else 'redis'}://{userpart}{first}:{nodes[0][1]}"
                         f"{tail}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        for key in query:
            if key not in _OPTIONS:
                tip = did_you_mean(key, _OPTIONS) or f" (known: {', '.join(_OPTIONS)})"
                raise ConfigurationError(f"unknown redis URL option {key!r}{tip} in {shown}")
        options: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
        try:
            port = parts.port or 6379
            db = int(query.pop("db", None) or parts.path.strip("/") or 0)
            for key in ("socket_timeout", "socket_connect_timeout"):
                if key in query:
                    options[key] = float(query.pop(key))
            if "max_connections" in query:
                options["max_connections"] = int(query.pop("max_connections"))
            wait_replicas = int(query.pop("wait_replicas", "") or 0)
            wait_timeout = float(query.pop("wait_timeout", "") or 2.0)
            spin = float(query.pop("spin_us", "") or SPIN * 1e6) / 1e6
        except ValueError as exc:
            raise ConfigurationError(f"bad number in redis URL {shown}: {exc}") from None
        if not 0 <= spin <= 0.01:
            raise ConfigurationError(f"spin_us must be from 0 to 10000 microseconds in {shown}")
        if wait_replicas < 0 or wait_timeout <= 0:
            raise ConfigurationError(f"wait_replicas must be 0 or more and wait_timeout more "
                                     f"than 0 in {shown}")
        if mode == "cluster" and db:
            raise ConfigurationError(f"a redis cluster has only db 0: remove /{db} from "
                                     f"{shown} (use ?prefix= to keep apps apart)")
        for key in _SSL_OPTIONS:
            if key not in query:
                continue
            if not tls:
                raise ConfigurationError(f"{key} needs a rediss:// URL (TLS): {shown}")
            value = query.pop(key)
            if key == "ssl_check_hostname":
                options[key] = value.lower() in ("1", "true", "yes", "on")
            elif key == "ssl_cert_reqs" and value not in ("none", "optional", "required"):
                raise ConfigurationError(
                    f"ssl_cert_reqs must be none, optional or required, not {value!r}")
            else:
                options[key] = value
        prefix = query.pop("prefix", "hubbub") or "hubbub"
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        login = (parts.username or "") + (":***" if parts.password is not None else "")
        return cls(
            host=parts.hostname or "localhost", port=port, db=db, prefix=prefix, tls=tls,
            username=username, password=password, options=options,
            redacted=f"{scheme}://{login + '@' if at else ''}{address}",
            mode=mode, nodes=nodes, service=service, wait_replicas=wait_replicas,
            wait_timeout=wait_timeout, spin=spin,
        )

    @property
    def where(self) -> str:
        if self.mode == "single":
            return f"{self.host}:{self.port}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{self.mode} {hosts}" + (f"/{self.service}" if self.service else "")

    def __str__(self) -> str:
        return self.redacted

    def client(self, *, name: str) -> aioredis.Redis:
        """A pooled asyncio client whose connections call themselves ``name`` (CLIENT SETNAME).

        Reconnects quickly once or twice; longer outages surface as errors, and the worker
        loop retries with backoff. A cluster or sentinel URL gets redis-py's cluster client
        or a client of the sentinels' current master.
        """
        if self.mode == "cluster":
            return cluster_client(self.nodes, name=name, username=self.username,
                                  password=self.password, tls=self.tls, options=self.options)
        if self.mode == "sentinel":
            assert self.service is not None  # parse() refuses a sentinel URL without one
            return sentinel_client(self.nodes, self.service, name=name, db=self.db,
                                   username=self.username, password=self.password,
                                   tls=self.tls, options=self.options)
        return aioredis.Redis(
            host=self.host, port=self.port, db=self.db, username=self.username,
            password=self.password, ssl=self.tls, client_name=name,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
            **self.options,
        )

    def sync_client(self, *, name: str) -> redis.Redis | None:
        """A pooled, thread-safe synchronous client like :meth:`client` (redis-py's pool
        opens new connections in a forked child), for one Redis server only: None for a
        cluster or sentinel URL, and with ``?wait_replicas`` (the WAIT is async-only here).
        """
        if self.mode != "single" or self.wait_replicas:
            return None
        return redis.Redis(
            host=self.host, port=self.port, db=self.db, username=self.username,
            password=self.password, ssl=self.tls, client_name=name,
            retry=SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
            **self.options,
        )

    async def replicated(self, client: aioredis.Redis, marker: str) -> None:
        """With ``?wait_replicas=N``: return once N replicas have every write finished so
        far in ``marker``'s slot; a no-op without it.

        Raises:
            TransportUnavailable: fewer replicas acknowledged within ``wait_timeout``.
        """
        if self.wait_replicas:
            await wait_for_replicas(client, marker, self.wait_replicas, self.wait_timeout,
                                    self.where)


@contextlib.contextmanager
def translate(
    url: RedisURL,
    unavailable: type[Exception] = TransportUnavailable,
    failed: type[Exception] = TransportError,
) -> Iterator[None]:
    """Turn driver errors into hubbub's, with the password scrubbed from the message.

    Args:
        url: names the server in the message; its password is scrubbed from it.
        unavailable: raised when Redis cannot be reached or a call timed out.
        failed: raised for any other Redis error, a rejected login included (retrying
            with the same credentials will not help).
    """
    try:
        yield
    except HubbubError:  # already ours (a WAIT that fell short): not wrapped again
        raise
    except AuthenticationError as exc:  # a ConnectionError to redis-py, but retrying won't help
        _raise(url, failed, f"redis at {url.where} rejected the login: {exc}", exc)
    except RedisClusterException as exc:
        # Mostly a failover under way (no node reachable yet, slots not all covered), to be
        # retried; but a request the cluster can never serve (keys in two slots, a command
        # without a key) is a failure, or a worker would retry it forever.
        kind = failed if _cluster_refusal(exc) else unavailable
        _raise(url, kind, f"redis cluster at {url.where} refused: {exc}", exc)
    except (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError,
            ReadOnlyError, AskError) as exc:
        # A cluster or sentinel failover in progress shows as CLUSTERDOWN, TRYAGAIN, a
        # MOVED the client could not follow yet, or a write to a master turned replica.
        verb = "timed out" if isinstance(exc, TimeoutError | RedisTimeoutError) else "refused"
        _raise(url, unavailable, f"redis at {url.where} {verb}: {exc}", exc)
    except RedisError as exc:
        _raise(url, failed, f"redis at {url.where} failed: {exc}", exc)


# What redis-py's cluster client says when a request can never be served, whatever the
# cluster's state: retrying it would not help.
_NEVER_SERVED = ("must map to the same key slot", "Invalid args in command", "Missing key",
                 "Cluster mode is not enabled", "must be 0 or None in cluster mode",
                 "is not supported in cluster mode", "Cannot execute",
                 "is blocked when running redis in cluster mode")


def _cluster_refusal(exc: RedisClusterException) -> bool:
    """True when the cluster client refused ``exc``'s request for good (not for a failover)."""
    if isinstance(exc, CrossSlotTransactionError | InvalidPipelineStack):
        return True
    return any(words in str(exc) for words in _NEVER_SERVED)


def _raise(url: RedisURL, kind: type[Exception], message: str, exc: Exception) -> NoReturn:
    if url.password:
        message = message.replace(url.password, "***")
    raise kind(redact(message)) from exc

