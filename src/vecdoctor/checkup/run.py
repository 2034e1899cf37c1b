"""`vecdoctor checkup`: compare models, diagnose the chosen one, evaluate pipeline variants,
and recommend a pipeline in which every choice is backed by a measured difference on this data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdoctor.config import Precision, SearchMode
from vecdoctor.data import Dataset, load_dataset
from vecdoctor.diagnose._common import Verdict
from vecdoctor.errors import InputError, VecdoctorError
from vecdoctor.evaluate.metrics import MAX_P, MIN_GAIN
from vecdoctor.pipeline import Pipeline

logger = logging.getLogger(__name__)

PRECISION_KEEP = 0.99  # quantized storage must keep this share of float32 nDCG@10

QUICK = {"max_queries": 100, "max_docs": 500, "diagnose_sample": 400, "layer_sample": 128,
         "attention_sample": 64, "model_seconds": 40, "neighbour_seconds": 300,
         "neighbour_tokens": 128}
"""Sample sizes of ``--quick``; ``model_seconds``: installed models (when none are named) whose
estimated time to encode the sample is longer are listed as skipped instead of measured;
``neighbour_seconds``: when the chosen model's estimated time to encode the whole corpus is at
most this, it encodes it once so that the sample keeps each query's best dense matches
(reading only the first ``neighbour_tokens`` tokens of each text when whole texts would take
longer; BM25 matches only when even that would). Several models are compared on a sample of
the same queries with BM25 matches only, which is no model's own hard case."""


@dataclass
class Decision:
    """One choice in the recommended pipeline and the numbers behind it."""

    topic: str
    choice: str
    recommended: bool
    evidence: str
    gain: float | None = None  # measured nDCG@10 difference against what it replaces

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "choice": self.choice, "recommended": self.recommended,
                "evidence": self.evidence,
                "gain": None if self.gain is None else round(self.gain, 4)}


@dataclass
class CheckupResult:
    dataset: Dataset
    pipeline: Pipeline
    decisions: list[Decision]
    comparison: Any
    diagnosis: Any
    variants: Any
    meta: dict[str, Any] = field(default_factory=dict)
    transform: Any = None  # the fitted transform of the recommended pipeline, if any
    fusion_tuning: Any = None  # vecdoctor.checkup.fusion.FusionTuning, for a hybrid pipeline
    rerank_budget: Any = None  # vecdoctor.checkup.rerank_budget.RerankBudget, with a reranker

    def to_dict(self) -> dict[str, Any]:
        from vecdoctor.persist import header

        return {
            **header("CheckupReport", 1),
            "meta": self.meta,
            "pipeline": self.pipeline.to_dict(),
            "decisions": [d.to_dict() for d in self.decisions],
            "model_comparison": self.comparison.to_dict() if self.comparison else None,
            "variants": self.variants.to_dict() if self.variants else None,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "fusion_tuning": self.fusion_tuning.to_dict() if self.fusion_tuning else None,
            "rerank_budget": self.rerank_budget.to_dict() if self.rerank_budget else None,
        }


def installed_models() -> list[str]:
    from vecdoctor.models import REGISTRY

    return [name for name, spec in REGISTRY.items() if spec.installed()]


def prepare_dataset(data: str | Path | Dataset, split: str = "test", seed: int = 0,
                    n_self_supervised: int = 300) -> Dataset:
    """Load labelled data, or make self-supervised queries when the corpus has no labels."""
    from vecdoctor.evaluate.metrics import self_supervised

    ds = data if isinstance(data, Dataset) else load_dataset(data, split=split)
    if ds.has_labels:
        return ds
    made = self_supervised(ds.corpus, n_queries=n_self_supervised, seed=seed)
    made.name = ds.name
    return made


def _gain(variants: Any, name: str) -> tuple[float, float | None] | None:
    r = variants.get(name)
    if r is None or r.delta_ndcg is None:
        return None
    return r.delta_ndcg, r.p_value


def _helps(g: tuple[float, float | None] | None) -> bool:
    return g is not None and g[0] >= MIN_GAIN and (g[1] is None or g[1] < MAX_P)


