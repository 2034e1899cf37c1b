"""Fusion tuned without extra labels: RRF's k and the weighted fusion's dense weight.

How much k and the weights matter depends on the data (one vector database defaults to k=2;
hybrid even loses to dense on some collections), so the checkup measures it. The BM25 and dense
runs it has already measured (top 100 of each, the depth the searcher fuses) are fused again
offline for every setting of a small grid, which costs no search. The queries are split in two
halves (seeded): the setting with the best nDCG@10 on the tuning half is kept only when, on the
other half, it beats the default (RRF, k = 60) through the gate every decision passes (0.005
nDCG@10 with p < 0.05). Too few queries to split: the default stays and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecdoctor.evaluate.metrics import MAX_P, MIN_GAIN, evaluate_run, randomization_test
from vecdoctor.search.fusion import rrf, weighted

RRF_KS = (1, 2, 5, 10, 20, 40, 60, 100, 200)
DENSE_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The dense run's weight in the weighted fusion; BM25 gets the rest."""
DEFAULT = ("rrf", 60.0)
MIN_QUERIES = 40
"""Fewer judged queries than this (20 a half) decide nothing."""


@dataclass
class FusionTuning:
    """The grid on both halves, the chosen setting and whether it passed the gate."""

    curve: list[dict[str, Any]]
    tuning_queries: int
    confirm_queries: int
    chosen: dict[str, Any] | None = None
    default_confirm: float | None = None
    chosen_confirm: float | None = None
    p_value: float | None = None
    kept: bool = False
    reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _fuse(fusion: str, param: float, bm25: dict[str, float], dense: dict[str, float],
          k: int) -> dict[str, float]:
    runs = [sorted(bm25.items(), key=lambda x: -x[1]), sorted(dense.items(), key=lambda x: -x[1])]
    fused = (rrf(runs, k=param) if fusion == "rrf"
             else weighted(runs, [1.0 - param, param]))
    return {str(d): s - 1e-9 * r for r, (d, s) in enumerate(fused[:k])}


def tune_fusion(bm25_run: dict[str, dict[str, float]], dense_run: dict[str, dict[str, float]],
                qrels: dict[str, dict[str, int]], seed: int = 0, k: int = 100) -> FusionTuning:
    """Tune on one half of the judged queries, confirm on the other (see the module)."""
    qids = sorted(q for q in qrels if q in bm25_run and q in dense_run)
    order = np.random.default_rng(seed).permutation(len(qids))
    tune = {qids[i] for i in order[: len(qids) // 2]}
    confirm = set(qids) - tune
    if len(qids) < MIN_QUERIES:
        return FusionTuning([], len(tune), len(confirm), reason=(
            f"not enough queries to tune fusion ({len(qids)} judged, {MIN_QUERIES} needed for "
            "two halves): RRF k=60 stays"))
    grid = [("rrf", float(v)) for v in RRF_KS] + [("weighted", w) for w in DENSE_WEIGHTS]
    per_query: dict[tuple[str, float], dict[str, float]] = {}
    curve: list[dict[str, Any]] = []
    for fusion, param in grid:
        run = {q: _fuse(fusion, param, bm25_run[q], dense_run[q], k) for q in qids}
        values = evaluate_run({q: qrels[q] for q in qids}, run, ["ndcg@10"]).per_query["ndcg@10"]
        per_query[(fusion, param)] = values
        curve.append({"fusion": fusion, "param": param,
                      "tune_ndcg": float(np.mean([values[q] for q in tune])),
                      "confirm_ndcg": float(np.mean([values[q] for q in confirm]))})
    best = max(curve, key=lambda c: (c["tune_ndcg"], (c["fusion"], c["param"]) == DEFAULT))
    chosen: tuple[str, float] = (str(best["fusion"]), float(best["param"]))
    default = per_query[DEFAULT]
    result = FusionTuning(curve, len(tune), len(confirm), chosen={"fusion": chosen[0],
                                                                  "param": chosen[1]})
    result.default_confirm = float(np.mean([default[q] for q in confirm]))
    result.chosen_confirm = float(np.mean([per_query[chosen][q] for q in confirm]))
    label = _label(*chosen)
    if chosen == DEFAULT:
        result.reason = "RRF k=60 is also the best setting on the tuning half; it stays"
        return result
    gain = result.chosen_confirm - result.default_confirm
    result.p_value = randomization_test({q: per_query[chosen][q] for q in confirm},
                                        {q: default[q] for q in confirm})
    result.kept = gain >= MIN_GAIN and result.p_value < MAX_P
    numbers = (f"{label}, best on {len(tune)} tuning queries, scores {result.chosen_confirm:.4f} "
               f"against RRF k=60's {result.default_confirm:.4f} on the other {len(confirm)} "
               f"(Δ {gain:+.4f}, p={result.p_value:.3f})")
    if result.kept:
        result.settings = ({"fusion": "rrf", "rrf_k": chosen[1]} if chosen[0] == "rrf" else
                           {"fusion": "weighted", "fusion_weights": (1.0 - chosen[1], chosen[1])})
        result.reason = numbers + f"; it passes the gate ({MIN_GAIN} with p < {MAX_P})"
    else:
        result.reason = numbers + f"; not enough to pass the gate ({MIN_GAIN} with p < {MAX_P}), RRF k=60 stays"
    return result


def _label(fusion: str, param: float) -> str:
    return f"RRF k={param:g}" if fusion == "rrf" else f"weighted fusion, dense weight {param:g}"
