"""What reranking depth is worth its milliseconds.

Reranking is where production latency goes, so when a reranker is given the checkup measures
nDCG@10 and query time at depths 10, 20, 30, 50 and 100 of the hybrid candidates. The reranker
scores each query's top 100 once; the quality at a smaller depth reorders only its first d
candidates by those scores (a pair's score does not depend on the others), fused with the first
stage as the searcher fuses them. Time is measured for real at every depth on a sample of the
queries. Recommended: the cheapest depth within 0.005 nDCG@10 of the best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecdoctor.evaluate.metrics import MIN_GAIN, evaluate_run
from vecdoctor.search.fusion import fuse_with_first_stage

DEPTHS = (10, 20, 30, 50, 100)
TIMED_QUERIES = 20


@dataclass
class RerankBudget:
    curve: list[dict[str, Any]]
    depth: int | None = None
    reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "depth": self.depth, "reason": self.reason}


def rerank_budget(reranker: Any, hybrid_run: dict[str, dict[str, float]], queries: dict[str, str],
                  qrels: dict[str, dict[str, int]], docs: dict[str, Any],
                  fusion: str = "rrf", rrf_k: float = 60, seed: int = 0) -> RerankBudget:
    """The depth curve over ``hybrid_run`` (each query's fused candidates) and the choice."""
    qids = sorted(q for q in qrels if q in hybrid_run and q in queries)
    heads = {q: sorted(hybrid_run[q].items(), key=lambda x: -x[1])[: max(DEPTHS)] for q in qids}
    scores = {q: np.asarray(reranker.score(queries[q], [docs[d] for d, _ in heads[q]]),
                            dtype=np.float64) for q in qids}
    timed = sorted(np.random.default_rng(seed).permutation(qids)[:TIMED_QUERIES].tolist())
    curve: list[dict[str, Any]] = []
    for depth in DEPTHS:
        run = {}
        for q in qids:
            head = heads[q][:depth]
            order = np.lexsort((np.arange(len(head)), -scores[q][: len(head)]))
            reranked = [(head[j][0], float(scores[q][j])) for j in order]
            fused = fuse_with_first_stage(head, reranked, fusion, rrf_k)
            run[q] = {str(d): s - 1e-9 * r for r, (d, s) in enumerate(fused)}
        ndcg = evaluate_run({q: qrels[q] for q in qids}, run, ["ndcg@10"]).metrics["ndcg@10"]
        spent = []
        for q in timed:
            start = time.perf_counter()
            reranker.score(queries[q], [docs[d] for d, _ in heads[q][:depth]])
            spent.append((time.perf_counter() - start) * 1000)
        curve.append({"depth": depth, "ndcg@10": ndcg,
                      "ms_per_query": float(np.median(spent)) if spent else None})
    best = max(c["ndcg@10"] for c in curve)
    pick = min((c for c in curve if c["ndcg@10"] >= best - MIN_GAIN), key=lambda c: c["depth"])
    listing = ", ".join(f"{c['depth']}: {c['ndcg@10']:.4f} ({c['ms_per_query']:.0f} ms)"
                        for c in curve)
    reason = (f"depth {pick['depth']} is the cheapest within {MIN_GAIN} nDCG@10 of the best "
              f"({best:.4f}); depth: nDCG@10 (median reranking ms per query) {listing}")
    return RerankBudget(curve, int(pick["depth"]), reason, {"rerank_depth": int(pick["depth"])})
