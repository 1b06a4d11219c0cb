"""Clustered Redis servers on loopback, started by the test session and torn down by it.

``RedisCluster``: six ``redis-server --cluster-enabled yes`` (3 masters, 3 replicas) joined by
``redis-cli --cluster create``. ``RedisSentinel``: one master, one replica, three sentinels.
Each owns the processes it started (kept by ``Popen``) and kills only those; data lives
in a temporary folder. Ports are fixed so that a failed run is easy to look at, and
configurable (``HB_TEST_REDIS_CLUSTER_PORT``, ``HB_TEST_REDIS_SENTINEL_PORT``) so
that two sessions on one machine can keep apart.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_PORT = int(os.environ.get("HB_TEST_REDIS_CLUSTER_PORT", "17000"))
SENTINEL_PORT = int(os.environ.get("HB_TEST_REDIS_SENTINEL_PORT", "17010"))
HOST = "127.0.0.1"
STARTUP = 120.0  # seconds a whole topology may take to come up (on a loaded machine)


class ServerError(RuntimeError):
    """The servers could not be started (the fixture fails under CI, skips otherwise)."""


def listening(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """``redis-cli -p port args...``; its output (stdout)."""
    done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


def info(port: int, section: str = "replication") -> dict[str, str]:
    out = {}
    for line in cli(port, "INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out


@dataclass
class Server:
    port: int
    args: list[str]
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if listening(self.port):
            raise ServerError(f"port {self.port} is taken: set HB_TEST_REDIS_*_PORT")
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the process holds it
        self.proc = subprocess.Popen(self.args, cwd=self.folder, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process this object started (none other)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)


def redis_args(port: int, *extra: str) -> list[str]:
    return ["redis-server", "--bind", HOST, "--port", str(port), "--save", "",
            "--appendonly", "no", "--maxmemory", "64mb", "--daemonize", "no",
            "--protected-mode", "no", *extra]


@dataclass
class RedisCluster:
    """3 masters and 3 replicas on ``base .. base+5`` (cluster bus on port + 10000)."""

    folder: Path
    base: int = CLUSTER_PORT
    servers: list[Server] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [self.base + i for i in range(6)]

    def url(self, prefix: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
        hosts = ",".join(f"{HOST}:{p}" for p in self.ports[:3])
        return f"redis+cluster://{hosts}?{query}"

    def server(self, port: int) -> Server:
        return next(s for s in self.servers if s.port == port)

    def start(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise ServerError("redis-server and redis-cli are not installed")
        for port in self.ports:
            s = Server(port, redis_args(
                port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                # Quick failover: a master is failed after 1s; any replica may take over.
                "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
                "--cluster-require-full-coverage", "no"), self.folder / str(port))
            self.servers.append(s)
            s.start()
        for port in self.ports:
            wait(lambda port=port: cli(port, "PING").strip() == "PONG", 15, f"redis {port}")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=STARTUP, check=False)
        if created.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed: {created.stdout[-500:]}"
                              f"{created.stderr[-500:]}")
        wait(self.healthy, STARTUP, "redis cluster state ok with 3 masters and 3 replicas")

    def healthy(self) -> bool:
        """Every node alive says cluster_state:ok, and 3 masters each have a replica."""
        live = [s.port for s in self.servers if s.alive()]
        if len(live) < 6:
            return False
        if any("cluster_state:ok" not in cli(p, "CLUSTER", "INFO") for p in live):
            return False
        masters = [p for p in live if info(p).get("role") == "master"]
        return len(masters) == 3 and all(
            "state=online" in info(p).get("slave0", "") for p in masters)

    def master_of(self, key: str) -> int | None:
        """The port of the master serving ``key``'s slot (asked of a live node); None while
        no master does (during a failover)."""
        live = next(s.port for s in self.servers if s.alive())
        slot = int(cli(live, "CLUSTER", "KEYSLOT", key).strip())
        for line in cli(live, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        return None

    def replica_of(self, master: int) -> int:
        for s in self.servers:
            if s.alive() and s.port != master:
                i = info(s.port)
                if i.get("role") == "slave" and i.get("master_port") == str(master):
                    return s.port
        raise ServerError(f"no replica of {master}")

    def restart(self, port: int) -> None:
        """Start a killed node again from its folder: it rejoins (as a replica) by itself."""
        s = self.server(port)
        wait(lambda: not listening(port), 10, f"port {port} free")
        s.start()

    def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                s.kill(signal.SIGCONT)
                s.kill()


@dataclass
class RedisSentinel:
    """A master on ``base``, its replica on ``base+1``, sentinels on ``base+2 .. base+4``,
    watching the master under the name ``SERVICE``."""

    folder: Path
    base: int = SENTINEL_PORT
    servers: list[Server] = field(default_factory=list)
    SERVICE = "hbmaster"

    @property
    def data_ports(self) -> list[int]:
        return [self.base, self.base + 1]

    @property
    def sentinel_ports(self) -> list[int]:
        return [self.base + 2 + i for i in range(3)]

    def url(self, prefix: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
        hosts = ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}?{query}"

    def server(self, port: int) -> Server:
        return next(s for s in self.servers if s.port == port)

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise ServerError("redis-server is not installed")
        master, replica = self.data_ports
        for port, extra in ((master, []), (replica, ["--replicaof", HOST, str(master)])):
            s = Server(port, redis_args(port, *extra), self.folder / str(port))
            self.servers.append(s)
            s.start()
        wait(lambda: info(replica).get("master_link_status") == "up", 15, "replica in sync")
        for port in self.sentinel_ports:
            folder = self.folder / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\ndaemonize no\nprotected-mode no\n"
                f"sentinel monitor {self.SERVICE} {HOST} {master} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 4000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n")
            s = Server(port, ["redis-server", str(conf), "--sentinel"], folder)
            self.servers.append(s)
            s.start()
        wait(self.healthy, STARTUP, "3 sentinels agree on a master with one replica")

    def master(self) -> int:
        """The master's port as the first live sentinel reports it."""
        for port in self.sentinel_ports:
            if self.server(port).alive():
                reply = cli(port, "SENTINEL", "get-master-addr-by-name", self.SERVICE).split()
                if len(reply) == 2:
                    return int(reply[1])
        raise ServerError("no sentinel answers")

    def healthy(self) -> bool:
        master = self.master()
        if not self.server(master).alive() or info(master).get("role") != "master":
            return False
        if "state=online" not in info(master).get("slave0", ""):
            return False
        return all("sentinels=3" in cli(p, "INFO", "sentinel") for p in self.sentinel_ports)

    def master_of(self, key: str) -> int | None:
        """The master's port (one master serves every key)."""
        return self.master()

    def replica_of(self, master: int) -> int:
        return next(p for p in self.data_ports if p != master)

    def restart(self, port: int) -> None:
        """Start a killed data node again: the sentinels make it a replica of the new master."""
        s = self.server(port)
        wait(lambda: not listening(port), 10, f"port {port} free")
        s.start()

    def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                s.kill(signal.SIGCONT)
                s.kill()


