"""A real Ray cluster on this machine: a head started with Ray's own ``ray start --head`` and two
worker nodes started with ``ray start --address``, each its own raylet with one CPU, as on
separate machines. ``vecdoctor ray-fit`` and ``vecdoctor encode --engine ray --address`` run
through it, and one worker node is killed (kill -9 of its raylet) in the middle of the encoding:
that costs retries, never data (every id exactly once, vectors equal to the local Encoder's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

MAX_LENGTH = 64
VECDOCTOR = Path(sys.executable).with_name("vecdoctor")


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    pytest.importorskip("ray")
    from ray_cluster import RAY, LocalCluster

    if not RAY.is_file():
        pytest.skip("the ray command is not installed (pip install 'vecdoctor[scale]')")
    with LocalCluster(workers=2, cpus=1) as started:
        yield started


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


def _rows_written(output: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in output.glob("part-*.parquet"))


def test_three_nodes_fit_and_encode_and_a_killed_node_costs_no_data(cluster, corpus, tmp_path):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.fix.transform import load_transform
    from vecdoctor.scale.ray_encode import read_vectors

    path, docs = corpus
    assert cluster.alive_nodes() == 3
    base = [str(VECDOCTOR)]
    fitted = tmp_path / "whitening"
    fit = subprocess.run(
        [*base, "ray-fit", "whitening", str(path), "-o", str(fitted), "--max-length",
         str(MAX_LENGTH), "--sample", "300", "--workers", "2", "--address", cluster.address],
        env=cluster.env, capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert 200 <= _emitted(fit.stdout)["fitted_on"] <= 300

    output = tmp_path / "vectors"
    run = subprocess.Popen(
        [*base, "encode", str(path), "-o", str(output), "--engine", "ray", "--address",
         cluster.address, "--workers", "2", "--max-length", str(MAX_LENGTH), "--batch-size",
         "8", "--transform", str(fitted)],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the raylet of a worker node whose encoder actor is encoding a batch
    deadline = time.monotonic() + 300
    victim = None
    while time.monotonic() < deadline and run.poll() is None:
        hosts = cluster.busy_worker_raylets()
        if hosts:
            victim = sorted(hosts)[0]
            break
        time.sleep(0.1)
    assert victim is not None, "the encoding never reached a worker node's actor"
    cluster.kill(victim)
    written_at_kill = _rows_written(output) if output.is_dir() else 0
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert written_at_kill < len(docs), "the run ended before the node was killed"
    assert cluster.alive_nodes() == 2

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

    # the vectors become an index folder without encoding again; their whitening is needed
    idx = tmp_path / "idx"
    plain = subprocess.run([*base, "index", str(path), "--vectors", str(output), "-o", str(idx)],
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 1 and "pass that transform's folder" in plain.stderr + plain.stdout
    made = subprocess.run([*base, "index", str(path), "--vectors", str(output), "--transform",
                           str(fitted), "-o", str(idx)], capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    index = Index.load(idx)
    assert index.transform is not None and len(index) == len(docs)
    stored = np.asarray(index.vectors.vectors, dtype=np.float32)
    by_row = {d.id: r for r, d in enumerate(index.docs)}
    rows = stored[[by_row[i] for i in ids]]
    cosines = (rows * want).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(want, axis=1)
    assert float(cosines.min()) > 0.9999  # the stored vectors are the whitened ones
    hits = Searcher(index, cache_size=0).search(docs[7].content, k=3, mode="dense")
    assert hits[0].id == docs[7].id
