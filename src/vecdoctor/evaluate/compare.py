"""Compare models on the user's data: quality, speed, memory and isotropy in one table, and a
recommendation by the user's priority that cites the numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vecdoctor.config import SearchMode, _Choice
from vecdoctor.data import Dataset
from vecdoctor.errors import InputError, VecdoctorError
from vecdoctor.evaluate.metrics import MAX_P, MIN_GAIN, estimate_full_ndcg_per_query, evaluate_run

logger = logging.getLogger(__name__)


class Prefer(_Choice):
    """What the user cares about most when choosing a model."""

    QUALITY = "quality"
    """Highest nDCG@10."""
    SPEED = "speed"
    """Most documents per second among models within 2 points of nDCG@10 of the best, with
    each PyTorch model also measured on the fast CPU backends (OpenVINO, ONNX Runtime)."""
    MEMORY = "memory"
    """Fewest bytes per vector among models within 2 points of nDCG@10 of the best."""


QUALITY_MARGIN = 0.02
BACKEND_KEEP = 0.995  # a fast backend must keep this share of the model's fp32 nDCG@10
FAST_VARIANTS = (("openvino", "int8"), ("onnx", "int8"), ("openvino", "bf16"))
PROBE_TEXTS = 8  # documents timed per model to estimate its encoding time under a time budget


@dataclass
class ModelRow:
    model: str
    dimension: int | None = None
    backend: str | None = None
    precision: str = "fp32"
    converted: bool = False  # measured on a backend vecdoctor converted the model to
    docs_per_second: float | None = None
    query_ms_p50: float | None = None
    ndcg_at_10: float | None = None
    recall_at_10: float | None = None
    isotropy: float | None = None
    mean_cosine: float | None = None
    bytes_per_vector: int | None = None
    error: str | None = None
    skipped: str | None = None  # left out by the time budget; docs_per_second is the probe's
    per_query: dict[str, float] | None = field(default=None, repr=False)  # nDCG@10 per query
    # on a quick sample: the sample's own nDCG@10; ndcg_at_10 and per_query are then the whole
    # corpus' estimates (see evaluate.metrics.estimate_full_ndcg_per_query)
    ndcg_on_sample: float | None = None

    @property
    def measured(self) -> bool:
        return self.error is None and self.skipped is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_query")
        d["ndcg@10"] = d.pop("ndcg_at_10")
        d["recall@10"] = d.pop("recall_at_10")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}

    @property
    def label(self) -> str:
        """The model, with its backend and precision when those are not the model's own."""
        return f"{self.model} ({self.backend} {self.precision})" if self.converted else self.model


@dataclass
class Comparison:
    rows: list[ModelRow]
    prefer: Prefer
    recommended: str | None
    reason: str
    self_supervised: bool = False
    backend: str | None = None  # set when a converted backend is recommended (prefer speed)
    precision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefer": str(self.prefer),
            "recommended": self.recommended,
            "recommended_backend": self.backend,
            "recommended_precision": self.precision,
            "reason": self.reason,
            "self_supervised": self.self_supervised,
            "models": [r.to_dict() for r in self.rows],
        }


def _measure(
    model: str, dataset: Dataset, k: int, latency_queries: int, cache: Any = None,
    encoder: Any = None, show_progress: bool = False, **options: Any,
) -> ModelRow:
    from vecdoctor.diagnose.isotropy import isotropy_score, mean_pairwise_cosine
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.runs import measure_queries
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    texts = [d.content for d in dataset.corpus]
    if options.get("precision") == "int8":
        options["calibration_texts"] = texts  # calibrated on the user's corpus
    enc = encoder if encoder is not None else Encoder(model, **options)
    enc.cache = cache
    start = time.perf_counter()
    docs = enc.encode_documents(texts, show_progress=show_progress)
    rate = len(texts) / max(time.perf_counter() - start, 1e-9)
    # the model's nDCG comes from the Searcher over an index of these vectors, as the `dense`
    # variant's does: one retrieval path, so the two numbers agree
    index = Index.from_vectors(dataset.corpus, docs, enc)
    searcher = Searcher(index, cache_size=0)
    enc.cache = None  # queries (and their latency) are always computed for real
    qids = sorted(dataset.qrels)
    run, latencies, _ = measure_queries(
        searcher, qids, [dataset.queries[q] for q in qids], k, SearchMode.DENSE, None,
        skip_self=not dataset.keep_self_hits,
    )
    evaluation = evaluate_run(dataset.qrels, run, ("ndcg@10", "recall@10"))
    metrics = evaluation.metrics
    per_query = evaluation.per_query["ndcg@10"]
    if dataset.sample is not None:  # a quick sample: models are compared on the whole corpus' estimate
        per_query = estimate_full_ndcg_per_query(run, dataset.qrels, dataset.sample)
    latencies = latencies[: max(1, latency_queries)]
    sample = docs[np.random.default_rng(0).permutation(len(docs))[:2000]]
    return ModelRow(
        model=model,
        dimension=enc.dimension,
        backend=enc.backend_name,
        # converted variants carry vecdoctor's precision; other models their weights' on disk
        precision=str(enc.precision) if "backend" in options else enc.resolved.weights,
        converted="backend" in options,
        docs_per_second=rate,
        query_ms_p50=float(np.percentile(latencies, 50)),
        ndcg_at_10=float(np.mean(list(per_query.values()))) if per_query else 0.0,
        recall_at_10=metrics["recall@10"],
        isotropy=isotropy_score(sample),
        mean_cosine=mean_pairwise_cosine(sample),
        bytes_per_vector=4 * enc.dimension,
        per_query=per_query,
        ndcg_on_sample=metrics["ndcg@10"] if dataset.sample is not None else None,
    )


