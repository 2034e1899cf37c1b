"""Rerankers for the last search stage: a cross-encoder, and training-free late interaction.

A reranker has one method, ``score(query, docs) -> np.ndarray`` (higher is better), so the
search stage can take any object with that method. Its order can replace the first stage's or
be fused with it (:func:`vecdoctor.search.fusion.fuse_with_first_stage`): a reranker weaker than the first stage alone
is often still complementary to it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.folders import library_errors
from vecdoctor.models import check_model_config

logger = logging.getLogger(__name__)

MAXSIM = "maxsim"


class Reranker(Protocol):
    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray: ...


class CrossEncoderReranker:
    """Score (query, document) pairs jointly with a sentence-transformers ``CrossEncoder``
    (Nogueira & Cho, 2019, "Passage Re-ranking with BERT").

    Args:
        model_dir: a local folder saved by ``CrossEncoder.save`` (one output label).
        batch_size: pairs per forward pass.
        max_length: tokens per pair; ``None`` keeps the model's own limit.
        backend: ``torch``, or ``onnx`` / ``openvino``: a graph exported from the model on first
            use, checked against PyTorch and cached (:mod:`vecdoctor.rerank.backends`).
        precision: ``fp32``, or ``int8`` on ``onnx`` / ``openvino``.
    """

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str = "cpu",
        backend: str = "torch",
        precision: str = "fp32",
    ) -> None:
        from vecdoctor.rerank.backends import check_rerank_backend

        folder = Path(model_dir)
        if not folder.is_dir():
            raise InputError(
                f"{folder}: no such folder; pass a local cross-encoder folder "
                "(saved with sentence_transformers.CrossEncoder.save) or 'maxsim'"
            )
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder}: has no config.json; it is not a saved cross-encoder model")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.precision = str(check_rerank_backend(backend, precision))
        self.backend = backend
        self.path = folder
        self.batch_size = batch_size
        self._lock = threading.Lock()
        if backend == "torch":
            self._load_torch(folder, max_length, device)
        else:
            self._load_graph(folder, max_length)

    def _load_torch(self, folder: Path, max_length: int | None, device: str) -> None:
        from sentence_transformers import CrossEncoder

        with library_errors(folder, "a cross-encoder", "save the cross-encoder again"):
            check_model_config(folder)
            self.model = CrossEncoder(
                str(folder), device=device, max_length=max_length, local_files_only=True
            )
            # one pair through the whole model: settings that only fail when it runs (an output
            # name, a module's options) fail here, at load, with the same clear error
            self.model.predict([("probe", "probe")], show_progress_bar=False)

    def _load_graph(self, folder: Path, max_length: int | None) -> None:
        from vecdoctor.rerank.backends import (
            GraphScorer,
            PairTokenizer,
            activation_of,
            ensure_cross_encoder,
        )

        self.converted = ensure_cross_encoder(folder, self.backend, self.precision)
        self._tokenize = PairTokenizer(folder, max_length)
        self._graph = GraphScorer(self.converted)
        self._activation = activation_of(folder)

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        if not docs:
            return np.zeros(0, dtype=np.float32)
        if self.backend != "torch":
            texts = [d.content for d in docs]
            with self._lock:
                logits = np.concatenate([
                    self._graph(self._tokenize(query, texts[i : i + self.batch_size]))
                    for i in range(0, len(texts), self.batch_size)
                ])
            return _finite(self._activation(logits).astype(np.float32), self.path)
        pairs = [(query, d.content) for d in docs]
        with self._lock:
            scores = self.model.predict(
                pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.ndim != 1:
            raise InputError(
                f"{self.path}: the cross-encoder outputs {scores.shape[1]} labels per pair; "
                "a reranker needs one relevance score (train it with num_labels=1)"
            )
        return _finite(scores, self.path)

    def __repr__(self) -> str:
        extra = "" if self.backend == "torch" else f", backend={self.backend!r}, precision={self.precision!r}"
        return f"CrossEncoderReranker({str(self.path)!r}{extra})"


def _finite(scores: np.ndarray, folder: Path) -> np.ndarray:
    if not np.isfinite(scores).all():
        raise InputError(
            f"{folder}: the cross-encoder scores are not finite numbers; its weights are damaged, "
            "train or save it again"
        )
    return scores


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def maxsim(query_tokens: np.ndarray, doc_tokens: np.ndarray) -> float:
    """Sum over query tokens of the best cosine with any document token (ColBERT, Eq. 3)."""
    return float((query_tokens @ doc_tokens.T).max(axis=1).sum())


class MaxSimReranker:
    """Training-free late interaction (Khattab & Zaharia, 2020, ColBERT) over the last-layer
    token vectors of the index's own bi-encoder.

    Document token vectors are computed on demand and kept in an LRU of ``cache_size`` docs.
    """

    def __init__(self, encoder: Any, cache_size: int = 4096) -> None:
        if not hasattr(encoder, "token_embeddings"):
            raise InputError(
                f"MaxSim needs token vectors, which {type(encoder).__name__} does not provide; "
                "use a PyTorch or ONNX encoder"
            )
        self.encoder = encoder
        config = encoder.config() if hasattr(encoder, "config") else {}
        self.query_prefix = config.get("query_prefix") or ""
        self.document_prefix = config.get("document_prefix") or ""
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _tokens(self, texts: list[str]) -> list[np.ndarray]:
        return [_unit_rows(t) for t in self.encoder.token_embeddings(texts)]

    def _doc_tokens(self, docs: Sequence[Document]) -> list[np.ndarray]:
        keys = [(d.id, d.content) for d in docs]
        with self._lock:
            found = {key: self._cache[key] for key in keys if key in self._cache}
            for key in found:
                self._cache.move_to_end(key)
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            computed = self._tokens([self.document_prefix + docs[i].content for i in missing])
            with self._lock:
                for i, vecs in zip(missing, computed, strict=True):
                    found[keys[i]] = vecs
                    self._cache[keys[i]] = vecs
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [found[key] for key in keys]

    def score(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        if not docs:
            return np.zeros(0, dtype=np.float32)
        q = self._tokens([self.query_prefix + query])[0]
        return np.asarray([maxsim(q, d) for d in self._doc_tokens(docs)], dtype=np.float32)

    def __repr__(self) -> str:
        return f"MaxSimReranker({getattr(self.encoder, 'model_id', '?')!r})"


def load_reranker(
    spec: str | Path, encoder: Any = None, backend: str = "torch", precision: str = "fp32"
) -> Reranker:
    """``"maxsim"`` (needs the index's ``encoder``) or a local cross-encoder folder (run on
    ``backend`` in ``precision``)."""
    if str(spec).lower() == MAXSIM:
        if encoder is None:
            raise InputError("the maxsim reranker needs the index's encoder")
        return MaxSimReranker(encoder)
    return CrossEncoderReranker(spec, backend=backend, precision=precision)
