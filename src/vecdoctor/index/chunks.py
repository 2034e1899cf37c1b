"""Chunk-level retrieval: every token window of a document is a vector of its own.

A long document pooled into one vector is diluted (a passage that answers the query is averaged
with everything else) or truncated. Indexing each window separately and scoring a document by
its best window is MaxP (Dai & Callan, 2019, "Deeper Text Understanding for IR with Contextual
Neural Language Modeling"); ``max+first`` averages that with the first window's score, which
keeps the title and abstract (often the best summary of a document) in the score.

The chunk vectors live in an ordinary :class:`~vecdoctor.index.vectors.VectorStore` (so int8,
binary and ANN work on chunks as on documents) next to ``chunk_owners.npy``: the document row
of every chunk. Searches return document rows, best first, like any dense store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Chunking, Precision
from vecdoctor.errors import InputError
from vecdoctor.folders import child as safe_child
from vecdoctor.index.ann import AnnConfig
from vecdoctor.index.vectors import DEFAULT_OVERSAMPLE, VectorStore
from vecdoctor.io import load_npy, save_npy

__all__ = ["OWNERS", "ChunkStore", "combine", "first_rows"]

OWNERS = "chunk_owners.npy"


def first_rows(owners: np.ndarray, n_docs: int) -> np.ndarray:
    """Each document's first chunk row (chunks are stored in document order)."""
    first = np.searchsorted(owners, np.arange(n_docs), side="left")
    return first.astype(np.int64)


def combine(mode: Chunking, best: Any, first: Any) -> Any:
    """A document's score from its best and its first chunk's scores, as ``mode`` says."""
    return best if mode is Chunking.MAX else (best + first) / 2


def check_owners(owners: np.ndarray, n_docs: int, source: Any = "chunk owners") -> np.ndarray:
    """``owners`` as int64 if every document owns at least one chunk, in order; else an error."""
    owners = np.asarray(owners)
    if owners.ndim != 1 or owners.dtype.kind not in "iu":
        raise InputError(f"{source}: chunk owners must be a 1-d integer array, got {owners.dtype} {owners.shape}")
    owners = owners.astype(np.int64, copy=False)
    if len(owners) < n_docs or (len(owners) and (owners[0] != 0 or owners[-1] != n_docs - 1)):
        raise InputError(f"{source}: chunks do not cover documents 0..{n_docs - 1}; rebuild the index")
    steps = np.diff(owners)
    if len(steps) and (steps.min() < 0 or steps.max() > 1):
        raise InputError(f"{source}: chunk owners are not in document order; rebuild the index")
    return owners


