"""The dense half of an index: float32 vectors, optional int8/binary codes and faiss ANN.

Float32 vectors are always kept (``vectors.npy``, memory-mapped on load) because quantized
search re-ranks an oversampled candidate list with them (rescoring).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

import vecdoctor.index.dense as dense
from vecdoctor.config import (
    DEFAULT_OVERSAMPLE,  # noqa: F401 (re-exported)
    Precision,
)
from vecdoctor.errors import InputError
from vecdoctor.folders import child as safe_child
from vecdoctor.index.ann import AnnConfig, ann_search, build_ann, load_ann, save_ann
from vecdoctor.io import load_npy, save_npy

logger = logging.getLogger(__name__)

VECTORS = "vectors.npy"
CODES = "codes.npy"
QUANTIZER = "quantizer"
ANN = "ann.faiss"


def _fit_quantizer(precision: Precision, vectors: np.ndarray) -> Any:
    from vecdoctor.fix.quantize import BinaryQuantizer, ScalarQuantizer

    if precision is Precision.INT8:
        return ScalarQuantizer().fit(vectors)
    return BinaryQuantizer().fit(vectors)


class VectorStore:
    """Vectors plus whatever the precision and ANN option need to search them."""

    def __init__(
        self,
        vectors: np.ndarray,
        precision: Precision | str = Precision.FLOAT32,
        codes: np.ndarray | None = None,
        quantizer: Any = None,
        ann_config: AnnConfig | None = None,
        ann: Any = None,
    ) -> None:
        self.vectors = vectors
        self.precision: Precision = Precision.parse(precision)
        self.codes = codes
        self.quantizer = quantizer
        self.ann_config = ann_config
        self.ann = ann
        self._binary: Any = None  # faiss binary index over the codes (binary precision)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        precision: Precision | str = Precision.FLOAT32,
        ann: AnnConfig | str | None = None,
        quantizer: Any = None,
    ) -> VectorStore:
        """Encode ``vectors`` for ``precision`` (fitting the int8 ranges unless given)."""
        precision = Precision.parse(precision)
        ann_config = AnnConfig.parse(ann)
        if ann_config is not None and precision is not Precision.FLOAT32:
            raise InputError(
                f"ann={ann_config.kind!r} searches float32 vectors; "
                "use precision float32 with ann, "
                f"or precision {precision} without it"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        codes = None
        if precision is Precision.FLOAT32:
            quantizer = None
        elif len(vectors):
            # int8 ranges are fitted once, on the first corpus; additions reuse them
            quantizer = quantizer if quantizer is not None else _fit_quantizer(precision, vectors)
            codes = np.asarray(quantizer.encode(vectors))
        index = build_ann(vectors, ann_config) if ann_config is not None and len(vectors) else None
        return cls(vectors, precision, codes, quantizer, ann_config, index)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def append(self, vectors: np.ndarray) -> VectorStore:
        """A new store with ``vectors`` added at the end (int8 ranges are kept, not refitted)."""
        merged = np.concatenate([np.asarray(self.vectors, dtype=np.float32), vectors], axis=0)
        return VectorStore.build(merged, self.precision, self.ann_config, self.quantizer)

    def select(self, keep: np.ndarray) -> VectorStore:
        """A new store with only the rows in ``keep`` (in that order)."""
        kept = np.asarray(self.vectors[keep], dtype=np.float32)
        return VectorStore.build(kept, self.precision, self.ann_config, self.quantizer)

    def score_rows(self, query: np.ndarray, rows: Any) -> np.ndarray:
        """The dense score of rows ``rows`` for one query vector (float32 vectors)."""
        return np.asarray(self.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32) @ query

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        rescore: bool = True,
        oversample: float = DEFAULT_OVERSAMPLE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores per query (``(m, k)`` arrays; ANN rows may hold -1).

        int8/binary: fetch ``k * oversample`` candidates from the codes, then (``rescore``)
        re-rank them by exact float inner product; without rescoring the quantized scores
        are returned (int8: decoded inner product; binary: +-1 dot product).
        """
        n = len(self)
        if self.precision is Precision.FLOAT32:
            if self.ann is not None:
                return ann_search(self.ann, queries, k)
            return dense.exact_search(queries, self.vectors, k)
        fetch = dense.oversampled(k, oversample, n) if rescore else min(int(k), n)
        assert self.codes is not None  # quantized precisions always hold codes
        if self.precision is Precision.INT8:
            rows, scores = dense.int8_search(
                queries, self.codes, self.quantizer.scale_, self.quantizer.offset_, fetch
            )
        else:
            if self._binary is None:  # built on first use: a copy of the codes, 1/32 of the floats
                self._binary = dense.binary_index(self.codes)
            rows, scores = dense.binary_index_search(
                self._binary, queries, self.dim, fetch, encode=self.quantizer.encode
            )
        if not rescore:
            return rows, scores
        return dense.rescore(queries, rows, self.vectors, k)

    # -- persistence ----------------------------------------------------------------------
    def files(self) -> list[str]:
        names = [VECTORS]
        if self.codes is not None:
            names += [CODES, QUANTIZER]
        if self.ann is not None:
            names.append(ANN)
        return names

    def save(self, folder: Path) -> None:
        save_npy(folder / VECTORS, np.asarray(self.vectors, dtype=np.float32))
        if self.codes is not None:
            save_npy(folder / CODES, self.codes)
        if self.quantizer is not None:
            self.quantizer.save(folder / QUANTIZER)
        if self.ann is not None:
            save_ann(self.ann, folder / ANN)

    @classmethod
    def load(
        cls,
        folder: Path,
        n_rows: int,
        dim: int,
        precision: Precision | str,
        ann_config: AnnConfig | None,
        mmap: bool = True,
    ) -> VectorStore:
        """Load and check shapes against the counts recorded in the index config."""
        precision = Precision.parse(precision)
        vectors = load_npy(safe_child(folder, VECTORS), mmap=mmap)
        _check_shape(folder / VECTORS, vectors, (n_rows, dim), np.float32)
        _check_finite(folder / VECTORS, vectors)
        codes = quantizer = None
        if precision is not Precision.FLOAT32:
            from vecdoctor.fix.quantize import load_quantizer

            quantizer = load_quantizer(safe_child(folder, QUANTIZER), dim=dim)
            codes = load_npy(safe_child(folder, CODES), mmap=mmap)
            if precision is Precision.INT8:
                _check_shape(folder / CODES, codes, (n_rows, dim), np.int8)
            else:
                _check_shape(folder / CODES, codes, (n_rows, (dim + 7) // 8), np.uint8)
        ann = None
        if ann_config is not None:
            ann = load_ann(safe_child(folder, ANN), ann_config, n_rows)
        return cls(vectors, precision, codes, quantizer, ann_config, ann)


def _check_finite(path: Path, array: np.ndarray, block: int = 65_536) -> None:
    """Refuse stored vectors that are NaN or infinite (they would score NaN, which is not
    JSON, and rank anywhere), reading a block of rows at a time."""
    for start in range(0, len(array), block):
        part = np.asarray(array[start : start + block])
        if not np.isfinite(part).all():
            row = start + int(np.argwhere(~np.isfinite(part))[0][0])
            raise InputError(f"{path}: row {row} holds a NaN or infinite value; the vectors are "
                             "damaged, rebuild the index")


def _check_shape(path: Path, array: np.ndarray, shape: tuple[int, int], dtype: Any) -> None:
    if array.dtype != np.dtype(dtype) or tuple(array.shape) != shape:
        raise InputError(
            f"{path}: holds a {array.dtype} array of shape {tuple(array.shape)}, "
            f"expected {np.dtype(dtype)} "
            f"{shape} from config.json; the index folder is inconsistent, rebuild it"
        )
