"""How good and how fast is vecdoctor search on SciFact, and what does quantization cost?

One run builds the SciFact index with one model, then measures on the 300 test queries:
nDCG@10 and recall@100 (pytrec_eval) for bm25, dense, hybrid (RRF and weighted), and
int8/binary dense search with and without float rescoring; per-query latency (p50/p95,
query encoding included) and QPS, with queries encoded in PyTorch and on converted fp32
graphs (``--query-backends``); and, as the baseline of the same run, the QPS of calling
bm25s directly with the same tokens.

    .venv/bin/python benchmarks/search_scifact.py [--data ../shared/data/scifact] [--threads 2]

Writes ``benchmarks/results/search_scifact/<cpu>-<variant>.json`` (machine, versions, command,
numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, percentiles, versions, write_result  # noqa: E402


def evaluate(
    runs: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(runs)
    return {
        "ndcg@10": round(float(np.mean([m["ndcg_cut_10"] for m in per_query.values()])), 4),
        "recall@100": round(float(np.mean([m["recall_100"] for m in per_query.values()])), 4),
    }


def to_run(qids: list[str], results: list[list[Any]]) -> dict[str, dict[str, float]]:
    run = {}
    for qid, hits in zip(qids, results, strict=True):
        # pytrec_eval sorts by score; keep our order on ties by nudging with the rank
        run[qid] = {h.id: float(h.score) - 1e-9 * r for r, h in enumerate(hits)}
    return run


def timings(fn: Any, items: list[Any]) -> dict[str, float]:
    times = []
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {**percentiles(times, (50, 95), scale=1000, suffix="_ms", digits=2),
            "qps": round(len(items) / total, 1)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for encoding")
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "bench-vectors"),
                        help="document vector cache folder (reruns skip corpus encoding)")
    parser.add_argument("--latency-queries", type=int, default=300,
                        help="how many test queries the per-query latency loops use")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="NumPy BLAS threads, as `vecdoctor search`/`serve` set them (0: library default)")
    parser.add_argument("--query-backends", default="onnx,openvino",
                        help="also time dense/hybrid with queries encoded on these fp32 backends ('' skips)")
    parser.add_argument("--variant", default="default",
                        help="result file: benchmarks/results/search_scifact/<cpu>-<variant>.json")
    return parser.parse_args()


# name, precision, mode, rescore, fusion, measure latency
VARIANTS = [
    ("bm25", "float32", "bm25", True, "rrf", True),
    ("dense", "float32", "dense", True, "rrf", True),
    ("hybrid_rrf", "float32", "hybrid", True, "rrf", True),
    ("hybrid_weighted", "float32", "hybrid", True, "weighted", False),
    ("dense_int8", "int8", "dense", False, "rrf", False),
    ("dense_int8_rescore", "int8", "dense", True, "rrf", True),
    ("dense_binary", "binary", "dense", False, "rrf", False),
    ("dense_binary_rescore", "binary", "dense", True, "rrf", True),
    ("hybrid_binary_rescore", "binary", "hybrid", True, "rrf", True),
]


def precision_rows(index: Any, ds: Any, query_vectors: np.ndarray, lat_queries: list[str]) -> dict[str, Any]:
    """Every row of VARIANTS: quality, and latency end to end and with the query vector given."""
    from vecdoctor.index.vectors import VectorStore
    from vecdoctor.search.searcher import Searcher

    qids = list(ds.queries)
    queries = [ds.queries[q] for q in qids]
    results: dict[str, Any] = {}
    float_store = index.vectors
    stores = {"float32": float_store}
    for precision in ("int8", "binary"):
        stores[precision] = VectorStore.build(np.asarray(float_store.vectors), precision)
    for name, precision, mode, rescore, fusion, timed in VARIANTS:
        index.vectors = stores[precision]
        searcher = Searcher(index, fusion=fusion, rescore=rescore, cache_size=0)
        vectors = None if mode == "bm25" else query_vectors
        hits = searcher.search_batch(queries, k=100, mode=mode, query_vectors=vectors)
        row: dict[str, Any] = {"precision": precision, "mode": mode, "rescore": rescore, "fusion": fusion}
        row.update(evaluate(to_run(qids, hits), ds.qrels))
        if timed:  # end to end, query encoding included
            row.update(timings(lambda q, s=searcher, m=mode: s.search(q, k=10, mode=m), lat_queries))
            if mode != "bm25":  # the same searches with the query vector given
                pairs = list(zip(lat_queries, query_vectors, strict=False))
                only = timings(
                    lambda p, s=searcher, m=mode: s.search(p[0], k=10, mode=m, query_vector=p[1]),
                    pairs)
                row.update({f"search_only_{key}": value for key, value in only.items()})
        results[name] = row
        print(name, row, flush=True)
    index.vectors = float_store
    return results


def query_backend_rows(index: Any, ds: Any, backends: list[str], lat_queries: list[str]) -> dict[str, Any]:
    """The same float32 index, queries encoded on a converted fp32 graph (same vectors)."""
    from vecdoctor.search.searcher import Searcher

    qids = list(ds.queries)
    queries = [ds.queries[q] for q in qids]
    results: dict[str, Any] = {}
    for backend in backends:
        searcher = Searcher(index, cache_size=0, query_backend=backend)
        searcher.warmup()
        for mode in ("dense", "hybrid"):
            hits = searcher.search_batch(queries, k=100, mode=mode)
            row = {"precision": "float32", "mode": mode, "query_backend": backend, "fusion": "rrf"}
            row.update(evaluate(to_run(qids, hits), ds.qrels))
            row.update(timings(lambda q, s=searcher, m=mode: s.search(q, k=10, mode=m), lat_queries))
            name = f"{'hybrid_rrf' if mode == 'hybrid' else mode}_{backend}_queries"
            results[name] = row
            print(name, row, flush=True)
    return results


def summary_and_targets(results: dict[str, Any], baseline: dict[str, float]) -> tuple[dict, dict]:
    float_ndcg = results["dense"]["ndcg@10"]
    summary: dict[str, Any] = {
        "bm25s_direct_qps": baseline["qps"],
        "bm25_qps_ratio_vs_bm25s": round(results["bm25"]["qps"] / baseline["qps"], 2),
        "int8_rescore_vs_float_ndcg": round(results["dense_int8_rescore"]["ndcg@10"] / float_ndcg, 4),
        "binary_rescore_vs_float_ndcg": round(results["dense_binary_rescore"]["ndcg@10"] / float_ndcg, 4),
        "hybrid_p50_ms": results["hybrid_rrf"]["p50_ms"],
    }
    fast = {n: r["p50_ms"] for n, r in results.items() if n.startswith("hybrid_rrf_") and "query_backend" in r}
    hybrid = results["hybrid_rrf"]["ndcg@10"]
    targets = {
        "bm25 ndcg@10 >= 0.68": results["bm25"]["ndcg@10"] >= 0.68,
        "bm25 qps >= 0.8x bm25s": summary["bm25_qps_ratio_vs_bm25s"] >= 0.8,
        "dense ndcg@10 >= 0.64": float_ndcg >= 0.64,
        "hybrid rrf ndcg@10 >= 0.71 and above both": hybrid >= 0.71
        and hybrid > max(results["bm25"]["ndcg@10"], float_ndcg),
        "int8+rescore >= 99% of float": summary["int8_rescore_vs_float_ndcg"] >= 0.99,
        "binary+rescore >= 97% of float": summary["binary_rescore_vs_float_ndcg"] >= 0.97,
        "hybrid p50 <= 15 ms (torch query encoding)": summary["hybrid_p50_ms"] <= 15,
    }
    if fast:
        best = min(fast, key=fast.__getitem__)
        summary["hybrid_p50_ms_best_query_backend"] = {"variant": best, "p50_ms": fast[best],
                                                      "ndcg@10": results[best]["ndcg@10"]}
        targets["hybrid p50 <= 15 ms (fastest fp32 query backend, same nDCG@10)"] = (
            fast[best] <= 15 and abs(results[best]["ndcg@10"] - hybrid) < 0.001)
    return summary, targets


def main() -> None:
    args = parse_args()
    import torch

    from vecdoctor.data import load_dataset
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index import Index

    torch.set_num_threads(args.threads)
    if args.blas_threads > 0:  # what `vecdoctor search` / `serve` do (see limit_blas_threads)
        from vecdoctor.search.searcher import limit_blas_threads

        limit_blas_threads(args.blas_threads)
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"{data}: SciFact not found; pass --data PATH to a BEIR scifact folder")
    ds = load_dataset(data, split="test")
    queries = list(ds.queries.values())
    t0 = time.perf_counter()
    index = Index.build(ds.corpus, Encoder(args.model, cache=args.cache), show_progress=True)
    build_s = time.perf_counter() - t0
    index.use_encoder(Encoder(args.model))  # no cache: latency includes query encoding
    t0 = time.perf_counter()
    query_vectors = index.embed_queries(queries)
    encode_queries_s = time.perf_counter() - t0
    lat_queries = queries[: args.latency_queries]
    # Baseline: bm25s called directly on the same tokens (tokenized beforehand, not timed).
    tokens = [index.bm25.tokenizer(q) for q in queries]
    retriever = index.bm25.retriever_
    baseline = timings(lambda t: retriever.retrieve([t], k=10, show_progress=False),
                       tokens[: args.latency_queries])
    results = precision_rows(index, ds, query_vectors, lat_queries)
    backends = args.query_backends.split(",") if args.query_backends else []
    results.update(query_backend_rows(index, ds, backends, lat_queries))
    summary, targets = summary_and_targets(results, baseline)
    path = write_result("search_scifact", {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions("bm25s", "torch", "numpy"),
        "data": {"corpus": len(ds.corpus), "queries": len(queries), "split": "test"},
        "model": index.model_id,
        "index_build_s": round(build_s, 1),
        "encode_300_queries_batch_s": round(encode_queries_s, 2),
        "latency_k": 10,
        "blas_threads": args.blas_threads or "library default",
        "latency_queries": len(lat_queries),
        "load_average_at_end": list(os.getloadavg()),
        "results": results,
        "baseline_bm25s_direct": baseline,
        "summary": summary,
        "targets_met": targets,
    }, args.variant)
    print(json.dumps({"summary": summary, "targets_met": targets}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