def _choose_mode(modes: dict[str, Any]) -> tuple[str, str]:
    """Hybrid (the searcher's default) unless BM25 or dense alone is measurably better: by
    MIN_GAIN nDCG@10 with p < MAX_P when per-query values are known. Without hybrid, the best."""
    from vecdoctor.evaluate.metrics import randomization_test

    listing = ", ".join(f"{n} {r.ndcg:.4f}" for n, r in modes.items())
    hybrid = modes.get("hybrid")
    single = max((r for n, r in modes.items() if n != "hybrid"), key=lambda r: r.ndcg, default=None)
    if hybrid is None or single is None:
        best = max(modes.values(), key=lambda r: r.ndcg)
        return best.name, f"highest nDCG@10 of {listing}"
    delta = single.ndcg - hybrid.ndcg
    a, b = (r.evaluation.per_query.get("ndcg@10") for r in (single, hybrid))
    p = randomization_test(a, b) if a and b and delta > 0 else None
    if _helps((delta, p)):
        return single.name, (f"{single.name} beats hybrid (Δ {delta:+.4f}, "
                             f"p={'n/a' if p is None else f'{p:.3f}'}); {listing}")
    if delta <= 0:
        return "hybrid", f"highest nDCG@10 of {listing}"
    return "hybrid", (f"{single.name} is not measurably better than hybrid (Δ {delta:+.4f}, "
                      f"p={'n/a' if p is None else f'{p:.3f}'}; needs >= {MIN_GAIN} with "
                      f"p < {MAX_P}); {listing}")


def _fmt(name: str, variants: Any) -> str:
    r = variants.get(name)
    base = variants.get(r.baseline) if r and r.baseline else None
    if r is None:
        return "not measured"
    text = f"{name} nDCG@10 {r.ndcg:.4f}"
    if base is not None and r.delta_ndcg is not None:
        p = "n/a" if r.p_value is None else f"{r.p_value:.3f}"
        text += f" vs {base.name} {base.ndcg:.4f} (Δ {r.delta_ndcg:+.4f}, p={p})"
    return text


TRANSFORMS = (("dense+whiten", "whitening"), ("dense+whiten-k", "whitening-k"),
              ("dense+abtt", "abtt"))


def _choose_transform(variants: Any, uses_dense: bool, why_not: str,
                      decisions: list[Decision]) -> str | None:
    """The best of the transforms that pass the gate (whitening in full, whitening-k, all-but-
    the-top), or none; a decision for each measured one. ``whitening-k`` is whitening kept to
    its top components (the pipeline's kind is whitening, the fitted folder holds k)."""
    measured = [(name, value, _gain(variants, name)) for name, value in TRANSFORMS]
    helping = [(n, v) for n, v, g in measured if g is not None and _helps(g)]
    best = max(helping, key=lambda nv: variants.get(nv[0]).ndcg)[1] if helping and uses_dense \
        else None
    for name, value, g in measured:
        if g is not None:
            decisions.append(Decision("transform", value, value == best,
                                      _fmt(name, variants) + (why_not if _helps(g) else ""), g[0]))
    return best


LONG_TEXT = (("dense+window", "windows 256:128:max", {"window": "256:128:max"}),
             ("dense+chunks-first", "chunks max+first", {"chunks": "max+first"}),
             ("dense+chunks", "chunks max", {"chunks": "max"}))
"""The long-text strategies measured against truncation (plain dense): the variant, the
decision's name for it and the pipeline settings it stands for, cheapest and closest to
truncation first. Windows keep one vector per document; the two chunk scorings share one
index of a vector per window, and MaxP + first comes before MaxP because it keeps the opening
that truncation ranks by in the score, so it moves the ranking least."""

CHUNK_SCORINGS = ("dense+chunks-first", "dense+chunks")


def _beats(variants: Any, name: str, other: str) -> tuple[bool, str]:
    """Whether ``name`` is measurably better than ``other`` (the gate, paired on the queries
    both were scored on), and the evidence in words."""
    from vecdoctor.evaluate.metrics import randomization_test

    a, b = variants.get(name), variants.get(other)
    delta = a.ndcg - b.ndcg
    pa, pb = (r.evaluation.per_query.get("ndcg@10") for r in (a, b))
    p = randomization_test(pa, pb) if pa and pb else None
    words = f"{name} vs {other}: Δ {delta:+.4f}, p={'n/a' if p is None else f'{p:.3f}'}"
    return _helps((delta, p)), words


def _long_text_choice(variants: Any, measured: list[Any]) -> tuple[Any, str]:
    """The strategy to keep and why. The two chunk scorings are two looks at one decision (a
    chunk index or not), so the index passes when either scoring passes the gate at half its
    p-value (Bonferroni); which scoring it keeps is then a second, paired decision, with MaxP +
    first kept unless MaxP is measurably better. Chunks (a vector per window) replace windows (a
    vector per document) that pass only when they beat them through the gate, as a slower model
    replaces a faster one."""
    chunks = [m for m in measured if m[0] in CHUNK_SCORINGS]
    alpha = MAX_P / max(len(chunks), 1)
    passing = [m for m in chunks if m[3][0] >= MIN_GAIN and (m[3][1] is None or m[3][1] < alpha)]
    cheaper = next((m for m in measured if m[0] == "dense+window" and _helps(m[3])), None)
    if not passing:
        return cheaper, ""
    scoring, why = _chunk_scoring(variants, chunks, passing, alpha)
    if cheaper is not None:
        better, words = _beats(variants, scoring[0], cheaper[0])
        if not better:
            return cheaper, f"; {words}: chunks are not measurably better, the cheaper windows stay"
    return scoring, why


