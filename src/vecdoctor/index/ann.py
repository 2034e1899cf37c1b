"""Optional approximate nearest-neighbour search with faiss: HNSW (Malkov & Yashunin, 2018)
or IVF-Flat (Jegou et al., 2011), both on inner product over the float32 vectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ANN_KINDS, AnnConfig  # noqa: F401 (re-exported)
from vecdoctor.errors import InputError, require


def build_ann(vectors: np.ndarray, config: AnnConfig) -> Any:
    """Build a faiss index over ``vectors`` (rows keep their positions as ids)."""
    faiss: Any = require("faiss", "all")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    else:
        nlist = config.nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    index.add(x)
    configure(index, config)
    return index


def configure(index: Any, config: AnnConfig) -> None:
    """Set the search-time parameters (efSearch / nprobe)."""
    if config.kind == "hnsw":
        index.hnsw.efSearch = config.ef_search
    else:
        index.nprobe = config.nprobe


def ann_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows and inner products; faiss marks missing results with row -1."""
    k = min(int(k), int(index.ntotal))
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows.astype(np.int64), scores.astype(np.float32)


def save_ann(index: Any, path: Path) -> None:
    faiss: Any = require("faiss", "all")
    faiss.write_index(index, str(path))


def load_ann(path: Path, config: AnnConfig, n_rows: int) -> Any:
    faiss: Any = require("faiss", "all")
    if not path.is_file():
        raise InputError(f"{path}: file not found; the index folder is incomplete")
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:  # a crafted size field can ask for any amount
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InputError(
            f"{path}: cannot be read ({first}); the file is corrupt, rebuild the index"
        ) from None
    if int(index.ntotal) != n_rows:
        raise InputError(
            f"{path}: holds {index.ntotal} vectors but the index has {n_rows} documents; rebuild it"
        )
    configure(index, config)
    return index


LATENCY_BUDGET_MS = 10.0
"""Per-query milliseconds that exact dense search may take before ``ann="auto"`` builds HNSW
(the dense part of a hybrid query; query encoding and BM25 come on top)."""
RECALL_TARGET = 0.95
"""recall@10 against exact search that an automatically chosen ANN index must reach."""
EF_SEARCH_STEPS = (64, 128, 256, 512, 1024)


@dataclass
class AnnChoice:
    """Why an index searches exactly or through HNSW: the measurements taken at build time."""

    chosen: str  # "exact" or "hnsw"
    reason: str
    rows: int
    queries: int
    budget_ms: float
    exact_ms_p50: float
    ann_ms_p50: float | None = None
    recall_at_10: float | None = None
    ef_search: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def timed_search(search: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``search(query, k)`` one query at a time (as a server searches): the rows found and each
    query's milliseconds."""
    import time

    rows, times = [], []
    for q in queries:
        start = time.perf_counter()
        found, _ = search(q[None, :], k)
        times.append((time.perf_counter() - start) * 1000)
        rows.append(found[0])
    return np.stack(rows), np.asarray(times)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each query's true top-``k`` rows that ``found`` holds."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                          for a, b in zip(found, truth, strict=True)]))


def choose_ann(
    vectors: np.ndarray,
    queries: np.ndarray,
    budget_ms: float = LATENCY_BUDGET_MS,
    target: float = RECALL_TARGET,
    k: int = 10,
) -> tuple[AnnConfig | None, Any, AnnChoice]:
    """Exact search while its median time per query on this machine (one BLAS thread, as
    :func:`~vecdoctor.search.searcher.limit_blas_threads` leaves searches) stays within
    ``budget_ms``; above it an HNSW graph, its ``ef_search`` raised until recall@10 against
    exact search on ``queries`` reaches ``target`` (the largest step is kept otherwise, and the
    reason says so). Returns the config, the built graph (or ``None``) and the measurements."""
    from threadpoolctl import threadpool_limits

    from vecdoctor.index.dense import exact_search

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    if not len(queries) or not n:
        return None, None, AnnChoice("exact", "no probe queries: exact search", n, 0, budget_ms, 0.0)
    with threadpool_limits(limits=1, user_api="blas"):  # as `search` and `serve` run
        truth, times = timed_search(lambda q, kk: exact_search(q, x, kk), queries, k)
    exact_ms = float(np.median(times))
    if exact_ms <= budget_ms:
        return None, None, AnnChoice(
            "exact", f"exact search takes {exact_ms:.2f} ms a query over {n} vectors, within the "
            f"{budget_ms:g} ms budget", n, len(queries), budget_ms, exact_ms)
    config = AnnConfig("hnsw")
    graph = build_ann(x, config)
    recall = ann_ms = 0.0
    for ef in EF_SEARCH_STEPS:
        config = AnnConfig("hnsw", ef_search=ef)
        configure(graph, config)
        found, times = timed_search(lambda q, kk: ann_search(graph, q, kk), queries, k)
        ann_ms, recall = float(np.median(times)), recall_at_k(found, truth, k)
        if recall >= target:
            break
    met = "reaches" if recall >= target else "stays below"
    reason = (f"exact search takes {exact_ms:.2f} ms a query over {n} vectors, over the "
              f"{budget_ms:g} ms budget: HNSW (ef_search {config.ef_search}) takes {ann_ms:.2f} ms "
              f"and {met} recall@10 {target:g} of exact search ({recall:.3f} on {len(queries)} "
              "self-supervised queries)")
    return config, graph, AnnChoice("hnsw", reason, n, len(queries), budget_ms, exact_ms, ann_ms,
                                    recall, config.ef_search)
