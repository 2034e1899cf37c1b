"""First-stage retrieval (BM25, dense, RRF hybrid) for training and its evaluation, through the
Searcher, and nDCG of the runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vecdoctor.data import Document, Qrels

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]


def metrics(
    run: Run, qrels: Qrels, names: Sequence[str] = ("ndcg@10", "recall@100")
) -> dict[str, float]:
    """Mean of each metric over the judged queries (unanswered queries count 0), 4 decimals."""
    from vecdoctor.evaluate.metrics import evaluate_run

    scores = evaluate_run(qrels, {q: dict(hits) for q, hits in run.items()}, list(names))
    return {n: round(v, 4) for n, v in scores.metrics.items()}


def rrf(runs: Sequence[list[tuple[str, float]]], k: int = 60) -> list[tuple[str, float]]:
    from vecdoctor.search.fusion import rrf as fuse

    return [(str(d), s) for d, s in fuse(runs, k=k)]


class FirstStage:
    """BM25, dense and hybrid (RRF) first-stage runs over one corpus.

    Dense and hybrid runs come from the :class:`~vecdoctor.search.searcher.Searcher` over an
    index of the corpus, BM25 from the same BM25 index it searches: the first stage that
    training mines and evaluates on is the one a built index serves.
    """

    def __init__(
        self, corpus: Sequence[Document], encoder: Any = None, show_progress: bool = False
    ) -> None:
        from vecdoctor.index.bm25 import BM25Index

        self.docs = list(corpus)
        self.ids = [d.id for d in self.docs]
        self.encoder = encoder
        self.searcher: Any = None
        if encoder is not None:
            from vecdoctor.index.store import Index
            from vecdoctor.search.searcher import Searcher

            index = Index.build(self.docs, encoder, show_progress=show_progress)
            self.searcher = Searcher(index, cache_size=0, max_query_chars=1 << 30)
            self.bm25_index = index.bm25
        else:
            self.bm25_index = BM25Index().build([d.content for d in self.docs])

    def bm25(self, queries: dict[str, str], depth: int) -> Run:
        out: Run = {}
        for qid, text in queries.items():
            rows, scores = self.bm25_index.search(text, depth)
            out[qid] = [(self.ids[r], float(s)) for r, s in zip(rows, scores, strict=True)]
        return out

    def _search(self, queries: dict[str, str], depth: int, mode: str) -> Run:
        if self.searcher is None:
            raise ValueError(f"{mode} retrieval needs an encoder")
        qids = list(queries)
        hits = self.searcher.search_batch([queries[q] for q in qids], depth, mode)
        return {q: [(h.id, h.score) for h in found] for q, found in zip(qids, hits, strict=True)}

    def dense(self, queries: dict[str, str], depth: int) -> Run:
        return self._search(queries, depth, "dense")

    def hybrid(self, queries: dict[str, str], depth: int) -> Run:
        """RRF (k=60) of the BM25 and dense top-100 (or top-``depth`` when deeper)."""
        return self._search(queries, depth, "hybrid")


def rerank_run(
    reranker: Any, run: Run, queries: dict[str, str], docs: dict[str, Document], depth: int
) -> Run:
    """Reorder the top ``depth`` of each query with ``reranker.score`` (as the Searcher's
    rerank stage does); the rest keep their order below."""
    from vecdoctor.search.searcher import rerank_order

    out: Run = {}
    for qid, hits in run.items():
        head, tail = hits[:depth], hits[depth:]
        reranked = rerank_order(reranker, queries[qid], [docs[d] for d, _ in head], head)
        floor = min((s for _, s in reranked), default=0.0)
        out[qid] = reranked + [(d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
    return out