def _keeps_quality(row: ModelRow, rows: Sequence[ModelRow]) -> bool:
    """A converted variant counts only if it keeps BACKEND_KEEP of its own model's fp32 nDCG@10."""
    if not row.converted:
        return True
    own = next((r for r in rows if r.model == row.model and not r.converted and r.measured), None)
    return own is not None and (row.ndcg_at_10 or 0) >= BACKEND_KEEP * (own.ndcg_at_10 or 0)


def recommend(rows: Sequence[ModelRow], prefer: Prefer | str) -> tuple[ModelRow | None, str]:
    """Pick a model (row) by priority; the reason quotes the measured numbers."""
    prefer = Prefer.parse(prefer)
    ok = [r for r in rows if r.measured and r.ndcg_at_10 is not None]
    if not ok:
        return None, "no model could be measured"
    plain = [r for r in ok if not r.converted]
    best_q = max(plain or ok, key=lambda r: r.ndcg_at_10 or 0)
    floor = (best_q.ndcg_at_10 or 0) - QUALITY_MARGIN
    close = [r for r in ok if (r.ndcg_at_10 or 0) >= floor and _keeps_quality(r, ok)]
    if prefer is Prefer.QUALITY or len(ok) == 1:
        return _best_through_gate(best_q, plain or ok)
    if prefer is Prefer.SPEED:
        pick = max(close, key=lambda r: r.docs_per_second or 0)
        kept = ""
        if pick.converted:
            own = next(r for r in plain if r.model == pick.model)
            assert pick.ndcg_at_10 is not None and own.ndcg_at_10  # rows in `ok` have nDCG
            kept = (f"; {pick.ndcg_at_10 / own.ndcg_at_10:.1%} of its fp32 nDCG@10 "
                    f"({own.ndcg_at_10:.4f} at {own.docs_per_second:.1f} docs/s; rule: keep >= {BACKEND_KEEP:.1%})")
        return pick, (
            f"{pick.label} encodes {pick.docs_per_second:.1f} docs/s (query p50 {pick.query_ms_p50:.1f} ms) "
            f"with nDCG@10 {pick.ndcg_at_10:.4f}, within {QUALITY_MARGIN} of the best "
            f"({best_q.model} {best_q.ndcg_at_10:.4f}, {best_q.docs_per_second:.1f} docs/s){kept}"
        )
    pick = min((r for r in close if not r.converted),
               key=lambda r: (r.bytes_per_vector or 0, -(r.ndcg_at_10 or 0)))
    return pick, (
        f"{pick.model} needs {pick.bytes_per_vector} bytes per float32 vector with nDCG@10 "
        f"{pick.ndcg_at_10:.4f}, within {QUALITY_MARGIN} of the best ({best_q.model} {best_q.ndcg_at_10:.4f}, "
        f"{best_q.bytes_per_vector} bytes); int8/binary storage divides this by 4/32"
    )


def beats(a: ModelRow, b: ModelRow) -> tuple[bool, float]:
    """Whether ``a`` wins over ``b`` through the gate every fix passes: at least MIN_GAIN
    nDCG@10 with p < MAX_P (paired randomization test on the per-query values), and the p."""
    from vecdoctor.evaluate.metrics import randomization_test

    gain = (a.ndcg_at_10 or 0) - (b.ndcg_at_10 or 0)
    if a.per_query is None or b.per_query is None:
        return gain >= MIN_GAIN, float("nan")  # no per-query values: the size rule alone
    p = randomization_test(a.per_query, b.per_query)
    return gain >= MIN_GAIN and p < MAX_P, p


