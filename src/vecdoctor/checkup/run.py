"""`vecdoctor checkup`: compare models, diagnose the chosen one, evaluate pipeline variants,
and recommend a pipeline in which every choice is backed by a measured difference on this data.

The steps: the data (labels, or self-supervised queries), the model comparison, the plan of
``--quick`` (:mod:`vecdoctor.checkup.sampling`), the diagnosis, the variants, the decisions
(:mod:`vecdoctor.checkup.rules`), fusion, reranking depth, the recommended pipeline measured end
to end against the simple options (do no harm), and the result
(:mod:`vecdoctor.checkup.writing`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdoctor.checkup.rules import (
    MIN_GAIN,
    Decision,
    Frame,
    ModelChoice,
    decide,
    do_no_harm,
    measured,
    said_where,
    whitening_kept,
)
from vecdoctor.checkup.sampling import (
    QUICK,
    QuickPlan,
    Reach,
    plan_quick,
    quick_sample,
    sample_queries,
)
from vecdoctor.checkup.stages import (
    ENCODING_VARIANTS,
    Encoding,
    confirm_step,
    dense_search_step,
    diagnose_step,
    fit_recommended,
    rerank_budget_step,
    tune_fusion_step,
    tuning_split,
    variant_names,
)
from vecdoctor.checkup.writing import CheckupResult, write_checkup
from vecdoctor.config import Precision, SearchMode
from vecdoctor.data import Dataset, load_dataset
from vecdoctor.errors import InputError
from vecdoctor.evaluate.compare import Comparison
from vecdoctor.evaluate.runs import VariantsReport
from vecdoctor.pipeline import Pipeline

__all__ = ["MIN_GAIN", "CheckupResult", "checkup", "decide", "installed_models", "prepare_dataset",
           "tuning_split", "write_checkup"]

logger = logging.getLogger(__name__)


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


@dataclass
class _Frames:
    """Where the checkup measures: ``main`` decides the retrieval mode, transform, storage and
    reranker; ``sample`` (``--quick`` on a corpus it encodes whole) the variants that encode
    differently. ``frame`` says how fair ``main`` is."""

    main: Dataset
    sample: Dataset | None
    frame: Frame
    plan: QuickPlan | None = None


def _main_frame(full: Dataset, plan: QuickPlan | None, seed: int,
                say: Callable[[str], None]) -> tuple[Dataset, Frame]:
    """Where the retrieval mode, transform, storage and reranker are decided: the whole data
    without ``--quick``; with it, by the plan: the whole corpus with at most
    QUICK["corpus_queries"] queries, or a sample (fair with proxy dense distractors, lexical
    without)."""
    if plan is None:
        return full, Frame.CORPUS
    say(f"quick plan: {plan.words()}")
    if plan.reach is Reach.CORPUS:
        main = sample_queries(full, QUICK["corpus_queries"], seed)
        return dataclasses.replace(main, sample=None), Frame.CORPUS
    sample = quick_sample(full, plan, seed, say=say)
    return sample, Frame.LEXICAL_SAMPLE if plan.reach is Reach.LEXICAL else Frame.SAMPLE


def _sample_frame(full: Dataset, plan: QuickPlan | None, seed: int, cache: Any,
                  say: Callable[[str], None]) -> Dataset | None:
    """With a corpus plan on a corpus larger than the sample: the sample on which the variants
    that encode differently are measured, its dense distractors found with the whole corpus'
    vectors (already in ``cache``)."""
    if plan is None or plan.reach is not Reach.CORPUS or len(full.corpus) <= QUICK["max_docs"]:
        return None
    say("draw the sample for windows, chunks and poolings")
    return quick_sample(full, plan, seed, cache, say)


def _compare(ds: Dataset, models: list[str], named: bool, lexical: bool, prefer: str,
             cache: Any, say: Callable[[str], None], show_progress: bool = False) -> Comparison:
    """The model comparison on ``ds``; ``lexical``: a ``--quick`` sample whose hard distractors
    are BM25's (no model's own, so none is favoured), each installed model within its constant
    cost budget."""
    from vecdoctor.checkup.sampling import model_budget_skips
    from vecdoctor.evaluate.compare import compare_models

    skips = model_budget_skips(models, ds, named) if lexical else None
    return compare_models(ds, models, prefer=prefer, progress=say, cache=cache, skip=skips,
                          show_progress=show_progress)


def _finish(frames: _Frames, report: VariantsReport, sample_report: VariantsReport | None,
            model: str, pipeline: Pipeline, decisions: list[Decision], cache: Any,
            rerank_opts: dict[str, Any], tuning: Dataset | None, seed: int,
            corpus_size: int, say: Callable[[str], None]) -> tuple[Pipeline, Any, Any, Any]:
    """Fit, tune and check the decided pipeline on the frame where all its parts were measured.

    That frame is the sample once the pipeline encodes differently from the plain pass
    (windows, chunks, pooling), else the main frame.
    """
    encodes = bool(pipeline.window or pipeline.chunks or pipeline.pooling)
    where = frames.sample if encodes and frames.sample is not None else frames.main
    where_report = sample_report if where is frames.sample else report
    assert where_report is not None  # the sample has its report whenever it exists
    transform = fit_recommended(frames.main, model, pipeline, cache, whitening_kept(decisions))
    say("tune fusion")
    whole = where is frames.main and frames.frame is Frame.CORPUS
    pipeline, fusion = tune_fusion_step(where, pipeline, seed, decisions,
                                        tuning if whole else None,
                                        Encoding(model, cache, transform))
    pipeline, budget = rerank_budget_step(where, report, pipeline, rerank_opts, model, cache, seed,
                                          decisions)
    pipeline = _do_no_harm(where, where_report, model, pipeline, cache, rerank_opts, decisions, say,
                           sampled=where is frames.sample)
    search = dense_search_step(where, model, pipeline, cache,
                               transform if pipeline.transform else None, corpus_size)
    if search is not None:
        decisions.append(search)
    return pipeline, transform, fusion, budget


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
    cache: Any = None,
    show_progress: bool = False,
) -> CheckupResult:
    """Run the whole checkup in memory; :func:`write_checkup` saves it.

    Fusion is tuned on ``tuning`` (other labelled queries over the same corpus) when given, or
    when ``data`` is a BEIR folder with a ``tune_split`` other than ``split`` (``train``), and on
    one half of the evaluation queries otherwise (always on a quick sample: it does not hold the
    other split's documents).

    With ``reranker`` (``maxsim`` or a cross-encoder folder) ``hybrid+rerank`` is measured too,
    fused with the first stage as ``rerank_fusion`` says and run on ``rerank_backend`` in
    ``rerank_precision``; the pipeline keeps it only where it beats hybrid on this data.
    ``cache`` is a :class:`~vecdoctor.encode.cache.VectorCache` to encode through (one in memory
    by default); decisions never depend on it. ``show_progress``: a bar for each long encoding.
    """
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    full = prepare_dataset(data, split=split, seed=seed)
    if tuning is None and isinstance(data, (str, Path)):
        tuning = tuning_split(data, split, tune_split, full)
    named = bool(models)
    models = list(models) if models else installed_models()
    if not models:
        raise InputError("no model is installed; run `vecdoctor models` to see how to install one")
    cache = cache if cache is not None else VectorCache(max_size=6 * len(full.corpus) + 64)
    comparison, model_sample = None, None
    if quick and len(models) > 1:
        model_sample = quick_sample(full, None, seed)
        comparison = _compare(model_sample, models, named, True, prefer, cache, say, show_progress)
    model = comparison.recommended or models[0] if comparison else models[0]
    plan = plan_quick(full, model, seed) if quick else None
    main, frame = _main_frame(full, plan, seed, say)
    if comparison is None:  # on the data the variants meet: its vectors are theirs
        comparison = _compare(main, models, named, False, prefer, cache, say, show_progress)
        model = comparison.recommended or models[0]
    frames = _Frames(main, _sample_frame(full, plan, seed, cache, say), frame, plan)
    enc = Encoder(model, cache=cache)
    diagnosis = diagnose_step(frames.sample or frames.main, enc, quick, seed, say)
    names = variant_names(variants, reranker, enc, diagnosis)
    rerank_opts = _rerank_options(reranker, rerank_fusion, rerank_backend, rerank_precision)
    report, sample_report = _measure(frames, model, names, cache, rerank_opts, say, show_progress)
    pipeline, decisions = _decide(frames, report, sample_report, model, comparison, diagnosis,
                                  full.self_supervised)
    pipeline, transform, fusion, budget = _finish(frames, report, sample_report, model, pipeline,
                                                  decisions, cache, rerank_opts, tuning, seed,
                                                  len(full.corpus), say)
    _fill_rates(report, comparison, model)
    meta = _meta(frames, full, quick, report, sample_report, models, comparison, started)
    if model_sample is not None:
        meta["model_sample"] = _design(model_sample)
    return CheckupResult(frames.main, pipeline, decisions, comparison, diagnosis, report, meta,
                         transform if pipeline.transform else None, fusion, budget,
                         sample_report, labels=full if full.self_supervised else None)


def _decide(frames: _Frames, report: VariantsReport, sample_report: VariantsReport | None,
            model: str, comparison: Comparison, diagnosis: Any, self_supervised: bool
            ) -> tuple[Pipeline, list[Decision]]:
    """The rules over what was measured, each variant read in its own frame."""
    truncation = getattr(diagnosis, "truncation", None)
    settings, decisions = decide(
        measured(report, frames.frame), model,
        encodings=measured(sample_report, Frame.SAMPLE) if sample_report else None,
        chosen_model=(ModelChoice(model, comparison.reason, comparison.backend,
                                  comparison.precision) if comparison.recommended else None),
        truncated_share=getattr(truncation, "share_truncated", None),
        self_supervised=self_supervised, rerank_how=report.rerank)
    return Pipeline(**settings), decisions


def _rerank_options(reranker: str | None, fusion: str, backend: str, precision: str
                    ) -> dict[str, Any]:
    opts: dict[str, Any] = {"reranker": reranker, "rerank_fusion": fusion,
                            "rerank_backend": backend, "rerank_precision": precision}
    if reranker is not None and str(reranker).lower() != "maxsim":
        from vecdoctor.rerank.rerankers import load_reranker

        # loaded (and converted) once for the variants and the confirmation
        opts["reranker"] = load_reranker(reranker, backend=backend, precision=precision)
    return opts


def _measure(frames: _Frames, model: str, names: list[str], cache: Any,
             rerank_opts: dict[str, Any], say: Callable[[str], None], show_progress: bool = False,
             ) -> tuple[VariantsReport, VariantsReport | None]:
    """The variants on the main frame and, with a sample, the encoding variants on it beside
    the sample's own bm25, dense and hybrid (the do-no-harm check compares there)."""
    from vecdoctor.evaluate.variants import evaluate_variants

    if frames.sample is None:
        return evaluate_variants(frames.main, model, names, progress=say, cache=cache,
                                 show_progress=show_progress, **rerank_opts), None
    on_sample = [n for n in names if n in ENCODING_VARIANTS]
    report = evaluate_variants(frames.main, model, [n for n in names if n not in on_sample],
                               progress=say, cache=cache, show_progress=show_progress,
                               **rerank_opts)
    if not on_sample:
        return report, None
    simple = [n for n in ("bm25", "dense", "hybrid") if n in names or n == "dense"]
    sample = evaluate_variants(frames.sample, model, [*simple, *on_sample], progress=say,
                               cache=cache, show_progress=show_progress, **rerank_opts)
    return report, sample


def _do_no_harm(ds: Dataset, report: VariantsReport, model: str, pipeline: Pipeline, cache: Any,
                rerank_opts: dict[str, Any], decisions: list[Decision],
                say: Callable[[str], None], sampled: bool = False) -> Pipeline:
    """Measure the recommended pipeline end to end (when it is not a plain mode) and hold it
    against the simple options measured on the same queries: one that beats it through the gate
    replaces it; one that scores higher without proof is said first."""
    from vecdoctor.checkup.rules import MODES

    if pipeline != _plain(pipeline):
        say("confirm recommended pipeline")
        decisions += said_where([confirm_step(ds, model, pipeline, report, cache, rerank_opts,
                                              whitening_kept(decisions))], sampled)
    scores = measured(report)
    rec = scores.get("recommended") or scores.get(str(pipeline.mode))
    if rec is None:
        return pipeline
    harm = do_no_harm(rec, {n: s for n, s in scores.items() if n in MODES})
    if harm is None:
        return pipeline
    said_where([harm], sampled)
    decisions.insert(0, harm)
    if harm.recommended:
        return pipeline
    for d in decisions:
        if d.recommended and d.topic not in {"model", "do no harm"}:
            d.recommended = False
            d.evidence += f"; withdrawn: the simpler {harm.choice} beats the whole pipeline"
    decisions.append(Decision("retrieval", harm.choice, True, harm.evidence))
    return Pipeline(model=pipeline.model, backend=pipeline.backend,
                    model_precision=pipeline.model_precision, mode=SearchMode.parse(harm.choice))


def _plain(p: Pipeline) -> Pipeline:
    return dataclasses.replace(p, pooling=None, window=None, chunks=None, transform=None, rerank=None,
                               storage=Precision.FLOAT32)


def _fill_rates(report: VariantsReport, comparison: Comparison, model: str) -> None:
    """Variants encoded like the model comparison get its rate (the same encoder settings)."""
    from vecdoctor.evaluate.variants import VARIANTS

    row = next((m for m in comparison.rows if m.model == model and not m.converted), None)
    for r in report.results:
        spec = VARIANTS.get(r.name)
        plain = spec is not None and spec.pooling is None and spec.window is None and not spec.chunks
        if r.docs_per_second is None and r.name != "bm25":
            r.docs_per_second = row.docs_per_second if row and plain else None


def _meta(frames: _Frames, full: Dataset, quick: bool, report: VariantsReport,
          sample_report: VariantsReport | None, models: list[str], comparison: Comparison,
          started: float) -> dict[str, Any]:
    """What the report says about the run: the data, the plan, the sample, the models, the time."""
    ds = frames.main
    meta: dict[str, Any] = {
        "dataset": ds.name,
        "split": ds.split,
        "self_supervised": ds.self_supervised,
        "documents": len(ds.corpus),
        "queries": len(ds.qrels),
        "quick": quick,
        "frame": str(frames.frame),
        **({"sampled_from_documents": len(full.corpus), "sampled_from_queries": len(full.qrels)}
           if quick else {}),
        "models": models,
        "models_skipped": [r.model for r in comparison.rows if r.skipped],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if frames.plan is not None:
        meta["quick_plan"] = {**frames.plan.to_dict(), "words": frames.plan.words()}
    meta.update(_estimates(frames, report, sample_report))
    return meta


def _estimates(frames: _Frames, report: VariantsReport, sample_report: VariantsReport | None
               ) -> dict[str, Any]:
    """Each variant's nDCG@10 for the whole corpus: measured there (the main frame of a corpus
    plan), the corpus' dense plus the variant's gain over dense on the sample (the sample's
    encoding variants), or estimated from the sample's design
    (:func:`~vecdoctor.evaluate.metrics.estimate_full_ndcg`); a lexical sample cannot estimate
    anything dense, and says so."""
    from vecdoctor.evaluate.metrics import estimate_full_ndcg

    out: dict[str, Any] = {}
    if frames.frame is Frame.CORPUS:
        if frames.plan is None:
            return {}
        est = {r.name: {"value": round(r.ndcg, 4), "how": "measured on the whole corpus"}
               for r in report.results}
        dense = report.get("dense")
        if sample_report is not None and dense is not None and sample_report.get("dense"):
            base = sample_report.get("dense")
            assert base is not None
            for r in sample_report.results:
                if r.name not in est:
                    est[r.name] = {"value": round(dense.ndcg + r.ndcg - base.ndcg, 4),
                                   "how": "the whole corpus' dense plus its gain on the sample"}
            out["sample_design"] = _design(frames.sample) if frames.sample else {}
        out["full_corpus_estimate"] = est
        return out
    design = frames.main.sample
    if design is None:
        return {}
    lexical = frames.frame is Frame.LEXICAL_SAMPLE
    out["sample_design"] = _design(frames.main)
    out["full_corpus_estimate"] = {
        r.name: ({"value": None, "how": "cannot estimate: the sample holds no dense distractors"}
                 if lexical and r.name != "bm25" else
                 {"value": round(estimate_full_ndcg(r.run, frames.main.qrels, design), 4),
                  "how": "estimated from the sample's design"})
        for r in report.results}
    return out


def _design(ds: Dataset) -> dict[str, Any]:
    """How a quick sample was drawn, as the report states it."""
    d = ds.sample
    if d is None:
        return {}
    return {"full_documents": d.full_documents, "documents": len(ds.corpus), "fixed": len(d.fixed),
            "neighbours": d.neighbours, "neighbours_from": d.neighbours_from, "random": d.random,
            "weight": round(d.weight, 2)}
