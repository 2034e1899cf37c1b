"""Evaluate pipeline variants (BM25, dense, fixes, hybrid, rerank, quantized) on one dataset.

Every variant runs through the real :class:`~vecdoctor.index.store.Index` and
:class:`~vecdoctor.search.Searcher`, so the numbers are those of the pipeline a user would ship.
Transforms are fitted on corpus vectors only, never on queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Precision, SearchMode, Window
from vecdoctor.data import Dataset
from vecdoctor.errors import InputError
from vecdoctor.evaluate import (
    DEFAULT_METRICS,
    Evaluation,
    evaluate_run,
    randomization_test,
    ranked_scores,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantSpec:
    """One pipeline variant: retrieval mode and the fixes applied."""

    description: str
    mode: SearchMode = SearchMode.DENSE
    pooling: str | None = None
    window: Window | None = None
    transform: str | None = None  # "whitening" | "abtt"
    precision: Precision = Precision.FLOAT32
    rerank: bool = False
    baseline: str | None = "dense"  # the variant this one is compared against


VARIANTS: dict[str, VariantSpec] = {
    "bm25": VariantSpec("BM25 (bm25s, English stemming and stopwords)", SearchMode.BM25, baseline=None),
    "dense": VariantSpec("dense, the model's own pooling, float32, exact search", baseline="bm25"),
    "dense+whiten": VariantSpec("dense + whitening fitted on the corpus", transform="whitening"),
    "dense+abtt": VariantSpec("dense + all-but-the-top fitted on the corpus", transform="abtt"),
    "dense+window": VariantSpec(
        "dense + token windows 256:128 (max) for long texts", window=Window(256, 128, "max")
    ),
    "dense+cls": VariantSpec("dense with CLS pooling", pooling="cls"),
    "dense+max": VariantSpec("dense with max pooling", pooling="max"),
    "dense+subword": VariantSpec("dense with subword-aware pooling", pooling="subword"),
    "dense+attention": VariantSpec("dense with attention-weighted pooling", pooling="attention"),
    "hybrid": VariantSpec("BM25 + dense, reciprocal rank fusion (k=60)", SearchMode.HYBRID),
    "hybrid+whiten": VariantSpec(
        "BM25 + whitened dense, reciprocal rank fusion", SearchMode.HYBRID, transform="whitening",
        baseline="hybrid",
    ),
    "hybrid+rerank": VariantSpec(
        "hybrid, then the reranker on the fused top candidates", SearchMode.HYBRID, rerank=True,
        baseline="hybrid",
    ),
    "int8": VariantSpec("dense on int8 vectors, float32 rescoring of 4x candidates", precision=Precision.INT8),
    "binary": VariantSpec("dense on binary vectors, float32 rescoring of 4x candidates", precision=Precision.BINARY),
}

DEFAULT_VARIANTS = ("bm25", "dense", "dense+whiten", "dense+abtt", "dense+window", "hybrid", "int8", "binary")


def parse_variants(names: str | Sequence[str]) -> list[str]:
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    items = [n for n in items if n]
    if not items:
        raise InputError(f"no variants given; valid variants: {', '.join(VARIANTS)}")
    bad = [n for n in items if n not in VARIANTS]
    if bad:
        raise InputError(f"unknown variant(s) {', '.join(map(repr, bad))}; valid variants: {', '.join(VARIANTS)}")
    return list(dict.fromkeys(items))


@dataclass
class VariantResult:
    name: str
    description: str
    evaluation: Evaluation
    docs_per_second: float | None
    query_ms_p50: float
    query_ms_p95: float
    bytes_per_doc: int
    run: dict[str, dict[str, float]] = field(repr=False)
    baseline: str | None = None
    delta_ndcg: float | None = None
    p_value: float | None = None

    @property
    def ndcg(self) -> float:
        return self.evaluation.metrics.get("ndcg@10", float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "description": self.description,
            **{k: round(v, 4) for k, v in self.evaluation.metrics.items()},
            "docs_per_second": None if self.docs_per_second is None else round(self.docs_per_second, 1),
            "query_ms_p50": round(self.query_ms_p50, 2),
            "query_ms_p95": round(self.query_ms_p95, 2),
            "bytes_per_doc": self.bytes_per_doc,
            "baseline": self.baseline,
            "delta_ndcg@10": None if self.delta_ndcg is None else round(self.delta_ndcg, 4),
            "p_value": None if self.p_value is None else round(self.p_value, 4),
        }


@dataclass
class VariantsReport:
    dataset: str
    model: str
    num_docs: int
    num_queries: int
    self_supervised: bool
    results: list[VariantResult]
    metrics: tuple[str, ...] = DEFAULT_METRICS

    def get(self, name: str) -> VariantResult | None:
        return next((r for r in self.results if r.name == name), None)

    def table(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "num_docs": self.num_docs,
            "num_queries": self.num_queries,
            "self_supervised": self.self_supervised,
            "variants": self.table(),
        }


def _fit_transform(kind: str, vectors: np.ndarray, encoder: Any) -> Any:
    from vecdoctor.transform import AllButTheTop, Whitening

    fitted = Whitening() if kind == "whitening" else AllButTheTop()
    return fitted.fit(vectors, fingerprint=encoder.fingerprint, model_id=encoder.model_id)


def evaluate_variants(
    dataset: Dataset,
    model: str = "minilm",
    variants: Sequence[str] = DEFAULT_VARIANTS,
    *,
    reranker: str | None = None,
    rerank_depth: int = 30,
    k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    runs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    encoder_options: dict[str, Any] | None = None,
    extra: dict[str, VariantSpec] | None = None,
    cache: Any = None,
) -> VariantsReport:
    """Evaluate each variant on ``dataset`` (which must have queries and qrels).

    ``extra`` adds ad-hoc variants (e.g. a recommended pipeline) by name; ``cache`` is a
    :class:`~vecdoctor.encode.cache.VectorCache` shared with other steps so documents are
    encoded once per pipeline setting.
    """
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index
    from vecdoctor.search import Searcher

    specs = {**VARIANTS, **(extra or {})}
    names = parse_variants([v for v in variants if v not in (extra or {})]) + list(extra or {})
    if not dataset.has_labels:
        raise InputError("evaluation needs queries and qrels; use self-supervised queries for unlabelled corpora")
    if any(specs[n].rerank for n in names) and reranker is None:
        reranker = "maxsim"
    texts = [d.content for d in dataset.corpus]
    qids = sorted(dataset.qrels)
    queries = [dataset.queries[q] for q in qids]
    encoders: dict[tuple[Any, ...], tuple[Any, VectorCache, float | None]] = {}
    vectors: dict[tuple[Any, ...], np.ndarray] = {}
    transforms: dict[tuple[Any, ...], Any] = {}
    results: list[VariantResult] = []
    say = progress or (lambda _msg: None)

    def encoder_for(spec: VariantSpec) -> tuple[Any, VectorCache, float | None]:
        key = (spec.pooling, spec.window)
        if key not in encoders:
            opts = dict(encoder_options or {})
            enc = Encoder(model, pooling=spec.pooling or opts.pop("pooling", None), window=spec.window, **opts)
            shared = cache if cache is not None else VectorCache(max_size=len(texts) + 16)
            enc.cache = shared
            hits = shared.stats.hits
            start = time.perf_counter()
            vectors[key] = enc.encode_documents(texts)
            # a rate is only reported when the documents were really encoded here
            rate = None if shared.stats.hits > hits else len(texts) / max(time.perf_counter() - start, 1e-9)
            encoders[key] = (enc, shared, rate)
        return encoders[key]

    for name in names:
        spec = specs[name]
        say(f"variant {name}")
        enc, doc_cache, rate = encoder_for(spec)
        transform = None
        if spec.transform:
            tkey = (spec.pooling, spec.window, spec.transform)
            if tkey not in transforms:
                transforms[tkey] = _fit_transform(spec.transform, vectors[(spec.pooling, spec.window)], enc)
            transform = transforms[tkey]
        enc.cache = doc_cache  # documents come from the cache filled above
        index = Index.build(dataset.corpus, encoder=enc, transform=transform, precision=spec.precision)
        enc.cache = None  # queries are encoded for real, so latencies are honest
        searcher = Searcher(index, cache_size=0, candidates=rerank_depth if spec.rerank else max(k, 100))
        rerank = reranker if spec.rerank else None
        searcher.search(queries[0], k=k, mode=spec.mode, rerank=rerank)  # warm-up
        run: dict[str, dict[str, float]] = {}
        latencies = []
        for qid, query in zip(qids, queries, strict=True):
            start = time.perf_counter()
            hits = searcher.search(query, k=k, mode=spec.mode, rerank=rerank)
            latencies.append((time.perf_counter() - start) * 1000)
            run[qid] = ranked_scores([h.id for h in hits], [h.score for h in hits])
        evaluation = evaluate_run(dataset.qrels, run, metrics)
        dim = transform.output_dim if transform is not None else enc.dimension
        per_doc = {Precision.FLOAT32: 4 * dim, Precision.INT8: dim, Precision.BINARY: (dim + 7) // 8}
        result = VariantResult(
            name=name,
            description=spec.description + (f" ({reranker})" if spec.rerank else ""),
            evaluation=evaluation,
            docs_per_second=None if spec.mode is SearchMode.BM25 else rate,
            query_ms_p50=float(np.percentile(latencies, 50)),
            query_ms_p95=float(np.percentile(latencies, 95)),
            bytes_per_doc=0 if spec.mode is SearchMode.BM25 else per_doc[spec.precision],
            run=run,
        )
        results.append(result)
        if runs_dir is not None:
            from vecdoctor.evaluate import write_trec_run

            write_trec_run(run, Path(runs_dir) / f"{name}.trec", tag=name)
        logger.info("%s: ndcg@10 %.4f", name, result.ndcg)
    by_name = {r.name: r for r in results}
    for r in results:
        base = specs[r.name].baseline
        if base and base in by_name and base != r.name:
            ref = by_name[base]
            r.baseline = base
            r.delta_ndcg = r.ndcg - ref.ndcg
            r.p_value = randomization_test(
                r.evaluation.per_query["ndcg@10"], ref.evaluation.per_query["ndcg@10"]
            ) if "ndcg@10" in r.evaluation.per_query else None
    return VariantsReport(
        dataset=dataset.name,
        model=model,
        num_docs=len(dataset.corpus),
        num_queries=len(qids),
        self_supervised=dataset.self_supervised,
        results=results,
        metrics=tuple(metrics),
    )