def _second_priority(row: ModelRow) -> tuple[float, float, int]:
    """How ties are broken: the cheaper model to run per token (a constant from its size and
    engine, :func:`vecdoctor.models.encoding_cost`, never a timing that a busy machine would
    change), then smaller vectors, then the default model."""
    return (_cost(row.model), float(row.bytes_per_vector or 0),
            0 if row.model == REFERENCE_MODEL else 1)


def _cost(model: str) -> float:
    from vecdoctor.models import encoding_cost

    try:
        return encoding_cost(model)
    except VecdoctorError:
        return float("inf")


def _best_through_gate(best: ModelRow, rows: Sequence[ModelRow]) -> tuple[ModelRow, str]:
    """The best model by nDCG@10, unless others are within MIN_GAIN of it (a real tie, which
    no test can tell apart): then the cheapest of those to run. A model more than MIN_GAIN
    worse is never chosen for speed, proven worse or not (``--prefer speed`` trades quality)."""
    others = sorted((r for r in rows if r is not best), key=lambda r: -(r.ndcg_at_10 or 0))
    tied = [(r, beats(best, r)[1]) for r in others
            if (best.ndcg_at_10 or 0) - (r.ndcg_at_10 or 0) < MIN_GAIN]
    if not tied:
        runner = ""
        if others:
            wins, p = beats(best, others[0])
            runner = (f"; next best {others[0].model} {others[0].ndcg_at_10:.4f}, "
                      + ("beaten through the gate" if wins else
                         f"{MIN_GAIN} or more behind, not proven (p={p:.2g}): more queries "
                         "would settle it"))
        return best, f"{best.model} has the highest nDCG@10 ({best.ndcg_at_10:.4f}{runner})"
    pick = min([best, *(r for r, _ in tied)], key=_second_priority)
    pairs = ", ".join(f"{r.model} {r.ndcg_at_10:.4f}" for r, _ in tied)
    if pick is best:
        return best, (f"tie: {best.model} has the highest nDCG@10 ({best.ndcg_at_10:.4f}) with "
                      f"{pairs} within {MIN_GAIN}; it is also the cheapest of them to run "
                      f"(cost per token {_cost(best.model):g} x minilm's), so it stays")
    return pick, (f"tie: {best.model} {best.ndcg_at_10:.4f} and {pairs} are within {MIN_GAIN} "
                  f"nDCG@10; {pick.model} is chosen as the cheapest to run (cost per token "
                  f"{_cost(pick.model):g} x minilm's against {_cost(best.model):g}, from the "
                  "model's size), then smaller and simpler")


def convertible(model: str) -> bool:
    """Whether vecdoctor can convert ``model`` to the fast backends (a PyTorch model)."""
    from vecdoctor.models import resolve

    try:
        return resolve(model).backend == "torch"
    except VecdoctorError:
        return False


def compare_models(
    dataset: Dataset,
    models: Sequence[str],
    prefer: Prefer | str = Prefer.QUALITY,
    k: int = 100,
    latency_queries: int = 50,
    progress: Callable[[str], None] | None = None,
    cache: Any = None,
    backends: bool = True,
    time_budget: float | None = None,
    skip: Mapping[str, str] | None = None,
    show_progress: bool = False,
) -> Comparison:
    """Measure every model on ``dataset`` (queries and qrels needed; see self-supervised).

    With ``prefer="speed"`` (and ``backends``), each PyTorch model within the quality margin
    is also measured on OpenVINO int8/bf16 and ONNX Runtime int8 (converted and calibrated on
    this corpus); a variant is eligible only if it keeps 99.5% of its fp32 nDCG@10.

    With ``time_budget`` (seconds), each model first encodes a few documents; a model whose
    estimated time to encode the corpus exceeds the budget is not measured but listed with
    ``skipped`` saying why (its probe rate as ``docs_per_second``). The fastest model is always
    measured, so the comparison never comes back empty, and so is the default model
    (``minilm``), the reference of every comparison. Converted variants are not probed.
    ``skip`` names models to list as skipped, with the reason, instead of measuring them (the
    checkup's ``--quick`` plan, from each model's constant cost).
    """
    prefer = Prefer.parse(prefer)
    if not models:
        raise InputError("no models given to compare")
    if not dataset.has_labels:
        raise InputError("model comparison needs queries and qrels (or self-supervised queries)")
    rows: list[ModelRow] = []
    probes = _probe(models, dataset, time_budget, progress) if time_budget is not None else {}
    for model in models:
        if skip and model in skip:
            rows.append(ModelRow(model=model, skipped=skip[model]))
            logger.warning("skipping %s: %s", model, skip[model])
            continue
        probe = probes.get(model)
        if probe is not None and probe.row is not None:  # skipped by the budget
            rows.append(probe.row)
            continue
        if progress:
            progress(f"model {model}")
        rows.append(_measure_or_report(model, dataset, k, latency_queries, cache,
                                       encoder=probe.encoder if probe else None,
                                       show_progress=show_progress))
        if probe is not None:
            probe.encoder = None  # free the model before the next one loads
    if prefer is Prefer.SPEED and backends:
        # the fast backends of every PyTorch model that is close enough in quality to matter
        best = max((r.ndcg_at_10 or 0 for r in rows if r.measured), default=0.0)
        for row in list(rows):
            if row.measured and (row.ndcg_at_10 or 0) >= best - QUALITY_MARGIN and convertible(row.model):
                for backend, precision in FAST_VARIANTS:
                    if progress:
                        progress(f"model {row.model} on {backend} {precision}")
                    rows.append(_measure_or_report(row.model, dataset, k, latency_queries, cache,
                                                   backend=backend, precision=precision))
    pick, reason = recommend(rows, prefer)
    return Comparison(
        rows=rows, prefer=prefer, recommended=pick.model if pick else None, reason=reason,
        self_supervised=dataset.self_supervised,
        backend=pick.backend if pick is not None and pick.converted else None,
        precision=pick.precision if pick is not None and pick.converted else None,
    )


