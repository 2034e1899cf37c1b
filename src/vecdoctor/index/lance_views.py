"""What a LanceDB table shows the searcher: documents by row id, full-text search and
vector search (documents or their chunks)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from vecdoctor.config import Chunking, Precision
from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.index import rows as _rows
from vecdoctor.index.chunks import combine

TEXT_COLUMNS = ("title", "text")
_DOC_CACHE = 4096
CHUNK_OVERSAMPLE = 4.0
"""With ``max+first``, documents gathered by their best chunk per result, then ranked again by
the mean of their best and first chunk's inner products (as the folder index's chunk store)."""


class LanceDocs:
    """``docs[row]`` for Lance row ids, served from the rows the last searches returned."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self._cache: OrderedDict[int, Document] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, table: Any) -> None:
        rows = table.column("_rowid").to_pylist()
        ids, titles, texts = (table.column(c).to_pylist() for c in ("id", "title", "text"))
        with self._lock:
            for row, *doc in zip(rows, ids, titles, texts, strict=True):
                self._cache[int(row)] = Document(id=doc[0], title=doc[1] or "", text=doc[2] or "")
                self._cache.move_to_end(int(row))
            while len(self._cache) > _DOC_CACHE:
                self._cache.popitem(last=False)

    def __getitem__(self, row: int) -> Document:
        with self._lock:
            doc = self._cache.get(int(row))
        if doc is not None:
            return doc
        table = (self._index.table.take_row_ids([int(row)]).with_row_id(True)
                 .select(["id", *TEXT_COLUMNS]).to_arrow())
        if table.num_rows == 0:
            raise InputError(f"no row {row} in table {self._index.name!r}")
        self.remember(table)
        return self._cache[int(row)]

    def __len__(self) -> int:
        return len(self._index)


class LanceFullText:
    """The lexical retriever: LanceDB full-text search over title and text (BM25 scores)."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        from lancedb.query import MultiMatchQuery

        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # boosts and operator have defaults; mypy reads pydantic's keyword-only fields as required
        match = MultiMatchQuery(query, list(TEXT_COLUMNS))  # type: ignore[call-arg]
        table = (self._index.table.search(match,
                                          query_type="fts")
                 .limit(int(k)).with_row_id(True).select(["id", *TEXT_COLUMNS, "_score"])
                 .to_arrow())
        self._index.lance_docs.remember(table)
        rows = np.asarray(table.column("_rowid").to_pylist(), dtype=np.int64)
        scores = np.asarray(table.column("_score").to_pylist(), dtype=np.float32)
        keep = scores > 0
        return rows[keep], scores[keep]


class LanceVectors:
    """The dense retriever: inner-product search in LanceDB (exact, or through an ANN index)."""

    precision = Precision.FLOAT32
    ann_config = None

    def __init__(self, index: Any, dim: int) -> None:
        self._index = index
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._index)

    def search(
        self, queries: np.ndarray, k: int, rescore: bool = True, oversample: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and inner products per query, ``(m, k)`` arrays padded with -1."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self._dim)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if k <= 0:
            return rows, scores
        for i, q in enumerate(queries):
            if self._index.chunks is None:
                found, best = self._search_documents(q, k)
            else:
                found, best = self._search_chunks(q, k, oversample)
            rows[i, : len(found)], scores[i, : len(found)] = found, best
        return rows, scores

    def _query(self, q: np.ndarray, column: str, metric: str, k: int, extra: list[str]) -> Any:
        index = self._index
        query = (index.table.search(q, vector_column_name=column).distance_type(metric)
                 .limit(int(k)).with_row_id(True).select(["id", *TEXT_COLUMNS, *extra]))
        if index.exact or not index.has_vector_index:
            query = query.bypass_vector_index()
        else:
            query = query.nprobes(index.nprobes)
            if index.refine_factor:
                query = query.refine_factor(index.refine_factor)
        table = query.to_arrow()
        index.lance_docs.remember(table)
        return table

    def _search_documents(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        table = self._query(q, "vector", "dot", k, ["_distance"])
        rows = np.asarray(table.column("_rowid").to_pylist(), dtype=np.int64)
        return rows, 1.0 - np.asarray(table.column("_distance").to_pylist())  # dot: 1 - q.x

    def _search_chunks(self, q: np.ndarray, k: int, oversample: float) -> tuple[np.ndarray, np.ndarray]:
        """Documents by their best chunk: LanceDB's multivector search (cosine MaxSim, the
        inner product's order for unit vectors) gathers candidates, whose chunk vectors are
        then scored exactly by inner product (and, with ``max+first``, ranked again)."""
        mode = self._index.chunks
        assert mode is not None  # only tables with chunks search them
        factor = max(oversample, CHUNK_OVERSAMPLE) if mode is Chunking.MAX_FIRST else oversample
        want = max(k, int(np.ceil(k * max(factor, 1.0))))
        table = self._query(q, _rows.CHUNKS, "cosine", want, ["_distance", _rows.CHUNKS])
        rows = np.asarray(table.column("_rowid").to_pylist(), dtype=np.int64)
        if not len(rows):
            return rows, np.zeros(0, np.float32)
        column = table.column(_rows.CHUNKS).combine_chunks()
        offsets = column.offsets.to_numpy().astype(np.int64)
        dots = _rows.vector_matrix(column.flatten()) @ q
        starts = offsets[:-1] - offsets[0]
        best = np.maximum.reduceat(dots, starts)
        score = combine(mode, best, dots[starts])
        order = np.lexsort((rows, -score))[:k]
        return rows[order], score[order].astype(np.float32)
