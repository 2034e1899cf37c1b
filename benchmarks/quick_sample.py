"""Does a quick sample keep the whole corpus' difficulty? Random vs hard-neighbour samples on SciFact.

For several seeds, a --quick-sized sample (100 queries, 500 documents) of SciFact test is drawn
three ways: judged documents plus random others (the old design); judged documents, the sampled
queries' best BM25 matches in the whole corpus for half of the room left and random others for
the rest; the same with their best dense matches taken alongside the BM25 ones (the whole corpus
encoded once). On each sample bm25, dense and hybrid (the default model) are
evaluated through evaluate_variants; the whole corpus is evaluated once. Reported per design:
the sample's nDCG@10, the estimate for the whole corpus (``estimate_full_ndcg``), the whole
corpus' nDCG@10 restricted to the same queries, and whether the hybrid-vs-dense and
dense-vs-bm25 decisions agree with the whole corpus' decisions.

    .venv/bin/python benchmarks/quick_sample.py [--seeds 0,1,2,3,4] [--model minilm]

Writes benchmarks/results/quick_sample.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, versions, write_result  # noqa: E402

VARIANTS = ["bm25", "dense", "hybrid"]
PAIRS = [("hybrid", "dense"), ("dense", "bm25"), ("hybrid", "bm25")]


def per_query(report, name: str) -> dict[str, float]:  # noqa: ANN001
    row = next(r for r in report.results if r.name == name)
    return row.evaluation.per_query["ndcg@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--docs", type=int, default=500)
    args = ap.parse_args()

    from vecdoctor.data import load_dataset
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.metrics import HARD_SHARE, estimate_full_ndcg, sample_dataset
    from vecdoctor.evaluate.variants import evaluate_variants

    started = time.time()
    full = load_dataset(DATA / "scifact", "test")
    cache = VectorCache(max_size=4 * len(full.corpus))
    whole = evaluate_variants(full, args.model, VARIANTS, cache=cache)
    encoder = Encoder(args.model, cache=cache)  # the whole corpus is in the cache by now
    whole_q = {v: per_query(whole, v) for v in VARIANTS}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for design, share, enc in (("random", 0.0, None), ("bm25", HARD_SHARE, None),
                                   ("bm25+dense", HARD_SHARE, encoder)):
            t = time.perf_counter()
            ds = sample_dataset(full, args.queries, args.docs, seed, hard_share=share, encoder=enc)
            sample_seconds = time.perf_counter() - t
            report = evaluate_variants(ds, args.model, VARIANTS, cache=cache)
            qids = list(ds.qrels)
            row = {"seed": seed, "design": design, "documents": len(ds.corpus),
                   "hard_neighbours": ds.sample.neighbours if ds.sample else 0,
                   "sample_seconds": round(sample_seconds, 2), "variants": {}, "decisions": {}}
            for v in VARIANTS:
                r = next(x for x in report.results if x.name == v)
                row["variants"][v] = {
                    "sample": round(r.evaluation.metrics["ndcg@10"], 4),
                    "estimate": round(estimate_full_ndcg(r.run, ds.qrels, ds.sample), 4),
                    "whole_same_queries": round(float(np.mean([whole_q[v].get(q, 0.0) for q in qids])), 4),
                }
            for a, b in PAIRS:
                s = per_query(report, a)
                gap_sample = float(np.mean([s[q] for q in qids])) - float(np.mean([per_query(report, b)[q] for q in qids]))
                gap_whole = float(np.mean([whole_q[a][q] - whole_q[b][q] for q in whole_q[a]]))
                row["decisions"][f"{a} vs {b}"] = {"sample_gap": round(gap_sample, 4),
                                                    "whole_gap": round(gap_whole, 4),
                                                    "same_sign": bool(np.sign(gap_sample) == np.sign(gap_whole))}
            rows.append(row)
            print(seed, design, {v: row["variants"][v] for v in VARIANTS}, flush=True)
    summary = {}
    for design in ("random", "bm25", "bm25+dense"):
        mine = [r for r in rows if r["design"] == design]
        summary[design] = {
            v: {"mean_abs_error_sample": round(float(np.mean([abs(r["variants"][v]["sample"] - whole.results[VARIANTS.index(v)].evaluation.metrics["ndcg@10"]) for r in mine])), 4),
                "mean_abs_error_estimate": round(float(np.mean([abs(r["variants"][v]["estimate"] - whole.results[VARIANTS.index(v)].evaluation.metrics["ndcg@10"]) for r in mine])), 4),
                "max_abs_error_estimate": round(float(np.max([abs(r["variants"][v]["estimate"] - whole.results[VARIANTS.index(v)].evaluation.metrics["ndcg@10"]) for r in mine])), 4)}
            for v in VARIANTS}
        summary[design]["decisions_same_sign"] = f"{sum(d['same_sign'] for r in mine for d in r['decisions'].values())}/{sum(len(r['decisions']) for r in mine)}"
    path = write_result("quick_sample", {
        "question": "does a quick sample keep the whole corpus' difficulty (random vs hard-neighbour designs)?",
        "machine": machine(), "versions": versions("bm25s", "sentence-transformers"),
        "settings": {"model": args.model, "queries": args.queries, "documents": args.docs,
                     "hard_share": HARD_SHARE, "variants": VARIANTS},
        "whole_corpus": {v: round(r.evaluation.metrics["ndcg@10"], 4) for v, r in zip(VARIANTS, whole.results, strict=True)},
        "summary": summary, "rows": rows, "seconds": round(time.time() - started, 1)})
    print(summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
