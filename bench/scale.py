"""How far hubbub scales on a Redis Cluster: aggregate no-op drain by worker count and shards.

    python bench/scale.py                           # starts its own cluster on 17100-17105
    python bench/scale.py --workers 1,2,4,8 --tasks 20000 --runs 1
    python bench/scale.py --url 'redis+cluster://10.0.0.5:7000?'   # an existing cluster

For each layout (three queues whose hash slots sit on ONE master, or one queue on EACH of
the three masters) and each worker count, it enqueues --tasks no-op tasks spread over the
three queues (bulk ``delay_many``; that enqueue rate is printed too), starts that many
``python -m hubbub worker --pool async`` processes consuming all three queues with results
off, and times the drain by polling the queues' counts. The rate is taken between 10% and
90% drained, so interpreter start and the final stragglers do not count. It also reads
each master's ``INFO commandstats`` before and after a run, giving Redis commands (and CPU
seconds of each redis-server, from /proc) per task: the per-shard cost a projection needs.

Not a test: nothing here asserts timings. The machine it runs on is shared; the load
average at the start and the end is printed under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hubbub import Hub  # noqa: E402
from tests.brokers._redis_keys import delete_prefix  # noqa: E402
from tests.cluster import servers  # noqa: E402

APP = textwrap.dedent("""
    from hubbub import Hub

    hub = Hub()  # $HUBBUB_BROKER; results off

    @hub.task(name="scale.noop")
    async def noop() -> None:
        return None
""")


def queues_for(cluster_nodes: dict[int, list[tuple[int, int]]], spread: bool, prefix: str,
               slot_of: dict[str, int]) -> list[str]:
    """Three queue names: on one master, or one on each master."""
    masters = sorted(cluster_nodes)
    wanted = masters if spread else [masters[0]] * 3
    names: list[str] = []
    i = 0
    while len(names) < 3:
        name = f"q{i}"
        i += 1
        slot = slot_of.get(name)
        if slot is None:
            slot = int(servers.cli(masters[0], "CLUSTER", "KEYSLOT", f"{{{prefix}:{name}}}"))
            slot_of[name] = slot
        master = next(m for m, spans in cluster_nodes.items()
                      if any(lo <= slot <= hi for lo, hi in spans))
        if master == wanted[len(names)]:
            names.append(name)
    return names


def slot_map(port: int) -> dict[int, list[tuple[int, int]]]:
    """master port -> its slot ranges."""
    out: dict[int, list[tuple[int, int]]] = {}
    for line in servers.cli(port, "CLUSTER", "NODES").splitlines():
        parts = line.split()
        if "master" not in parts[2] or "fail" in parts[2]:
            continue
        p = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        for span in parts[8:]:
            lo, _, hi = span.partition("-")
            if lo.isdigit():
                out.setdefault(p, []).append((int(lo), int(hi or lo)))
    return out


def commands(port: int) -> int:
    total = 0
    for line in servers.cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, prefix: str, queues: list[str], workers: int, tasks: int, folder: Path,
        masters: list[int], pids: dict[int, int]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env.update(HUBBUB_BROKER=url, HUBBUB_RESULTS="none", PYTHONPATH=f"{folder}:{REPO}")
    os.environ.pop("HUBBUB_RESULTS", None)
    hub = Hub(url, results="none")
    task = hub.task(name="scale.noop")(lambda: None)
    per = tasks // len(queues)
    started = time.monotonic()
    for q in queues:
        for start in range(0, per, 5000):
            task.options(queue=q).delay_many([()] * min(5000, per - start))
    enqueue = tasks / (time.monotonic() - started)

    async def left() -> int:
        client = await hub.client()
        return sum(s.ready + s.leased for s in await client.transport.stats(queues))

    cmd0 = {m: commands(m) for m in masters}
    cpu0 = {m: cpu_seconds(pids[m]) for m in masters if m in pids}
    procs = [subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                               "--pool", "async", "-Q", ",".join(queues)], cwd=folder,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    marks: dict[str, float] = {}
    total = per * len(queues)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = hub.bridge.run(left())
            done = total - n
            now = time.monotonic()
            if done >= 0.1 * total and "p10" not in marks:
                marks["p10"] = now
            if done >= 0.9 * total and "p90" not in marks:
                marks["p90"] = now
            if n == 0:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        hub.close()
    calls = sum(commands(m) - cmd0[m] for m in masters)
    cpu = {m: cpu_seconds(pids[m]) - cpu0[m] for m in cpu0}
    rate = 0.8 * total / max(1e-9, marks["p90"] - marks["p10"])
    return {"rate": rate, "enqueue": enqueue, "calls_per_task": calls / total,
            "busiest_cpu_us": 1e6 * max(cpu.values(), default=0.0) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--url", help="an existing redis+cluster:// URL (default: start one)")
    parser.add_argument("--port", type=int, default=17100, help="base port of its own cluster")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hubbub-scale-"))
    (folder / "benchapp.py").write_text(APP)
    cluster = None
    if args.url is None:
        cluster = servers.RedisCluster(folder / "cluster", base=args.port)
        cluster.start()
        base_url = cluster.url("x").split("?")[0] + "?"
        first = args.port
        pids = {s.port: s.proc.pid for s in cluster.servers if s.proc is not None}
    else:
        base_url = args.url if args.url.endswith("?") else args.url + "&"
        first = int(base_url.split("://")[1].split(",")[0].split("?")[0].rsplit(":", 1)[1])
        pids = {}
    load0 = os.getloadavg()
    try:
        nodes = slot_map(first)
        masters = sorted(nodes)
        print(f"{'layout':<22} {'workers':>7} {'drain/s':>9} {'enqueue/s':>10} "
              f"{'cmds/task':>9} {'busiest shard CPU us/task':>26}")
        for spread in (False, True):
            for w in [int(x) for x in args.workers.split(",")]:
                prefix = "sc" + uuid.uuid4().hex[:8]
                queues = queues_for(nodes, spread, prefix, {})
                r = run(f"{base_url}prefix={prefix}", prefix, queues, w, args.tasks, folder,
                        masters, pids)
                layout = "3 queues, 3 masters" if spread else "3 queues, 1 master"
                print(f"{layout:<22} {w:>7} {r['rate']:>9.0f} {r['enqueue']:>10.0f} "
                      f"{r['calls_per_task']:>9.1f} {r['busiest_cpu_us']:>26.1f}",
                      flush=True)
                asyncio.run(delete_prefix(f"{base_url}prefix={prefix}"))
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average {load0[0]:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
