"""A Ray cluster of several nodes on one machine, started the way a real cluster is: ``ray start
--head`` for the head and ``ray start --address`` for each worker node, every node its own
raylet with its own CPUs and object store. Used by ``tests/test_scale_cluster.py`` and
``benchmarks/scale_encode.py --cluster``.

Ray's token authentication is on with a fresh token for the cluster (Ray enables it by default
for local clusters), and node failures are detected after about 3 s instead of about 15 s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RAY = Path(sys.executable).with_name("ray")
ACTOR_AT_WORK = "ray::EncodeActor.write"
"""How Ray titles the process of an encoder actor while it runs a batch."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes(text: str, name: str = "") -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process whose command line holds ``text``
    and ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if text in cmd and name in cmd:
            found.append((int(entry.name), ppid, cmd))
    return found


class LocalCluster:
    """``with LocalCluster(workers=2) as cluster:`` a head and ``workers`` worker nodes of
    ``cpus`` CPUs each; ``cluster.address`` and ``cluster.env`` for drivers,
    ``cluster.worker_raylets`` (name -> raylet pid) for killing a node."""

    def __init__(self, workers: int = 2, cpus: int = 1, head_cpus: int | None = None,
                 object_store_mb: int = 100) -> None:
        self.workers, self.cpus, self.object_store_mb = workers, cpus, object_store_mb
        self.head_cpus = cpus if head_cpus is None else head_cpus
        self.temp = ""
        self.address = ""
        self.env: dict[str, str] = {}
        self.worker_raylets: dict[str, int] = {}

    def __enter__(self) -> LocalCluster:
        self.temp = tempfile.mkdtemp(prefix="vdray", dir="/tmp")  # socket paths must stay short
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3"}
        self.address = f"127.0.0.1:{_free_port()}"
        common = [f"--object-store-memory={self.object_store_mb << 20}",
                  "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        try:
            self._ray("start", "--head", f"--port={self.address.split(':')[1]}",
                      f"--temp-dir={self.temp}", "--include-dashboard=false",
                      f"--num-cpus={self.head_cpus}", *common)
            for i in range(self.workers):
                before = self._raylets()
                self._ray("start", f"--address={self.address}", f"--num-cpus={self.cpus}", *common)
                (pid,) = self._raylets() - before
                self.worker_raylets[f"worker{i + 1}"] = pid
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ray(self, *args: str) -> None:
        subprocess.run([str(RAY), *args], env=self.env, check=True, capture_output=True,
                       timeout=120)

    def _raylets(self) -> set[int]:
        return {pid for pid, _, _ in processes(self.temp, "raylet/raylet")}

    def alive_nodes(self) -> int:
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        done = subprocess.run([sys.executable, "-c", code, self.address], env=self.env,
                              capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.strip().splitlines()[-1])

    def busy_worker_raylets(self) -> set[int]:
        """Raylets of worker nodes whose encoder actor is encoding a batch right now."""
        busy = {ppid for _, ppid, _ in processes(ACTOR_AT_WORK)}
        return busy & set(self.worker_raylets.values())

    def kill(self, raylet: int) -> None:
        os.kill(raylet, signal.SIGKILL)

    def __exit__(self, *_exc: Any) -> None:
        # this cluster's processes only (``ray stop`` would stop every Ray on the machine):
        # those started with its temp folder, and their children (workers retitle themselves)
        ours = {pid for pid, _, _ in processes(self.temp)} if self.temp else set()
        ours |= {pid for pid, ppid, _ in processes("") if ppid in ours}
        for pid in ours:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.temp:
            shutil.rmtree(self.temp, ignore_errors=True)
