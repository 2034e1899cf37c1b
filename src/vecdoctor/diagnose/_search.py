"""Exact dense top-k by inner product, in numpy, used by the retrieval-based checks."""

from __future__ import annotations

import numpy as np


def topk_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties broken by lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(len(scores))[:, None]
    order = np.lexsort((part, -scores[rows, part]), axis=1)
    return np.take_along_axis(part, order, axis=1)


def exact_topk(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Top-k document indices per query by inner product; ``exclude[i]`` is a doc to skip."""
    out = np.empty((len(queries), min(k, len(docs) - (exclude is not None))), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ docs.T
        if exclude is not None:
            rows = np.arange(len(scores))
            scores[rows, exclude[start : start + chunk]] = -np.inf
        out[start : start + chunk] = topk_from_scores(scores, out.shape[1])
    return out


def overlap_at_k(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row of ``b`` (the reference top-k) found in the same row of ``a``."""
    if len(a) == 0:
        return float("nan")
    hits = [len(set(x.tolist()) & set(y.tolist())) / len(y) for x, y in zip(a, b, strict=True)]
    return float(np.mean(hits))
