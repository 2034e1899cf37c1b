"""Before/after numbers for each fix (whitening, all-but-the-top) fitted on the sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdoctor.config import TransformKind
from vecdoctor.diagnose._search import exact_topk
from vecdoctor.diagnose.isotropy import SpaceStats, space_stats
from vecdoctor.errors import InputError

RECALL_MARGIN = 0.005
"""A fix 'improves' retrieval when recall@k rises by more than this (absolute)."""


FIX_NAMES = tuple(str(k) for k in TransformKind)


@dataclass(frozen=True)
class RetrievalSet:
    """Encoded queries, the documents searched and, per query, the indices of relevant docs."""

    query_vectors: np.ndarray
    doc_vectors: np.ndarray
    relevant: tuple[tuple[int, ...], ...]

    def recall(self, k: int = 10, transform: Any = None) -> float:
        """Mean over queries of |relevant in top-k| / |relevant| (exact dense search)."""
        q, d = self.query_vectors, self.doc_vectors
        if transform is not None:
            q, d = transform.transform(q), transform.transform(d)
        top = exact_topk(q, d, k)
        per_query = [
            len(set(row.tolist()) & set(rel)) / len(rel)
            for row, rel in zip(top, self.relevant, strict=True)
        ]
        return float(np.mean(per_query))


@dataclass(frozen=True)
class FixResult:
    """One fix fitted on the sample: space statistics and recall@k before and after."""

    name: str
    params: dict[str, Any]
    before: SpaceStats
    after: SpaceStats
    k: int
    recall_before: float | None
    recall_after: float | None
    improves: bool | None
    """True/False when queries and judgements were available, else None (unknown)."""
    recommendation: str


def make_fix(fix: str | Any) -> tuple[str, Any]:
    """A fix name (``whitening``, ``abtt``) or an unfitted transform object -> (name, object)."""
    if isinstance(fix, str):
        from vecdoctor.fix.transform import make_transform

        if fix not in FIX_NAMES:
            raise InputError(f"unknown fix {fix!r}; valid fixes: {', '.join(FIX_NAMES)}")
        return fix, make_transform(fix)
    if hasattr(fix, "fit") and hasattr(fix, "transform"):
        return type(fix).__name__.lower(), fix
    raise TypeError(f"a fix must be a name or a transform object, got {type(fix).__name__}")


def evaluate_fixes(
    vectors: np.ndarray,
    fixes: Sequence[str | Any],
    retrieval: RetrievalSet | None = None,
    k: int = 10,
    fingerprint: str | None = None,
    before: SpaceStats | None = None,
    seed: int = 0,
) -> tuple[FixResult, ...]:
    """Fit each fix on ``vectors``, then measure the space (and recall, if possible) again."""
    before = before or space_stats(vectors, seed=seed)
    base_recall = retrieval.recall(k) if retrieval is not None else None
    results = []
    for fix in fixes:
        name, transform = make_fix(fix)
        transform.fit(vectors, fingerprint=fingerprint)
        after = space_stats(transform.transform(vectors), seed=seed)
        recall = retrieval.recall(k, transform) if retrieval is not None else None
        params = {"n_components": getattr(transform.config, "n_components", None)}
        if name == "abtt":
            params["n_components"] = transform.n_components_
        improves = None
        if recall is not None and base_recall is not None:
            improves = recall > base_recall + RECALL_MARGIN
            change = f"recall@{k} {base_recall:.3f} -> {recall:.3f}"
            rec = (
                f"Keep {name}: {change}. Fit it on the full corpus (vecdoctor fit {name})."
                if improves
                else f"Skip {name}: {change}, although isotropy goes {before.isotropy:.2f} -> "
                f"{after.isotropy:.2f}."
            )
        else:
            rec = (
                f"Isotropy {before.isotropy:.2f} -> {after.isotropy:.2f}; without queries and "
                f"judgements its effect on retrieval is unknown: evaluate before keeping {name}."
            )
        results.append(
            FixResult(name, params, before, after, k, base_recall, recall, improves, rec)
        )
    return tuple(results)


@dataclass(frozen=True)
class CorpusFit:
    """A transform fitted on a corpus, and the space before and after it."""

    transform: Any
    before: SpaceStats
    after: SpaceStats
    seconds: float


def fit_on_corpus(
    texts: Sequence[str],
    encoder: Any,
    kind: str,
    n_components: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> CorpusFit:
    """Fit a transform of ``kind`` (``whitening`` or ``abtt``) on ``texts`` (a seeded sample of
    ``sample`` of them, when given) encoded by ``encoder`` (what ``vecdoctor fit`` does)."""
    import time

    from vecdoctor.fix.transform import make_transform

    if len(texts) < 2:
        raise InputError(f"the corpus has {len(texts)} text(s); fitting needs at least 2")
    if sample is not None and sample < 2:
        raise InputError(f"sample must be at least 2, got {sample}")
    if sample is not None and sample < len(texts):
        idx = np.sort(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
        texts = [texts[i] for i in idx]
    transform = make_transform(kind, n_components=n_components)
    start = time.perf_counter()
    vectors = encoder.encode_documents(list(texts), show_progress=show_progress)
    transform.fit(vectors, fingerprint=encoder.fingerprint, model_id=encoder.model_id)
    transformed = transform.transform(vectors, fingerprint=encoder.fingerprint)
    before, after = space_stats(vectors, seed=seed), space_stats(transformed, seed=seed)
    return CorpusFit(transform, before, after, time.perf_counter() - start)
