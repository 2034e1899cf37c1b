"""A LanceDB table as a vecdoctor index: same Searcher, same pipeline, storage anywhere.

One table holds a row per document (``id``, ``title``, ``text``, ``vector``, ``fingerprint``);
its schema metadata holds the pipeline (encoder config, transform parameters, fingerprint). With
chunk-level retrieval (a pipeline's ``chunks``) a ``chunks`` column holds every token window's
vector of the document (LanceDB's multivector type), ``vector`` its first window's, and dense
search scores a document by its best chunk (MaxP), or by the mean of its best and first chunk's. A
fitted transform's arrays live in a companion table ``<name>__transform``. Full-text indexes
on ``title`` and ``text`` serve the lexical half, vector search (exact, or IVF-PQ once
:meth:`LanceIndex.create_vector_index` has run) the dense half, and :class:`~vecdoctor.search.searcher.
Searcher` fuses them exactly as it does for the built-in index folder.

Rows that the Searcher passes around are Lance row ids; a search fetches titles and texts with
its results, so building hits needs no second read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Chunking, Precision
from vecdoctor.data import Document
from vecdoctor.errors import IncompatibleError, InputError, require
from vecdoctor.folders import parse_json, value
from vecdoctor.index import rows as _rows
from vecdoctor.index.base import DocumentIndex
from vecdoctor.index.baseline import compute_baseline
from vecdoctor.index.building import ids_to_delete, index_documents, new_documents, pipeline_encoder
from vecdoctor.index.chunks import first_rows
from vecdoctor.index.lance_tables import (
    _has_table,
    _load_baseline,
    _load_transform,
    save_baseline,
    save_transform,
)
from vecdoctor.index.lance_views import TEXT_COLUMNS, LanceDocs, LanceFullText, LanceVectors
from vecdoctor.pipeline import Embedder, Pipeline

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "documents"
DEFAULT_REFINE = 50
"""IVF-PQ candidates re-ranked with the stored vectors, per result. With LanceDB's default
partitions and sub-vectors, recall@10 against exact search (``benchmarks/scale_curve.py``, 384-d)
was 0.59 / 0.45 / 0.24 at 10k / 100k / 1M documents unrefined, 0.97 / 0.90 / 0.70 refined by 10
and 1.00 / 0.99 / 0.89 by 50, for 2-4 ms more a query; more probes changed nothing (the PQ codes
limit it), more sub-vectors would."""


def connect(uri: str | Path, storage_options: dict[str, str] | None = None) -> Any:
    lancedb = require("lancedb", "scale")
    return lancedb.connect(str(uri), storage_options=storage_options)  # type: ignore[attr-defined]


def table_uri(uri: str | Path, table: str = DEFAULT_TABLE) -> str:
    """Where LanceDB keeps ``table`` of the database at ``uri`` (what Ray writes to)."""
    return f"{str(uri).rstrip('/')}/{table}.lance"


def table_exists(uri: str | Path, table: str = DEFAULT_TABLE,
                 storage_options: dict[str, str] | None = None) -> bool:
    """Whether the database at ``uri`` holds ``table`` (a missing database holds none)."""
    return _has_table(connect(uri, storage_options), table)


def _sql_list(ids: Sequence[str]) -> str:
    return ", ".join("'" + i.replace("'", "''") + "'" for i in ids)


class LanceIndex(DocumentIndex):
    """An index stored in a LanceDB table (local or object storage).

    Like the folder :class:`~vecdoctor.index.store.Index` it is a
    :class:`~vecdoctor.index.base.DocumentIndex`: the same :class:`~vecdoctor.pipeline.Embedder`
    (encoder checks, queries embedded through the same encoder and transform), its own storage; ``Searcher(LanceIndex.load(uri))`` works
    like ``Searcher(Index.load(folder))``. Open with :meth:`load`, create with :meth:`build`
    (in this process) or :func:`vecdoctor.scale.ray_encode.build_lance` (an actor pool on Ray
    writing straight to the table).
    """

    def __init__(
        self,
        table: Any,
        encoder_config: dict[str, Any],
        transform: Any = None,
        encoder: Any = None,
        uri: str | None = None,
        search_defaults: dict[str, Any] | None = None,
        nprobes: int = 20,
        refine_factor: int | None = DEFAULT_REFINE,
        exact: bool = False,
        chunks: Chunking | str | None = None,
    ) -> None:
        if refine_factor is not None and (isinstance(refine_factor, bool)
                                          or not isinstance(refine_factor, int) or refine_factor < 1):
            raise InputError(f"refine_factor must be a whole number >= 1 (or None: off), got "
                             f"{refine_factor!r}")
        pipeline = Pipeline.from_dict({"encoder": encoder_config, "search": search_defaults or {}})
        self.chunks = Chunking.parse(chunks) if chunks is not None else None
        if self.chunks is not None:
            pipeline = dataclasses.replace(pipeline, chunks=self.chunks)
        path = Path(uri) if uri is not None and "://" not in uri else None
        super().__init__(Embedder(encoder_config, transform, encoder), pipeline, path, 1.0)
        self.table = table
        self.name = str(table.name)
        self.uri = uri
        self.nprobes = int(nprobes)
        self.refine_factor = refine_factor
        self.exact = bool(exact)
        self._vector_index: bool | None = None  # looked up once, not on every query
        dim = int(table.schema.field("vector").type.list_size)
        self.baseline: Any = None  # the corpus reference the monitor compares with
        self.db: Any = None  # the database connection (companion tables live there)
        self.lance_docs = LanceDocs(self)  # the same object as docs, with its own type
        self.docs = self.lance_docs
        self.bm25 = LanceFullText(self)
        self.vectors = LanceVectors(self, dim)

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        uri: str | Path,
        table: str = DEFAULT_TABLE,
        storage_options: dict[str, str] | None = None,
        baseline: bool = True,
        **options: Any,
    ) -> LanceIndex:
        """Open ``table`` of the LanceDB database at ``uri``; ``options``: see the constructor.
        ``baseline=False`` skips the stored baseline (to compute it again)."""
        db = connect(uri, storage_options)
        try:
            tbl = db.open_table(table)
        except (ValueError, FileNotFoundError) as exc:
            raise InputError(
                f"{uri}: no table {table!r} ({exc}); build one with `vecdoctor lance-index`"
            ) from None
        raw = (tbl.schema.metadata or {}).get(_rows.PIPELINE_KEY)
        if raw is None:
            raise IncompatibleError(f"{uri}: table {table!r} holds no vecdoctor pipeline metadata")
        where = f"{uri}: metadata of table {table!r}"
        meta = parse_json(raw, where)
        if not isinstance(meta, dict):
            raise InputError(f"{where}: expected a JSON object; rebuild the table")
        encoder = value(meta, "encoder", dict, where)
        transform = None
        if meta.get("transform"):
            fingerprint = value(encoder, "fingerprint", str, where, None)
            transform = _load_transform(db, table, fingerprint)
        chunks = value(meta, "chunks", str, where, None)
        if chunks is not None and _rows.CHUNKS not in tbl.schema.names:
            raise InputError(f"{where}: names chunks {chunks!r} but the table has no "
                             f"{_rows.CHUNKS!r} column; rebuild the table")
        index = cls(tbl, encoder, transform, uri=str(uri),
                    search_defaults=value(meta, "search", dict, where, None), chunks=chunks,
                    **options)
        index.db = db
        if baseline:
            index.baseline = _load_baseline(db, table, str(encoder.get("fingerprint") or ""), uri)
        return index

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_pipeline(
        cls,
        corpus: Iterable[Document],
        uri: str | Path,
        pipeline: Pipeline,
        table: str = DEFAULT_TABLE,
        encoder_options: dict[str, Any] | None = None,
        show_progress: bool = False,
    ) -> LanceIndex:
        """Build the table ``table`` at ``uri`` (replacing it) from a :class:`Pipeline`, as
        :meth:`Index.from_pipeline <vecdoctor.index.store.Index.from_pipeline>` builds a
        folder. LanceDB keeps float32 vectors; ``storage`` and ``ann`` must be left as default."""
        if pipeline.storage is not Precision.FLOAT32 or pipeline.ann is not None:
            raise InputError(
                "a LanceDB table keeps float32 vectors and builds its own IVF-PQ index "
                "(create_vector_index); use storage float32 and no ann"
            )
        docs = list(corpus)
        encoder = pipeline_encoder(pipeline, docs, encoder_options)
        index = cls.build(docs, str(uri), encoder, transform=pipeline.transform_dir, table=table,
                          overwrite=True, show_progress=show_progress, chunks=pipeline.chunks)
        return index

    @classmethod
    def build(
        cls,
        corpus: Iterable[Document],
        uri: str | Path,
        encoder: Any = "minilm",
        transform: Any = None,
        table: str = DEFAULT_TABLE,
        overwrite: bool = False,
        chunk: int = 4096,
        storage_options: dict[str, str] | None = None,
        show_progress: bool = False,
        chunks: Chunking | str | None = None,
    ) -> LanceIndex:
        """Encode ``corpus`` in this process and write it as ``table`` of the database at ``uri``.

        ``chunks`` (``"max"`` or ``"max+first"``): every token window of a document is stored as
        its own vector (the encoder's window sets the chunk size and stride) and dense search
        scores documents by their chunks (:mod:`vecdoctor.index.chunks` describes the scores).
        """
        from vecdoctor.encode.encoder import as_encoder
        from vecdoctor.fix.transform import resolve_transform

        docs = index_documents(corpus)
        enc = as_encoder(encoder)
        fitted = resolve_transform(transform, enc)
        fingerprint = _rows.vectors_fingerprint(enc, fitted)
        dim = int(fitted.output_dim if fitted is not None else enc.dimension)
        meta = _rows.describe(enc, fitted, fingerprint, dim)
        mode = Chunking.parse(chunks) if chunks is not None else None
        if mode is not None:
            meta["chunks"] = str(mode)
        db = connect(uri, storage_options)
        if not overwrite and _has_table(db, table):
            raise InputError(
                f"{uri}: table {table!r} already exists; pass overwrite=True (--overwrite) to "
                "replace it, or choose another table name"
            )
        tbl = db.create_table(table, schema=_rows.schema(dim, True, meta, chunks=mode is not None),
                              mode="overwrite" if overwrite else "create")
        index = cls(tbl, meta["encoder"], fitted, enc, uri=str(uri), chunks=mode)
        if fitted is not None:
            save_transform(db, table, fitted)
        for start in range(0, len(docs), chunk):
            index._append(docs[start : start + chunk], fingerprint, show_progress)
        index.create_text_index()
        index.db = db
        save_baseline(index, compute_baseline(index))
        logger.info("wrote %d documents to LanceDB table %s at %s", len(docs), table, uri)
        return index

    def _append(self, docs: list[Document], fingerprint: str, show_progress: bool) -> None:
        import pyarrow as pa

        texts = [d.content for d in docs]
        chunks = None
        if self.chunks is None:
            vectors = self.embed_documents(texts, show_progress=show_progress)
        else:
            chunk_vectors, owners = self.embedder.embed_chunks(texts, show_progress=show_progress)
            chunks = (chunk_vectors, owners)
            vectors = chunk_vectors[first_rows(owners, len(docs))]
        batch = pa.table({"id": [d.id for d in docs], "title": [d.title for d in docs],
                          "text": [d.text for d in docs]})
        self.table.add(_rows.output_table(batch, vectors, fingerprint, keep_text=True, chunks=chunks))

    def create_text_index(self) -> None:
        """(Re)build the full-text indexes on title and text (English stemming, stopwords)."""
        for column in TEXT_COLUMNS:
            self.table.create_fts_index(column, replace=True, language="English", stem=True,
                                        remove_stop_words=True, lower_case=True)

    def create_vector_index(
        self,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        nprobes: int = 20,
        refine_factor: int | None = DEFAULT_REFINE,
    ) -> None:
        """Build an IVF-PQ index for approximate dense search (inner product; with chunks, on
        the chunk vectors by cosine, LanceDB's only multivector metric, the candidates then
        scored exactly).

        ``nprobes`` partitions are searched per query; ``refine_factor`` re-ranks that many
        times k candidates with the stored float vectors (``None`` or 0: the PQ order as is).
        """
        column = "vector" if self.chunks is None else _rows.CHUNKS  # chunks: cosine only
        self.table.create_index(metric="dot" if self.chunks is None else "cosine",
                                index_type="IVF_PQ", vector_column_name=column,
                                num_partitions=num_partitions, num_sub_vectors=num_sub_vectors,
                                replace=True)
        self.nprobes, self.refine_factor = int(nprobes), refine_factor
        self._vector_index = True

    @property
    def has_vector_index(self) -> bool:
        """Whether the table has an ANN index on its vectors (chunks: on the chunk column).

        Listed once per opened index, and set by :meth:`create_vector_index`, so that a query
        does not read the table's index list; an index another process builds later is used
        once the table is opened again (until then search stays exact, never wrong)."""
        if self._vector_index is None:
            column = "vector" if self.chunks is None else _rows.CHUNKS
            self._vector_index = any(column in i.columns for i in self.table.list_indices())
        return self._vector_index

    # -- documents --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.table.count_rows())

    def sample_documents(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """Row ids, vectors and documents at ``positions`` (the baseline's sample)."""
        got = self.table.to_lance().take([int(p) for p in positions],
                                         columns=["_rowid", "id", *TEXT_COLUMNS, "vector"])
        docs = [Document(id=i, title=t or "", text=x or "") for i, t, x in zip(
            got.column("id").to_pylist(), got.column("title").to_pylist(),
            got.column("text").to_pylist(), strict=True)]
        return (np.asarray(got.column("_rowid").to_pylist(), dtype=np.int64),
                _rows.vector_matrix(got.column("vector")), docs)

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        return bool(self.table.count_rows(f"id = {_sql_list([doc_id])}"))

    def row(self, doc_id: str) -> int:
        found = (self.table.search().where(f"id = {_sql_list([doc_id])}").with_row_id(True)
                 .select(["id", *TEXT_COLUMNS]).limit(1).to_arrow())
        if found.num_rows == 0:
            raise InputError(f"no document with id {doc_id!r} in table {self.name!r}")
        self.lance_docs.remember(found)
        return int(found.column("_rowid")[0].as_py())

    def present(self, ids: Iterable[str], chunk: int = 1000) -> set[str]:
        """The ``ids`` that the table holds (one filtered scan per ``chunk`` ids)."""
        wanted = sorted({i for i in ids if isinstance(i, str)})
        found: set[str] = set()
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            found.update(self.table.search().where(f"id IN ({_sql_list(part)})").select(["id"])
                         .limit(len(part)).to_arrow().column("id").to_pylist())
        return found

    def add(self, docs: Iterable[Document], show_progress: bool = False) -> None:
        """Encode and append ``docs``; an id already in the table is an error."""
        new = new_documents(docs, self.present)
        if not new:
            return
        fingerprint = _rows.vectors_fingerprint(self.encoder, self.transform)
        self._append(new, fingerprint, show_progress)
        self.table.optimize()  # folds the new rows into the full-text indexes

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id; any unknown id is an error and nothing is removed."""
        gone = ids_to_delete(ids, self.present, len(self))
        if gone:
            self.table.delete(f"id IN ({_sql_list(gone)})")

    def save(self, path: str | Path | None = None) -> Path:
        """Nothing to do: every change is committed to the table when it is made."""
        raise InputError(
            "a LanceIndex is saved as it is built; to copy it to a folder, build an Index from "
            "the same corpus with `vecdoctor index`"
        )

    def config(self) -> dict[str, Any]:
        raw = (self.table.schema.metadata or {}).get(_rows.PIPELINE_KEY)
        meta = json.loads(raw) if raw else {}
        return {
            "class": "LanceIndex",
            "uri": self.uri,
            "table": self.name,
            **meta,
            "counts": {"documents": len(self)},
            "vector_index": self.has_vector_index,
        }

    def __repr__(self) -> str:
        return (f"LanceIndex({self.uri!r}, table={self.name!r}, model={self.model_id!r}, "
                f"dim={self.dim})")
