"""Exact dense top-k for the retrieval-based checks: the index's own top-k functions
(:mod:`vecdoctor._topk`), which the Searcher's dense search uses too."""

from __future__ import annotations

import numpy as np

from vecdoctor._topk import chunked_top_k, top_k_rows


def topk_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties broken by lower index)."""
    return top_k_rows(np.asarray(scores), k)[0]


def exact_topk(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Top-k document indices per query by inner product; ``exclude[i]`` is a doc to skip."""
    queries = np.asarray(queries, dtype=np.float32)
    docs = np.asarray(docs, dtype=np.float32)
    k = min(k, len(docs) - (exclude is not None))

    def score(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
        scores = q @ docs[lo:hi].T
        if exclude is not None:
            inside = (exclude >= lo) & (exclude < hi)
            scores[np.flatnonzero(inside), exclude[inside] - lo] = -np.inf
        return scores

    return chunked_top_k(queries, len(docs), k, score)[0]


def overlap_at_k(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row of ``b`` (the reference top-k) found in the same row of ``a``."""
    if len(a) == 0:
        return float("nan")
    hits = [len(set(x.tolist()) & set(y.tolist())) / len(y) for x, y in zip(a, b, strict=True)]
    return float(np.mean(hits))
