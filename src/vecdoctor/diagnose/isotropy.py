"""Isotropy of the embedding space: are the vectors spread out, or squeezed into a narrow cone?

Anisotropy of contextual embeddings: Ethayarajh 2019, "How Contextual are Contextualized Word
Representations?" (EMNLP), Sec. 3; the cosine-statistics score follows the issue's definition
(mean part 1 - |mean cosine|, variance part min(var / (1/d), 1), averaged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vecdoctor._vectors import as_vectors
from vecdoctor.diagnose._common import Threshold, Verdict, floats
from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

MEAN_COSINE = Threshold("mean pairwise cosine", warn=0.6, fail=0.8)


def _unit_rows(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    x = as_vectors(vectors, what, min_rows=2).astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    if keep.sum() < 2:
        raise InputError(f"{what}: fewer than 2 non-zero vectors; cosines are undefined")
    if not keep.all():
        logger.warning("%s: ignored %d all-zero vectors", what, int((~keep).sum()))
    return x[keep] / norms[keep, None]


def cosine_moments(vectors: np.ndarray) -> tuple[float, float]:
    """Exact mean and variance of the cosine over all pairs i != j, in O(n d^2) memory-light time.

    Uses sum_{i!=j} u_i.u_j = |sum u|^2 - n and sum_{i!=j} (u_i.u_j)^2 = |U^T U|_F^2 - n.
    """
    u = _unit_rows(vectors)
    n = len(u)
    pairs = n * (n - 1)
    s = u.sum(axis=0)
    mean = (float(s @ s) - n) / pairs
    gram = u.T @ u
    second = (float((gram**2).sum()) - n) / pairs
    return mean, max(second - mean**2, 0.0)


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of distinct vectors."""
    return cosine_moments(vectors)[0]


def isotropy_score(vectors: np.ndarray) -> float:
    """(1 - |mean cosine| + min(var cosine * d, 1)) / 2: ~1 for isotropic, ~0 for a narrow cone."""
    mean, var = cosine_moments(vectors)
    d = np.asarray(vectors).shape[1]
    return float((1.0 - abs(mean) + min(var * d, 1.0)) / 2.0)


def pca_spectrum(vectors: np.ndarray) -> np.ndarray:
    """Share of variance of each principal component, descending (sums to 1)."""
    x = as_vectors(vectors, "vectors", min_rows=2).astype(np.float64)
    centred = x - x.mean(axis=0)
    eig = np.clip(np.linalg.eigvalsh(centred.T @ centred)[::-1], 0.0, None)
    total = eig.sum()
    if total <= 0:
        raise InputError("vectors: all identical (zero variance); the spectrum is undefined")
    return eig / total


def effective_rank(shares: np.ndarray) -> float:
    """exp(entropy) of the variance shares (Roy & Vetterli 2007, "The effective rank", EUSIPCO)."""
    p = np.asarray(shares, dtype=np.float64)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def cosine_histogram(
    vectors: np.ndarray, bins: int = 50, max_vectors: int = 1500, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of pairwise cosines over [-1, 1] (a random subset of vectors when many)."""
    u = _unit_rows(vectors)
    if len(u) > max_vectors:
        u = u[np.sort(np.random.default_rng(seed).choice(len(u), max_vectors, replace=False))]
    sims = (u @ u.T)[np.triu_indices(len(u), k=1)]
    return np.histogram(np.clip(sims, -1, 1), bins=bins, range=(-1.0, 1.0))


@dataclass(frozen=True)
class SpaceStats:
    """Numbers describing one set of vectors (before or after a fix)."""

    n: int
    dim: int
    isotropy: float
    mean_cosine: float
    var_cosine: float
    top1_share: float
    top5_share: float
    top10_share: float
    effective_rank: float
    spectrum: tuple[float, ...]
    histogram: tuple[int, ...]
    histogram_edges: tuple[float, ...]


def space_stats(vectors: np.ndarray, seed: int = 0) -> SpaceStats:
    """Isotropy score, cosine moments, PCA spectrum summary and cosine histogram."""
    x = as_vectors(vectors, "vectors", min_rows=2)
    mean, var = cosine_moments(x)
    shares = pca_spectrum(x)
    counts, edges = cosine_histogram(x, seed=seed)
    cum = np.cumsum(shares)
    return SpaceStats(
        n=int(x.shape[0]),
        dim=int(x.shape[1]),
        isotropy=float((1.0 - abs(mean) + min(var * x.shape[1], 1.0)) / 2.0),
        mean_cosine=float(mean),
        var_cosine=float(var),
        top1_share=float(cum[0]),
        top5_share=float(cum[min(4, len(cum) - 1)]),
        top10_share=float(cum[min(9, len(cum) - 1)]),
        effective_rank=effective_rank(shares),
        spectrum=floats(shares),
        histogram=tuple(int(c) for c in counts),
        histogram_edges=floats(edges, 4),
    )


@dataclass(frozen=True)
class IsotropyResult:
    """Check 1: isotropy, mean cosine, PCA spectrum and the per-layer cosine curve."""

    stats: SpaceStats
    layer_mean_cosine: tuple[float, ...] | None
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return self.stats.mean_cosine


def check_isotropy(
    vectors: np.ndarray,
    layer_vectors: np.ndarray | None = None,
    threshold: Threshold = MEAN_COSINE,
    seed: int = 0,
) -> IsotropyResult:
    """Grade the space by its mean pairwise cosine; ``layer_vectors`` is (layers, n, d)."""
    stats = space_stats(vectors, seed=seed)
    layers = None
    if layer_vectors is not None:
        layers = floats([mean_pairwise_cosine(v) for v in layer_vectors])
    verdict = threshold.grade(stats.mean_cosine)
    if verdict is Verdict.OK:
        rec = (
            f"Vectors are spread out (mean cosine {stats.mean_cosine:.2f}, isotropy "
            f"{stats.isotropy:.2f}); whitening is optional - keep it only if recall improves."
        )
    else:
        rec = (
            f"Vectors sit in a narrow cone (mean cosine {stats.mean_cosine:.2f}): fit whitening "
            "or all-but-the-top on this corpus (vecdoctor fit whitening) and keep it if recall "
            "improves."
        )
    return IsotropyResult(stats, layers, verdict, threshold, rec)
