"""First-stage retrieval (BM25, dense, RRF hybrid) and nDCG for training and its evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

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
    """BM25 and (optionally) dense retrieval over one corpus, plus their RRF fusion."""

    def __init__(
        self, corpus: Sequence[Document], encoder: Any = None, show_progress: bool = False
    ) -> None:
        from vecdoctor.index.bm25 import BM25Index

        self.docs = list(corpus)
        self.ids = [d.id for d in self.docs]
        texts = [d.content for d in self.docs]
        self.bm25_index = BM25Index().build(texts)
        self.encoder = encoder
        self.vectors = None
        if encoder is not None:
            self.vectors = encoder.encode_documents(texts, show_progress=show_progress)

    def bm25(self, queries: dict[str, str], depth: int) -> Run:
        out: Run = {}
        for qid, text in queries.items():
            rows, scores = self.bm25_index.search(text, depth)
            out[qid] = [(self.ids[r], float(s)) for r, s in zip(rows, scores, strict=True)]
        return out

    def dense(self, queries: dict[str, str], depth: int) -> Run:
        from vecdoctor.index.dense import top_k_rows

        if self.encoder is None or self.vectors is None:
            raise ValueError("dense retrieval needs an encoder")
        qids = list(queries)
        out: Run = {}
        for start in range(0, len(qids), 256):
            chunk = qids[start : start + 256]
            vecs = self.encoder.encode_queries([queries[q] for q in chunk])
            rows, scores = top_k_rows(vecs @ self.vectors.T, depth)
            for q, rr, ss in zip(chunk, rows, scores, strict=True):
                out[q] = [(self.ids[r], float(s)) for r, s in zip(rr, ss, strict=True)]
        return out

    def hybrid(self, queries: dict[str, str], depth: int, candidates: int = 100) -> Run:
        lexical = self.bm25(queries, candidates)
        dense = self.dense(queries, candidates)
        return {q: rrf([lexical[q], dense[q]])[:depth] for q in queries}


def rerank_run(
    reranker: Any, run: Run, queries: dict[str, str], docs: dict[str, Document], depth: int
) -> Run:
    """Reorder the top ``depth`` of each query with ``reranker.score``; the rest keep their order."""
    out: Run = {}
    for qid, hits in run.items():
        head, tail = hits[:depth], hits[depth:]
        scores = np.asarray(
            reranker.score(queries[qid], [docs[d] for d, _ in head]), dtype=np.float64
        )
        order = np.lexsort((np.arange(len(head)), -scores))
        floor = float(scores.min()) if len(scores) else 0.0
        reranked = [(head[j][0], float(scores[j])) for j in order]
        out[qid] = reranked + [(d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
    return out
