"""What does encoding on Ray cost and gain against the plain Encoder on one machine?

In one run, on the same SciFact documents (title + abstract):

- ``plain``: one process, ``Encoder.encode_documents`` (model load timed separately), with
  torch's default threads and again with one thread (``plain-1thread``, what an actor gets);
- ``plain-2procs`` (``--processes``): two plain processes of one thread each, started
  together, each encoding every other document: what two actors on two cores could reach with
  no Ray at all (the ceiling of ``ray-2`` on this machine);
- ``ray-1`` / ``ray-2``: ``vecdoctor.scale.encode_corpus`` with 1 and 2 encoder actors on a
  local Ray cluster, end to end (read JSONL, start actors and load the model in each, encode,
  write Parquet parts), each into a fresh output;
- ``ray-noop``: the same job re-run on a complete output (every id skipped): Ray's fixed cost
  of planning the job and starting the actors, with no encoding;
- ``ray-init``: starting the local cluster.

With ``--cluster``, the Ray runs go to a real multi-node cluster on this machine instead
(``tests/ray_cluster.py``: ``ray start --head`` with no CPUs of its own, plus one worker node
per encoder actor and one spare, each its own raylet with 1 CPU): ``cluster-N`` encodes the
corpus, and ``cluster-N-killed`` encodes it again while the raylet of a worker node whose actor
is busy is killed (kill -9) ``--kill-after`` seconds into the run; both must write every id
exactly once with the plain encoder's vectors.

Reported: documents/s, the ratio to ``plain`` (load + encode), and Ray's overhead in seconds.
On a small machine the actors compete for the same cores as each other, so the 2-worker
number says more about overhead than about scaling; on a cluster each actor has its own node.

    python benchmarks/scale_encode.py                       # 600 docs, max length 128
    python benchmarks/scale_encode.py --docs 2000 --max-length 256 --cpus 4
    python benchmarks/scale_encode.py --docs 5183 --max-length 256 --workers 2 --cluster \
        --variant cluster          # results/scale_encode/<cpu>-cluster.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness import machine, versions, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "scifact"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=100, help="documents per Ray batch")
    parser.add_argument("--cpus", type=int, default=None,
                        help="logical CPUs for local Ray (default: the machine's)")
    parser.add_argument("--workers", default="1,2", help="encoder actor counts to run, e.g. 1,2,4")
    parser.add_argument("--cluster", action="store_true",
                        help="run on a multi-node cluster started with `ray start` (see above)")
    parser.add_argument("--kill-after", type=float, default=60.0,
                        help="--cluster: seconds into the second run to kill a busy worker node")
    parser.add_argument("--skip-one-thread", action="store_true",
                        help="do not time the plain encoder on one thread")
    parser.add_argument("--processes", action="store_true",
                        help="also time two one-thread plain processes side by side (no Ray)")
    parser.add_argument("--variant", default="default",
                        help="result file: benchmarks/results/scale_encode/<cpu>-<variant>.json")
    return parser.parse_args()


def plain_runs(encoder: object, docs: list, args: argparse.Namespace, load: float) -> tuple[dict, np.ndarray]:
    """The plain Encoder on one machine: default threads, one thread, two one-thread processes."""
    import torch

    texts = [d.content for d in docs]
    start = time.perf_counter()
    reference = encoder.encode_documents(texts)  # type: ignore[attr-defined]
    encode = time.perf_counter() - start
    results: dict[str, dict] = {"plain": {
        "seconds": round(load + encode, 2), "load_seconds": round(load, 2),
        "encode_seconds": round(encode, 2), "docs_per_second": round(len(docs) / encode, 1),
        "torch_threads": torch.get_num_threads()}}
    if not args.skip_one_thread:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each Ray actor gets (Ray sets OMP_NUM_THREADS to its CPUs)
        start = time.perf_counter()
        encoder.encode_documents(texts)  # type: ignore[attr-defined]
        one = time.perf_counter() - start
        torch.set_num_threads(threads)
        results["plain-1thread"] = {"encode_seconds": round(one, 2),
                                    "docs_per_second": round(len(docs) / one, 1)}
    if args.processes:
        results["plain-2procs"] = side_by_side(texts, args.max_length, reference)
    return results, reference


def local_ray_runs(corpus: Path, work: Path, docs: list, encoder: object, reference: np.ndarray,
                   counts: list[int], cpus: int, batch_size: int) -> dict:
    """``encode_corpus`` with each actor count on a local Ray, then once more on a done output."""
    import ray

    from vecdoctor.scale.ray_encode import encode_corpus, read_vectors

    results: dict[str, dict] = {}
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    results["ray-init"] = {"seconds": round(time.perf_counter() - start, 2), "cpus": cpus}
    try:
        for workers in counts:
            out = work / f"ray-{workers}"
            res = encode_corpus(corpus, out, encoder, workers=workers, batch_size=batch_size)
            ids, vecs, _ = read_vectors(out)
            order = {d.id: i for i, d in enumerate(docs)}
            diff = float(np.abs(vecs - reference[[order[i] for i in ids]]).max())
            results[f"ray-{workers}"] = {"seconds": round(res.seconds, 2),
                                         "docs_per_second": round(res.encoded / res.seconds, 1),
                                         "max_abs_diff_to_plain": diff}
        # a finished output run again: every id is skipped (the resume path's cost)
        res = encode_corpus(corpus, work / f"ray-{counts[-1]}", encoder, workers=1,
                            batch_size=batch_size)
        results["ray-noop"] = {"seconds": round(res.seconds, 2), "skipped": res.skipped}
    finally:
        ray.shutdown()
    return results


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (DATA / "corpus.jsonl.gz").exists():
        sys.exit(f"SciFact not found at {DATA}")

    from vecdoctor.data import load_corpus
    from vecdoctor.encode.encoder import Encoder

    docs = load_corpus(DATA)[: args.docs]
    work = Path(tempfile.mkdtemp(prefix="scale_encode."))
    corpus = work / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    start = time.perf_counter()
    encoder = Encoder("minilm", max_length=args.max_length)
    results, reference = plain_runs(encoder, docs, args, time.perf_counter() - start)
    cpus = args.cpus or os.cpu_count() or 1
    counts = [int(w) for w in args.workers.split(",")]
    try:
        if args.cluster:
            results.update(on_cluster(corpus, work, docs, encoder, reference, counts[0], args))
            finish(args, results, [f"cluster-{counts[0]}", f"cluster-{counts[0]}-killed"],
                   f"documents/s of `vecdoctor encode --engine ray` on a {counts[0] + 1}-worker-node "
                   "cluster (ray start, one raylet per node) vs the plain Encoder, with and without "
                   "a worker node killed mid-run", docs)
            return
        results.update(local_ray_runs(corpus, work, docs, encoder, reference, counts, cpus,
                                      args.batch_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish(args, results, [f"ray-{w}" for w in counts],
           f"documents/s of Ray encoding ({args.workers} local actors fed by the driver, on "
           f"{cpus} CPUs) vs the plain Encoder, and equal vectors", docs)


def _one_thread_worker(part: int, texts: list[str], max_length: int, ready, go, out) -> None:  # type: ignore[no-untyped-def]
    import torch

    from vecdoctor.encode.encoder import Encoder

    torch.set_num_threads(1)
    encoder = Encoder("minilm", max_length=max_length)
    encoder.encode_documents(texts[:2])  # loads the model before the clock starts
    ready.wait()
    go.wait()
    started = time.perf_counter()
    vectors = encoder.encode_documents(texts)
    out.put((started, time.perf_counter(), part, vectors))


def side_by_side(texts: list[str], max_length: int, reference: np.ndarray) -> dict[str, float]:
    """Two spawned processes of one thread each encode every other text at the same time;
    the wall time runs from their common start to the later finish."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Barrier(3), ctx.Barrier(3), ctx.Queue()
    halves = [texts[0::2], texts[1::2]]
    procs = [ctx.Process(target=_one_thread_worker, args=(i, h, max_length, ready, go, out))
             for i, h in enumerate(halves)]
    for p in procs:
        p.start()
    ready.wait()
    go.wait()
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(d[1] for d in done) - min(d[0] for d in done)
    each = sorted(d[1] - d[0] for d in done)
    diff = max(float(np.abs(vectors - reference[part::2]).max()) for _, _, part, vectors in done)
    return {"encode_seconds": round(wall, 2), "docs_per_second": round(len(texts) / wall, 1),
            "per_process_seconds": [round(e, 2) for e in each],
            "per_process_docs_per_second": round(len(texts) / 2 / float(np.mean(each)), 1),
            "max_abs_diff_to_plain": diff}


