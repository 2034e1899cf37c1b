"""Length bias: do long texts get diluted (smaller raw norm, pulled to the centroid)?

Spearman rank correlation (Spearman 1904) of token length with the raw vector norm and with
the cosine to the corpus centroid; with queries and relevance judgements, recall@10 of the
relevant documents per document-length quartile (exact dense search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vecdoctor.diagnose._common import Threshold, Verdict, floats
from vecdoctor.diagnose._search import exact_topk
from vecdoctor.errors import InputError

CENTROID_RHO = Threshold("|spearman(length, cosine to centroid)|", warn=0.3, fail=0.5)
QUARTILE_GAP = 0.8
"""Recall in the longest quartile below this share of the best quartile adds a warning."""


@dataclass(frozen=True)
class QuartileRecall:
    """recall@k of relevant (query, document) pairs, grouped by the document's token length."""

    k: int
    edges: tuple[float, ...]
    recall: tuple[float, ...]
    pairs: tuple[int, ...]
    n_queries: int
    n_documents: int


@dataclass(frozen=True)
class LengthResult:
    """Check 2: correlations of length with norm and centroid similarity, recall by quartile."""

    n: int
    spearman_norm: float
    spearman_centroid: float
    lengths: tuple[int, ...]
    norms: tuple[float, ...]
    centroid_cosines: tuple[float, ...]
    quartiles: QuartileRecall | None
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return abs(self.spearman_centroid)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def recall_by_length_quartile(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    doc_lengths: np.ndarray,
    relevant: Sequence[Sequence[int]],
    k: int = 10,
) -> QuartileRecall:
    """recall@k of each (query, relevant doc) pair, grouped by length quartile of the doc.

    ``relevant[i]`` lists the indices (into ``doc_vectors``) of the documents relevant to query i.
    """
    if len(query_vectors) != len(relevant):
        raise InputError(
            f"got {len(query_vectors)} query vectors but {len(relevant)} relevance lists"
        )
    lengths = np.asarray(doc_lengths, dtype=np.float64)
    top = exact_topk(np.asarray(query_vectors), np.asarray(doc_vectors), k)
    edges = np.quantile(lengths, [0.0, 0.25, 0.5, 0.75, 1.0])
    hits = np.zeros(4)
    pairs = np.zeros(4, dtype=np.int64)
    for row, docs in zip(top, relevant, strict=True):
        found = set(row.tolist())
        for d in docs:
            q = int(np.clip(np.searchsorted(edges, lengths[d], side="right") - 1, 0, 3))
            pairs[q] += 1
            hits[q] += d in found
    recall = np.divide(hits, pairs, out=np.full(4, np.nan), where=pairs > 0)
    return QuartileRecall(
        k=k,
        edges=floats(edges, 1),
        recall=floats(recall),
        pairs=tuple(int(p) for p in pairs),
        n_queries=len(relevant),
        n_documents=len(doc_vectors),
    )


def check_length(
    token_lengths: np.ndarray,
    raw_vectors: np.ndarray,
    quartiles: QuartileRecall | None = None,
    threshold: Threshold = CENTROID_RHO,
    pooling: str = "mean",
) -> LengthResult:
    """Correlate token length with the raw norm and with the cosine to the centroid."""
    lengths = np.asarray(token_lengths)
    raw = np.asarray(raw_vectors, dtype=np.float64)
    if raw.ndim != 2 or len(lengths) != len(raw):
        raise InputError(
            f"token_lengths ({len(lengths)}) and raw_vectors ({raw.shape}) must describe the same "
            "texts"
        )
    if len(raw) < 3:
        raise InputError(f"the length check needs at least 3 texts, got {len(raw)}")
    norms = np.linalg.norm(raw, axis=1)
    unit = raw / np.where(norms > 0, norms, 1.0)[:, None]
    centroid = unit.mean(axis=0)
    cnorm = np.linalg.norm(centroid)
    centroid_cos = unit @ (centroid / cnorm) if cnorm > 0 else np.zeros(len(unit))
    rho_norm = _spearman(lengths, norms)
    rho_centroid = _spearman(lengths, centroid_cos)
    verdict = threshold.grade(abs(rho_centroid))
    notes = []
    if verdict is not Verdict.OK:
        direction = "closer to" if rho_centroid > 0 else "further from"
        notes.append(
            f"longer texts sit {direction} the centroid (rho {rho_centroid:+.2f}); try "
            "attention pooling or token windows with mean reduction"
        )
    if quartiles is not None:
        rec = np.array(quartiles.recall, dtype=np.float64)
        best = np.nanmax(rec) if np.isfinite(rec).any() else np.nan
        if np.isfinite(rec[-1]) and best > 0 and rec[-1] < QUARTILE_GAP * best:
            if verdict is Verdict.OK:
                verdict = Verdict.WARN
            notes.append(
                f"recall@{quartiles.k} of the longest documents is {rec[-1]:.2f} against "
                f"{best:.2f} in the best quartile; try token windows (--window 256:128:max)"
            )
    if not notes:
        notes.append(
            f"no material length bias with {pooling} pooling (rho with centroid "
            f"{rho_centroid:+.2f}, with norm {rho_norm:+.2f})"
        )
    recommendation = "; ".join(notes)
    recommendation = recommendation[0].upper() + recommendation[1:] + "."
    return LengthResult(
        n=len(raw),
        spearman_norm=rho_norm,
        spearman_centroid=rho_centroid,
        lengths=tuple(int(v) for v in lengths),
        norms=floats(norms, 4),
        centroid_cosines=floats(centroid_cos, 4),
        quartiles=quartiles,
        verdict=verdict,
        threshold=threshold,
        recommendation=recommendation,
    )