@dataclass
class _Probe:
    encoder: Any
    seconds: float  # estimated time to encode the corpus
    rate: float
    row: ModelRow | None = None

    @property
    def skipped(self) -> bool:
        return self.row is not None


REFERENCE_MODEL = "minilm"
"""The default model: always measured, whatever the time budget."""


def _probe(
    models: Sequence[str], dataset: Dataset, budget: float, progress: Callable[[str], None] | None
) -> dict[str, _Probe]:
    """Time :data:`PROBE_TEXTS` documents per model; mark those that would overrun ``budget``."""
    from vecdoctor.encode.encoder import Encoder

    if budget <= 0:
        raise InputError(f"time_budget must be > 0 seconds, got {budget!r}")
    texts = [d.content for d in dataset.corpus]
    picked = np.random.default_rng(0).permutation(len(texts))[:PROBE_TEXTS]
    sample = [texts[i] for i in picked]
    probes: dict[str, _Probe] = {}
    for model in dict.fromkeys(models):
        if progress:
            progress(f"probe {model}")
        try:
            enc = Encoder(model)
            enc.encode_documents(sample[:1])  # warm-up: first-call set-up is not per document
            start = time.perf_counter()
            enc.encode_documents(sample)
            rate = len(sample) / max(time.perf_counter() - start, 1e-9)
        except VecdoctorError:
            continue  # measured (and reported) as usual
        probes[model] = _Probe(enc, len(texts) / rate, rate)
    over = {m for m, p in probes.items() if p.seconds > budget}
    if probes and over == set(probes):
        over.discard(min(probes, key=lambda m: probes[m].seconds))
    # the default model is the reference every other is judged against: a probe slowed by a
    # busy machine must not drop it
    over.discard(REFERENCE_MODEL)
    for model in over:
        p = probes[model]
        weights = p.encoder.resolved.weights  # every probe holds the encoder it timed
        p.encoder = None
        p.row = ModelRow(
            model=model, precision=weights, docs_per_second=p.rate,
            skipped=(f"estimated {p.seconds:.0f} s to encode the {len(texts)} documents at "
                     f"{p.rate:.1f} docs/s, over the {budget:.0f} s budget; run without --quick "
                     "(or name it with -m) to measure it"),
        )
        logger.warning("skipping %s: %s", model, p.row.skipped)
    return probes


def _measure_or_report(model: str, dataset: Dataset, k: int, latency_queries: int, cache: Any,
                       encoder: Any = None, show_progress: bool = False,
                       **options: Any) -> ModelRow:
    try:
        return _measure(model, dataset, k, latency_queries, cache, encoder=encoder,
                        show_progress=show_progress, **options)
    except VecdoctorError as exc:  # not installed, no fast extra, unsupported: reported, not fatal
        logger.warning("skipping %s %s: %s", model, " ".join(options.values()), exc)
        return ModelRow(model=model, backend=options.get("backend"),
                        precision=options.get("precision", "fp32"), converted=bool(options),
                        error=str(exc))
