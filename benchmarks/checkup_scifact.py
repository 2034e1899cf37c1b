"""Does the checkup's evidence hold on SciFact, and does --quick agree with the full run?

One run on SciFact test (300 queries, 5,183 documents):
  1. a full checkup: the model comparison over the given (default: every installed) models,
     the diagnosis and every default pipeline variant of the chosen model;
  2. the quality gates on `minilm`'s variants: bm25 >= 0.68, dense >= 0.64, hybrid >= 0.71 and
     above both, int8/binary with rescoring, and whether the whitening verdict matches its effect;
  3. a --quick checkup, its wall time, and whether its recommendations match the full run's.

    .venv/bin/python benchmarks/checkup_scifact.py [--models minilm,minilm-l3-onnx] [--skip-quick]

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
    parser.add_argument("--skip-quick", action="store_true")
    parser.add_argument("--models", default=None, help="comma-separated; default every installed model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from vecdoctor.checkup import checkup, installed_models
    from vecdoctor.data import load_dataset
    from vecdoctor.variants import DEFAULT_VARIANTS, evaluate_variants

    ds = load_dataset(args.data, "test")
    models = args.models.split(",") if args.models else installed_models()
    out: dict = {"machine": machine(), "versions": versions("torch", "sentence-transformers", "bm25s")}

    keys = ("model", "mode", "pooling", "window", "transform", "precision", "rerank")
    t = time.perf_counter()
    full = checkup(ds, models)
    out["full_checkup"] = {"seconds": round(time.perf_counter() - t, 1), "pipeline": full.pipeline,
                           "decisions": [d.to_dict() for d in full.decisions],
                           "diagnosis": full.diagnosis.summary() if full.diagnosis else None}
    out["models"] = full.comparison.to_dict()
    print("full", out["full_checkup"], flush=True)
    print(out["models"], flush=True)
    variants = full.variants
    if variants.model != "minilm":  # the gates are stated for minilm
        variants = evaluate_variants(ds, "minilm", list(DEFAULT_VARIANTS))
    out["variants_model"] = variants.model
    out["variants"] = variants.table()
    nd = {r.name: r.ndcg for r in variants.results}
    out["gates"] = {
        "bm25 >= 0.68": nd["bm25"] >= 0.68,
        "dense >= 0.64": nd["dense"] >= 0.64,
        "hybrid >= 0.71": nd["hybrid"] >= 0.71,
        "hybrid above bm25 and dense": nd["hybrid"] > max(nd["bm25"], nd["dense"]),
        "int8 >= 99% of dense": nd["int8"] >= 0.99 * nd["dense"],
        "binary >= 97% of dense": nd["binary"] >= 0.97 * nd["dense"],
    }
    whiten = variants.get("dense+whiten")
    verdict = next((d for d in full.decisions if d.topic == "transform" and d.choice == "whitening"), None)
    if whiten is not None and verdict is not None:
        out["gates"]["whitening verdict matches its measured effect"] = verdict.recommended == (
            whiten.delta_ndcg >= 0.005 and whiten.p_value < 0.05 and full.pipeline["mode"] != "bm25")
    print({k: round(v, 4) for k, v in nd.items()}, out["gates"], flush=True)
    if not args.skip_quick:
        t = time.perf_counter()
        quick = checkup(ds, models, quick=True)
        out["quick_checkup"] = {"seconds": round(time.perf_counter() - t, 1), "pipeline": quick.pipeline,
                                "decisions": [d.to_dict() for d in quick.decisions]}
        out["quick_matches_full"] = {k: quick.pipeline[k] == full.pipeline[k] for k in keys}
        print("quick", out["quick_checkup"], out["quick_matches_full"], flush=True)
    path = write_result("checkup_scifact", out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
