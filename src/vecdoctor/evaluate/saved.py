"""Evaluate an index that is already built (a folder or a LanceDB table) on a dataset's labels.

The dataset's queries run through :class:`~vecdoctor.search.searcher.Searcher` in each search mode, as
:func:`~vecdoctor.evaluate.variants.evaluate_variants` runs them, so an index built with the same
pipeline reproduces the numbers that evaluation reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vecdoctor.config import SearchMode, Store
from vecdoctor.data import Dataset, Qrels
from vecdoctor.errors import InputError
from vecdoctor.evaluate.metrics import DEFAULT_METRICS
from vecdoctor.evaluate.runs import (
    VariantResult,
    VariantsReport,
    bytes_per_doc,
    compare_baselines,
    location,
    measure_queries,
    store_of,
    write_runs,
)
from vecdoctor.evaluate.variants import VARIANTS, parse_modes

logger = logging.getLogger(__name__)

DESCRIPTIONS = {
    SearchMode.BM25: "lexical search of the index (BM25)",
    SearchMode.DENSE: "dense search with the index's pipeline",
    SearchMode.HYBRID: "BM25 + dense, fused as the index's pipeline says (RRF k=60 unless set)",
}


def coverage(index: Any, qrels: Qrels) -> dict[str, int]:
    """How many of the judged documents the index lacks, and the queries left with none."""
    judged = {d for rels in qrels.values() for d in rels}
    if store_of(index) is Store.LANCEDB:
        present = index.present(judged)
    else:
        present = {d for d in judged if d in index}
    missing = judged - present
    return {
        "judged_documents": len(judged),
        "missing_from_index": len(missing),
        "queries_without_judged_documents": sum(1 for rels in qrels.values() if set(rels) <= missing),
    }


def evaluate_index(
    index: Any,
    dataset: Dataset,
    modes: str | Sequence[str] = tuple(SearchMode),
    *,
    k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    runs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    encoder: Any = None,
) -> VariantsReport:
    """Evaluate ``index`` (an Index or a LanceIndex) on ``dataset``'s queries and qrels.

    One row per search mode, named after it and compared as the variants of the same names
    are (dense against bm25, hybrid against dense). Judged documents that the index lacks stay
    in the qrels and count as not found, so the numbers stay comparable with an evaluation on
    the whole dataset; their count is logged and kept in ``report.coverage``. An index holding
    none of them is an error (it was built from another corpus). ``encoder`` replaces the
    index's own query encoder (it must be the same pipeline).
    """
    from vecdoctor.search.searcher import Searcher

    store = store_of(index)
    if not dataset.has_labels:
        raise InputError(
            "evaluating an index needs queries and qrels: give a BEIR folder with queries.jsonl "
            "and qrels/<split>.tsv"
        )
    chosen = parse_modes(modes)
    cover = coverage(index, dataset.qrels)
    if cover["missing_from_index"] == cover["judged_documents"]:
        raise InputError(
            f"the index holds none of the {cover['judged_documents']} documents judged in "
            f"{dataset.name!r}; evaluate it on the dataset whose corpus it was built from"
        )
    if cover["missing_from_index"]:
        logger.warning(
            "the index lacks %d of the %d judged documents (%d queries have none of theirs); "
            "they count as not found",
            cover["missing_from_index"], cover["judged_documents"],
            cover["queries_without_judged_documents"],
        )
    searcher = Searcher(index, encoder=encoder, cache_size=0, candidates=max(k, 100))
    qids = sorted(dataset.qrels)
    queries = [dataset.queries[q] for q in qids]
    say = progress or (lambda _msg: None)
    results = []
    for mode in chosen:
        say(f"mode {mode}")
        run, latencies, self_hits = measure_queries(searcher, qids, queries, k, mode, None,
                                                    skip_self=not dataset.keep_self_hits)
        results.append(VariantResult.from_run(
            str(mode), DESCRIPTIONS[mode], dataset.qrels, run, latencies, metrics,
            docs_per_second=None,
            bytes_per_doc=0 if mode is SearchMode.BM25 else bytes_per_doc(index),
            store=str(store), index=location(index), self_hits=self_hits,
        ))
        logger.info("%s: ndcg@10 %.4f", mode, results[-1].ndcg)
    write_runs(results, runs_dir)
    compare_baselines(results, {r.name: VARIANTS[r.name].baseline for r in results})
    return VariantsReport(
        dataset=dataset.name,
        model=index.model_id,
        num_docs=len(index),
        num_queries=len(qids),
        self_supervised=dataset.self_supervised,
        results=results,
        metrics=tuple(metrics),
        coverage=cover,
    )
