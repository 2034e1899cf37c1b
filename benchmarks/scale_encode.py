"""What does encoding on Ray Data cost and gain against the plain Encoder on one machine?

In one run, on the same SciFact documents (title + abstract):

- ``plain``: one process, ``Encoder.encode_documents`` (model load timed separately), with
  torch's default threads and again with one thread (``plain-1thread``, what an actor gets);
- ``ray-1`` / ``ray-2``: ``vecdoctor.scale.encode_corpus`` with 1 and 2 encoder actors on a
  local Ray cluster, end to end (read JSONL, start actors and load the model in each, encode,
  write Parquet parts), each into a fresh output;
- ``ray-noop``: the same job re-run on a complete output (every id skipped): Ray's fixed cost
  of planning the job and starting the actors, with no encoding;
- ``ray-init``: starting the local cluster.

Reported: documents/s, the ratio to ``plain`` (load + encode), and Ray's overhead in seconds.
On a small machine the actors compete for the same cores as each other, so the 2-worker
number says more about overhead than about scaling; on a cluster each actor has its own node.

    python benchmarks/scale_encode.py                       # 600 docs, max length 128
    python benchmarks/scale_encode.py --docs 2000 --max-length 256 --cpus 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "scifact"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("vecdoctor", "torch", "ray", "lancedb", "pylance", "numpy", "pyarrow"):
        try:
            out[dist] = version(dist)
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=100, help="documents per Ray batch")
    parser.add_argument("--cpus", type=int, default=None,
                        help="logical CPUs for local Ray (default: the machine's)")
    parser.add_argument("--workers", default="1,2", help="encoder actor counts to run, e.g. 1,2,4")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "scale_encode.json")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (DATA / "corpus.jsonl.gz").exists():
        sys.exit(f"SciFact not found at {DATA}")

    import ray
    import torch

    from vecdoctor.data import load_corpus
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.scale.ray_encode import encode_corpus, read_vectors

    docs = load_corpus(DATA)[: args.docs]
    work = Path(tempfile.mkdtemp(prefix="scale_encode."))
    corpus = work / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    results: dict[str, dict[str, float]] = {}

    start = time.perf_counter()
    encoder = Encoder("minilm", max_length=args.max_length)
    load = time.perf_counter() - start
    start = time.perf_counter()
    reference = encoder.encode_documents([d.content for d in docs])
    encode = time.perf_counter() - start
    results["plain"] = {"seconds": round(load + encode, 2), "load_seconds": round(load, 2),
                        "encode_seconds": round(encode, 2),
                        "docs_per_second": round(len(docs) / encode, 1),
                        "torch_threads": torch.get_num_threads()}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each Ray actor gets (Ray sets OMP_NUM_THREADS to its CPUs)
    start = time.perf_counter()
    encoder.encode_documents([d.content for d in docs])
    one = time.perf_counter() - start
    torch.set_num_threads(threads)
    results["plain-1thread"] = {"encode_seconds": round(one, 2),
                                "docs_per_second": round(len(docs) / one, 1)}

    cpus = args.cpus or os.cpu_count() or 1
    counts = [int(w) for w in args.workers.split(",")]
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    results["ray-init"] = {"seconds": round(time.perf_counter() - start, 2), "cpus": cpus}
    try:
        for workers in counts:
            out = work / f"ray-{workers}"
            res = encode_corpus(corpus, out, encoder, workers=workers, batch_size=args.batch_size)
            ids, vecs, _ = read_vectors(out)
            order = {d.id: i for i, d in enumerate(docs)}
            diff = float(np.abs(vecs - reference[[order[i] for i in ids]]).max())
            results[f"ray-{workers}"] = {"seconds": round(res.seconds, 2),
                                         "docs_per_second": round(res.encoded / res.seconds, 1),
                                         "max_abs_diff_to_plain": diff}
        res = encode_corpus(corpus, work / "ray-1", encoder, workers=1, batch_size=args.batch_size)
        results["ray-noop"] = {"seconds": round(res.seconds, 2), "skipped": res.skipped}
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    plain = results["plain"]["seconds"]
    for name in (f"ray-{w}" for w in counts):
        r = results[name]
        r["speed_vs_plain"] = round(plain / r["seconds"], 3)
        r["overhead_seconds_vs_plain"] = round(r["seconds"] - plain, 2)
    payload = {
        "question": f"documents/s of Ray Data encoding ({args.workers} local actors on {cpus} "
                    "CPUs) vs the plain Encoder, and equal vectors",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "versions": _versions(),
        "settings": {"docs": len(docs), "model": "minilm", "max_length": args.max_length,
                     "ray_batch_size": args.batch_size},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
