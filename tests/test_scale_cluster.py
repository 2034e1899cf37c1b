"""A real Ray cluster on this machine: a head started with Ray's own ``ray start --head`` and two
worker nodes started with ``ray start --address``, each its own raylet with one CPU, as on
separate machines. ``vecdoctor ray-fit`` and ``vecdoctor encode --engine ray --address`` run
through it, and one worker node is killed (kill -9 of its raylet) in the middle of the encoding:
that costs retries, never data (every id exactly once, vectors equal to the local Encoder's).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

MAX_LENGTH = 64
RAY = Path(sys.executable).with_name("ray")
VECDOCTOR = Path(sys.executable).with_name("vecdoctor")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes(text: str, name: str = "") -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process whose command line holds ``text``
    (and ``name``)."""
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


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    pytest.importorskip("ray")
    if not RAY.is_file():
        pytest.skip("the ray command is not installed (pip install 'vecdoctor[scale]')")
    temp = tempfile.mkdtemp(prefix="vdray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0",
           # a dead node is noticed after ~3 s instead of the default ~15 s
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1",
              "--disable-usage-stats"]
    workers: dict[str, int] = {}
    try:
        subprocess.run([str(RAY), "start", "--head", f"--port={address.split(':')[1]}",
                        f"--temp-dir={temp}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        for name in ("worker1", "worker2"):
            before = {p for p, _, _ in _processes(temp, "raylet/raylet")}
            subprocess.run([str(RAY), "start", f"--address={address}", *common],
                           env=env, check=True, capture_output=True, timeout=120)
            (pid,) = {p for p, _, _ in _processes(temp, "raylet/raylet")} - before
            workers[name] = pid
        yield {"address": address, "env": env, "workers": workers, "temp": temp}
    finally:
        # this cluster's processes only (``ray stop`` would stop every Ray on the machine):
        # those started with its temp folder, and their children (workers retitle themselves)
        ours = {pid for pid, _, _ in _processes(temp)}
        ours |= {pid for pid, ppid, _ in _processes("") if ppid in ours}
        for pid in ours:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list]:  # type: ignore[no-untyped-def]
    from vecdoctor.data import sample_corpus, write_corpus_jsonl

    docs = sample_corpus(passage_chars=600)  # shorter passages: several Ray batches
    path = tmp_path_factory.mktemp("cluster") / "corpus.jsonl"
    write_corpus_jsonl(docs, path)
    return path, docs


def _emitted(stdout: str) -> dict:
    """The JSON object a vecdoctor command prints last (Ray may print lines before it)."""
    start = stdout.rindex("\n{") + 1 if "\n{" in stdout else stdout.index("{")
    return json.loads(stdout[start:])


def _nodes_alive(cluster: dict) -> int:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    done = subprocess.run([sys.executable, "-c", code, cluster["address"]], env=cluster["env"],
                          capture_output=True, text=True, timeout=120, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def _rows_written(output: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in output.glob("part-*.parquet"))


def test_three_nodes_fit_and_encode_and_a_killed_node_costs_no_data(cluster, corpus, tmp_path):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.fix.transform import load_transform
    from vecdoctor.scale.ray_encode import read_vectors

    path, docs = corpus
    assert _nodes_alive(cluster) == 3
    base = [str(VECDOCTOR)]
    fitted = tmp_path / "whitening"
    started = time.monotonic()
    fit = subprocess.run(
        [*base, "ray-fit", "whitening", str(path), "-o", str(fitted), "--max-length",
         str(MAX_LENGTH), "--sample", "300", "--workers", "2", "--address", cluster["address"]],
        env=cluster["env"], capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert 200 <= _emitted(fit.stdout)["fitted_on"] <= 300

    print(f"ray-fit: {time.monotonic() - started:.1f} s")
    output = tmp_path / "vectors"
    run = subprocess.Popen(
        [*base, "encode", str(path), "-o", str(output), "--engine", "ray", "--address",
         cluster["address"], "--workers", "2", "--max-length", str(MAX_LENGTH), "--batch-size",
         "8", "--transform", str(fitted)],
        env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the raylet of a worker node whose encoder actor is encoding a batch (Ray titles the
    # actor's process ...EncodeActor)).submit while it runs one)
    deadline = time.monotonic() + 300
    victim = None
    while time.monotonic() < deadline and run.poll() is None:
        busy = {ppid for _, ppid, _ in _processes("EncodeActor)).submit")}
        hosts = busy & set(cluster["workers"].values())
        if hosts:
            victim = sorted(hosts)[0]
            break
        time.sleep(0.1)
    assert victim is not None, "the encoding never reached a worker node's actor"
    os.kill(victim, signal.SIGKILL)
    written_at_kill = _rows_written(output) if output.is_dir() else 0
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert written_at_kill < len(docs), "the run ended before the node was killed"
    print(f"killed raylet {victim} with {written_at_kill} of {len(docs)} rows written; "
          f"done {time.monotonic() - started:.1f} s after the start")
    assert _nodes_alive(cluster) == 2

    result = _emitted(stdout)
    assert (result["encoded"], result["total"]) == (len(docs), len(docs))
    ids, vectors, _ = read_vectors(output)
    assert sorted(ids) == sorted(d.id for d in docs)  # every id exactly once
    encoder = Encoder("minilm", max_length=MAX_LENGTH)
    transform = load_transform(fitted, fingerprint=encoder.fingerprint, dim=encoder.dimension)
    by_id = {d.id: d.content for d in docs}
    want = transform.transform(encoder.encode_documents([by_id[i] for i in ids]),
                               fingerprint=encoder.fingerprint)
    assert float(np.max(np.abs(np.stack(vectors) - want))) < 1e-4
