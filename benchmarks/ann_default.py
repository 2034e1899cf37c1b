"""Where exact dense search stops meeting the latency budget, and what `--ann auto` builds.

Two parts, one run, one query at a time with NumPy's BLAS on one thread (as `vecdoctor search`
and `serve` run it):

  1. exact search time per query against N float32 vectors of 384 dimensions, N from 10k to 1M.
     The cost of a brute-force inner product does not depend on the values, so these vectors
     are random unit vectors (encoding a million real texts takes days on two cores); the
     N at which the median passes the 10 ms budget is where `--ann auto` switches to HNSW.
  2. real vectors: every sentence of the SciFact corpus (about 47k, encoded with minilm),
     queried with 200 SciFact test queries: exact vs HNSW time, and the recall@10 of HNSW
     against exact search for each ef_search step; then `choose_ann` itself with the default
     budget and with a zero budget (which forces HNSW and its recall check).

    .venv/bin/python benchmarks/ann_default.py [--sizes 10000,30000,100000,300000,1000000]

Writes benchmarks/results/ann_default.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, percentiles, versions, write_result  # noqa: E402


def timed(search, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, float, float]:  # type: ignore[no-untyped-def]
    from vecdoctor.index.ann import timed_search

    rows, times = timed_search(search, queries, k)
    spread = percentiles(times, (50, 99), digits=9)
    return rows, spread["p50"], spread["p99"]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_curve(sizes: list[int], d: int = 384) -> list[dict]:
    from vecdoctor.index.dense import exact_search

    rng = np.random.default_rng(0)
    queries = unit(rng, 50, d)
    out = []
    for n in sizes:
        x = unit(rng, n, d)
        _, p50, p99 = timed(lambda q, k, x=x: exact_search(q, x, k), queries)
        out.append({"n": n, "exact_ms_p50": round(p50, 3), "exact_ms_p99": round(p99, 3),
                    "vectors_mb": round(x.nbytes / 2**20, 1)})
        print(out[-1], flush=True)
        del x
    return out


def real_part() -> dict:
    from vecdoctor.data import load_dataset, split_sentences
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.ann import (
        AnnConfig,
        ann_search,
        build_ann,
        choose_ann,
        configure,
        recall_at_k,
    )
    from vecdoctor.index.dense import exact_search

    ds = load_dataset(DATA / "scifact")
    sentences = [s for d in ds.corpus for s in split_sentences(d.text) if len(s.split()) >= 4]
    enc = Encoder("minilm")
    start = time.perf_counter()
    x = enc.encode_documents(sentences)
    encode_seconds = time.perf_counter() - start
    qids = sorted(ds.qrels)[:200]
    queries = enc.encode_queries([ds.queries[q] for q in qids])
    truth, exact_p50, exact_p99 = timed(lambda q, k: exact_search(q, x, k), queries)
    start = time.perf_counter()
    graph = build_ann(x, AnnConfig("hnsw"))
    build_seconds = time.perf_counter() - start
    steps = []
    for ef in (16, 32, 64, 128, 256, 512):
        configure(graph, AnnConfig("hnsw", ef_search=ef))
        found, p50, p99 = timed(lambda q, k: ann_search(graph, q, k), queries)
        recall = recall_at_k(found, truth, 10)
        steps.append({"ef_search": ef, "ms_p50": round(p50, 3), "ms_p99": round(p99, 3),
                      "recall_at_10": round(recall, 4)})
        print(steps[-1], flush=True)
    auto = choose_ann(x, queries[:50])[2].to_dict()
    forced = choose_ann(x, queries[:50], budget_ms=0.0)[2].to_dict()
    print(auto["reason"], "|", forced["reason"], flush=True)
    return {"vectors": len(x), "texts": "SciFact corpus sentences of >= 4 words",
            "encode_seconds": round(encode_seconds, 1), "queries": len(queries),
            "exact_ms_p50": round(exact_p50, 3), "exact_ms_p99": round(exact_p99, 3),
            "hnsw_build_seconds": round(build_seconds, 1), "hnsw": steps,
            "auto_default_budget": auto, "auto_zero_budget": forced}


def main() -> None:
    from vecdoctor.index.ann import LATENCY_BUDGET_MS
    from vecdoctor.search.searcher import limit_blas_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    args = parser.parse_args()
    limit_blas_threads(1)
    curve = exact_curve([int(s) for s in args.sizes.split(",")])
    over = [row["n"] for row in curve if row["exact_ms_p50"] > LATENCY_BUDGET_MS]
    real = real_part()
    path = write_result("ann_default", {
        "machine": machine(), "versions": versions("numpy", "faiss-cpu"),
        "budget_ms": LATENCY_BUDGET_MS, "exact_random_vectors": curve,
        "first_n_over_budget": over[0] if over else None, "scifact_sentences": real})
    print("wrote", path)


if __name__ == "__main__":
    main()