class ChunkStore:
    """Chunk vectors, searched per document: what :class:`~vecdoctor.index.store.Index` holds
    as ``vectors`` when its pipeline has ``chunks``.

    ``len()`` counts documents; :attr:`n_chunks` counts vectors.
    """

    def __init__(
        self, store: VectorStore, owners: np.ndarray, n_docs: int, mode: Chunking | str = Chunking.MAX
    ) -> None:
        if len(store) != len(owners):
            raise InputError(f"{len(store)} chunk vectors but {len(owners)} chunk owners")
        self.store = store
        self.owners = check_owners(owners, n_docs)
        self.n_docs = int(n_docs)
        self.mode = Chunking.parse(mode)
        self.first = first_rows(self.owners, self.n_docs)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        owners: np.ndarray,
        n_docs: int,
        mode: Chunking | str = Chunking.MAX,
        precision: Precision | str = Precision.FLOAT32,
        ann: AnnConfig | str | None = None,
        quantizer: Any = None,
    ) -> ChunkStore:
        return cls(VectorStore.build(vectors, precision, ann, quantizer), owners, n_docs, mode)

    # -- what a dense store offers ------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_docs

    @property
    def n_chunks(self) -> int:
        return len(self.store)

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def precision(self) -> Precision:
        return self.store.precision

    @property
    def ann_config(self) -> AnnConfig | None:
        return self.store.ann_config

    @property
    def vectors(self) -> np.ndarray:
        """One vector per document: its first chunk (what a truncating index would store)."""
        return np.asarray(self.store.vectors[self.first], dtype=np.float32)

    def score_rows(self, query: np.ndarray, rows: Any) -> np.ndarray:
        """The dense score of documents ``rows`` for one query vector, as a search ranks them."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(len(rows), dtype=np.float32)
        q = np.asarray(query, dtype=np.float32)
        for i, row in enumerate(rows):
            lo = self.first[row]
            hi = self.first[row + 1] if row + 1 < self.n_docs else self.n_chunks
            scores = np.asarray(self.store.vectors[lo:hi], dtype=np.float32) @ q
            out[i] = combine(self.mode, float(scores.max()), float(scores[0]))
        return out

    def search(
        self,
        queries: np.ndarray,
        k: int,
        rescore: bool = True,
        oversample: float = DEFAULT_OVERSAMPLE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query by their best chunk (``(m, k)`` arrays, -1 padded).

        Chunks come back best first, so a document's first appearance is its best chunk: the
        chunk list is deepened until it holds ``k`` distinct documents (or every chunk). With
        ``max+first``, ``k * oversample`` documents are gathered that way and ranked again by
        the mean of their best and first chunk's scores.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        k = max(int(k), 0)
        want = k if self.mode is Chunking.MAX else min(self.n_docs, max(k, int(np.ceil(k * oversample))))
        rows_out = np.full((len(queries), k), -1, dtype=np.int64)
        scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if k == 0 or not len(queries):
            return rows_out, scores_out
        depth = min(self.n_chunks, max(want * 2, want + 8))
        todo = np.arange(len(queries))
        while len(todo):
            rows, scores = self.store.search(queries[todo], depth, rescore, oversample)
            again = []
            for j, q in enumerate(todo):
                docs, best = self._best_per_document(rows[j], scores[j], want)
                if len(docs) < want and depth < self.n_chunks:
                    again.append(q)
                    continue
                if self.mode is Chunking.MAX_FIRST and len(docs):
                    first = np.asarray(self.store.vectors[self.first[docs]], dtype=np.float32) @ queries[q]
                    combined = combine(self.mode, best, first)
                    order = np.lexsort((docs, -combined))[:k]
                    docs, best = docs[order], combined[order]
                n = min(k, len(docs))
                rows_out[q, :n], scores_out[q, :n] = docs[:n], best[:n]
            todo = np.asarray(again, dtype=np.int64)
            depth = min(self.n_chunks, depth * 4)
        return rows_out, scores_out

    def _best_per_document(
        self, rows: np.ndarray, scores: np.ndarray, want: int
    ) -> tuple[np.ndarray, np.ndarray]:
        valid = rows >= 0
        rows, scores = rows[valid], scores[valid]
        docs = self.owners[rows]
        _, first_seen = np.unique(docs, return_index=True)
        first_seen = np.sort(first_seen)[:want]  # chunk lists are best first
        return docs[first_seen], scores[first_seen].astype(np.float32)

    # -- changes ------------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, owners: np.ndarray, n_new: int) -> ChunkStore:
        """A new store with the chunks of ``n_new`` documents added (owners count from 0)."""
        owners = check_owners(owners, n_new, "new chunks")
        store = self.store.append(vectors)
        return ChunkStore(store, np.concatenate([self.owners, owners + self.n_docs]),
                          self.n_docs + n_new, self.mode)

    def select(self, keep: np.ndarray) -> ChunkStore:
        """A new store with only the documents at rows ``keep`` (in that order)."""
        keep = np.asarray(keep, dtype=np.int64)
        counts = np.bincount(self.owners, minlength=self.n_docs)
        rows = np.concatenate([np.arange(self.first[d], self.first[d] + counts[d]) for d in keep])
        owners = np.repeat(np.arange(len(keep)), counts[keep])
        return ChunkStore(self.store.select(rows), owners, len(keep), self.mode)

    # -- persistence --------------------------------------------------------------------------
    def files(self) -> list[str]:
        return [*self.store.files(), OWNERS]

    def save(self, folder: Path) -> None:
        self.store.save(folder)
        save_npy(folder / OWNERS, self.owners)

    @classmethod
    def load(
        cls,
        folder: Path,
        n_docs: int,
        n_chunks: int,
        dim: int,
        precision: Precision | str,
        ann_config: AnnConfig | None,
        mode: Chunking | str,
        mmap: bool = True,
    ) -> ChunkStore:
        store = VectorStore.load(folder, n_chunks, dim, precision, ann_config, mmap=mmap)
        owners = load_npy(safe_child(folder, OWNERS), mmap=False)
        if owners.shape != (n_chunks,):
            raise InputError(
                f"{folder / OWNERS}: holds {owners.shape}, expected ({n_chunks},) from config.json; "
                "the index folder is inconsistent, rebuild it"
            )
        return cls(store, check_owners(owners, n_docs, folder / OWNERS), n_docs, mode)