def _chunk_scoring(variants: Any, chunks: list[Any], passing: list[Any],
                   alpha: float) -> tuple[Any, str]:
    """MaxP + first unless MaxP beats it (with only one measured, that one), and why."""
    if len(chunks) < 2:
        return chunks[0], ""
    plain, first = (next(m for m in chunks if m[0] == n) for n in ("dense+chunks", "dense+chunks-first"))
    better, words = _beats(variants, plain[0], first[0])
    best = min(passing, key=lambda m: m[3][1] if m[3][1] is not None else 0.0)
    why = (f"; a chunk index helps: {best[0]} passes the gate at p < {alpha:g} (two scorings of "
           "one index)" + (f"; MaxP beats MaxP + first ({words})" if better else
                           f"; MaxP is not measurably better than MaxP + first ({words}), which "
                           "keeps the document's opening in the score"))
    return (plain if better else first), why


def _choose_long_text(variants: Any, pipeline: dict[str, Any], uses_dense: bool, why_not: str,
                      decisions: list[Decision], truncation: Any = None) -> None:
    """Truncation, windows pooled into one vector, or chunk-level retrieval (see
    ``_long_text_choice``), one decision for each strategy measured. When the diagnosis found
    truncated texts and no strategy helps, the decision to keep truncation says so, so that the
    report does not leave the finding unanswered."""
    measured = [(name, label, settings, g) for name, label, settings in LONG_TEXT
                if (g := _gain(variants, name)) is not None]
    best, why = _long_text_choice(variants, measured) if uses_dense else (None, "")
    for name, label, settings, g in measured:
        chosen = best is not None and name == best[0]
        if chosen:
            pipeline.update(settings)
        decisions.append(Decision("long texts", label, chosen,
                                  _fmt(name, variants) + (why if chosen else "")
                                  + (why_not if _helps(g) else ""), g[0]))
    share = getattr(truncation, "share_truncated", None)
    if measured and best is None and share and uses_dense:
        two = sum(m[0] in CHUNK_SCORINGS for m in measured) == 2
        tried = "; ".join(f"{label}: {_fmt(name, variants)}" for name, label, _, _ in measured)
        decisions.append(Decision(
            "long texts", "truncation", True,
            f"{share:.0%} of texts are longer than the model reads, but no long-text strategy "
            f"is measurably better than truncating them (gate: >= {MIN_GAIN} nDCG@10 with "
            f"p < {MAX_P}" + (f"; p < {MAX_P / 2:g} for either of two chunk scorings" if two else "")
            + f"): {tried}"))


def decide(variants: Any, model: str, comparison: Any = None,
           truncation: Any = None) -> tuple[Pipeline, list[Decision]]:
    """Turn measured variant results into a pipeline and the reasons for each choice;
    ``truncation`` (the diagnosis' check) lets the long-text decision answer it."""
    decisions: list[Decision] = []
    if comparison is not None and comparison.recommended:
        choice = f"{model} on {comparison.backend} {comparison.precision}" if comparison.backend else model
        decisions.append(Decision("model", choice, True, comparison.reason))
    pipeline: dict[str, Any] = {"model": model, "backend": None, "model_precision": None,
                                "pooling": None, "window": None, "chunks": None, "transform": None,
                                "mode": "dense", "fusion": "rrf", "rrf_k": 60, "rerank": None,
                                "storage": "float32"}
    if comparison is not None and comparison.backend:
        pipeline["backend"], pipeline["model_precision"] = comparison.backend, comparison.precision
    modes = {m: variants.get(m) for m in ("bm25", "dense", "hybrid") if variants.get(m)}
    if modes:
        pipeline["mode"], evidence = _choose_mode(modes)
        others = [r.ndcg for n, r in modes.items() if n != pipeline["mode"]]
        gain = modes[pipeline["mode"]].ndcg - max(others) if others else None
        decisions.append(Decision("retrieval", pipeline["mode"], True, evidence, gain))
    uses_dense = pipeline["mode"] != "bm25"
    why_not = "; not applied: the recommended retrieval is bm25 alone" if not uses_dense else ""
    pipeline["transform"] = _choose_transform(variants, uses_dense, why_not, decisions)
    _choose_long_text(variants, pipeline, uses_dense, why_not, decisions, truncation)
    pool_variants = [n for n in ("dense+cls", "dense+max", "dense+subword", "dense+attention") if variants.get(n)]
    helping = [n for n in pool_variants if _helps(_gain(variants, n))]
    best_pool = max(helping, key=lambda v: variants.get(v).ndcg) if helping and uses_dense else None
    for n in pool_variants:
        chosen = n == best_pool
        if chosen:
            pipeline["pooling"] = n.split("+", 1)[1]
        decisions.append(Decision("pooling", n.split("+", 1)[1], chosen, _fmt(n, variants),
                                  (_gain(variants, n) or (None,))[0]))
    dense = variants.get("dense")
    for prec in ("binary", "int8"):
        r = variants.get(prec)
        if r is None or dense is None:
            continue
        share = r.ndcg / dense.ndcg if dense.ndcg > 0 else 0.0
        ok = uses_dense and share >= PRECISION_KEEP and pipeline["storage"] == "float32"
        if ok:
            pipeline["storage"] = prec
        decisions.append(Decision(
            "precision", prec, ok,
            f"{prec} with rescoring keeps {share:.1%} of float32 nDCG@10 ({r.ndcg:.4f} vs {dense.ndcg:.4f}) "
            f"at {r.bytes_per_doc} instead of {dense.bytes_per_doc} bytes per document "
            f"(rule: keep >= {PRECISION_KEEP:.0%})" + (why_not if share >= PRECISION_KEEP else ""),
            r.ndcg - dense.ndcg,
        ))
    g = _gain(variants, "hybrid+rerank")
    if g is not None:
        ok = _helps(g) and pipeline["mode"] == "hybrid"
        if ok:
            how = variants.rerank or {}
            pipeline["rerank"] = how.get("reranker")
            for key in ("fusion", "backend", "precision"):
                if key in how:
                    pipeline[f"rerank_{key}"] = how[key]
        decisions.append(Decision("rerank", "reranker on the hybrid top candidates", ok,
                                  _fmt("hybrid+rerank", variants), g[0]))
    if pipeline["transform"] == "whitening-k":
        pipeline["transform"] = "whitening"
    return Pipeline(**pipeline), decisions


