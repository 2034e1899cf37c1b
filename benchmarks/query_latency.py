"""How long does one whole hybrid query take, per backend and per student?

For each pipeline, one run builds a SciFact index (exact dense search, BM25, float32 vectors)
with that pipeline's encoder, then sends the 300 SciFact test queries one at a time through
the Searcher in hybrid mode (query encoding, BM25 top 100, dense top 100, RRF fusion; the query
cache off), and reports per-query p50/p95/p99 of the whole query and of its encoding alone,
with the nDCG@10 of those same hybrid results (pytrec_eval). BM25 alone is the baseline of the
same run: no encoder, the same Searcher.

    .venv/bin/python benchmarks/query_latency.py [--static DIR] [--layers DIR] [--threads 2]

``--static DIR`` / ``--layers DIR``: students made by ``vecdoctor distill minilm
../shared/data/scifact --student static|layers:3``; pipelines whose student is not given are
left out (and the result says so).

Writes benchmarks/results/query_latency.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, ndcg_of_run, percentiles, versions, write_result  # noqa: E402


def pipelines(args: argparse.Namespace) -> dict[str, dict]:
    out: dict[str, dict] = {
        "minilm torch fp32": {"model": "minilm", "backend": "torch"},
        "minilm onnx int8": {"model": "minilm", "backend": "onnx", "precision": "int8"},
        "minilm openvino int8": {"model": "minilm", "backend": "openvino", "precision": "int8"},
    }
    if args.layers:
        out["layers:3 student torch fp32"] = {"model": str(args.layers), "backend": "torch"}
        out["layers:3 student openvino int8"] = {"model": str(args.layers), "backend": "openvino",
                                                 "precision": "int8"}
    if args.static:
        out["static student"] = {"model": str(args.static)}
    return out


def measure(index, queries: dict[str, str], qrels: dict, mode: str) -> dict:  # noqa: ANN001
    from vecdoctor.search.searcher import Searcher

    searcher = Searcher(index, cache_size=0)
    items = list(queries.items())
    for _, text in items[:10]:  # warm-up
        searcher.search(text, k=10, mode=mode)
    whole, encode, run = [], [], {}
    for qid, text in items:
        start = time.perf_counter()
        hits = searcher.search(text, k=10, mode=mode)
        whole.append(time.perf_counter() - start)
        run[qid] = {h.id: float(h.score) - 1e-9 * r for r, h in enumerate(hits)}
        if mode != "bm25":
            start = time.perf_counter()
            index.embed_queries([text])
            encode.append(time.perf_counter() - start)
    out = {"whole_query_ms": percentiles(whole, scale=1000), "ndcg@10": ndcg_of_run(run, qrels)}
    if encode:
        out["encode_ms"] = percentiles(encode, scale=1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--static", type=Path, default=None)
    parser.add_argument("--layers", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from vecdoctor.data import load_dataset
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index

    torch.set_num_threads(args.threads)
    ds = load_dataset(DATA / "scifact")
    texts = [d.content for d in ds.corpus]
    calibration = texts[::17][:300]
    results: dict[str, dict] = {}
    with threadpool_limits(args.threads):
        for name, spec in pipelines(args).items():
            options = {k: v for k, v in spec.items() if k != "model"}
            if options.get("precision") == "int8":
                options["calibration_texts"] = calibration
            start = time.perf_counter()
            index = Index.build(ds.corpus, Encoder(spec["model"], **options), baseline=False, ann=None)
            built = round(time.perf_counter() - start, 1)
            results[name] = {**measure(index, ds.queries, ds.qrels, "hybrid"), "build_seconds": built}
            print(name, results[name], flush=True)
            if "bm25 alone (baseline)" not in results:
                results["bm25 alone (baseline)"] = measure(index, ds.queries, ds.qrels, "bm25")
    left_out = [k for k, v in (("layers:3 student", args.layers), ("static student", args.static)) if not v]
    path = write_result("query_latency", {
        "machine": machine(),
        "versions": versions("torch", "onnxruntime", "openvino"),
        "threads": args.threads,
        "queries": len(ds.queries),
        "search": "hybrid: BM25 top 100 + exact dense top 100, RRF k=60, top 10; query cache off",
        "left_out": left_out,
        "pipelines": results,
    })
    print("wrote", path)


if __name__ == "__main__":
    main()
