"""The checkup's steps after the variants: fusion tuning, reranking depth, the recommended
pipeline measured end to end, its fitted transform, how its dense search runs, the diagnosis."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdoctor.checkup.rules import Decision, fmt
from vecdoctor.config import Precision, SearchMode
from vecdoctor.data import Dataset
from vecdoctor.diagnose._common import Verdict
from vecdoctor.errors import VecdoctorError
from vecdoctor.evaluate.runs import VariantsReport
from vecdoctor.pipeline import Pipeline

logger = logging.getLogger(__name__)

ENCODING_VARIANTS = frozenset({"dense+window", "dense+chunks", "dense+chunks-first", "dense+cls",
                               "dense+max", "dense+subword", "dense+attention", "hybrid+chunks",
                               "hybrid+chunks-first"})
"""Variants that encode the corpus differently from the model's plain pass (more windows,
another pooling): ``--quick`` measures them on its sample, beside the sample's plain dense."""


def variant_names(variants: Sequence[str] | None, reranker: Any, enc: Any,
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
        names = [n for n in names if n not in ENCODING_VARIANTS]
    return names


def diagnose_step(ds: Dataset, enc: Any, quick: bool, seed: int,
                  say: Callable[[str], None]) -> Any:
    """The chosen model's diagnosis (``--quick``'s sizes with ``quick``); ``None`` when it
    failed."""
    from vecdoctor.checkup.sampling import QUICK
    from vecdoctor.diagnose.run import diagnose

    say(f"diagnose {enc.model_id}")
    try:
        if quick:
            return diagnose(ds, enc, sample=QUICK["diagnose_sample"], seed=seed,
                            layer_sample=QUICK["layer_sample"],
                            attention_sample=QUICK["attention_sample"])
        return diagnose(ds, enc, sample=2000, seed=seed)
    except VecdoctorError as exc:
        logger.warning("diagnosis of %s was incomplete: %s", enc.model_id, exc)
        return None


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
class Encoding:
    """What the recommended pipeline's dense side is encoded and transformed with."""

    model: str
    cache: Any
    transform: Any


def fusion_runs(ds: Dataset, pipeline: Pipeline, encoding: Encoding,
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


def tune_fusion_step(ds: Dataset, pipeline: Pipeline, seed: int, decisions: list[Decision],
                     tuning: Dataset | None, encoding: Encoding) -> tuple[Pipeline, Any]:
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
    bm25, dense, other = fusion_runs(ds, pipeline, encoding, tuning)
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


def rerank_budget_step(ds: Dataset, report: VariantsReport, pipeline: Pipeline,
                       rerank_opts: dict[str, Any], model: str, cache: Any, seed: int,
                       decisions: list[Decision]) -> tuple[Pipeline, Any]:
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


def confirm_step(ds: Dataset, model: str, pipeline: Pipeline, report: VariantsReport, cache: Any,
                 rerank_opts: dict[str, Any], top_components: bool = False) -> Decision:
    """Measure the recommended pipeline end to end on ``ds``; its row joins ``report``."""
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
    from vecdoctor.checkup.rules import measured

    return Decision("confirmation", "recommended pipeline", True,
                    fmt(measured(confirm), "recommended", str(pipeline.mode)))


def fit_recommended(ds: Dataset, model: str, pipeline: Pipeline, cache: Any,
                    top_components: bool = False) -> Any:
    """The recommended transform fitted on ``ds``' corpus (whitening-k with
    ``top_components``), or ``None``."""
    if not pipeline.transform:
        return None
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.variants import fit_transform

    tenc = Encoder(model, pooling=pipeline.pooling, window=pipeline.window, cache=cache)
    vectors = tenc.encode_documents([d.content for d in ds.corpus])
    return fit_transform("whitening-k" if top_components else str(pipeline.transform), vectors,
                         tenc)


def dense_search_step(ds: Dataset, model: str, pipeline: Pipeline, cache: Any, transform: Any,
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
    from vecdoctor.index.building import probe_queries

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
    if full_size is not None and full_size > len(ds.corpus):
        notes.append(f"measured on the quick sample: the full corpus holds {full_size} documents")
    notes.append("`vecdoctor index` measures again when it builds (`--ann auto`)")
    return Decision("dense search", label, True, "; ".join(notes))
