"""Is the pipeline the quick checkup recommends on SciFact at least as good on the whole corpus?

Reads the quick checkups' recommended pipelines from ``results/checkup_scifact.json`` (every
installed model, and minilm alone) and measures each end to end on all of SciFact test (300
queries, 5,183 documents) through evaluate_variants, next to the default hybrid (RRF k=60) of the
same model and minilm's hybrid.

    .venv/bin/python benchmarks/quick_recommendation.py

Writes benchmarks/results/quick_recommendation.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, machine, versions, write_result  # noqa: E402


def main() -> None:
    from vecdoctor.data import load_dataset
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.evaluate.variants import VariantSpec, evaluate_variants

    saved = json.loads((RESULTS / "checkup_scifact.json").read_text())
    full = load_dataset(DATA / "scifact", "test")
    started = time.time()
    out = {}
    for name, part in (("quick, every installed model", saved["quick_checkup"]),
                       ("quick, minilm", saved["quick_checkup_minilm"])):
        p = part["pipeline"]
        spec = VariantSpec("the quick checkup's recommended pipeline", mode=p["mode"], pooling=p["pooling"],
                           window=p["window"], chunks=p["chunks"], transform=p["transform"],
                           precision=p["storage"], baseline="hybrid", fusion=p["fusion"], rrf_k=p["rrf_k"],
                           fusion_weights=tuple(p["fusion_weights"]) if p["fusion_weights"] else None)
        report = evaluate_variants(full, p["model"], ["hybrid"], extra={"recommended": spec},
                                   cache=VectorCache(max_size=8 * len(full.corpus)))
        rows = {r.name: {"ndcg@10": round(r.ndcg, 4), "delta": r.delta_ndcg, "p": r.p_value}
                for r in report.results}
        out[name] = {"pipeline": {k: p[k] for k in ("model", "mode", "fusion", "rrf_k", "fusion_weights",
                                                     "chunks", "window", "transform", "storage")},
                     "whole_corpus": rows}
        print(name, out[name], flush=True)
    path = write_result("quick_recommendation", {
        "question": "the quick checkup's recommended pipelines measured on the whole SciFact test corpus",
        "machine": machine(), "versions": versions("torch", "sentence-transformers", "bm25s"),
        "reference": "minilm hybrid (RRF k=60) on the whole corpus: 0.7162",
        "results": out, "seconds": round(time.time() - started, 1)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
