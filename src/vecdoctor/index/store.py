"""The index directory: documents, BM25, dense vectors and the pipeline that made them.

Layout of an index folder::

    config.json     header, the Pipeline, the resolved encoder, counts, dims, versions
    docs.jsonl      one {"id", "title", "text"} object a line, in row order
    vectors.npy     float32 (n, d) after encoder + transform (memory-mapped on load); with
                    chunks, one row per chunk and ``chunk_owners.npy`` the document of each
    codes.npy       int8 (n, d) or packed sign bits (n, ceil(d/8)) for int8/binary precision
    quantizer/      fitted int8 ranges (int8 precision only)
    transform/      the fitted transform, if any
    ann.faiss       faiss HNSW/IVF graph, if built with ``ann``
    bm25/           BM25 sparse scores and vocabulary

Every write goes to a temporary sibling folder that replaces the old one in one rename.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Chunking, Precision, Role
from vecdoctor.data import Document
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.folders import child as safe_child
from vecdoctor.folders import read_json
from vecdoctor.index.ann import AnnConfig
from vecdoctor.index.base import DocumentIndex
from vecdoctor.index.baseline import BASELINE_DIR, Baseline, compute_baseline
from vecdoctor.index.bm25 import BM25Config, BM25Index
from vecdoctor.index.building import (
    ids_to_delete,
    index_documents,
    new_documents,
    no_vector_for_blank,
    not_a_corpus,
    pipeline_encoder,
    pipeline_of,
    probe_queries,
    v1_pipeline,
)
from vecdoctor.index.chunks import ChunkStore
from vecdoctor.index.docs import read_docs, versions, write_docs
from vecdoctor.index.vectors import DEFAULT_OVERSAMPLE, VectorStore
from vecdoctor.io import atomic_dir, write_json
from vecdoctor.persist import INDEX, check_output
from vecdoctor.pipeline import Embedder, Pipeline, header, read_header

__all__ = ["DocumentIndex", "Index"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""2: header, ``pipeline`` (:class:`Pipeline`); 1 (vecdoctor 0.1.0): flat pipeline keys."""
DOCS = "docs.jsonl"
TRANSFORM = "transform"
BM25_DIR = "bm25"