# -- once per test session -------------------------------------------------------------------
# The broker modules start a topology on first use (tests.brokers.require calls their
# start()); the session fixture in tests/conftest.py stops whatever was started, and atexit
# does so should the session die before its teardown.

_running: dict[str, RedisCluster | RedisSentinel] = {}
_failed: dict[str, str] = {}


def _ensure(name: str, make: type[RedisCluster] | type[RedisSentinel]
            ) -> RedisCluster | RedisSentinel:
    if name in _failed:
        raise ServerError(_failed[name])
    if name not in _running:
        topology = make(Path(tempfile.mkdtemp(prefix=f"hubbub-{name}-")))
        try:
            topology.start()
        except (ServerError, OSError, subprocess.SubprocessError) as exc:
            topology.stop()
            _failed[name] = f"{name} could not start: {exc}"
            raise ServerError(_failed[name]) from exc
        except BaseException:  # a test timeout or ^C mid-start: leave no server behind
            topology.stop()
            raise
        _running[name] = topology
    return _running[name]


def redis_cluster() -> RedisCluster:
    """The session's Redis Cluster, started on first call."""
    topology = _ensure("redis-cluster", RedisCluster)
    assert isinstance(topology, RedisCluster)
    return topology


def redis_sentinel() -> RedisSentinel:
    """The session's master, replica and sentinels, started on first call."""
    topology = _ensure("redis-sentinel", RedisSentinel)
    assert isinstance(topology, RedisSentinel)
    return topology


_stoppers: list[Callable[[], None]] = []


def on_stop(stop: Callable[[], None]) -> None:
    """Have ``stop_all`` call ``stop`` too (another kind of server started this session)."""
    _stoppers.append(stop)


def stop_all() -> None:
    """Stop every topology this session started, and remove their folders."""
    while _stoppers:
        _stoppers.pop()()
    while _running:
        _, topology = _running.popitem()
        topology.stop()
        shutil.rmtree(topology.folder, ignore_errors=True)


atexit.register(stop_all)