def whitening_kept(decisions: Sequence[Decision]) -> bool:
    """Whether the recommended transform is whitening-k (whitening kept to its top components)."""
    return any(d.topic == "transform" and d.choice == "whitening-k" and d.recommended
               for d in decisions)


def checkup(
    data: str | Path | Dataset,
    models: Sequence[str] | None = None,
    *,
    prefer: str = "quality",
    quick: bool = False,
    split: str = "test",
    variants: Sequence[str] | None = None,
    reranker: str | None = None,
    rerank_fusion: str = "rrf",
    rerank_backend: str = "torch",
    rerank_precision: str = "fp32",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    tuning: Dataset | None = None,
    tune_split: str | None = "train",
) -> CheckupResult:
    """Run the whole checkup in memory; :func:`write_checkup` saves it.

    Fusion is tuned on ``tuning`` (other labelled queries over the same corpus) when given, or
    when ``data`` is a BEIR folder with a ``tune_split`` other than ``split`` (``train``), and on
    one half of the evaluation queries otherwise (always with ``quick``: the sample does not
    hold the other split's documents).

    With ``reranker`` (``maxsim`` or a cross-encoder folder) ``hybrid+rerank`` is measured too,
    fused with the first stage as ``rerank_fusion`` says and run on ``rerank_backend`` in
    ``rerank_precision``; the pipeline keeps it only where it beats hybrid on this data.
    """
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.variants import evaluate_variants

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    full = prepare_dataset(data, split=split, seed=seed)
    if tuning is None and isinstance(data, (str, Path)):
        tuning = tuning_split(data, split, tune_split, full)
    named = bool(models)
    models = list(models) if models else installed_models()
    if not models:
        raise InputError("no model is installed; run `vecdoctor models` to see how to install one")
    # several models on --quick are compared on a sample whose hard distractors are BM25's: a
    # sample holding one model's dense neighbours is harder for that model than for the others
    compared_on = (_quick_sample(full, None if len(models) > 1 else models[0], seed, say)
                   if quick else full)
    cache = VectorCache(max_size=4 * len(compared_on.corpus) + 64)
    budget = QUICK["model_seconds"] if quick and not named else None  # named models always run
    comparison = compare_models(compared_on, models, prefer=prefer, progress=say, cache=cache,
                                time_budget=budget)
    model = comparison.recommended or models[0]
    ds = compared_on
    if quick and len(models) > 1 and compared_on.sample is not None:
        # the same queries; the chosen model's dense neighbours join the BM25 ones
        ds = _quick_sample(full, model, seed, say)
    enc = Encoder(model, cache=cache)
    diagnosis = _diagnose(ds, enc, quick, seed, say)
    names = _variant_names(variants, reranker, enc, diagnosis)
    rerank_opts: dict[str, Any] = {"reranker": reranker, "rerank_fusion": rerank_fusion,
                                   "rerank_backend": rerank_backend, "rerank_precision": rerank_precision}
    if reranker is not None and str(reranker).lower() != "maxsim":
        from vecdoctor.rerank.rerankers import load_reranker

        # loaded (and converted) once for the variants and the confirmation
        rerank_opts["reranker"] = load_reranker(reranker, backend=rerank_backend,
                                                precision=rerank_precision)
    report = evaluate_variants(ds, model, names, progress=say, cache=cache, **rerank_opts)
    pipeline, decisions = decide(report, model, comparison,
                                 diagnosis.truncation if diagnosis is not None else None)
    transform = _fit_recommended(ds, model, pipeline, cache, whitening_kept(decisions))
    say("tune fusion")
    fusion = _tune_fusion(ds, pipeline, seed, decisions, tuning, _Encoding(model, cache, transform))
    pipeline, budget = _rerank_budget(ds, report, fusion[0], rerank_opts, model, cache, seed,
                                      decisions)
    if pipeline != _baseline_pipeline(pipeline):
        say("confirm recommended pipeline")
        decisions.append(_confirm(ds, model, pipeline, report, cache, rerank_opts,
                                  whitening_kept(decisions)))
    dense_search = _dense_search(ds, model, pipeline, cache, transform,
                                 len(full.corpus) if quick else None)
    if dense_search is not None:
        decisions.append(dense_search)
    _fill_rates(report, comparison, model)
    meta = _meta(ds, full, quick, report, models, comparison, started)
    if compared_on is not ds:
        meta["model_sample"] = _design(compared_on)
    return CheckupResult(ds, pipeline, decisions, comparison, diagnosis, report, meta, transform,
                         fusion[1], budget)