class Index(DocumentIndex):
    """Documents with their BM25 and dense representations, searchable by :class:`Searcher`.

    Build with :meth:`build`, persist with :meth:`save`, reopen with :meth:`load`. ``add`` and
    ``delete`` change the index in memory; call ``save()`` to write the change atomically.
    """

    def __init__(
        self,
        docs: list[Document],
        bm25: BM25Index,
        vectors: VectorStore | ChunkStore,
        encoder_config: dict[str, Any],
        transform: Any = None,
        encoder: Any = None,
        path: Path | None = None,
        oversample: float = DEFAULT_OVERSAMPLE,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.docs = docs
        self.bm25 = bm25
        self.vectors = vectors
        embedder = Embedder(encoder_config, transform, encoder)
        super().__init__(embedder, pipeline, path, oversample)  # type: ignore[arg-type]
        self._rows = {d.id: i for i, d in enumerate(docs)}
        self.baseline: Baseline | None = None  # the corpus reference the monitor compares with
        self.ann_choice: dict[str, Any] | None = None  # why ann="auto" chose exact or HNSW

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        corpus: Iterable[Document],
        encoder: Any = "minilm",
        transform: Any = None,
        precision: Precision | str = Precision.FLOAT32,
        ann: AnnConfig | str | None = None,
        bm25: BM25Config | None = None,
        oversample: float = DEFAULT_OVERSAMPLE,
        show_progress: bool = False,
        baseline: bool = True,
        chunks: Chunking | str | None = None,
        ann_budget_ms: float | None = None,
    ) -> Index:
        """Encode and index ``corpus``.

        Args:
            corpus: documents (their ``content``, title and text, is what gets indexed).
            encoder: an :class:`~vecdoctor.encode.encoder.Encoder`, a model name, or an
                encoder config dict (``Encoder.config()``).
            transform: a fitted Whitening/AllButTheTop (or a folder holding one), or ``None``.
            precision: float32, int8 or binary storage for dense search.
            ann: ``None`` (exact search), ``"hnsw"``, ``"ivf"``, an :class:`AnnConfig`, or
                ``"auto"``: exact search while it takes at most ``ann_budget_ms`` a query on
                this machine, else HNSW with its recall@10 against exact search measured on
                self-supervised queries (:func:`~vecdoctor.index.ann.choose_ann`; the
                measurements are kept in ``ann_choice`` and config.json).
            oversample: candidates fetched per result before int8/binary rescoring.
            baseline: compute the corpus baseline the monitor compares traffic with
                (:mod:`vecdoctor.index.baseline`; a sample, a second or two).
            chunks: ``"max"`` or ``"max+first"``: index every token window of a document as its
                own vector (:mod:`vecdoctor.index.chunks`; the encoder's window sets the chunk
                size, by default the model's input length with half shared); ``None``: one
                vector per document.
        """
        docs = index_documents(corpus)
        if oversample < 1:
            raise InputError(f"oversample must be >= 1, got {oversample!r}")
        from vecdoctor.encode.encoder import as_encoder

        enc = as_encoder(encoder)
        if transform is not None and isinstance(transform, (str, Path)):
            from vecdoctor.fix.transform import resolve_transform

            transform = resolve_transform(transform, enc)
        texts = [d.content for d in docs]
        lexical = BM25Index(bm25).build(texts)
        encoder_config = {**enc.config(), "fingerprint": enc.fingerprint}
        placeholder = VectorStore(np.zeros((0, int(enc.dimension)), np.float32))
        index = cls(docs, lexical, placeholder, encoder_config, transform, enc, None, oversample)
        if chunks is None:
            vecs = index.embedder.embed(texts, role=Role.DOCUMENT, show_progress=show_progress)
            vecs = no_vector_for_blank(texts, vecs)
            index.vectors = index._dense_store(vecs, precision, ann, ann_budget_ms)
        else:
            vecs, owners = index.embedder.embed_chunks(texts, show_progress=show_progress)
            vecs = no_vector_for_blank(texts, vecs, owners)
            store = index._dense_store(vecs, precision, ann, ann_budget_ms)
            index.vectors = ChunkStore(store, owners, len(docs), chunks)
            logger.info("%d documents cut into %d chunks (%s)", len(docs), len(vecs), enc.chunk_window())
        if baseline:
            index.baseline = compute_baseline(index)
        logger.info("indexed %d documents (%d-d, %s)", len(docs), vecs.shape[1], index.precision)
        return index

    def _dense_store(
        self, vecs: np.ndarray, precision: Precision | str, ann: AnnConfig | str | None,
        budget_ms: float | None,
    ) -> VectorStore:
        """The store of ``vecs``; ``ann="auto"`` measures exact search first (see :meth:`build`)."""
        if not (isinstance(ann, str) and ann.strip().lower() == "auto"):
            return VectorStore.build(vecs, precision, ann)
        from vecdoctor.index.ann import LATENCY_BUDGET_MS, AnnChoice, choose_ann

        budget = LATENCY_BUDGET_MS if budget_ms is None else float(budget_ms)
        if Precision.parse(precision) is not Precision.FLOAT32:
            self.ann_choice = AnnChoice(
                "exact", f"{precision} storage: exact search over the codes, then rescoring",
                len(vecs), 0, budget, 0.0).to_dict()
            return VectorStore.build(vecs, precision)
        queries = self.embed_queries(probe_queries(self.docs))
        config, graph, choice = choose_ann(vecs, queries, budget)
        self.ann_choice = choice.to_dict()
        logger.info("dense search: %s", choice.reason)
        return VectorStore(np.ascontiguousarray(vecs, dtype=np.float32), Precision.FLOAT32,
                           ann_config=config, ann=graph)

    @classmethod
    def from_vectors(
        cls,
        corpus: Iterable[Document],
        vectors: np.ndarray,
        encoder: Any,
        precision: Precision | str = Precision.FLOAT32,
        ann: AnnConfig | str | None = None,
        ann_budget_ms: float | None = None,
        transform: Any = None,
    ) -> Index:
        """An index over documents ``encoder`` has already encoded (``encode_documents``, in
        corpus order, then ``transform`` when given): what :meth:`build` would make, without
        encoding them again (``ann`` and ``ann_budget_ms`` as in :meth:`build`, ``"auto"``
        included)."""
        docs = index_documents(corpus)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = int(transform.output_dim if transform is not None else encoder.dimension)
        if vecs.ndim != 2 or len(vecs) != len(docs) or vecs.shape[1] != dim:
            raise InputError(
                f"got vectors of shape {vecs.shape} for {len(docs)} documents of a {dim}-d "
                "pipeline; pass encode_documents() of these documents (after the transform)"
            )
        lexical = BM25Index().build([d.content for d in docs])
        encoder_config = {**encoder.config(), "fingerprint": encoder.fingerprint}
        placeholder = VectorStore(np.zeros((0, vecs.shape[1]), np.float32))
        index = cls(docs, lexical, placeholder, encoder_config, transform, encoder)
        index.vectors = index._dense_store(vecs, precision, ann, ann_budget_ms)
        return index

    @classmethod
    def from_pipeline(
        cls,
        corpus: Iterable[Document],
        pipeline: Pipeline | dict[str, Any] | str | Path,
        encoder_options: dict[str, Any] | None = None,
        show_progress: bool = False,
        bm25: BM25Config | None = None,
        baseline: bool = True,
        auto_ann: bool = False,
        ann_budget_ms: float | None = None,
    ) -> Index:
        """Build from a :class:`~vecdoctor.pipeline.Pipeline` (or a pipeline.json path, or the
        dict of one). Its search settings become the index's defaults. ``encoder_options``
        (``cache``, ``batch_size``) do not change the vectors and are not saved. With
        ``auto_ann``, a pipeline without ``ann`` gets ``ann="auto"`` (see :meth:`build`).
        """
        if isinstance(pipeline, (str, Path)):
            pipeline = Pipeline.load(pipeline)
        elif not isinstance(pipeline, Pipeline):
            pipeline = Pipeline.from_dict(pipeline)
        corpus = list(corpus)
        encoder = pipeline_encoder(pipeline, corpus, encoder_options)
        index = cls.build(
            corpus,
            encoder,
            transform=pipeline.transform_dir,
            precision=pipeline.storage,
            ann="auto" if auto_ann and pipeline.ann is None else pipeline.ann,
            ann_budget_ms=ann_budget_ms,
            bm25=bm25,
            oversample=pipeline.oversample,
            show_progress=show_progress,
            baseline=baseline,
            chunks=pipeline.chunks,
        )
        index.pipeline = pipeline
        return index

    # -- documents --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._rows

    def sample_documents(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        rows = np.asarray(positions, dtype=np.int64)
        return rows, np.asarray(self.vectors.vectors[rows]), [self.docs[int(r)] for r in rows]

    def row(self, doc_id: str) -> int:
        try:
            return self._rows[doc_id]
        except KeyError:
            raise InputError(f"no document with id {doc_id!r} in the index") from None

    def add(self, docs: Iterable[Document], show_progress: bool = False) -> None:
        """Encode and append ``docs``; an id already in the index (or repeated) is an error."""
        new = new_documents(docs, lambda ids: [i for i in ids if i in self._rows])
        if not new:
            return
        texts = [d.content for d in new]
        if isinstance(self.vectors, ChunkStore):
            vecs, owners = self.embedder.embed_chunks(texts, show_progress=show_progress)
            vecs = no_vector_for_blank(texts, vecs, owners)
            vectors: VectorStore | ChunkStore = self.vectors.append(vecs, owners, len(new))
        else:
            vecs = self.embed_documents(texts, show_progress=show_progress)
            vectors = self.vectors.append(no_vector_for_blank(texts, vecs))
        docs = self.docs + new
        bm25 = BM25Index(self.bm25.config).build([d.content for d in docs])
        self.vectors = vectors
        self.bm25, self.docs = bm25, docs
        self._rows = {d.id: i for i, d in enumerate(docs)}

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id; any unknown id is an error and nothing is removed."""
        gone = set(ids_to_delete(ids, lambda wanted: [i for i in wanted if i in self._rows],
                                 len(self.docs)))
        if not gone:
            return
        keep = np.array([i for i, d in enumerate(self.docs) if d.id not in gone], dtype=np.int64)
        docs = [self.docs[i] for i in keep]
        bm25 = BM25Index(self.bm25.config).build([d.content for d in docs])
        self.vectors = self.vectors.select(keep)
        self.bm25, self.docs = bm25, docs
        self._rows = {d.id: i for i, d in enumerate(docs)}

    # -- persistence ------------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this index is, as it is now: its encoder, transform and vectors (storage,
        chunks, ANN), with the search settings, reranker and evidence it was given."""
        return pipeline_of(self, self._given)

    @pipeline.setter
    def pipeline(self, given: Pipeline | None) -> None:
        self._given = given

    def config(self) -> dict[str, Any]:
        """What config.json holds: header, the pipeline, the encoder, counts, dims, versions."""
        pipeline = self.pipeline.to_dict()
        pipeline["transform_dir"] = TRANSFORM if self.transform is not None else None
        for key in ("class", "format_version", "vecdoctor_version"):
            pipeline.pop(key)
        return {
            **header("Index", FORMAT_VERSION),
            "pipeline": pipeline,
            "encoder": self.encoder_config,
            "model_id": self.model_id,
            "model_fingerprint": self.encoder_config.get("model_fingerprint"),
            "fingerprint": self.encoder_config.get("fingerprint"),
            "bm25": asdict(self.bm25.config),
            "counts": {
                "documents": len(self.docs),
                "bm25_terms": len(self.bm25.retriever_.vocab_dict),
                **({"chunks": self.vectors.n_chunks} if isinstance(self.vectors, ChunkStore) else {}),
            },
            "dims": {
                "encoder": int(self.encoder_config.get("dimension", self.dim)),
                "index": self.dim,
            },
            "files": [DOCS, BM25_DIR, *self.vectors.files()]
            + ([TRANSFORM] if self.transform is not None else [])
            + ([BASELINE_DIR] if self.baseline is not None else []),
            "versions": versions(),
            **({"ann_choice": self.ann_choice} if self.ann_choice else {}),
        }

    def save(self, path: str | Path | None = None, force: bool = False) -> Path:
        """Write the index folder atomically (the old folder stays intact if this fails).

        An existing folder is replaced only when it holds a vecdoctor index, or with ``force``.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise InputError("this index has no folder yet; call save(path)")
        check_output(target, INDEX, force)
        with atomic_dir(target) as tmp:
            write_docs(tmp / DOCS, self.docs)
            self.bm25.save(tmp / BM25_DIR)
            self.vectors.save(tmp)
            if self.transform is not None:
                self.transform.save(tmp / TRANSFORM)
            if self.baseline is not None:
                self.baseline.save(tmp / BASELINE_DIR)
            write_json(tmp / "config.json", self.config())
        self.path = target
        logger.info("saved index of %d documents to %s", len(self.docs), target)
        return target

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, baseline: bool = True) -> Index:
        """Open an index folder, checking every file against config.json.

        ``baseline=False`` skips the stored baseline (to compute it again when it is damaged).

        A folder from elsewhere is data, never code: arrays load with ``allow_pickle=False``,
        symlinks and names that leave the folder are refused, and any damaged file is an
        :class:`InputError` naming the folder.
        """
        try:
            return cls._load(Path(path), mmap, baseline)
        except (InputError, IncompatibleError):
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
                UnicodeDecodeError, RecursionError, MemoryError, RuntimeError) as exc:
            # RuntimeError: faiss reading a crafted graph; MemoryError: a size field that lies
            logger.debug("loading %s failed", path, exc_info=True)
            raise InputError(
                f"{path}: damaged or not a vecdoctor index ({type(exc).__name__}: {exc}); "
                "rebuild it with `vecdoctor index`"
            ) from None

    @classmethod
    def _load(cls, folder: Path, mmap: bool, baseline: bool = True) -> Index:
        not_a_corpus(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such index folder; build one with `vecdoctor index`")
        source = folder / "config.json"
        meta = read_json(safe_child(folder, "config.json"))
        if not isinstance(meta, dict) or meta.get("class") != "Index":
            raise InputError(f"{source}: not a vecdoctor index config")
        version = read_header(meta, "Index", FORMAT_VERSION, source)
        try:
            n = int(meta["counts"]["documents"])
            dim = int(meta["dims"]["index"])
            encoder_config = meta["encoder"]
            if not isinstance(encoder_config, dict) or not isinstance(
                encoder_config.get("model"), str
            ):
                raise TypeError("'encoder' must be an object naming a model")
            encoder_config = dict(encoder_config)
            if n < 1 or dim < 1:
                raise ValueError(f"counts.documents={n} and dims.index={dim} must be >= 1")
            bm25_config = BM25Config(**meta["bm25"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: missing or bad entry ({exc}); rebuild the index") from None
        spec = meta["pipeline"] if version >= 2 else v1_pipeline(meta)
        if version >= 2 and isinstance(spec, dict):
            spec = {**header("Pipeline", 2), **spec}
        pipeline = Pipeline.from_dict(spec, folder, source)
        if pipeline.transform_dir is not None and pipeline.transform_dir != folder / TRANSFORM:
            raise InputError(f"{source}: the transform of an index lives in {TRANSFORM}/")
        precision, ann, oversample = pipeline.storage, pipeline.ann, pipeline.oversample
        docs = read_docs(safe_child(folder, DOCS), n)
        bm25 = BM25Index.load(safe_child(folder, BM25_DIR), mmap=False)
        if bm25.config != bm25_config or bm25.num_docs != n:
            raise InputError(
                f"{folder / BM25_DIR}: does not match config.json "
                f"({bm25.num_docs} documents, expected {n}); rebuild the index"
            )
        vectors: VectorStore | ChunkStore
        if pipeline.chunks is None:
            vectors = VectorStore.load(folder, n, dim, precision, ann, mmap=mmap)
        else:
            n_chunks = meta["counts"].get("chunks")
            if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < n:
                raise InputError(f"{source}: counts.chunks must be a whole number >= {n}, "
                                 f"got {n_chunks!r}; rebuild the index")
            vectors = ChunkStore.load(folder, n, n_chunks, dim, precision, ann, pipeline.chunks, mmap)
        transform = None
        if pipeline.transform_dir is not None:
            from vecdoctor.fix.transform import load_transform

            transform = load_transform(
                safe_child(folder, TRANSFORM), fingerprint=encoder_config.get("fingerprint")
            )
        index = cls(
            docs,
            bm25,
            vectors,
            encoder_config,
            transform,
            None,
            folder,
            oversample,
            pipeline,
        )
        choice = meta.get("ann_choice")
        index.ann_choice = dict(choice) if isinstance(choice, dict) else None
        if baseline and safe_child(folder, BASELINE_DIR).exists():
            try:
                index.baseline = Baseline.load(folder / BASELINE_DIR)
                index.baseline.check(str(encoder_config.get("fingerprint") or ""),
                                     folder / BASELINE_DIR)
            except (InputError, IncompatibleError) as exc:
                raise type(exc)(
                    f"{exc}; compute the baseline again with `vecdoctor baseline {folder}`"
                ) from None
        return index

    def __repr__(self) -> str:
        return (
            f"Index({len(self.docs)} documents, model={self.model_id!r}, dim={self.dim}, "
            f"precision={self.precision}, path={str(self.path) if self.path else None!r})"
        )
