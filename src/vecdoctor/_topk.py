"""Top-k selection over score matrices, exact and chunked: shared by the index's dense search
and the diagnosis' neighbour checks, so both rank alike."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CHUNK_ROWS = 65_536
"""Rows scored per matrix product, bounding memory to about ``queries x CHUNK_ROWS`` floats."""
def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and values of the ``k`` largest scores of a 1-d array, best first (argpartition)."""
    n = scores.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=scores.dtype)
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = np.lexsort((part, -scores[part]))
    rows = part[order].astype(np.int64)
    return rows, scores[rows]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row :func:`top_k` of a 2-d ``(queries, docs)`` score matrix."""
    results = [top_k(row, k) for row in scores]
    rows = np.stack([r for r, _ in results]) if results else np.empty((0, 0), dtype=np.int64)
    vals = np.stack([v for _, v in results]) if results else np.empty((0, 0), dtype=scores.dtype)
    return rows, vals


def chunked_top_k(
    queries: np.ndarray,
    n_rows: int,
    k: int,
    score_chunk: Callable[[np.ndarray, int, int], np.ndarray],
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` over ``n_rows`` documents scored chunk by chunk by ``score_chunk(q, lo, hi)``."""
    k = min(int(k), n_rows)
    m = queries.shape[0]
    if k <= 0 or m == 0:
        return np.empty((m, 0), dtype=np.int64), np.empty((m, 0), dtype=np.float32)
    best_rows: np.ndarray | None = None
    best_vals: np.ndarray | None = None
    for lo in range(0, n_rows, chunk_rows):
        hi = min(lo + chunk_rows, n_rows)
        scores = np.asarray(score_chunk(queries, lo, hi), dtype=np.float32)
        rows, vals = top_k_rows(scores, k)
        rows = rows + lo
        if best_rows is None or best_vals is None:
            best_rows, best_vals = rows, vals
            continue
        merged_rows = np.concatenate([best_rows, rows], axis=1)
        merged_vals = np.concatenate([best_vals, vals], axis=1)
        keep, _ = top_k_rows(merged_vals, k)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
        best_vals = np.take_along_axis(merged_vals, keep, axis=1)
    assert best_rows is not None and best_vals is not None  # n_rows > 0 here
    return best_rows, best_vals