def finish(args: argparse.Namespace, results: dict, runs: list[str], question: str,
           docs: list) -> None:
    plain = results["plain"]["seconds"]
    for name in runs:
        r = results[name]
        r["speed_vs_plain"] = round(plain / r["seconds"], 3)
        r["overhead_seconds_vs_plain"] = round(r["seconds"] - plain, 2)
    payload = {
        "question": question,
        "machine": machine(),
        "versions": versions("torch", "ray", "lancedb", "pylance", "numpy", "pyarrow"),
        "settings": {"docs": len(docs), "model": "minilm", "max_length": args.max_length,
                     # --cluster runs the CLI, which keeps encode_corpus's default batch
                     "ray_batch_size": 256 if args.cluster else args.batch_size},
        "results": results,
    }
    path = write_result("scale_encode", payload, args.variant)
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def on_cluster(corpus: Path, work: Path, docs: list, encoder: object, reference: np.ndarray,
               workers: int, args: argparse.Namespace) -> dict[str, dict]:
    """Two runs of `vecdoctor encode --engine ray --address` on a LocalCluster: one clean,
    one with a busy worker node's raylet killed ``args.kill_after`` seconds in."""
    import subprocess
    import threading

    from ray_cluster import LocalCluster

    from vecdoctor.scale.ray_encode import read_vectors

    out: dict[str, dict] = {}
    order = {d.id: i for i, d in enumerate(docs)}
    with LocalCluster(workers=workers + 1, cpus=1, head_cpus=0) as cluster:
        for name, kill in ((f"cluster-{workers}", False), (f"cluster-{workers}-killed", True)):
            target = work / name
            killed: dict[str, float] = {}

            def killer(started: float = time.perf_counter(), c: LocalCluster = cluster,
                       k: dict[str, float] = killed) -> None:
                while time.perf_counter() - started < args.kill_after:
                    time.sleep(0.5)
                while "at_s" not in k and time.perf_counter() - started < 3600:
                    busy = c.busy_worker_raylets()
                    if busy:
                        c.kill(sorted(busy)[0])
                        k["at_s"] = round(time.perf_counter() - started, 1)
                    time.sleep(0.1)

            start = time.perf_counter()
            thread = threading.Thread(target=killer, daemon=True) if kill else None
            if thread is not None:
                thread.start()
            done = subprocess.run(
                [str(Path(sys.executable).with_name("vecdoctor")), "encode", str(corpus), "-o",
                 str(target), "--engine", "ray", "--address", cluster.address, "--workers",
                 str(workers), "--max-length", str(args.max_length)],
                env=cluster.env, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
            out_text = done.stdout  # the command's JSON, after whatever Ray printed
            emitted = json.loads(out_text[out_text.rindex("\n{") + 1:] if "\n{" in out_text
                                 else out_text[out_text.index("{"):])
            ids, vecs, _ = read_vectors(target)
            diff = float(np.abs(vecs - reference[[order[i] for i in ids]]).max())
            out[name] = {"seconds": round(seconds, 2),
                         "docs_per_second": round(len(docs) / seconds, 1),
                         "job_seconds": round(emitted["seconds"], 2),
                         "ids_written": len(ids), "distinct_ids": len(set(ids)),
                         "max_abs_diff_to_plain": diff,
                         "alive_nodes_after": cluster.alive_nodes()}
            if kill:
                out[name]["worker_node_killed_at_s"] = killed.get("at_s")
    return out


if __name__ == "__main__":
    main()
