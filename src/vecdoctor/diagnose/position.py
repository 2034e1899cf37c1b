"""Positional bias of the first-token vector: which positions does the CLS token look at?

Last-layer attention from the first token, mean over heads (Clark et al. 2019, "What Does BERT
Look At? An Analysis of BERT's Attention", BlackboxNLP, Sec. 3), summed into position buckets
and compared with the share of positions each bucket holds in the texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vecdoctor.diagnose._common import Threshold, Verdict, floats
from vecdoctor.errors import InputError

BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 10), (11, 50), (51, 100), (101, None))
"""Inclusive position ranges: 0-10, 11-50, 51-100 and 100+ (101 onwards)."""

FIRST_BUCKET_RATIO = Threshold("attention share / position share of positions 0-10", 2.0, 4.0)

_USES_FIRST_TOKEN = {"cls", "attention"}


def bucket_labels() -> tuple[str, ...]:
    return tuple(f"{a}-{b}" if b is not None else f"{a - 1}+" for a, b in BUCKETS)


@dataclass(frozen=True)
class PositionResult:
    """Check 5: where the first token's attention goes, by position bucket."""

    n: int
    buckets: tuple[str, ...]
    attention_share: tuple[float, ...]
    """Mean over texts of the attention mass in each bucket (sums to 1)."""
    position_share: tuple[float, ...]
    """Mean over texts of the share of positions in each bucket (sums to 1)."""
    first_bucket_ratio: float
    pooling: str
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return self.first_bucket_ratio


def bucket_shares(attentions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bucket attention share and position share, each averaged over texts."""
    if len(attentions) == 0:
        raise InputError("the position check needs at least one text")
    att = np.zeros(len(BUCKETS))
    pos = np.zeros(len(BUCKETS))
    for a in attentions:
        a = np.asarray(a, dtype=np.float64).ravel()
        total = a.sum()
        if len(a) == 0 or total <= 0 or not np.isfinite(total):
            raise InputError("attention weights must be non-empty, finite and sum to > 0")
        for b, (lo, hi) in enumerate(BUCKETS):
            part = a[lo : None if hi is None else hi + 1]
            att[b] += part.sum() / total
            pos[b] += len(part) / len(a)
    return att / len(attentions), pos / len(attentions)


def check_position(
    attentions: Sequence[np.ndarray],
    pooling: str = "cls",
    threshold: Threshold = FIRST_BUCKET_RATIO,
) -> PositionResult:
    """Grade how much more the first token attends to positions 0-10 than their share of text.

    Only pooling that reads the first token's state or attention (``cls``, ``attention``) is
    affected; for other poolings the numbers are reported and the verdict is ok.
    """
    att, pos = bucket_shares(attentions)
    ratio = float(att[0] / pos[0]) if pos[0] > 0 else float("nan")
    pooling = str(pooling)
    affected = pooling in _USES_FIRST_TOKEN
    verdict = threshold.grade(ratio) if affected else Verdict.OK
    if not affected:
        rec = (
            f"{pooling} pooling does not use the first token, so its positional bias "
            f"({ratio:.1f}x on positions 0-10) does not affect these vectors."
        )
    elif verdict is Verdict.OK:
        rec = f"The first token attends to the whole text (ratio {ratio:.1f} on positions 0-10)."
    else:
        rec = (
            f"The first token puts {att[0]:.0%} of its attention on positions 0-10, which hold "
            f"{pos[0]:.0%} of the text: the end of long texts barely reaches a {pooling}-pooled "
            "vector; use mean pooling."
        )
    return PositionResult(
        n=len(attentions),
        buckets=bucket_labels(),
        attention_share=floats(att),
        position_share=floats(pos),
        first_bucket_ratio=ratio,
        pooling=pooling,
        verdict=verdict,
        threshold=threshold,
        recommendation=rec,
    )
