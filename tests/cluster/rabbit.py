"""A 3-node RabbitMQ cluster on loopback, beside (never touching) the machine's own node.

Each node runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` as this user with its own name
(``hb-rabbit-<i>@localhost``), AMQP port (``HB_TEST_AMQP_CLUSTER_PORT`` + i, default
25701..25703), distribution port (+10), data, log and config under a temporary folder,
and an Erlang cookie of its own in that folder's HOME: the CLI it runs can reach these
three nodes and no other. Nodes 2 and 3 ``join_cluster`` node 1; a node killed and started
again rejoins from its data on its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import servers
from tests.cluster.servers import STARTUP, ServerError, listening, wait

AMQP_PORT = int(os.environ.get("HB_TEST_AMQP_CLUSTER_PORT", "25701"))
BIN = Path("/usr/lib/rabbitmq/bin")
HOST = "127.0.0.1"


@dataclass
class Node:
    index: int
    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"hb-rabbit-{self.index}@localhost"

    @property
    def folder(self) -> Path:
        return self.home / f"node{self.index}"

    def env(self) -> dict[str, str]:
        f = self.folder
        return {**{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
                "HOME": str(self.home), "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_IP_ADDRESS": HOST, "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.port + 10),
                "RABBITMQ_MNESIA_BASE": str(f / "mnesia"), "RABBITMQ_LOG_BASE": str(f / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": str(self.home / "rabbitmq-env.conf"),
                "RABBITMQ_PID_FILE": str(f / "pid"), "RABBITMQ_LOGS": str(f / "log" / "node.log")}

    def start(self) -> None:
        if listening(self.port) or listening(self.port + 10):
            raise ServerError(f"port {self.port} or {self.port + 10} is taken: "
                              "set HB_TEST_AMQP_CLUSTER_PORT")
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "server.out", "ab") as out:
            self.proc = subprocess.Popen([str(BIN / "rabbitmq-server")], env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run([str(BIN / "rabbitmqctl"), "-n", self.name, *args],
                              env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServerError(f"rabbitmqctl {' '.join(args)} on {self.name}: "
                              f"{(done.stderr or done.stdout)[-400:]}")
        return done.stdout

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's process group (the script and the Erlang VM it started)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)


@dataclass
class RabbitCluster:
    folder: Path
    base: int = AMQP_PORT
    nodes: list[Node] = field(default_factory=list)

    def url(self, prefix: str, *, order: list[int] | None = None, **options: str) -> str:
        """Every node's URL, ';'-separated, the nodes in ``order`` (indexes from 0)."""
        query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
        picked = [self.nodes[i] for i in (order or range(len(self.nodes)))]
        return ";".join(f"amqp://guest:guest@{HOST}:{n.port}/?{query}" for n in picked)

    def start(self) -> None:
        if not (BIN / "rabbitmq-server").exists():
            raise ServerError("RabbitMQ is not installed (/usr/lib/rabbitmq/bin)")
        self.folder.mkdir(parents=True, exist_ok=True)
        cookie = self.folder / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text(
            "loopback_users = none\ncluster_partition_handling = pause_minority\n"
            "vm_memory_high_watermark.absolute = 512MB\ndisk_free_limit.absolute = 50MB\n")
        self.nodes = [Node(i + 1, self.folder, self.base + i) for i in range(3)]
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self.await_up(node)
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
        wait(lambda: self.running() == 3, STARTUP, "3 RabbitMQ nodes running as one cluster")

    def await_up(self, node: Node) -> None:
        def up() -> bool:
            if not node.alive():
                log = (node.folder / "server.out").read_text(errors="replace")[-600:]
                raise ServerError(f"{node.name} exited: {log}")
            return listening(node.port)

        wait(up, STARTUP, f"{node.name} accepting AMQP on {node.port}")

    def running(self) -> int:
        """Nodes the first live node sees running in the cluster."""
        live = next(n for n in self.nodes if n.alive())
        out = live.ctl("eval", "length(rabbit_nodes:all_running()).", timeout=20)
        return int(out.strip())

    def restart(self, node: Node) -> None:
        """Start a killed node again: it rejoins the cluster from its data directory."""
        wait(lambda: not listening(node.port), 20, f"port {node.port} free")
        node.start()
        self.await_up(node)
        wait(lambda: self.running() == 3, STARTUP, f"{node.name} back in the cluster")

    def healthy(self) -> bool:
        return all(n.alive() for n in self.nodes) and self.running() == 3

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


_running: list[RabbitCluster] = []
_failed: list[str] = []


def rabbit_cluster() -> RabbitCluster:
    """The session's 3-node RabbitMQ cluster, started on first call."""
    if _failed:
        raise ServerError(_failed[0])
    if not _running:
        cluster = RabbitCluster(Path(tempfile.mkdtemp(prefix="hubbub-rabbit-")))
        try:
            cluster.start()
        except (ServerError, OSError, subprocess.SubprocessError) as exc:
            cluster.stop()
            _failed.append(f"rabbitmq cluster could not start: {exc}")
            raise ServerError(_failed[0]) from exc
        except BaseException:  # a test timeout or ^C mid-start: leave no node behind
            cluster.stop()
            raise
        _running.append(cluster)
        servers.on_stop(stop)
    return _running[0]


def stop() -> None:
    while _running:
        cluster = _running.pop()
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