def _fill_rates(report: Any, comparison: Any, model: str) -> None:
    """Variants encoded like the model comparison get its rate (the same encoder settings)."""
    row = next((m for m in comparison.rows if m.model == model and not m.converted), None)
    for r in report.results:
        if r.docs_per_second is None and r.name not in {"bm25"}:
            r.docs_per_second = row.docs_per_second if row and _uses_default_encoder(r.name) else None


def _meta(ds: Dataset, full: Dataset, quick: bool, report: Any, models: list[str],
          comparison: Any, started: float) -> dict[str, Any]:
    """What the report says about the run: the data, the sample, the models, the time."""
    return {
        "dataset": ds.name,
        "split": ds.split,
        "self_supervised": ds.self_supervised,
        "documents": len(ds.corpus),
        "queries": len(ds.qrels),
        "quick": quick,
        # a quick sample's numbers are the sample's; full_corpus_estimate carries them over
        **({"sampled_from_documents": len(full.corpus), "sampled_from_queries": len(full.qrels)}
           if quick else {}),
        **_sample_estimates(ds, report),
        "models": models,
        "models_skipped": [r.model for r in comparison.rows if r.skipped],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _quick_sample(full: Dataset, model: str | None, seed: int,
                  say: Callable[[str], None]) -> Dataset:
    """The ``--quick`` sample: its queries' judged documents, their best BM25 and (with a
    ``model``, within ``QUICK["neighbour_seconds"]``) dense matches in the whole corpus, random
    others."""
    from vecdoctor.evaluate.metrics import HARD_SHARE, sample_dataset

    encoder = None
    if model is not None and len(full.corpus) > QUICK["max_docs"]:
        encoder = _neighbour_encoder(full, model, say)
    return sample_dataset(full, QUICK["max_queries"], QUICK["max_docs"], seed,
                          hard_share=HARD_SHARE, encoder=encoder)


def _neighbour_encoder(full: Dataset, model: str, say: Callable[[str], None]) -> Any:
    """The encoder that finds the sample's dense neighbours in the whole corpus: ``model``
    reading whole texts when that fits ``QUICK["neighbour_seconds"]``, else reading only their
    first ``QUICK["neighbour_tokens"]`` tokens (near neighbours need approximate ranks only),
    else none. Its own encoder, without the checkup's cache: the model comparison must time
    encoding, not cache hits."""
    from vecdoctor.encode.encoder import Encoder

    texts = [d.content for d in full.corpus[:18]]
    estimates: list[str] = []
    encoder = Encoder(model)
    while True:
        estimate = _corpus_seconds(encoder, texts, len(full.corpus))
        reads = f"first {encoder.max_length} tokens"
        if estimate <= QUICK["neighbour_seconds"]:
            say(f"dense neighbours: encoding the {len(full.corpus)} documents with {model} "
                f"({reads} of each, about {estimate:.0f} s)")
            return encoder
        estimates.append(f"about {estimate:.0f} s reading the {reads}")
        if encoder.max_length <= QUICK["neighbour_tokens"]:
            say(f"dense neighbours skipped: {model} would take {' or '.join(estimates)} of each "
                f"of the {len(full.corpus)} documents, over the {QUICK['neighbour_seconds']} s "
                "budget")
            return None
        encoder = Encoder(model, max_length=QUICK["neighbour_tokens"])


def _corpus_seconds(encoder: Any, texts: list[str], n_docs: int) -> float:
    """Seconds ``encoder`` would take for ``n_docs`` documents, timed on ``texts`` (the first
    two only load the model)."""
    encoder.encode_documents(texts[:2])
    started = time.perf_counter()
    encoder.encode_documents(texts[2:])
    return n_docs * (time.perf_counter() - started) / max(len(texts) - 2, 1)


def _sample_estimates(ds: Dataset, report: Any) -> dict[str, Any]:
    """For a quick sample: how it was drawn and each variant's nDCG@10 carried over to the whole
    corpus (:func:`~vecdoctor.evaluate.metrics.estimate_full_ndcg`)."""
    from vecdoctor.evaluate.metrics import estimate_full_ndcg

    design = ds.sample
    if design is None:
        return {}
    return {
        "sample_design": _design(ds),
        "full_corpus_estimate": {r.name: round(estimate_full_ndcg(r.run, ds.qrels, design), 4)
                                 for r in report.results},
    }


def _design(ds: Dataset) -> dict[str, Any]:
    """How a quick sample was drawn, as the report states it."""
    d = ds.sample
    if d is None:
        return {}
    return {"full_documents": d.full_documents, "documents": len(ds.corpus), "fixed": len(d.fixed),
            "neighbours": d.neighbours, "neighbours_from": d.neighbours_from, "random": d.random,
            "weight": round(d.weight, 2)}


def _rerank_budget(ds: Dataset, report: Any, pipeline: Pipeline, rerank_opts: dict[str, Any],
                   model: str, cache: Any, seed: int, decisions: list[Decision]
                   ) -> tuple[Pipeline, Any]:
    """With a reranker: nDCG@10 and milliseconds per reranking depth over the hybrid candidates
    (:mod:`vecdoctor.checkup.rerank_budget`); the depth goes into the pipeline when it reranks."""
    from vecdoctor.checkup.rerank_budget import rerank_budget

    hybrid, reranker = report.get("hybrid"), rerank_opts.get("reranker")
    if reranker is None or hybrid is None:
        return pipeline, None
    if isinstance(reranker, str):
        from vecdoctor.encode.encoder import Encoder
        from vecdoctor.rerank.rerankers import load_reranker

        reranker = load_reranker(reranker, Encoder(model, cache=cache))
    budget = rerank_budget(reranker, hybrid.run, ds.queries, ds.qrels,
                           {d.id: d for d in ds.corpus}, str(pipeline.rerank_fusion),
                           pipeline.rrf_k, seed)
    applies = pipeline.rerank is not None
    decisions.append(Decision("rerank depth", str(budget.depth), applies, budget.reason + (
        "" if applies else "; not applied: the reranker is not recommended on this data")))
    return (pipeline.replace(rerank_depth=budget.depth) if applies else pipeline), budget


def tuning_split(path: str | Path, split: str, tune_split: str | None, ds: Dataset) -> Dataset | None:
    """The queries of ``tune_split`` over ``ds``'s corpus when ``path`` is a BEIR folder that has
    that split (and it is not the evaluated one); ``None`` otherwise."""
    from vecdoctor.data import has_split, load_split

    if not tune_split or tune_split == split or not ds.has_labels or not has_split(path, tune_split):
        return None
    tuning = load_split(path, tune_split, ds.corpus)
    tuning.keep_self_hits = ds.keep_self_hits
    return tuning


@dataclass
class _Encoding:
    """What the recommended pipeline's dense side is encoded and transformed with."""

    model: str
    cache: Any
    transform: Any


def _fusion_runs(ds: Dataset, pipeline: Pipeline, encoding: _Encoding,
                 tuning: Dataset | None) -> tuple[Any, Any, Any]:
    """BM25 and dense top-100 runs of the recommended pipeline's own dense side (pooling,
    windows or chunks, transform, storage) for the evaluation queries and, with ``tuning``,
    for its queries too (then ``(bm25, dense, qrels)``, else ``None``)."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.runs import measure_queries
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    enc = Encoder(encoding.model, pooling=pipeline.pooling, window=pipeline.window,
                  cache=encoding.cache)
    index = Index.build(ds.corpus, encoder=enc, transform=encoding.transform,
                        precision=pipeline.storage, chunks=pipeline.chunks, baseline=False)
    enc.cache = None
    searcher = Searcher(index, cache_size=0, candidates=100)

    def runs(d: Dataset) -> list[Any]:
        qids = sorted(d.qrels)
        texts = [d.queries[q] for q in qids]
        return [measure_queries(searcher, qids, texts, 100, mode, None,
                                skip_self=not d.keep_self_hits)[0]
                for mode in (SearchMode.BM25, SearchMode.DENSE)]

    bm25, dense = runs(ds)
    return bm25, dense, ((*runs(tuning), tuning.qrels) if tuning is not None else None)


def _tune_fusion(ds: Dataset, pipeline: Pipeline, seed: int, decisions: list[Decision],
                 tuning: Dataset | None, encoding: _Encoding) -> tuple[Pipeline, Any]:
    """For a hybrid pipeline: RRF k and the weighted fusion chosen on the tuning split's queries
    (or one half of the evaluation queries) and confirmed on the evaluation queries it was not
    chosen on (:mod:`vecdoctor.checkup.fusion`), for the dense side the pipeline fuses; a
    decision either way."""
    from vecdoctor.checkup.fusion import tune_fusion

    if pipeline.mode is not SearchMode.HYBRID:
        return pipeline, None
    note = ""
    if tuning is not None and ds.sample is not None:
        note = (f"the {tuning.split} split's queries are not used on a quick sample (their judged "
                "documents are not in it); ")
        tuning = None
    bm25, dense, other = _fusion_runs(ds, pipeline, encoding, tuning)
    name = (tuning.split if tuning is not None else None) or "tuning"
    result = tune_fusion(bm25, dense, ds.qrels, seed=seed, tuning=other, tuning_split=name)
    chosen = result.chosen or {"fusion": "rrf", "param": 60}
    label = (f"RRF k={chosen['param']:g}" if chosen["fusion"] == "rrf"
             else f"weighted, dense weight {chosen['param']:g}")
    gain = (result.chosen_confirm - result.default_confirm
            if result.chosen_confirm is not None and result.default_confirm is not None else None)
    result.reason = note + result.reason
    decisions.append(Decision("fusion", label, result.kept, result.reason, gain))
    if result.kept:
        pipeline = pipeline.replace(**result.settings)
    return pipeline, result


def _diagnose(ds: Dataset, enc: Any, quick: bool, seed: int, say: Callable[[str], None]) -> Any:
    """The chosen model's diagnosis (quick sizes with ``quick``); ``None`` when it failed."""
    from vecdoctor.diagnose.run import diagnose

    say(f"diagnose {enc.model_id}")
    try:
        sizes: dict[str, Any] = {}
        if quick:
            sizes = {k: QUICK[k] for k in ("layer_sample", "attention_sample")}
        sample = QUICK["diagnose_sample"] if quick else 2000
        return diagnose(ds, enc, sample=sample, seed=seed, **sizes)
    except VecdoctorError as exc:
        logger.warning("diagnosis of %s was incomplete: %s", enc.model_id, exc)
        return None


def _variant_names(variants: Sequence[str] | None, reranker: Any, enc: Any,
                   diagnosis: Any = None) -> list[str]:
    """The variants to measure: the defaults, chunk-level retrieval where the diagnosis found
    texts longer than the model reads (elsewhere a chunk index equals the plain one), the
    reranker when one is given; no token-level variants for pooled-only models."""
    from vecdoctor.evaluate.variants import DEFAULT_VARIANTS

    names = list(variants) if variants else list(DEFAULT_VARIANTS)
    truncation = getattr(diagnosis, "truncation", None)
    if not variants and truncation is not None and truncation.verdict is not Verdict.OK:
        names += [n for n in ("dense+chunks", "dense+chunks-first") if n not in names]
    if reranker is not None and "hybrid+rerank" not in names:
        names.append("hybrid+rerank")
    if enc.tokenizer is None:  # pooled-only models: no windows, no pooling choice
        names = [n for n in names if n not in {"dense+window"} and not n.startswith("dense+") or
                 n in {"dense+whiten", "dense+whiten-k", "dense+abtt"}]
    return names


def _confirm(ds: Dataset, model: str, pipeline: Pipeline, report: Any, cache: Any,
             rerank_opts: dict[str, Any], top_components: bool = False) -> Decision:
    """Measure the recommended pipeline end to end; its row joins the report."""
    from vecdoctor.evaluate.variants import VariantSpec, evaluate_variants

    spec = VariantSpec(
        "the recommended pipeline, measured end to end",
        mode=pipeline.mode,
        pooling=str(pipeline.pooling) if pipeline.pooling else None,
        window=pipeline.window,
        chunks=str(pipeline.chunks) if pipeline.chunks else None,
        transform=("whitening-k" if top_components else str(pipeline.transform))
        if pipeline.transform else None,
        precision=pipeline.storage,
        rerank=bool(pipeline.rerank),
        baseline=str(pipeline.mode),
        fusion=str(pipeline.fusion),
        rrf_k=pipeline.rrf_k,
        fusion_weights=pipeline.fusion_weights,
    )
    confirm = evaluate_variants(ds, model, [str(pipeline.mode)], extra={"recommended": spec},
                                cache=cache, **rerank_opts)
    rec = confirm.get("recommended")
    if rec is None:  # pragma: no cover - evaluated above, under that name
        raise RuntimeError("the recommended pipeline was not measured")
    report.results.append(rec)
    return Decision("confirmation", "recommended pipeline", True, _fmt("recommended", confirm))


def _fit_recommended(ds: Dataset, model: str, pipeline: Pipeline, cache: Any,
                     top_components: bool = False) -> Any:
    """The recommended transform fitted on the whole corpus (whitening-k with
    ``top_components``), or ``None``."""
    if not pipeline.transform:
        return None
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.variants import fit_transform

    tenc = Encoder(model, pooling=pipeline.pooling, window=pipeline.window, cache=cache)
    vectors = tenc.encode_documents([d.content for d in ds.corpus])
    return fit_transform("whitening-k" if top_components else str(pipeline.transform), vectors,
                         tenc)


def _dense_search(ds: Dataset, model: str, pipeline: Pipeline, cache: Any, transform: Any,
                  full_size: int | None) -> Decision | None:
    """How the recommended pipeline's dense search runs at this corpus size on this machine:
    what ``vecdoctor index --ann auto`` decides (exact search within the latency budget, else
    HNSW with its recall against exact search measured), with the measurements."""
    if pipeline.mode is SearchMode.BM25:
        return None
    if pipeline.storage is not Precision.FLOAT32:
        return Decision("dense search", f"exact over {pipeline.storage} codes", True,
                        f"{pipeline.storage} storage searches its codes exactly, then rescores")
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.ann import LATENCY_BUDGET_MS, choose_ann
    from vecdoctor.index.store import probe_queries

    enc = Encoder(model, pooling=pipeline.pooling, window=pipeline.window, cache=cache)
    vectors = enc.encode_documents([d.content for d in ds.corpus])
    queries = enc.encode_queries(probe_queries(ds.corpus))
    if transform is not None:
        vectors = transform.transform(vectors, fingerprint=enc.fingerprint)
        queries = transform.transform(queries, fingerprint=enc.fingerprint)
    _, _, choice = choose_ann(vectors, queries, LATENCY_BUDGET_MS)
    label = "exact" if choice.chosen == "exact" else f"HNSW (ef_search {choice.ef_search})"
    notes = [choice.reason]
    if pipeline.chunks:
        notes.append("one vector per document; a chunk index holds one per chunk")
    if full_size is not None:
        notes.append(f"measured on the quick sample: the full corpus holds {full_size} documents")
    notes.append("`vecdoctor index` measures again when it builds (`--ann auto`)")
    return Decision("dense search", label, True, "; ".join(notes))


def pipeline_file(result: CheckupResult, transform_dir: Path | None = None) -> Pipeline:
    """The recommended pipeline with its evidence and data: what pipeline.json holds."""
    import dataclasses

    return dataclasses.replace(
        result.pipeline,
        transform_dir=transform_dir,
        evidence={d.topic + ":" + d.choice: d.evidence for d in result.decisions if d.recommended},
        measured_on={k: result.meta[k] for k in ("dataset", "documents", "queries", "self_supervised", "quick")},
    )


def write_checkup(result: CheckupResult, folder: str | Path, force: bool = False) -> Path:
    """Write report.html, report.json, pipeline.json, runs/ and transform/ atomically; an
    existing folder is replaced only when it holds a checkup report (or with ``force``)."""
    import json

    from vecdoctor.evaluate.metrics import write_trec_run
    from vecdoctor.io import atomic_dir
    from vecdoctor.persist import CHECKUP, check_output
    from vecdoctor.report.checkup import render_checkup

    folder = check_output(folder, CHECKUP, force)
    html = render_checkup(result)
    payload = json.dumps(result.to_dict(), indent=2, default=_jsonable) + "\n"
    with atomic_dir(folder) as tmp:
        (tmp / "runs").mkdir()
        for r in result.variants.results:
            write_trec_run(r.run, tmp / "runs" / f"{r.name}.trec", tag=r.name)
        transform_dir = None
        if result.transform is not None:
            transform_dir = tmp / "transform"
            result.transform.save(transform_dir)
        pipeline_file(result, transform_dir).save(tmp / "pipeline.json")
        (tmp / "report.json").write_text(payload, encoding="utf-8")
        (tmp / "report.html").write_text(html, encoding="utf-8")
    return folder


def _jsonable(obj: Any) -> Any:
    from vecdoctor.diagnose._common import to_jsonable

    return to_jsonable(obj)


def _uses_default_encoder(name: str) -> bool:
    from vecdoctor.evaluate.variants import VARIANTS

    spec = VARIANTS.get(name)
    return spec is not None and spec.pooling is None and spec.window is None and not spec.chunks


def _baseline_pipeline(p: Pipeline) -> Pipeline:
    import dataclasses

    return dataclasses.replace(p, pooling=None, window=None, chunks=None, transform=None, rerank=None,
                               storage=Precision.FLOAT32)
