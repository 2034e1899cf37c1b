"""Does the checkup's evidence hold on SciFact, and does --quick agree with the full run?

One run on SciFact test (300 queries, 5,183 documents):
  1. every pipeline variant with `minilm` (bm25, dense, whitening, abtt, windows, hybrid, int8, binary),
     with quality gates bm25 >= 0.68, dense >= 0.64, hybrid >= 0.71 and above both;
  2. the model comparison over every installed registry model;
  3. a --quick checkup and a full checkup, and whether their recommendations match.

    .venv/bin/python benchmarks/checkup_scifact.py [--skip-full-checkup]

Writes benchmarks/results/checkup_scifact.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine, versions, write_result  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--skip-full-checkup", action="store_true")
    parser.add_argument("--models", default=None, help="comma-separated; default every installed model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from vecdoctor.checkup import checkup, installed_models
    from vecdoctor.compare import compare_models
    from vecdoctor.data import load_dataset
    from vecdoctor.variants import evaluate_variants

    ds = load_dataset(args.data, "test")
    models = args.models.split(",") if args.models else installed_models()
    out: dict = {"machine": machine(), "versions": versions("torch", "sentence-transformers", "bm25s")}

    t = time.perf_counter()
    variants = evaluate_variants(
        ds, "minilm", ["bm25", "dense", "dense+whiten", "dense+abtt", "dense+window", "hybrid", "int8", "binary"]
    )
    out["variants"] = variants.table()
    out["variants_seconds"] = round(time.perf_counter() - t, 1)
    nd = {r.name: r.ndcg for r in variants.results}
    out["gates"] = {
        "bm25 >= 0.68": nd["bm25"] >= 0.68,
        "dense >= 0.64": nd["dense"] >= 0.64,
        "hybrid >= 0.71": nd["hybrid"] >= 0.71,
        "hybrid above bm25 and dense": nd["hybrid"] > max(nd["bm25"], nd["dense"]),
        "int8 >= 99% of dense": nd["int8"] >= 0.99 * nd["dense"],
        "binary >= 97% of dense": nd["binary"] >= 0.97 * nd["dense"],
    }
    print({k: round(v, 4) for k, v in nd.items()}, out["gates"], flush=True)

    t = time.perf_counter()
    comparison = compare_models(ds, models)
    out["models"] = comparison.to_dict()
    out["models_seconds"] = round(time.perf_counter() - t, 1)
    print(comparison.to_dict(), flush=True)

    t = time.perf_counter()
    quick = checkup(ds, models, quick=True)
    out["quick_checkup"] = {"seconds": round(time.perf_counter() - t, 1), "pipeline": quick.pipeline,
                            "decisions": [d.to_dict() for d in quick.decisions]}
    print("quick", out["quick_checkup"], flush=True)
    if not args.skip_full_checkup:
        t = time.perf_counter()
        full = checkup(ds, models)
        out["full_checkup"] = {"seconds": round(time.perf_counter() - t, 1), "pipeline": full.pipeline,
                               "decisions": [d.to_dict() for d in full.decisions]}
        keys = ("model", "mode", "pooling", "window", "transform", "precision", "rerank")
        out["quick_matches_full"] = {k: quick.pipeline[k] == full.pipeline[k] for k in keys}
        print("full", out["full_checkup"], out["quick_matches_full"], flush=True)
    path = write_result("checkup_scifact", out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
