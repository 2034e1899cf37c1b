"""The Searcher: BM25, dense or hybrid retrieval over an index, rank fusion, optional reranking.

Every number vecdoctor reports (variants, model comparison, saved indexes, the diagnosis'
recall, fine-tuning's first stage) comes from this one retrieval path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Fusion, RerankFusion, SearchMode
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.search.fusion import (
    check_rrf_k,
    check_weights,
    fuse_with_first_stage,
    rrf,
    weighted,
)

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 100
DEFAULT_MAX_QUERY_CHARS = 10_000


def limit_blas_threads(threads: int = 1) -> None:
    """Keep NumPy's BLAS to ``threads`` for the rest of the process.

    After a matrix product OpenBLAS threads keep spinning for a while; in a process that
    answers one query at a time they then compete with the model's own threads for the same
    cores. On 2 cores this tripled the p50 latency of a PyTorch-encoded query (SciFact: hybrid
    30 ms -> 12.5 ms with one BLAS thread, while the search itself stays under 1 ms).
    ``vecdoctor search`` and ``vecdoctor serve`` call this; call it in your own server too.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(threads), user_api="blas")


# -- results --------------------------------------------------------------------------------
HIT_FIELDS = ("id", "score", "title", "snippet", "text", "ranks_by_stage")
"""What a shown hit can carry (:meth:`Hit.view`)."""
SHOWN = ("id", "score", "title", "snippet", "ranks_by_stage")
"""What a shown hit carries by default: a snippet, not the whole text."""


@dataclass(frozen=True)
class Hit:
    """One search result. ``ranks_by_stage`` holds the 1-based rank in each stage it reached
    (``bm25``, ``dense``, ``fused``, ``rerank``, and ``rerank_fused`` when the reranker's order
    is fused with the first stage's); a stage that did not return it is absent."""

    id: str
    score: float
    title: str
    text: str
    ranks_by_stage: dict[str, int] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "title": self.title,
            "text": self.text,
            "ranks_by_stage": dict(self.ranks_by_stage),
        }

    def view(self, query: str, fields: Sequence[str] = SHOWN) -> dict[str, Any]:
        """The hit as the CLI and the server show it: ``fields`` of :data:`HIT_FIELDS`, a
        ``snippet`` (the passage that best matches ``query``) instead of the whole text unless
        ``text`` is asked for."""
        from vecdoctor.search.snippets import snippet

        values: dict[str, Any] = {"id": self.id, "score": self.score, "title": self.title}
        out: dict[str, Any] = {}
        for name in fields:
            if name == "snippet":
                out[name] = snippet(self.text, query)
            elif name == "text":
                out[name] = self.text
            elif name == "ranks_by_stage":
                out[name] = dict(self.ranks_by_stage)
            else:
                out[name] = values[name]
        return out


