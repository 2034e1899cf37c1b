"""Quantization error: what int8, binary and product quantization cost on this corpus.

For each scheme: reconstruction MSE, mean cosine between original and reconstructed vectors,
bytes per vector, compression, and recall@10 overlap with exact float search; for int8 and
binary also the overlap after float rescoring of an oversampled candidate list (Shakir, Aarsen
& Lee 2024, "Binary and Scalar Embedding Quantization", rescoring section).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdoctor._vectors import as_vectors
from vecdoctor.diagnose._common import Threshold, Verdict
from vecdoctor.diagnose._search import exact_topk, overlap_at_k, topk_from_scores
from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

INT8_OVERLAP = Threshold("int8 recall@10 overlap with float search", 0.95, 0.9, False)
GOOD_OVERLAP = 0.95
"""A scheme that keeps this share of the float top-10 is considered safe to ship."""


@dataclass(frozen=True)
class QuantRow:
    """One quantization scheme measured on the corpus."""

    name: str
    bytes_per_vector: int
    compression: float
    mse: float
    mean_cosine: float
    recall_overlap: float
    rescored_overlap: float | None
    note: str = ""


@dataclass(frozen=True)
class QuantizationResult:
    """Check 6: quantization error table and the cheapest scheme that keeps the top-10."""

    n_documents: int
    n_queries: int
    queries_from_corpus: bool
    k: int
    oversample: int
    rows: tuple[QuantRow, ...]
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return next(r.recall_overlap for r in self.rows if r.name == "int8")

    def row(self, name: str) -> QuantRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no quantization row {name!r}; rows: {[r.name for r in self.rows]}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(na * nb > 0, na * nb, 1.0)


def _rescore(
    candidates: np.ndarray, queries: np.ndarray, docs: np.ndarray, k: int
) -> np.ndarray:
    """Re-rank each candidate list with exact float scores and keep the best k."""
    scores = np.einsum("qd,qcd->qc", queries, docs[candidates])
    return np.take_along_axis(candidates, topk_from_scores(scores, k), axis=1)


def check_quantization(
    doc_vectors: np.ndarray,
    query_vectors: np.ndarray | None = None,
    k: int = 10,
    n_queries: int = 200,
    oversample: int = 4,
    seed: int = 0,
    threshold: Threshold = INT8_OVERLAP,
) -> QuantizationResult:
    """Fit every quantizer on ``doc_vectors`` and compare its search with exact float search.

    Without ``query_vectors``, ``n_queries`` documents serve as queries (each excluding itself).
    """
    docs = as_vectors(doc_vectors, "document vectors", min_rows=2)
    n, d = docs.shape
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    exclude = None
    if query_vectors is None:
        pick = np.sort(rng.choice(n, min(n_queries, n), replace=False))
        queries, exclude = docs[pick], pick
    else:
        queries = as_vectors(query_vectors, "query vectors")
        if queries.shape[1] != d:
            raise InputError(f"query vectors are {queries.shape[1]}-d but documents are {d}-d")
        if len(queries) > n_queries:
            queries = queries[np.sort(rng.choice(len(queries), n_queries, replace=False))]
    probe = _Probe(docs, queries, exclude, k, min(k * oversample, n - 1))
    rows = [QuantRow("float32", 4 * d, 1.0, 0.0, 1.0, 1.0, None)]
    rows += [probe.row(name, quantizer) for name, quantizer in _schemes(n, d, seed)]
    by_name = {r.name: r for r in rows}
    return QuantizationResult(
        n_documents=n,
        n_queries=len(queries),
        queries_from_corpus=query_vectors is None,
        k=k,
        oversample=oversample,
        rows=tuple(rows),
        verdict=threshold.grade(by_name["int8"].recall_overlap),
        threshold=threshold,
        recommendation=_recommend(rows, oversample),
    )


def _schemes(n: int, d: int, seed: int) -> list[tuple[str, Any]]:
    """int8 (per dimension, and one global 95th-percentile scale), binary, and PQ when the
    corpus has at least 4 vectors to learn codebooks from."""
    from vecdoctor.fix.quantize import (
        BinaryQuantizer,
        ProductQuantizer,
        ScalarQuantizer,
        default_pq_m,
    )

    schemes: list[tuple[str, Any]] = [
        ("int8", ScalarQuantizer("per_dim")),
        ("int8-global-p95", ScalarQuantizer("global", percentile=95.0)),
        ("binary", BinaryQuantizer()),
    ]
    nbits = min(8, int(math.log2(n)))
    if nbits >= 2:
        schemes.append(("pq", ProductQuantizer(m=default_pq_m(d), nbits=nbits, seed=seed)))
    return schemes


class _Probe:
    """Searches with one quantizer's codes and compares the top-k with exact float search."""

    def __init__(self, docs: np.ndarray, queries: np.ndarray, exclude: np.ndarray | None,
                 k: int, wide: int) -> None:
        self.docs, self.queries, self.exclude, self.k, self.wide = docs, queries, exclude, k, wide
        self.exact = exact_topk(queries, docs, k, exclude=exclude)

    def search(self, scores: np.ndarray, top: int) -> np.ndarray:
        if self.exclude is not None:
            scores = scores.astype(np.float64)
            scores[np.arange(len(scores)), self.exclude] = -np.inf
        return topk_from_scores(scores, top)

    def row(self, name: str, quantizer: Any) -> QuantRow:
        from vecdoctor.fix.quantize import hamming_scores

        docs, queries = self.docs, self.queries
        quantizer.fit(docs)
        codes = quantizer.encode(docs)
        recon = quantizer.decode(codes)
        if name == "binary":
            scores = hamming_scores(quantizer.encode(queries), codes)
        else:
            scores = queries @ recon.T
        rescored = None
        if name in {"int8", "binary"}:
            wide = self.search(scores, self.wide)
            rescored = overlap_at_k(_rescore(wide, queries, docs, self.k), self.exact)
        note = {"binary": "Hamming search"}.get(name, "")
        if name == "pq":
            note = f"m={quantizer.m_} sub-vectors x {quantizer.config.nbits} bits"
        return QuantRow(
            name=name,
            bytes_per_vector=int(quantizer.bytes_per_vector),
            compression=float(quantizer.compression),
            mse=float(((recon - docs) ** 2).mean()),
            mean_cosine=float(_cosines(recon, docs).mean()),
            recall_overlap=overlap_at_k(self.search(scores, self.k), self.exact),
            rescored_overlap=rescored,
            note=note,
        )


def _recommend(rows: list[QuantRow], oversample: int) -> str:
    """The most compressed option (plain or rescored) that keeps GOOD_OVERLAP of the top-k."""
    options: list[tuple[float, str, float]] = []
    for r in rows[1:]:
        if r.recall_overlap >= GOOD_OVERLAP:
            options.append((r.compression, f"{r.name} storage", r.recall_overlap))
        if r.rescored_overlap is not None and r.rescored_overlap >= GOOD_OVERLAP:
            label = f"{r.name} storage with float rescoring of the top {oversample}x candidates"
            options.append((r.compression - 1e-9, label, r.rescored_overlap))
    if not options:
        return "Every quantization loses more than 5% of the top-10; keep float32 vectors."
    compression, label, overlap = max(options)
    return (
        f"Use {label}: {compression:.0f}x smaller, keeps {overlap:.0%} of the float top-10."
    )
