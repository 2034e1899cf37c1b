"""Term consistency: do spellings that mean the same thing embed close, and unrelated terms far?

A tokenizer that shreds a domain term (``"Lys-C"``, ``"lysC"``, ``"lysine C"``) can leave its
spellings far apart; contrastive fine-tuning on the user's data should pull them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import _Choice
from vecdoctor.data import _jsonl, _lines
from vecdoctor.errors import InputError


class Expect(_Choice):
    """What the cosine of a term pair should be."""

    CLOSE = "close"
    """Two names of the same thing: cosine at least ``close_min``."""
    FAR = "far"
    """Unrelated terms: cosine at most ``far_max``."""


@dataclass(frozen=True)
class TermPair:
    a: str
    b: str
    expect: Expect | str = Expect.CLOSE

    def __post_init__(self) -> None:
        object.__setattr__(self, "expect", Expect.parse(self.expect))


def read_term_pairs(path: str | Path) -> list[TermPair]:
    """JSONL (``{"a": ..., "b": ..., "expect": "close"|"far"}``) or TSV (``a<TAB>b[<TAB>expect]``)."""
    path = Path(path)
    pairs: list[TermPair] = []
    if path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        for lineno, obj in _jsonl(path):
            a, b = obj.get("a"), obj.get("b")
            if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
                raise InputError(f"{path}:{lineno}: needs non-empty string fields 'a' and 'b'")
            try:
                pairs.append(TermPair(a, b, str(obj.get("expect", "close"))))
            except InputError as exc:
                raise InputError(f"{path}:{lineno}: {exc}") from None
    else:
        for lineno, line in _lines(path):
            if not line.strip() or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("\t")]
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise InputError(
                    f"{path}:{lineno}: expected 'term<TAB>term[<TAB>close|far]', got {line[:80]!r}"
                )
            try:
                pairs.append(TermPair(parts[0], parts[1], parts[2] if len(parts) == 3 else "close"))
            except InputError as exc:
                raise InputError(f"{path}:{lineno}: {exc}") from None
    if not pairs:
        raise InputError(f"{path}: holds no term pairs")
    return pairs


def term_consistency(
    encoder: Any,
    pairs: Sequence[TermPair],
    close_min: float = 0.7,
    far_max: float = 0.5,
) -> dict[str, Any]:
    """Cosine of every pair under ``encoder`` (an Encoder or a model name) and a summary.

    A pair passes when a ``close`` pair's cosine is >= ``close_min`` or a ``far`` pair's is
    <= ``far_max``; ``gap`` is the mean cosine of close pairs minus that of far pairs.
    """
    if not pairs:
        raise InputError("no term pairs given")
    if isinstance(encoder, str):
        from vecdoctor.encode.encoder import Encoder

        encoder = Encoder(encoder)
    a = encoder.encode([p.a for p in pairs])
    b = encoder.encode([p.b for p in pairs])
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cosines = (a * b).sum(axis=1)
    rows = []
    for p, cos in zip(pairs, cosines, strict=True):
        ok = cos >= close_min if p.expect is Expect.CLOSE else cos <= far_max
        rows.append(
            asdict(p) | {"expect": str(p.expect), "cosine": round(float(cos), 4), "ok": bool(ok)}
        )
    close = [r["cosine"] for r in rows if r["expect"] == "close"]
    far = [r["cosine"] for r in rows if r["expect"] == "far"]
    summary: dict[str, Any] = {
        "model": getattr(encoder, "model_id", None),
        "passed": sum(r["ok"] for r in rows),
        "total": len(rows),
        "close_mean": round(float(np.mean(close)), 4) if close else None,
        "far_mean": round(float(np.mean(far)), 4) if far else None,
    }
    summary["gap"] = (
        round(summary["close_mean"] - summary["far_mean"], 4) if close and far else None
    )
    return {"summary": summary, "pairs": rows}
