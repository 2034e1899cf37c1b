"""What every index offers the searcher, whichever store holds it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vecdoctor.config import Precision, Role
from vecdoctor.data import Document
from vecdoctor.pipeline import Embedder, Pipeline

__all__ = ["DocumentIndex", "Store"]


class DocumentIndex:
    """What every index offers the :class:`~vecdoctor.search.searcher.Searcher`: documents
    (``docs[row]``, ``row(id)``, ``len``), ``bm25.search``, ``vectors.search``, the
    :class:`Embedder` that makes its vectors and the :class:`Pipeline` it was built with.

    The folder index (:class:`Index`) and the LanceDB table
    (:class:`~vecdoctor.index.lance.LanceIndex`) are the two implementations.
    """

    docs: Any
    bm25: Any
    vectors: Any

    def __init__(
        self, embedder: Embedder, pipeline: Pipeline, path: Path | None, oversample: float
    ) -> None:
        self.embedder = embedder
        self.pipeline = pipeline
        self.path = path
        self.oversample = float(oversample)

    # the embedding path, delegated to the embedder
    @property
    def encoder_config(self) -> dict[str, Any]:
        return self.embedder.encoder_config

    @property
    def transform(self) -> Any:
        return self.embedder.transform

    @property
    def encoder(self) -> Any:
        """The encoder that made the vectors (loaded from the saved config on first use)."""
        return self.embedder.encoder

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def load_encoder(self, **overrides: Any) -> Any:
        """A new encoder from the saved config (``overrides``: e.g. ``cache``, ``batch_size``)."""
        return self.embedder.load_encoder(**overrides)

    def check_encoder(self, encoder: Any) -> None:
        """Raise :class:`IncompatibleError` unless ``encoder`` is the pipeline the index used."""
        self.embedder.check_encoder(encoder)

    def use_encoder(self, encoder: Any) -> None:
        """Encode queries and new documents with ``encoder`` (checked against the index)."""
        self.embedder.use(encoder)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors through the index's own encoder and transform."""
        return self.embedder.embed(texts, role=Role.QUERY)

    def embed_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.embedder.embed(texts, role=Role.DOCUMENT, show_progress=show_progress)

    @property
    def search_defaults(self) -> dict[str, Any]:
        """The searcher's default mode, fusion, rrf_k and reranker fusion (from the pipeline)."""
        return self.pipeline.search_settings()

    @property
    def precision(self) -> Precision:
        return Precision.parse(self.vectors.precision)

    @property
    def dim(self) -> int:
        return int(self.vectors.dim)

    def __len__(self) -> int:
        return len(self.docs)

    def sample_documents(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """The row ids (what searches return), stored vectors and documents at ``positions``
        (0 .. len - 1): the baseline's sample."""
        raise NotImplementedError


@runtime_checkable
class Store(Protocol):
    """The operations every store offers beyond searching, with one behaviour
    (``tests/test_stores.py`` runs the same suite against each): ``add`` refuses ids already
    held or repeated, ``delete`` refuses unknown ids and deleting every document, and neither
    changes anything when it refuses; the shared checks are in :mod:`vecdoctor.index.building`."""

    pipeline: Pipeline

    def __len__(self) -> int: ...

    def __contains__(self, doc_id: object) -> bool: ...

    def row(self, doc_id: str) -> int: ...

    def add(self, docs: Iterable[Document], show_progress: bool = False) -> None: ...

    def delete(self, ids: Iterable[str]) -> None: ...

    def config(self) -> dict[str, Any]: ...

    def save(self, path: Any = None) -> Any: ...
