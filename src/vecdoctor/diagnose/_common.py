"""Verdicts, thresholds and JSON conversion shared by every check."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdoctor.config import _Choice


class Verdict(_Choice):
    """Outcome of one check."""

    OK = "ok"
    """Nothing to fix."""
    WARN = "warn"
    """Worth fixing; the recommendation says how."""
    FAIL = "fail"
    """Hurts retrieval badly enough that it should be fixed before shipping."""


@dataclass(frozen=True)
class Threshold:
    """The rule behind a verdict: ``metric`` warns past ``warn`` and fails past ``fail``.

    ``higher_is_worse=False`` flips the direction (e.g. recall overlap below 0.95 warns).
    """

    metric: str
    warn: float
    fail: float | None = None
    higher_is_worse: bool = True

    def grade(self, value: float | None) -> Verdict:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return Verdict.OK

        def past(limit: float) -> bool:
            return value > limit if self.higher_is_worse else value < limit

        if self.fail is not None and past(self.fail):
            return Verdict.FAIL
        return Verdict.WARN if past(self.warn) else Verdict.OK

    def describe(self) -> str:
        op = ">" if self.higher_is_worse else "<"
        text = f"{self.metric} {op} {self.warn:g} warns"
        if self.fail is not None:
            text += f", {op} {self.fail:g} fails"
        return text


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, numpy scalars/arrays and tuples -> plain JSON values (NaN -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Threshold):
            out["rule"] = obj.describe()
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    return obj


def floats(values: Any, digits: int = 6) -> tuple[float, ...]:
    """A numeric sequence as a tuple of rounded Python floats (compact in report.json)."""
    return tuple(round(float(v), digits) for v in np.asarray(values, dtype=np.float64).ravel())
