"""Evaluate pipeline variants (BM25, dense, fixes, hybrid, rerank, quantized) on one dataset.

Every variant runs through a real index, the built-in folder
(:class:`~vecdoctor.index.store.Index`) or a LanceDB table
(:class:`~vecdoctor.index.lance.LanceIndex`), and :class:`~vecdoctor.search.searcher.Searcher`, so the
numbers are those of the pipeline a user would ship. Transforms are fitted on corpus vectors
only, never on queries. :func:`~vecdoctor.evaluate.saved.evaluate_index` measures an index that is already built.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Precision, SearchMode, Store, Window
from vecdoctor.data import Dataset
from vecdoctor.errors import InputError, require
from vecdoctor.evaluate.metrics import DEFAULT_METRICS
from vecdoctor.evaluate.runs import (
    VariantResult,
    VariantsReport,
    bytes_per_doc,
    compare_baselines,
    location,
    measure_queries,
    write_runs,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantSpec:
    """One pipeline variant: retrieval mode and the fixes applied."""

    description: str
    mode: SearchMode = SearchMode.DENSE
    pooling: str | None = None
    window: Window | None = None
    transform: str | None = None  # a TransformKind: "whitening" | "abtt"
    precision: Precision = Precision.FLOAT32
    rerank: bool = False
    baseline: str | None = "dense"  # the variant this one is compared against
    fusion: str = "rrf"  # hybrid: rrf (rrf_k) or weighted (fusion_weights: bm25, dense)
    rrf_k: float = 60
    fusion_weights: tuple[float, float] | None = None
    chunks: str | None = None  # a Chunking: every window its own vector ("max" | "max+first")


VARIANTS: dict[str, VariantSpec] = {
    "bm25": VariantSpec(
        "BM25, English stemming and stopwords (bm25s; LanceDB full-text search on lancedb)",
        SearchMode.BM25, baseline=None,
    ),
    "dense": VariantSpec("dense, the model's own pooling, float32, exact search", baseline="bm25"),
    "dense+whiten": VariantSpec("dense + whitening fitted on the corpus", transform="whitening"),
    "dense+whiten-k": VariantSpec(
        "dense + whitening fitted on the corpus, kept to its top third of directions "
        "(whitening-k)", transform="whitening-k"),
    "dense+abtt": VariantSpec("dense + all-but-the-top fitted on the corpus", transform="abtt"),
    "dense+window": VariantSpec(
        "dense + token windows 256:128 (max) for long texts", window=Window(256, 128, "max")
    ),
    "dense+chunks": VariantSpec(
        "dense over chunks: every token window its own vector, a document scored by its best "
        "chunk (MaxP)", chunks="max"),
    "dense+chunks-first": VariantSpec(
        "dense over chunks: mean of the best and the first chunk's scores (MaxP + FirstP)",
        chunks="max+first"),
    "dense+cls": VariantSpec("dense with CLS pooling", pooling="cls"),
    "dense+max": VariantSpec("dense with max pooling", pooling="max"),
    "dense+subword": VariantSpec("dense with subword-aware pooling", pooling="subword"),
    "dense+attention": VariantSpec("dense with attention-weighted pooling", pooling="attention"),
    "hybrid": VariantSpec("BM25 + dense, reciprocal rank fusion (k=60)", SearchMode.HYBRID),
    "hybrid+whiten": VariantSpec(
        "BM25 + whitened dense, reciprocal rank fusion", SearchMode.HYBRID, transform="whitening",
        baseline="hybrid",
    ),
    "hybrid+chunks": VariantSpec(
        "BM25 + dense over chunks (MaxP), reciprocal rank fusion", SearchMode.HYBRID, chunks="max",
        baseline="hybrid",
    ),
    "hybrid+chunks-first": VariantSpec(
        "BM25 + dense over chunks (MaxP + FirstP), reciprocal rank fusion", SearchMode.HYBRID,
        chunks="max+first", baseline="hybrid",
    ),
    "hybrid+rerank": VariantSpec(
        "hybrid, then the reranker on the fused top candidates", SearchMode.HYBRID, rerank=True,
        baseline="hybrid",
    ),
    "int8": VariantSpec("dense on int8 vectors, float32 rescoring of 4x candidates", precision=Precision.INT8),
    "binary": VariantSpec("dense on binary vectors, float32 rescoring of 4x candidates", precision=Precision.BINARY),
}

DEFAULT_VARIANTS = ("bm25", "dense", "dense+whiten", "dense+whiten-k", "dense+abtt", "dense+window",
                    "hybrid", "int8", "binary")


def parse_variants(names: str | Sequence[str]) -> list[str]:
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    items = [n for n in items if n]
    if not items:
        raise InputError(f"no variants given; valid variants: {', '.join(VARIANTS)}")
    bad = [n for n in items if n not in VARIANTS]
    if bad:
        raise InputError(f"unknown variant(s) {', '.join(map(repr, bad))}; valid variants: {', '.join(VARIANTS)}")
    return list(dict.fromkeys(items))


def _parse_list(values: str | Sequence[str], parse: Callable[[str], Any], what: str) -> list[Any]:
    """``"a,b"`` or ``["a", "b"]`` parsed one by one, repeats dropped; empty is an error."""
    items = values.split(",") if isinstance(values, str) else list(values)
    parsed = [parse(str(v).strip()) for v in items if str(v).strip()]
    if not parsed:
        raise InputError(f"no {what} given")
    return list(dict.fromkeys(parsed))


def parse_stores(stores: str | Sequence[str]) -> list[Store]:
    """``"dir,lancedb"`` -> ``[Store.DIR, Store.LANCEDB]``; a bad name lists the valid ones."""
    return _parse_list(stores, Store.parse, "stores")


def parse_modes(modes: str | Sequence[str]) -> list[SearchMode]:
    """``"bm25,dense"`` -> ``[SearchMode.BM25, SearchMode.DENSE]``."""
    return _parse_list(modes, SearchMode.parse, "search modes")


def unsupported(spec: VariantSpec, store: Store) -> str | None:
    """Why ``store`` cannot run ``spec``, or ``None`` when it can."""
    if store is Store.LANCEDB and spec.precision is not Precision.FLOAT32:
        return "LanceDB stores float32 vectors; int8/binary need the index folder"
    return None


def whitening_components(dim: int) -> int:
    """k of whitening-k: a third of the dimensions (Su et al. 2021 keep 256 of BERT-base's 768)."""
    return max(16, dim // 3)


def fit_transform(kind: str, vectors: np.ndarray, encoder: Any) -> Any:
    """A transform of ``kind`` fitted on ``vectors`` made by ``encoder``; ``whitening-k`` is
    whitening kept to its top :func:`whitening_components` directions."""
    from vecdoctor.fix.transform import make_transform

    if kind == "whitening-k":
        fitted = make_transform("whitening", n_components=whitening_components(vectors.shape[1]))
    else:
        fitted = make_transform(kind)
    return fitted.fit(vectors, fingerprint=encoder.fingerprint, model_id=encoder.model_id)


def _plan(
    names: list[str], specs: dict[str, VariantSpec], stores: list[Store], named: bool
) -> tuple[list[tuple[str, Store]], list[dict[str, str]]]:
    """The (variant, store) pairs to run and those skipped; a named variant that no store can
    run is an error."""
    pairs: list[tuple[str, Store]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        for store in stores:
            reason = unsupported(specs[name], store)
            if reason is None:
                pairs.append((name, store))
            else:
                skipped.append({"variant": name, "store": str(store), "reason": reason})
    impossible = [n for n in names if all(p[0] != n for p in pairs)]
    if named and impossible:
        able = [n for n, spec in VARIANTS.items() if any(unsupported(spec, s) is None for s in stores)]
        why = "; ".join(sorted({s["reason"] for s in skipped}))
        raise InputError(
            f"variant(s) {', '.join(map(repr, impossible))} cannot run on store "
            f"{'/'.join(map(str, stores))} ({why}); variants that can: {', '.join(able)}"
        )
    for s in skipped:
        logger.warning("skipping %s on %s: %s", s["variant"], s["store"], s["reason"])
    return pairs, skipped


def _checked_plan(
    dataset: Dataset, variants: Sequence[str] | None, extra: dict[str, VariantSpec] | None,
    specs: dict[str, VariantSpec], stores: list[Store], uri: str | Path | None,
) -> tuple[list[tuple[str, Store]], list[dict[str, str]]]:
    """The (variant, store) pairs to run, after the checks of the arguments."""
    chosen = DEFAULT_VARIANTS if variants is None else variants
    names = parse_variants([v for v in chosen if v not in (extra or {})]) + list(extra or {})
    if not dataset.has_labels:
        raise InputError("evaluation needs queries and qrels; use self-supervised queries for unlabelled corpora")
    if uri is not None and Store.LANCEDB not in stores:
        raise InputError(f"uri {str(uri)!r} is for store lancedb; add it to the stores or drop the uri")
    return _plan(names, specs, stores, named=variants is not None)


def _table_names(pairs: list[tuple[str, Store]], specs: dict[str, VariantSpec]) -> dict[tuple[Any, ...], str]:
    """One LanceDB table per distinct pipeline, named after the first variant that uses it."""
    tables: dict[tuple[Any, ...], str] = {}
    for name, store in pairs:
        if store is Store.LANCEDB:
            tables.setdefault(_pipeline_key(specs[name]), re.sub(r"[^A-Za-z0-9_-]", "_", name))
    return tables


def _pipeline_key(spec: VariantSpec) -> tuple[Any, ...]:
    return (spec.pooling, spec.window, spec.transform, spec.precision, spec.chunks)


def _lance_location(uri: str | Path | None, tables: dict[tuple[Any, ...], str], stack: ExitStack) -> str:
    """The LanceDB database to write to: ``uri`` (whose tables must not exist yet) or a
    temporary folder that ``stack`` removes."""
    from vecdoctor.index.lance import table_exists

    require("lancedb", "scale")
    if uri is None:
        return stack.enter_context(
            tempfile.TemporaryDirectory(prefix="vecdoctor-lancedb-", ignore_cleanup_errors=True)
        )
    taken = [t for t in tables.values() if table_exists(uri, t)]
    if taken:
        raise InputError(
            f"{uri}: table(s) {', '.join(map(repr, taken))} already exist; give an empty LanceDB "
            "folder, or none for a temporary one"
        )
    return str(uri)


def _load_reranker(
    reranker: Any, fusion: str | None, depth: int, backend: str, precision: str
) -> tuple[Any, dict[str, Any]]:
    """The reranker, loaded (and converted, for a fast backend) once for every rerank variant,
    and the settings the report records."""
    from vecdoctor.config import RerankFusion
    from vecdoctor.rerank.rerankers import MAXSIM, load_reranker

    reranker = MAXSIM if reranker is None else reranker
    if isinstance(reranker, (str, Path)) and str(reranker).lower() != MAXSIM:
        reranker = load_reranker(reranker, backend=backend, precision=precision)
    info = {"reranker": str(getattr(reranker, "path", reranker)),
            "fusion": str(RerankFusion.parse(fusion or RerankFusion.RRF)), "depth": depth}
    if hasattr(reranker, "backend"):
        info |= {"backend": reranker.backend, "precision": reranker.precision}
    return reranker, info


class _Builder:
    """Encoders, document vectors, transforms and indexes of the variants, each made once.

    One vector cache serves every encoder, so a windowed pipeline reuses the plain one's head
    vectors and the model comparison's vectors are not computed again.
    """

    def __init__(self, dataset: Dataset, model: str, options: dict[str, Any] | None, cache: Any,
                 show_progress: bool = False) -> None:
        from vecdoctor.encode.cache import VectorCache

        self.show_progress = show_progress
        self.dataset, self.model, self.options = dataset, model, dict(options or {})
        self.texts = [d.content for d in dataset.corpus]
        self.cache = cache if cache is not None else VectorCache(max_size=4 * len(self.texts) + 64)
        self.encoders: dict[tuple[Any, ...], tuple[Any, float | None]] = {}
        self.vectors: dict[tuple[Any, ...], np.ndarray] = {}
        self.transforms: dict[tuple[Any, ...], Any] = {}
        self.indexes: dict[tuple[Any, ...], Any] = {}

    def encoder_for(self, spec: VariantSpec) -> Any:
        key = (spec.pooling, spec.window)
        if key not in self.encoders:
            from vecdoctor.encode.encoder import Encoder

            opts = dict(self.options)
            enc = Encoder(self.model, pooling=spec.pooling or opts.pop("pooling", None),
                          window=spec.window, **opts)
            enc.cache = self.cache
            hits = self.cache.stats.hits
            start = time.perf_counter()
            self.vectors[key] = enc.encode_documents(self.texts, show_progress=self.show_progress)
            # a rate is only reported when the documents were really encoded here
            encoded = self.cache.stats.hits == hits
            rate = len(self.texts) / max(time.perf_counter() - start, 1e-9) if encoded else None
            self.encoders[key] = (enc, rate)
        return self.encoders[key][0]

    def _other_chunking(self, key: tuple[Any, ...]) -> Any:
        """A built folder index that differs from ``key`` only in how chunks are scored."""
        for other, index in self.indexes.items():
            if other[-1] is Store.DIR and other[:4] == key[:4] and other[4] and other != key:
                return index
        return None

    def rate(self, spec: VariantSpec) -> float | None:
        return self.encoders[(spec.pooling, spec.window)][1]

    def transform_for(self, spec: VariantSpec, enc: Any) -> Any:
        if not spec.transform:
            return None
        key = (spec.pooling, spec.window, spec.transform)
        if key not in self.transforms:
            self.transforms[key] = fit_transform(spec.transform, self.vectors[(spec.pooling, spec.window)], enc)
        return self.transforms[key]

    def index_for(self, spec: VariantSpec, store: Store, lance_uri: str | None,
                  tables: dict[tuple[Any, ...], str]) -> Any:
        key = (*_pipeline_key(spec), store)
        if key not in self.indexes:
            enc = self.encoder_for(spec)
            transform = self.transform_for(spec, enc)
            enc.cache = self.cache  # documents come from the cache filled above
            if store is Store.LANCEDB:
                from vecdoctor.index.lance import LanceIndex

                self.indexes[key] = LanceIndex.build(self.dataset.corpus, str(lance_uri), enc, transform,
                                                     table=tables[_pipeline_key(spec)], chunks=spec.chunks)
            elif spec.chunks and self._other_chunking(key) is not None:
                self.indexes[key] = _rechunked(self._other_chunking(key), spec.chunks)
            else:
                from vecdoctor.index.store import Index

                # no baseline: it serves monitoring, and costs a few hundred query encodings
                self.indexes[key] = Index.build(self.dataset.corpus, encoder=enc, transform=transform,
                                                precision=spec.precision, chunks=spec.chunks,
                                                baseline=False)
            enc.cache = None  # queries are encoded for real, so latencies are honest
        return self.indexes[key]


def _rechunked(index: Any, mode: str) -> Any:
    """``index`` (a folder index with chunks) searched with another chunk scoring: the same
    documents, BM25 and chunk vectors, not encoded again."""
    import copy
    import dataclasses

    from vecdoctor.index.chunks import ChunkStore

    other = copy.copy(index)
    chunks = index.vectors
    other.vectors = ChunkStore(chunks.store, chunks.owners, chunks.n_docs, mode)
    other.pipeline = dataclasses.replace(index.pipeline, chunks=other.vectors.mode)
    return other


def _measured_row(row: str, spec: VariantSpec, how: str, searcher: Any, dataset: Dataset,
                  qids: list[str], queries: list[str], k: int, reranker: Any,
                  metrics: Sequence[str], *, rate: float | None, where: str,
                  kept: bool) -> VariantResult:
    """One variant's queries run through its searcher, scored into a result row."""
    index = searcher.index
    run, latencies, self_hits = measure_queries(
        searcher, qids, queries, k, spec.mode, reranker if spec.rerank else None,
        skip_self=not dataset.keep_self_hits)
    return VariantResult.from_run(
        row, spec.description + how, dataset.qrels, run, latencies, metrics,
        docs_per_second=rate,
        bytes_per_doc=0 if spec.mode is SearchMode.BM25 else bytes_per_doc(index),
        store=where, index=location(index) if kept else None,  # kept at uri
        self_hits=self_hits,
    )


def evaluate_variants(
    dataset: Dataset,
    model: str = "minilm",
    variants: Sequence[str] | None = None,
    *,
    reranker: Any = None,
    rerank_depth: int = 30,
    rerank_fusion: str | None = "rrf",
    rerank_backend: str = "torch",
    rerank_precision: str = "fp32",
    k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    runs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    encoder_options: dict[str, Any] | None = None,
    extra: dict[str, VariantSpec] | None = None,
    cache: Any = None,
    store: str | Sequence[str] = Store.DIR,
    uri: str | Path | None = None,
    show_progress: bool = False,
) -> VariantsReport:
    """Evaluate each variant on ``dataset`` (which must have queries and qrels).

    ``variants`` defaults to :data:`DEFAULT_VARIANTS`. ``extra`` adds ad-hoc variants (e.g. a
    recommended pipeline) by name; ``cache`` is a :class:`~vecdoctor.encode.cache.VectorCache`
    shared with other steps so documents are encoded once per pipeline setting.

    ``store`` is where each variant's index is built: ``dir`` (an in-memory index folder),
    ``lancedb`` (a LanceDB table in the database at ``uri``, kept, or in a temporary folder
    removed afterwards) or several, e.g. ``"dir,lancedb"``: each variant then runs on each store,
    on the same vectors, as rows named ``VARIANT@STORE`` compared with baselines on the same
    store. A pair that a store cannot run (int8/binary on LanceDB) is skipped and listed in
    ``report.skipped``; a variant named in ``variants`` that no given store can run is an
    :class:`InputError` naming the variants that can.
    """
    from vecdoctor.search.searcher import Searcher

    specs = {**VARIANTS, **(extra or {})}
    stores = parse_stores(store)
    pairs, skipped = _checked_plan(dataset, variants, extra, specs, stores, uri)
    rerank_info: dict[str, Any] | None = None
    if any(specs[n].rerank for n, _ in pairs):
        reranker, rerank_info = _load_reranker(reranker, rerank_fusion, rerank_depth, rerank_backend,
                                               rerank_precision)
    fusion = rerank_info["fusion"] if rerank_info else None
    multi = len(stores) > 1
    qids = sorted(dataset.qrels)
    queries = [dataset.queries[q] for q in qids]
    builder = _Builder(dataset, model, encoder_options, cache, show_progress)
    results: list[VariantResult] = []
    baseline_of: dict[str, str | None] = {}
    say = progress or (lambda _msg: None)
    with ExitStack() as stack:
        tables = _table_names(pairs, specs)
        lance_uri = _lance_location(uri, tables, stack) if tables else None
        for name, where in pairs:
            spec = specs[name]
            row = f"{name}@{where}" if multi else name
            say(f"variant {row}")
            index = builder.index_for(spec, where, lance_uri, tables)
            searcher = Searcher(index, cache_size=0, candidates=rerank_depth if spec.rerank else max(k, 100),
                                rerank_fusion=fusion, fusion=spec.fusion, rrf_k=spec.rrf_k,
                                weights=spec.fusion_weights)
            how = f" ({(rerank_info or {}).get('reranker')}, fusion {fusion})" if spec.rerank else ""
            results.append(_measured_row(
                row, spec, how, searcher, dataset, qids, queries, k, reranker, metrics,
                rate=None if spec.mode is SearchMode.BM25 else builder.rate(spec),
                where=str(where), kept=uri is not None))
            baseline_of[row] = f"{spec.baseline}@{where}" if multi and spec.baseline else spec.baseline
            logger.info("%s: ndcg@10 %.4f", row, results[-1].ndcg)
    write_runs(results, runs_dir)
    compare_baselines(results, baseline_of)
    return VariantsReport(dataset=dataset.name, model=model, num_docs=len(dataset.corpus),
                          num_queries=len(qids), self_supervised=dataset.self_supervised,
                          results=results, metrics=tuple(metrics), skipped=skipped,
                          rerank=rerank_info)
