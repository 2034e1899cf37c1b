"""Rank fusion: merge ranked runs, each a sequence of ``(doc, score)`` pairs best first.

A document absent from a run gets nothing from that run: it is never given a default rank or
a default score that could beat a document that is present.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from vecdoctor.config import RerankFusion
from vecdoctor.errors import InputError

Run = Sequence[tuple[Hashable, float]]


# -- first-stage fusion ----------------------------------------------------------------------
def check_rrf_k(k: Any) -> Any:
    """RRF's k: a finite number >= 0 (NaN would make every score NaN)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k < float("inf"):
        raise InputError(f"RRF k must be a finite number >= 0, got {k!r}")
    return k


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise InputError(f"got {len(weights)} fusion weights for {n} runs; pass one weight per run")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise InputError(f"fusion weights must be >= 0 and not all 0, got {weights}")
    return weights


def _ordered(
    scores: dict[Hashable, float], first_seen: dict[Hashable, int]
) -> list[tuple[Hashable, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], first_seen[item[0]]))


def rrf(
    runs: Sequence[Run], k: float = 60, weights: Sequence[float] | None = None
) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion (Cormack, Clarke & Buettcher, 2009): sum of w / (k + rank).

    Ranks start at 1. Ties are broken by the order in which documents first appear.
    """
    check_rrf_k(k)
    w = check_weights(weights, len(runs))
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, int] = {}
    for weight, run in zip(w, runs, strict=True):
        for rank, (doc, _score) in enumerate(run, start=1):
            first_seen.setdefault(doc, len(first_seen))
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return _ordered(scores, first_seen)


def min_max(run: Run) -> list[tuple[Hashable, float]]:
    """Scores rescaled to [0, 1] within the run; a run of equal scores maps to 1."""
    if not run:
        return []
    values = np.asarray([s for _, s in run], dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    return [(doc, (s - lo) / span if span > 0 else 1.0) for doc, s in run]


def weighted(
    runs: Sequence[Run], weights: Sequence[float] | None = None
) -> list[tuple[Hashable, float]]:
    """Weighted sum of min-max normalised scores; a run that lacks a document adds 0 for it."""
    w = check_weights(weights, len(runs))
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, int] = {}
    for weight, run in zip(w, runs, strict=True):
        for doc, score in min_max(run):
            first_seen.setdefault(doc, len(first_seen))
            scores[doc] = scores.get(doc, 0.0) + weight * score
    return _ordered(scores, first_seen)


# -- reranker fusion -------------------------------------------------------------------------
def fuse_with_first_stage(
    first: Sequence[tuple[Hashable, float]],
    reranked: Sequence[tuple[Hashable, float]],
    fusion: RerankFusion | str = RerankFusion.RRF,
    k: float = 60,
    weights: Sequence[float] | None = None,
) -> list[tuple[Hashable, float]]:
    """Fuse the first stage's top-N (best first) with the reranker's order of the same documents.

    ``weights`` are (first stage, reranker), default equal. Ties keep the first stage's order; a
    document missing from one list gets nothing from it. ``none`` returns ``reranked``.
    """
    fusion = RerankFusion.parse(fusion)
    if fusion is RerankFusion.NONE:
        return list(reranked)
    runs = [first, reranked]
    if fusion is RerankFusion.RRF:
        return rrf(runs, k=k, weights=weights)
    return weighted(runs, weights)
