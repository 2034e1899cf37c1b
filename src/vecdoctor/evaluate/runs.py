"""Measuring a searcher on labelled queries: timed runs, metrics rows, baselines, run files.

Shared by :func:`~vecdoctor.evaluate.variants.evaluate_variants` (indexes built per variant) and
:func:`~vecdoctor.evaluate.saved.evaluate_index` (an index that is already built), so both report
the same numbers for the same pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Precision, SearchMode, Store
from vecdoctor.data import Qrels
from vecdoctor.evaluate.metrics import (
    DEFAULT_METRICS,
    Evaluation,
    Run,
    evaluate_run,
    randomization_test,
    ranked_scores,
    write_trec_run,
)


@dataclass
class VariantResult:
    """One measured row: a variant (or a search mode of a saved index) on one store."""

    name: str
    description: str
    evaluation: Evaluation
    docs_per_second: float | None
    query_ms_p50: float
    query_ms_p95: float
    bytes_per_doc: int
    run: dict[str, dict[str, float]] = field(repr=False)
    baseline: str | None = None
    delta_ndcg: float | None = None
    p_value: float | None = None
    store: str = str(Store.DIR)
    index: str | None = None  # where the searched index lives, when it outlives the evaluation
    self_hits: int = 0  # queries whose own document (same id) was left out of their results

    @classmethod
    def from_run(
        cls, name: str, description: str, qrels: Qrels, run: Run, latencies: Sequence[float],
        metrics: Sequence[str], **fields: Any,
    ) -> VariantResult:
        """The row of a measured run: its metrics and latency percentiles (``fields``: the rest)."""
        return cls(
            name=name,
            description=description,
            evaluation=evaluate_run(qrels, run, metrics),
            query_ms_p50=float(np.percentile(latencies, 50)),
            query_ms_p95=float(np.percentile(latencies, 95)),
            run=run,
            **fields,
        )

    @property
    def ndcg(self) -> float:
        return self.evaluation.metrics.get("ndcg@10", float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "description": self.description,
            "store": self.store,
            **{k: round(v, 4) for k, v in self.evaluation.metrics.items()},
            "docs_per_second": None if self.docs_per_second is None else round(self.docs_per_second, 1),
            "query_ms_p50": round(self.query_ms_p50, 2),
            "query_ms_p95": round(self.query_ms_p95, 2),
            "bytes_per_doc": self.bytes_per_doc,
            "baseline": self.baseline,
            "delta_ndcg@10": None if self.delta_ndcg is None else round(self.delta_ndcg, 4),
            "p_value": None if self.p_value is None else round(self.p_value, 4),
            "index": self.index,
            "self_hits_removed": self.self_hits,
        }


@dataclass
class VariantsReport:
    """Every row of one evaluation, with the pairs skipped and, for a saved index, its coverage."""

    dataset: str
    model: str
    num_docs: int
    num_queries: int
    self_supervised: bool
    results: list[VariantResult]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    skipped: list[dict[str, str]] = field(default_factory=list)  # variant, store, reason
    coverage: dict[str, int] | None = None  # judged documents found in a saved index
    rerank: dict[str, Any] | None = None  # reranker, fusion, backend, precision, depth

    def get(self, name: str) -> VariantResult | None:
        return next((r for r in self.results if r.name == name), None)

    def table(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "num_docs": self.num_docs,
            "num_queries": self.num_queries,
            "self_supervised": self.self_supervised,
            "variants": self.table(),
            "skipped": self.skipped,
            **({"coverage": self.coverage} if self.coverage is not None else {}),
            **({"rerank": self.rerank} if self.rerank is not None else {}),
        }


def store_of(index: Any) -> Store:
    """Which backend ``index`` lives on."""
    from vecdoctor.index.lance import LanceIndex  # imports no lancedb by itself
    from vecdoctor.index.store import Index

    if isinstance(index, LanceIndex):
        return Store.LANCEDB
    if isinstance(index, Index):
        return Store.DIR
    raise TypeError(f"index must be an Index or a LanceIndex, got {type(index).__name__}")


def location(index: Any) -> str | None:
    """Where ``index`` is stored, for reports (``None`` for one only in memory)."""
    if store_of(index) is Store.LANCEDB:
        return f"{index.uri} (table {index.name})"
    return None if index.path is None else str(index.path)


def bytes_per_doc(index: Any) -> int:
    """Bytes of the dense codes searched per document (float32, int8 or packed sign bits;
    with chunk-level retrieval, all of a document's chunks, on average)."""
    dim = int(index.dim)
    one = {Precision.FLOAT32: 4 * dim, Precision.INT8: dim, Precision.BINARY: (dim + 7) // 8}[index.precision]
    chunks = getattr(index.vectors, "n_chunks", None)
    return one if chunks is None else round(one * chunks / max(len(index), 1))


def measure_queries(
    searcher: Any, qids: list[str], queries: list[str], k: int, mode: SearchMode, rerank: Any,
    skip_self: bool = True,
) -> tuple[Run, list[float], int]:
    """One search per query, timed one by one (after one warm-up search).

    With ``skip_self``, a query whose id is also a document id never retrieves that document
    (one more hit is fetched, its own is dropped), as BEIR and MTEB evaluate; the count of the
    queries this touched is returned with the run and the latencies.
    """
    searcher.search(queries[0], k=k, mode=mode, rerank=rerank)
    run: Run = {}
    latencies = []
    touched = 0
    index = searcher.index
    for qid, query in zip(qids, queries, strict=True):
        own = skip_self and qid in index
        start = time.perf_counter()
        hits = searcher.search(query, k=min(k + 1, len(index)) if own else k, mode=mode,
                               rerank=rerank)
        latencies.append((time.perf_counter() - start) * 1000)
        if own:
            kept = [h for h in hits if h.id != qid][:k]
            touched += len(kept) < len(hits)
            hits = kept
        run[qid] = ranked_scores([h.id for h in hits], [h.score for h in hits])
    return run, latencies, touched


def compare_baselines(results: list[VariantResult], baseline_of: dict[str, str | None]) -> None:
    """Fill each result's delta and p-value against its baseline row, when that row was run."""
    by_name = {r.name: r for r in results}
    for r in results:
        base = baseline_of.get(r.name)
        if base and base in by_name and base != r.name:
            ref = by_name[base]
            r.baseline = base
            r.delta_ndcg = r.ndcg - ref.ndcg
            r.p_value = randomization_test(
                r.evaluation.per_query["ndcg@10"], ref.evaluation.per_query["ndcg@10"]
            ) if "ndcg@10" in r.evaluation.per_query else None


def write_runs(results: list[VariantResult], runs_dir: str | Path | None) -> None:
    """One TREC run file per row, ``<runs_dir>/<row name>.trec`` (nothing without a folder)."""
    if runs_dir is None:
        return
    for r in results:
        write_trec_run(r.run, Path(runs_dir) / f"{r.name}.trec", tag=r.name)
