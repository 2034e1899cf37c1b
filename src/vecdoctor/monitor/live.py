"""Embedding health of live traffic, against the baseline stored with the index.

:class:`LiveHealth` is attached to a :class:`~vecdoctor.search.searcher.Searcher` as its
observer: every query's vector and first-stage runs are recorded in a ring buffer of the last
``window`` queries (a few array writes per query; the statistics are computed when someone
asks). At the end of every ``window`` queries the alarms are evaluated once and each one that
fires logs one warning line with its numbers and the suggested action.

Alarms (each a rule that holds for any corpus, not a number fitted to one):

- **anisotropy**: the queries' mean pairwise cosine above 0.6, the guide's threshold for
  embeddings squeezed into a cone (the traffic of a healthy SciFact server: 0.12);
- **out of distribution**: more of the window's queries score below the baseline's 10th
  percentile than chance allows for the corpus' own queries (:mod:`vecdoctor.monitor.answerability`,
  the same function the offline report uses);
- **no lexical match**: at least 30% of the queries without any BM25 match;
- **truncation**: at least 10% of the queries longer than the model reads.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdoctor.monitor import answerability

logger = logging.getLogger(__name__)

MEAN_COSINE_ALARM = 0.6
NO_MATCH_ALARM = 0.3
TRUNCATION_ALARM = 0.1
MIN_QUERIES = 20
"""No alarm is judged on fewer queries than this."""


@dataclass(frozen=True)
class Alarm:
    name: str
    value: float
    threshold: float
    message: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 4), "threshold": self.threshold,
                "message": self.message, "action": self.action}


def _share(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


class LiveHealth:
    """Rolling embedding health of the queries a searcher answers (thread-safe)."""

    def __init__(self, index: Any, window: int = 200) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < MIN_QUERIES:
            from vecdoctor.errors import InputError

            raise InputError(f"window must be an integer >= {MIN_QUERIES}, got {window!r}")
        self.index = index
        self.baseline = getattr(index, "baseline", None)
        self.window = window
        self._lock = threading.Lock()
        self._vectors = np.zeros((window, int(index.dim)), dtype=np.float32)
        self._filled = 0
        self._next = 0
        self._scored: tuple[int, np.ndarray] | None = None  # (observed, best scores) last computed
        self._no_match: deque[bool] = deque(maxlen=window)
        self._overlap: deque[float] = deque(maxlen=window)
        self._truncated: deque[bool] = deque(maxlen=window)
        self._inputs_truncated: deque[bool] = deque(maxlen=window * 8)
        self.observed = 0
        self.windows = 0
        self.windows_alarmed: dict[str, int] = {}
        self.last_alarms: list[Alarm] = []
        self._added: dict[str, Any] | None = None
        self._added_key: int | None = None
        if self.baseline is None:
            logger.warning(
                "this index has no baseline: out-of-distribution alarms are off; %s",
                "add one with `vecdoctor baseline INDEX`" if hasattr(index, "baseline")
                else "LanceDB tables do not store one yet, serve a folder index for them",
            )

    # -- recording (called per query by the searcher) ------------------------------------------
    def observe(self, query: str, vector: np.ndarray | None,
                stages: dict[str, list[tuple[int, float]]]) -> None:
        truncated = self._is_truncated([query])
        with self._lock:
            if vector is not None:
                self._vectors[self._next] = vector
                self._next = (self._next + 1) % self.window
                self._filled = min(self._filled + 1, self.window)
            lexical = stages.get("bm25")
            if lexical is not None:
                self._no_match.append(not lexical or lexical[0][1] <= 0)
                dense = stages.get("dense")
                if dense is not None and lexical:
                    top = min(10, len(dense), len(lexical))
                    if top:
                        shared = {r for r, _ in lexical[:top]} & {r for r, _ in dense[:top]}
                        self._overlap.append(len(shared) / top)
            if truncated is not None:
                self._truncated.append(bool(truncated[0]))
            self.observed += 1
            end_of_window = self.observed % self.window == 0
        if end_of_window:
            self._judge()

    def observe_inputs(self, lengths: np.ndarray) -> None:
        """Inputs of ``/v1/embeddings`` (their token lengths): whether each was truncated."""
        limit = self._limit()
        if limit is not None:
            with self._lock:
                self._inputs_truncated.extend(bool(n > limit) for n in np.asarray(lengths))

    def _limit(self) -> int | None:
        """Tokens the served model reads (``None``: windows read everything)."""
        encoder = self.index.embedder.loaded
        limit = getattr(encoder, "max_length", None)
        if encoder is None or not limit or getattr(encoder, "window", None) is not None:
            return None
        return int(limit)

    def _is_truncated(self, texts: list[str]) -> np.ndarray | None:
        limit = self._limit()
        if limit is None:
            return None
        if all(len(t) + 4 <= limit for t in texts):
            # a token covers at least one character: such short texts cannot reach the limit,
            # and most queries are short, so they are not tokenized a second time
            return np.zeros(len(texts), dtype=bool)
        try:
            return np.asarray(self.index.embedder.loaded.token_lengths(texts)) > limit
        except (AttributeError, NotImplementedError):
            return None

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The rolling statistics of the last ``window`` queries, the baseline's and the alarms."""
        from vecdoctor.index.baseline import isotropy, mean_cosine

        with self._lock:
            vectors = self._vectors[: self._filled].copy()
            no_match = list(self._no_match)
            overlap = list(self._overlap)
            truncated = list(self._truncated)
            inputs = list(self._inputs_truncated)
            observed, windows = self.observed, self.windows
            alarmed = dict(self.windows_alarmed)
        best = self._best_scores(vectors, observed)
        threshold = answerability.cut(self.baseline)
        traffic = {
            "queries": len(vectors),
            "mean_cosine": mean_cosine(vectors) if len(vectors) >= 2 else None,
            "isotropy": isotropy(vectors) if len(vectors) >= 2 else None,
            "ood_share": answerability.share(best, threshold),
            "ood_alarm_share": answerability.alarm_share(len(vectors)) if len(vectors) else None,
            "best_score_p50": float(np.median(best)) if len(best) else None,
            "no_bm25_match_share": _share(no_match),
            "bm25_dense_agreement": float(np.mean(overlap)) if overlap else None,
            "query_truncation_share": _share(truncated),
            "embeddings_truncation_share": _share(inputs),
        }
        base = self.baseline
        return {
            "window": self.window,
            "observed": observed,
            "windows": windows,
            "windows_alarmed": alarmed,
            "traffic": traffic,
            "baseline": None if base is None else {
                "documents": base.documents,
                "mean_cosine": base.mean_cosine,
                "query_mean_cosine": base.query_mean_cosine,
                "ood_threshold": threshold,
                "bm25_dense_agreement": base.bm25_dense_agreement,
                "truncation_rate": base.truncation_rate,
            },
            "documents_since_baseline": None if base is None else len(self.index) - base.documents,
            "added_documents": self._added_geometry(),
            "alarms": [a.to_dict() for a in self.alarms(traffic)],
        }

    def _best_scores(self, vectors: np.ndarray, observed: int) -> np.ndarray:
        """The window's answerability (:func:`vecdoctor.monitor.answerability.scores`), computed
        once per query observed, however often the statistics are read."""
        cached = self._scored
        if cached is not None and cached[0] == observed and len(cached[1]) == len(vectors):
            return cached[1]
        best = answerability.scores(self.index, vectors) if self.baseline is not None else np.zeros(0)
        self._scored = (observed, best)
        return best

    def _added_geometry(self) -> dict[str, Any] | None:
        """Mean pairwise cosine and centroid shift of the documents appended to the index since
        its baseline (the last 1000 of them), computed once per index size."""
        from vecdoctor.index.baseline import cosine_distance, mean_cosine

        base = self.baseline
        stored = getattr(getattr(self.index, "vectors", None), "vectors", None)
        if base is None or stored is None or len(self.index) - base.documents < 2:
            return None
        key = len(self.index)
        if self._added_key != key:
            added = np.asarray(stored[base.documents:][-1000:], dtype=np.float32)
            centre = added.mean(axis=0)
            shift = cosine_distance(centre, base.centroid)
            self._added = {"documents": key - base.documents, "mean_cosine": mean_cosine(added),
                           "baseline_mean_cosine": base.mean_cosine, "centroid_shift": shift}
            self._added_key = key
        return self._added

    def alarms(self, traffic: dict[str, Any]) -> list[Alarm]:
        """The alarms the rolling statistics ``traffic`` raise (see the module)."""
        if traffic["queries"] < MIN_QUERIES:
            return []
        off_topic = (traffic["ood_share"] is not None
                     and traffic["ood_share"] >= traffic["ood_alarm_share"])
        because = ("explained by the off-topic queries (out_of_distribution): route them "
                   "elsewhere before changing the pipeline")
        rules = (
            ("out_of_distribution", traffic["ood_share"], traffic["ood_alarm_share"],
             "{v:.0%} of queries score below what 90% of the corpus' own sentences reach "
             "(the alarm needs {t:.0%})",
             "these queries are outside your corpus: add documents on their topics, or route "
             "them elsewhere; `vecdoctor monitor INDEX QUERIES` names their words"),
            ("anisotropy", traffic["mean_cosine"], MEAN_COSINE_ALARM,
             "queries' mean pairwise cosine {v:.2f} is above {t}: the query vectors are squeezed "
             "into a cone", because if off_topic else
             "refit the transform on current text (`vecdoctor fit`), or check the model and "
             "pooling served"),
            ("no_lexical_match", traffic["no_bm25_match_share"], NO_MATCH_ALARM,
             "{v:.0%} of queries have no BM25 match", because if off_topic else
             "queries use words the corpus does not: `vecdoctor monitor INDEX QUERIES` lists "
             "them with the tokenizer's pieces; check the language of the traffic"),
            ("truncation", traffic["query_truncation_share"], TRUNCATION_ALARM,
             "{v:.0%} of queries are longer than the model reads",
             "index and search with windows (`--window`) or chunks, or a model that reads more"),
        )
        found = []
        for name, value, threshold, message, action in rules:
            if value is not None and threshold is not None and value >= threshold:
                found.append(Alarm(name, float(value), round(float(threshold), 4),
                                   message.format(v=value, t=threshold), action))
        return found

    def _judge(self) -> None:
        """End of a window: evaluate the alarms once and log each that fires, once."""
        snapshot = self.snapshot()
        alarms = [Alarm(**a) for a in snapshot["alarms"]]
        with self._lock:
            self.windows += 1
            self.last_alarms = alarms
            for alarm in alarms:
                self.windows_alarmed[alarm.name] = self.windows_alarmed.get(alarm.name, 0) + 1
        for alarm in alarms:
            logger.warning("embedding health: %s (%s = %.3f, threshold %s, last %d queries); %s",
                           alarm.message, alarm.name, alarm.value, alarm.threshold, self.window,
                           alarm.action)
