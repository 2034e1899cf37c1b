"""Answerability: can the index answer these queries? One function for the live observer and
the offline report, so that the same queries give the same numbers both ways.

A query's answerability is its best dense score in the index, through the index's own dense
search (:func:`~vecdoctor.index.baseline.best_other`). The baseline stored with the index holds
the same score for a few hundred sentences cut from the corpus (each one's own document left
out): what the corpus' own questions reach. A query is **out of domain** when it scores below
the baseline's 10th percentile, the score 90% of the corpus' own sentences reach. Real queries
about the corpus score higher than those sentences (they have relevant documents; the
sentences lost theirs), so few fall there: at most 7% of any window of 200 of the held-back
test queries of SciFact, Cranfield, CISI, MEDLINE and LISA (minilm,
``benchmarks/monitor_matrix.py``); queries of another field fall there nearly all (80-100% of
the other sets' queries, 96-100% of STS-B sentences; the 5th percentile, the cut used before,
caught as few as 58%). Sets of one field (CISI and LISA, library science; MEDLINE and SciFact,
biomedicine) answer each other's queries, and the score says so.

A window of traffic raises the alarm when more of its queries fall below that cut than chance
allows for traffic like the corpus' own: a tenth is expected, and the alarm fires when a
binomial test of the count against 10% gives p < :data:`ALARM_P` (18% of a window of 200,
30% of 40). A share is always reported with the verdict, so a window of half on-topic and
half off-topic queries reads as a partial drift, not as a yes or no.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

EXPECTED = 0.10
"""The share of the corpus' own sentences below the cut (by definition of the quantile)."""
ALARM_P = 0.001
"""The binomial test's level: how unlikely the window's share must be for the corpus' own."""
MOSTLY = 0.9
"""A share at least this high is "out of domain"; an alarmed share below it a partial drift."""


def scores(index: Any, vectors: np.ndarray) -> np.ndarray:
    """Each query vector's best dense score in ``index`` (one batched search)."""
    from vecdoctor.index.baseline import best_other

    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.float64)
    best, _ = best_other(index, vectors, [-1] * len(vectors), k=1)
    return np.asarray(best, dtype=np.float64)


def cut(baseline: Any, reference: np.ndarray | None = None) -> float | None:
    """The score below which a query is out of domain (the baseline's
    :data:`~vecdoctor.index.baseline.OOD_QUANTILE` of its queries' best scores, or of
    ``reference``, its documents' for new documents); ``None`` without a baseline."""
    if baseline is None:
        return None
    if reference is not None:
        return float(np.quantile(reference, EXPECTED)) if len(reference) else None
    value = baseline.ood_threshold
    return None if not np.isfinite(value) else float(value)


@lru_cache(maxsize=256)
def alarm_share(n: int) -> float:
    """The smallest share of ``n`` queries below the cut that a binomial test against
    :data:`EXPECTED` finds at p < :data:`ALARM_P` (one-sided)."""
    from scipy import stats

    if n <= 0:
        return float("inf")
    count = int(stats.binom.isf(ALARM_P, n, EXPECTED)) + 1
    return count / n


def share(best: np.ndarray, threshold: float | None) -> float | None:
    """The share of ``best`` scores below ``threshold``."""
    if threshold is None or len(best) == 0:
        return None
    return float((np.asarray(best) < threshold).mean())


def verdict(value: float | None, n: int) -> str:
    """``out of domain``, ``partial drift`` or ``no drift`` for a share of ``n`` queries."""
    if value is None or value < alarm_share(n):
        return "no drift"
    return "out of domain" if value >= MOSTLY else "partial drift"


def words(value: float, n: int) -> str:
    """The verdict in a sentence, with the share."""
    said = verdict(value, n)
    what = (f"{value:.0%} of {n} queries are out of domain (their best score is below what "
            f"90% of the corpus' own sentences reach; the alarm needs {alarm_share(n):.0%})")
    return f"{said}: {what}" if said != "no drift" else f"in domain: {what}"
