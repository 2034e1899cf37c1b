"""Dense search kernels: exact top-k, int8 and binary candidate search, float rescoring.

All functions work on plain numpy arrays (memory-mapped ones included) and return
``(rows, scores)`` with rows as int64 positions, best first. Ties are broken by the lower
row so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vecdoctor._topk import CHUNK_ROWS, chunked_top_k, top_k, top_k_rows  # noqa: F401 (re-exported)
from vecdoctor.errors import IncompatibleError, InputError

WIDEN_ROWS = 4096
"""int8 rows widened to float32 at once (6 MiB at 384-d: stays in cache)."""


def _check_dims(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise IncompatibleError(
            f"query vectors have shape {queries.shape}, but the index holds {dim}-d vectors; "
            "encode queries with the index's own encoder and transform"
        )
    return queries


def exact_search(
    queries: np.ndarray, vectors: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` by chunked matrix products."""
    queries = _check_dims(queries, vectors.shape[1])

    def score(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return q @ np.asarray(vectors[lo:hi], dtype=np.float32).T

    return chunked_top_k(queries, vectors.shape[0], k, score, chunk_rows)


def int8_search(
    queries: np.ndarray,
    codes: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    k: int,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Inner products against int8 codes of ``x = offset + scale * code``, scored as
    ``(q * scale) . code + q . offset``: the codes are widened to float a cache-sized block at a
    time and never decoded, which costs about what exact float search costs."""
    queries = _check_dims(queries, codes.shape[1])
    weighted = np.ascontiguousarray(queries * np.asarray(scale, np.float32), dtype=np.float32)
    shift = (queries @ np.asarray(offset, np.float32)).astype(np.float32)[:, None]

    def score(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
        out = np.empty((len(q), hi - lo), dtype=np.float32)
        for a in range(lo, hi, WIDEN_ROWS):
            b = min(a + WIDEN_ROWS, hi)
            out[:, a - lo : b - lo] = weighted @ np.asarray(codes[a:b], dtype=np.float32).T
        return out + shift

    return chunked_top_k(queries, codes.shape[0], k, score, chunk_rows)


def pack_signs(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension (1 where the value is > 0), packed 8 per byte along each row."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def hamming_search(
    queries: np.ndarray,
    packed: np.ndarray,
    dim: int,
    k: int,
    encode: Callable[[np.ndarray], np.ndarray] = pack_signs,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary search by Hamming distance between sign bits (Charikar, 2002, SimHash).

    ``encode`` packs the float queries the way the documents were packed. The score returned
    is ``dim - 2 * hamming``: the dot product of the +-1 vectors.
    """
    queries = _check_dims(queries, dim)
    q_bits = np.asarray(encode(queries), dtype=np.uint8)
    if q_bits.shape[1] != packed.shape[1]:
        raise IncompatibleError(
            f"binary codes hold {packed.shape[1]} bytes a row, queries {q_bits.shape[1]}"
        )

    def score(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
        block = np.asarray(packed[lo:hi])
        out = np.empty((q_bits.shape[0], hi - lo), dtype=np.float32)
        for i, qb in enumerate(q_bits):
            distance = np.bitwise_count(np.bitwise_xor(block, qb)).sum(axis=1, dtype=np.int32)
            out[i] = dim - 2 * distance
        return out

    return chunked_top_k(queries, packed.shape[0], k, score, chunk_rows)


def binary_index(packed: np.ndarray) -> Any:
    """A faiss flat binary index over packed sign bits (SIMD popcount: about ten times
    :func:`hamming_search`'s speed); its rows are the positions in ``packed``."""
    import faiss

    codes = np.ascontiguousarray(packed, dtype=np.uint8)
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    if len(codes):
        index.add(codes)
    return index


def binary_index_search(
    index: Any, queries: np.ndarray, dim: int, k: int,
    encode: Callable[[np.ndarray], np.ndarray] = pack_signs,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hamming_search` through :func:`binary_index`: the same scores
    (``dim - 2 * hamming``), ties among the returned rows ordered by row."""
    queries = _check_dims(queries, dim)
    q_bits = np.ascontiguousarray(encode(queries), dtype=np.uint8)
    k = min(int(k), int(index.ntotal))
    if k <= 0 or not len(q_bits):
        return np.empty((len(q_bits), 0), np.int64), np.empty((len(q_bits), 0), np.float32)
    distances, rows = index.search(q_bits, k)
    order = np.lexsort((rows, distances), axis=1)
    rows = np.take_along_axis(rows, order, axis=1).astype(np.int64)
    scores = (dim - 2 * np.take_along_axis(distances, order, axis=1)).astype(np.float32)
    return rows, scores


def rescore(
    queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate rows with exact float inner products read from ``vectors``.

    Only the candidate rows are read, so a memory-mapped ``vectors`` file stays on disk.
    """
    queries = _check_dims(queries, vectors.shape[1])
    rows_out, vals_out = [], []
    for q, cand in zip(queries, candidates, strict=True):
        order = np.sort(cand)  # sorted reads are sequential on a memory map
        exact = np.asarray(vectors[order], dtype=np.float32) @ q
        pos, vals = top_k(exact, k)
        rows_out.append(order[pos])
        vals_out.append(vals)
    return np.stack(rows_out), np.stack(vals_out)


def oversampled(k: int, oversample: float, n_rows: int) -> int:
    """How many candidates a quantized search fetches before rescoring."""
    if oversample < 1:
        raise InputError(f"oversample must be >= 1, got {oversample!r}")
    return min(n_rows, max(int(k), int(np.ceil(k * oversample))))
