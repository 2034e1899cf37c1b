"""Truncation: how much of the corpus falls past the model's max length and is never encoded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vecdoctor.diagnose._common import Threshold, Verdict, floats
from vecdoctor.errors import InputError

SHARE_TRUNCATED = Threshold("share of texts over the max length", warn=0.05, fail=0.25)


@dataclass(frozen=True)
class TruncationResult:
    """Check 3: share of texts over the limit and share of tokens dropped."""

    n: int
    max_length: int
    windowed: bool
    share_truncated: float
    share_tokens_dropped: float
    mean_tokens: float
    percentiles: tuple[float, ...]
    """Token length at the 50th, 90th, 95th and 99th percentile."""
    longest: int
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return self.share_truncated


def check_truncation(
    token_lengths: np.ndarray,
    max_length: int,
    windowed: bool = False,
    threshold: Threshold = SHARE_TRUNCATED,
    windows_possible: bool = True,
) -> TruncationResult:
    """Measure truncation; with token windows nothing is dropped, so the verdict is ok.

    ``windows_possible`` is False for models that only return pooled vectors: the advice is
    then to split documents, since such a model cannot encode token windows."""
    lengths = np.asarray(token_lengths, dtype=np.int64)
    if lengths.ndim != 1 or len(lengths) == 0:
        raise InputError("token_lengths must be a non-empty 1-D array of token counts")
    if not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise InputError(f"max_length must be a positive integer, got {max_length!r}")
    over = lengths > max_length
    dropped = np.clip(lengths - max_length, 0, None).sum()
    share = float(over.mean())
    dropped_share = float(dropped / max(lengths.sum(), 1))
    if windowed:
        verdict = Verdict.OK
        rec = (
            f"{share:.0%} of texts exceed {max_length} tokens, but token windows encode all "
            "of them; nothing is dropped."
        )
    else:
        verdict = threshold.grade(share)
        if verdict is Verdict.OK:
            rec = f"Only {share:.1%} of texts exceed {max_length} tokens; no action needed."
        else:
            fix = (
                "index every token window as its own vector (index --chunks max), pool windows "
                "into one vector (--window 256:128:max) or split documents into passages; "
                "`vecdoctor checkup` measures which of these helps on your data"
                if windows_possible
                else "split documents into passages (this model cannot encode token windows), or "
                "choose a model that returns token states"
            )
            rec = (
                f"{share:.0%} of texts exceed {max_length} tokens and {dropped_share:.0%} of all "
                f"tokens are never encoded: {fix}."
            )
    return TruncationResult(
        n=len(lengths),
        max_length=int(max_length),
        windowed=windowed,
        share_truncated=share,
        share_tokens_dropped=0.0 if windowed else dropped_share,
        mean_tokens=float(lengths.mean()),
        percentiles=floats(np.percentile(lengths, [50, 90, 95, 99]), 1),
        longest=int(lengths.max()),
        verdict=verdict,
        threshold=threshold,
        recommendation=rec,
    )
