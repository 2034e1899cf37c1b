"""Fusion tuned without extra labels: RRF's k and the weighted fusion's dense weight.

How much k and the weights matter depends on the data (one vector database defaults to k=2;
hybrid even loses to dense on some collections), so the checkup measures it. The BM25 and dense
runs (top 100 of each, the depth the searcher fuses) are fused again offline for every setting
of a small grid, which costs no search. The setting is chosen on tuning queries: the queries of
another labelled split over the same corpus when the data has one (BEIR's ``train``), otherwise
one half of the evaluation queries (seeded). It is kept only when, on the evaluation queries it
was not chosen on (all of them, or the other half), it beats the default (RRF, k = 60) through
the gate every decision passes (0.005 nDCG@10 with p < 0.05). Too few queries to decide: the
default stays and the report says why.
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
MIN_SPLIT_QUERIES = MIN_QUERIES // 2
"""A tuning split needs at least this many judged queries, else the halves are used."""

Runs = dict[str, dict[str, float]]


@dataclass
class FusionTuning:
    """The grid on both halves, the chosen setting and whether it passed the gate."""

    curve: list[dict[str, Any]]
    tuning_queries: int
    confirm_queries: int
    tuned_on: str = "half"
    """``half`` (one half of the evaluation queries) or the name of the tuning split."""
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


def tune_fusion(bm25_run: Runs, dense_run: Runs, qrels: dict[str, dict[str, int]], seed: int = 0,
                k: int = 100, tuning: tuple[Runs, Runs, dict[str, dict[str, int]]] | None = None,
                tuning_split: str = "train") -> FusionTuning:
    """Choose the fusion on tuning queries, confirm it on evaluation queries (see the module).

    ``tuning``: the BM25 run, dense run and qrels of another split's queries over the same
    corpus; the setting is then chosen on them and confirmed on every evaluation query. Without
    it (or with fewer than :data:`MIN_SPLIT_QUERIES` of them), halves of ``qrels`` are used.
    """
    qids = sorted(q for q in qrels if q in bm25_run and q in dense_run)
    note = ""
    if tuning is not None:
        t_bm25, t_dense, t_qrels = tuning
        t_qids = sorted(q for q in t_qrels if q in t_bm25 and q in t_dense and q not in qrels)
        if len(t_qids) >= MIN_SPLIT_QUERIES and len(qids) >= MIN_SPLIT_QUERIES:
            return _tune(qids, set(qids), bm25_run, dense_run, qrels, k,
                         (t_qids, t_bm25, t_dense, t_qrels), tuning_split)
        note = (f"the {tuning_split} split has {len(t_qids)} usable queries "
                f"({MIN_SPLIT_QUERIES} needed), so halves of the evaluation queries are used; ")
    order = np.random.default_rng(seed).permutation(len(qids))
    tune = {qids[i] for i in order[: len(qids) // 2]}
    if len(qids) < MIN_QUERIES:
        return FusionTuning([], len(tune), len(qids) - len(tune), reason=note + (
            f"not enough queries to tune fusion ({len(qids)} judged, {MIN_QUERIES} needed for "
            "two halves): RRF k=60 stays"))
    result = _tune(qids, set(qids) - tune, bm25_run, dense_run, qrels, k,
                   (sorted(tune), bm25_run, dense_run, qrels), "half")
    result.reason = note + result.reason
    return result


def _tune(qids: list[str], confirm: set[str], bm25_run: Runs, dense_run: Runs,
          qrels: dict[str, dict[str, int]], k: int,
          tuning: tuple[list[str], Runs, Runs, dict[str, dict[str, int]]],
          tuned_on: str) -> FusionTuning:
    """Every grid setting on the tuning queries and the confirming ones; the gate on the latter."""
    t_qids, t_bm25, t_dense, t_qrels = tuning
    split = tuned_on != "half"
    where = f"the {len(t_qids)} {tuned_on} queries" if split else f"{len(t_qids)} tuning queries"
    others = f"the {len(confirm)} evaluation queries" if split else f"the other {len(confirm)}"
    grid = [("rrf", float(v)) for v in RRF_KS] + [("weighted", w) for w in DENSE_WEIGHTS]
    per_query: dict[tuple[str, float], dict[str, float]] = {}
    curve: list[dict[str, Any]] = []
    for fusion, param in grid:
        values = _values(fusion, param, qids, bm25_run, dense_run, qrels, k)
        tuned = _values(fusion, param, t_qids, t_bm25, t_dense, t_qrels, k) if split else values
        per_query[(fusion, param)] = values
        curve.append({"fusion": fusion, "param": param,
                      "tune_ndcg": float(np.mean([tuned[q] for q in t_qids])),
                      "confirm_ndcg": float(np.mean([values[q] for q in confirm]))})
    best = max(curve, key=lambda c: (c["tune_ndcg"], (c["fusion"], c["param"]) == DEFAULT))
    chosen: tuple[str, float] = (str(best["fusion"]), float(best["param"]))
    default = per_query[DEFAULT]
    result = FusionTuning(curve, len(t_qids), len(confirm), tuned_on,
                          chosen={"fusion": chosen[0], "param": chosen[1]})
    result.default_confirm = float(np.mean([default[q] for q in confirm]))
    result.chosen_confirm = float(np.mean([per_query[chosen][q] for q in confirm]))
    if chosen == DEFAULT:
        result.reason = f"RRF k=60 is also the best setting on {where}; it stays"
        return result
    gain = result.chosen_confirm - result.default_confirm
    result.p_value = randomization_test({q: per_query[chosen][q] for q in confirm},
                                        {q: default[q] for q in confirm})
    result.kept = gain >= MIN_GAIN and result.p_value < MAX_P
    numbers = (f"{_label(*chosen)}, best on {where}, scores {result.chosen_confirm:.4f} against "
               f"RRF k=60's {result.default_confirm:.4f} on {others} "
               f"(Δ {gain:+.4f}, p={result.p_value:.3f})")
    if result.kept:
        result.settings = ({"fusion": "rrf", "rrf_k": chosen[1]} if chosen[0] == "rrf" else
                           {"fusion": "weighted", "fusion_weights": (1.0 - chosen[1], chosen[1])})
        result.reason = numbers + f"; it passes the gate ({MIN_GAIN} with p < {MAX_P})"
    else:
        result.reason = numbers + f"; not enough to pass the gate ({MIN_GAIN} with p < {MAX_P}), RRF k=60 stays"
    return result


def _values(fusion: str, param: float, qids: list[str], bm25_run: Runs, dense_run: Runs,
            qrels: dict[str, dict[str, int]], k: int) -> dict[str, float]:
    run = {q: _fuse(fusion, param, bm25_run[q], dense_run[q], k) for q in qids}
    return evaluate_run({q: qrels[q] for q in qids}, run, ["ndcg@10"]).per_query["ndcg@10"]


def _label(fusion: str, param: float) -> str:
    return f"RRF k={param:g}" if fusion == "rrf" else f"weighted fusion, dense weight {param:g}"