def parse_fields(fields: str | Sequence[str] | None, full: bool = False) -> tuple[str, ...]:
    """``"id,title,text"`` (or a list) checked against :data:`HIT_FIELDS`; ``None``: the
    default, with the whole text instead of the snippet when ``full``."""
    if fields is None:
        return tuple("text" if f == "snippet" and full else f for f in SHOWN)
    items = [f.strip() for f in fields.split(",")] if isinstance(fields, str) else list(fields)
    items = [f for f in items if f]
    bad = [f for f in items if f not in HIT_FIELDS]
    if bad or not items:
        raise InputError(f"unknown hit field(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"choose from: {', '.join(HIT_FIELDS)}")
    return tuple(dict.fromkeys(items))


def _check_backend(backend: str | None) -> str | None:
    from vecdoctor.encode.backends import BACKENDS

    if backend is None:
        return None
    if backend not in BACKENDS:
        raise InputError(f"unknown query backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return backend


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise InputError(f"k must be >= 1, got {k}")
    return int(k)


class Searcher:
    """Search an :class:`~vecdoctor.index.Index` with the pipeline it was built with.

    Args:
        index: an Index or the folder of a saved one.
        encoder: an encoder to use for queries; it must be the index's model and settings.
        fusion: ``rrf`` or ``weighted``; ``rrf_k`` and ``weights`` (bm25, dense) tune them
            (default weights: 1, 1 for rrf; 0.5, 0.5 for weighted).
            Unset, they (and the default ``mode``) come from the pipeline the index was built
            with, else ``rrf``, 60 and ``hybrid``.
        candidates: how many documents each retriever passes to fusion and to the reranker.
        rescore: re-rank int8/binary candidates with float32 vectors (``oversample`` x k of them).
        cache_size: query vectors kept in an in-memory LRU (0 disables it).
        max_query_chars: longer queries are rejected.
        query_backend: encode queries on this backend (``onnx``, ``openvino`` or ``torch``)
            instead of the one the index was built with. Only an fp32 index accepts another
            backend, since fp32 graphs give the same vectors (checked at conversion); a
            converted graph answers one short query several times faster than PyTorch.
        rerank_fusion: ``rrf`` (default, unless the index's pipeline names another),
            ``weighted`` or ``none`` (the reranker's order alone): fuse the reranker's order
            with the first stage's over the reranked candidates (``rerank_weights``: first
            stage, reranker; RRF uses ``rrf_k``). On SciFact every
            trained reranker did better fused than alone (e.g. nDCG@10 0.7725 alone, 0.7958
            with RRF on held-out train queries; benchmarks/finetune_scifact.py).

    ``k`` larger than the corpus is clamped to the corpus size; fewer than ``k`` hits come back
    when a retriever finds fewer matches (BM25 returns only documents sharing a term).
    """

    def __init__(
        self,
        index: Any,
        encoder: Any = None,
        fusion: Fusion | str | None = None,
        rrf_k: float | None = None,
        weights: Sequence[float] | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        rescore: bool = True,
        oversample: float | None = None,
        cache_size: int = 10_000,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
        query_backend: str | None = None,
        rerank_fusion: RerankFusion | str | None = None,
        rerank_weights: Sequence[float] | None = None,
    ) -> None:
        from vecdoctor.index.base import DocumentIndex
        from vecdoctor.index.store import Index

        if isinstance(index, (str, Path)):
            index = Index.load(index)
        if not isinstance(index, DocumentIndex):
            raise TypeError(f"index must be an Index or a folder path, got {type(index).__name__}")
        self.index = index
        defaults = index.search_defaults
        self.fusion = Fusion.parse(fusion or defaults.get("fusion", Fusion.RRF))
        self.rrf_k = check_rrf_k(rrf_k if rrf_k is not None else defaults.get("rrf_k", 60))
        self.mode = SearchMode.parse(defaults.get("mode", SearchMode.HYBRID))
        if weights is None and fusion is None:
            weights = defaults.get("weights")  # the pipeline's tuned weights, if any
        if weights is None:
            weights = (1.0, 1.0) if self.fusion is Fusion.RRF else (0.5, 0.5)
        self.weights = tuple(check_weights(weights, 2))
        self.candidates = _check_k(candidates)
        depth = defaults.get("rerank_depth")
        self.rerank_depth = _check_k(depth) if depth is not None else self.candidates
        """Candidates the reranker scores (the pipeline's measured budget, else ``candidates``)."""
        self.rerank_fusion = RerankFusion.parse(
            rerank_fusion or defaults.get("rerank_fusion", RerankFusion.RRF)
        )
        self.rerank_weights = tuple(check_weights(rerank_weights, 2))
        self.rescore = bool(rescore)
        self.oversample = float(oversample if oversample is not None else index.oversample)
        self.cache_size = int(cache_size)
        self.max_query_chars = int(max_query_chars)
        self.query_backend = _check_backend(query_backend)
        if self.query_backend is not None:
            self._check_query_backend()
        if encoder is not None:
            index.use_encoder(encoder)
        self._lock = threading.Lock()
        self._rerankers: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.observer: Any = None
        """Called as ``observer.observe(query, vector, stages)`` after each query's first stage
        (the live health of :mod:`vecdoctor.monitor.live`); it must be cheap and never raise."""

    # -- the encoder --------------------------------------------------------------------
    def warmup(self) -> None:
        """Load the encoder and run one query so the first request is not slow."""
        self.embed(["warm up"])

    def _needs_encoder(self) -> bool:
        current = self.index.embedder.loaded
        if current is None:
            return self.cache_size > 0 or self.query_backend is not None
        return self.query_backend is not None and current.backend_name != self.query_backend

    def ensure_encoder(self) -> Any:
        """The query encoder (loaded with the cache and query backend asked for, once)."""
        if self._needs_encoder():
            from vecdoctor.encode.cache import VectorCache

            with self._lock:
                if self._needs_encoder():
                    overrides: dict[str, Any] = {}
                    if self.cache_size > 0:
                        overrides["cache"] = VectorCache(max_size=self.cache_size)
                    if self.query_backend is not None:
                        overrides["backend"] = self.query_backend
                    self.index.use_encoder(self.index.load_encoder(**overrides))
        return self.index.encoder

    def _check_query_backend(self) -> None:
        precision = str(self.index.encoder_config.get("precision") or "fp32")
        if precision != "fp32":
            raise IncompatibleError(
                f"query_backend={self.query_backend!r}: the index was built with a {precision} "
                f"model on {self.index.encoder_config.get('backend')!r}, whose vectors only that "
                "backend reproduces; drop the query backend or rebuild the index in fp32"
            )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors through the index's encoder and transform (cached)."""
        self.ensure_encoder()
        return self.index.embed_queries(texts)

    def cache_stats(self) -> dict[str, float]:
        enc = self.index.embedder.loaded
        stats = getattr(enc, "cache_stats", None)
        if stats is None:
            return {"hits": 0, "misses": 0, "hit_rate": 0.0}
        return {"hits": stats.hits, "misses": stats.misses, "hit_rate": stats.hit_rate}

    # -- validation -----------------------------------------------------------------------
    def _check_query(self, query: Any) -> str:
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise InputError("the query is empty; pass at least one word")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"the query holds {query[exc.start]!r} at character {exc.start}, which is not "
                "valid Unicode text (a lone surrogate); pass UTF-8 text"
            ) from None
        if len(query) > self.max_query_chars:
            raise InputError(
                f"the query has {len(query)} characters, more than the limit of "
                f"{self.max_query_chars}; shorten it or raise Searcher(max_query_chars=...)"
            )
        return query

    def _reranker(self, rerank: Any) -> Any:
        if rerank is None or hasattr(rerank, "score"):
            return rerank
        if not isinstance(rerank, (str, Path)):
            raise TypeError(
                "rerank must be None, 'maxsim', a model folder or a reranker, "
                f"got {type(rerank).__name__}"
            )
        key = str(rerank)
        with self._lock:
            if key not in self._rerankers:
                from vecdoctor.rerank.rerankers import MAXSIM, load_reranker

                encoder = self.ensure_encoder() if key.lower() == MAXSIM else None
                self._rerankers[key] = load_reranker(key, encoder)
            return self._rerankers[key]

    # -- searching ------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        mode: SearchMode | str | None = None,
        rerank: Any = None,
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits for one query (see the class docstring for the options)."""
        vectors = None
        if query_vector is not None:
            vectors = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        return self.search_batch([query], k, mode, rerank, query_vectors=vectors)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        mode: SearchMode | str | None = None,
        rerank: Any = None,
        query_vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries; query vectors are computed in one batch."""
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings; for one query use search()")
        queries = [self._check_query(q) for q in queries]
        k = min(_check_k(k), len(self.index))
        mode = self.mode if mode is None else SearchMode.parse(mode)
        reranker = self._reranker(rerank)
        depth = max(k, self.candidates) if (mode is SearchMode.HYBRID or reranker) else k
        depth = min(depth, len(self.index))
        dense_runs: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode is not SearchMode.BM25 and queries:
            if query_vectors is None and self.observer is not None:
                query_vectors = self.embed(queries)  # kept for the observer
            dense_runs = self._dense(queries, depth, query_vectors)
        results = []
        for i, query in enumerate(queries):
            stages: dict[str, list[tuple[int, float]]] = {}
            if mode is not SearchMode.DENSE:
                rows, scores = self.index.bm25.search(query, depth)
                stages["bm25"] = list(zip(rows.tolist(), scores.tolist(), strict=True))
            if mode is not SearchMode.BM25:
                stages["dense"] = dense_runs[i]
            if mode is SearchMode.HYBRID:
                fuse = (
                    rrf(list(stages.values()), k=self.rrf_k, weights=self.weights)
                    if self.fusion is Fusion.RRF
                    else weighted(list(stages.values()), self.weights)
                )
                stages["fused"] = [(int(d), float(s)) for d, s in fuse]  # type: ignore[call-overload]
            if self.observer is not None:
                self._observe(query, None if query_vectors is None else query_vectors[i], stages)
            final = list(stages.values())[-1]
            if reranker is not None:
                head = final[: self.rerank_depth]
                final = stages["rerank"] = self._rerank(reranker, query, head)
                if self.rerank_fusion is not RerankFusion.NONE:
                    fused = fuse_with_first_stage(
                        head, final, self.rerank_fusion, self.rrf_k, self.rerank_weights
                    )
                    final = stages["rerank_fused"] = [(int(d), float(s)) for d, s in fused]  # type: ignore[call-overload]
            results.append(self._hits(final[:k], stages))
        with self._lock:
            self.counts[str(mode)] = self.counts.get(str(mode), 0) + len(queries)
        return results

    def _observe(self, query: str, vector: Any, stages: dict[str, Any]) -> None:
        try:
            self.observer.observe(query, vector, stages)
        except Exception:  # noqa: BLE001 - monitoring never fails a search
            logger.exception("the search observer failed; the search itself is unaffected")

    def _dense(
        self, queries: list[str], depth: int, vectors: np.ndarray | None
    ) -> list[list[tuple[int, float]]]:
        if vectors is None:
            vectors = self.embed(queries)
        elif vectors.ndim != 2 or vectors.shape != (len(queries), self.index.dim):
            raise IncompatibleError(
                f"query vectors have shape {vectors.shape}, but the index holds {self.index.dim}-d "
                f"vectors from model {self.index.model_id!r}; encode queries with that model "
                "(or pass no vectors and let the searcher encode them)"
            )
        rows, scores = self.index.vectors.search(vectors, depth, self.rescore, self.oversample)
        return [
            [(int(r), float(s)) for r, s in zip(rr, ss, strict=True) if r >= 0]
            for rr, ss in zip(rows, scores, strict=True)
        ]

    def _rerank(
        self, reranker: Any, query: str, run: list[tuple[int, float]]
    ) -> list[tuple[int, float]]:
        return rerank_order(reranker, query, [self.index.docs[row] for row, _ in run], run)

    def _hits(
        self, final: list[tuple[int, float]], stages: dict[str, list[tuple[int, float]]]
    ) -> list[Hit]:
        ranks: dict[str, dict[int, int]] = {
            name: {row: r for r, (row, _) in enumerate(run, start=1)}
            for name, run in stages.items()
        }
        hits = []
        for row, score in final:
            doc = self.index.docs[row]
            by_stage = {name: table[row] for name, table in ranks.items() if row in table}
            hits.append(Hit(doc.id, float(score), doc.title, doc.text, by_stage))
        return hits


def rerank_order(reranker: Any, query: str, docs: Sequence[Any], run: Sequence[tuple[Any, float]]) -> list[tuple[Any, float]]:
    """``run``'s entries reordered by ``reranker.score(query, docs)`` (best first; ties keep the
    run's order), each with its reranker score."""
    if not run:
        return []
    scores = np.asarray(reranker.score(query, list(docs)), dtype=np.float64).reshape(-1)
    if len(scores) != len(run):
        raise IncompatibleError(
            f"the reranker {reranker!r} returned {len(scores)} scores for {len(run)} "
            "documents; a reranker's score(query, docs) must return one score per document"
        )
    order = np.lexsort((np.arange(len(run)), -scores))
    return [(run[j][0], float(scores[j])) for j in order]
