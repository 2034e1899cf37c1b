"""Vector quantizers: int8 scalar, binary (sign bits) and product quantization (faiss).

Each is fitted on corpus vectors, ``encode`` gives compact codes, ``decode`` gives float32
reconstructions; ``bytes_per_vector`` and ``compression`` are exact for the stored codes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vecdoctor._vectors import (
    SavedArrays,
    as_vectors,
    base_config,
    check_dim,
    check_fingerprint,
    read_config,
)
from vecdoctor.config import _Choice
from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "BinaryQuantizer",
    "ProductQuantizer",
    "ScalarMode",
    "ScalarQuantizer",
    "load_quantizer",
]


ENCODE_ROWS = 65_536
"""Rows encoded at once: bounds the float temporaries (1M x 384 int8 codes peaked at 4.7 GiB
resident when encoded in one piece)."""

class ScalarMode(_Choice):
    """How :class:`ScalarQuantizer` picks its ranges."""

    PER_DIM = "per_dim"
    """One [min, max] range per dimension, calibrated on the corpus (255 steps each)."""
    GLOBAL = "global"
    """One symmetric scale for all dimensions: the given percentile of |x| maps to 127."""


@dataclass(frozen=True)
class ScalarConfig:
    mode: ScalarMode | str = ScalarMode.PER_DIM
    percentile: float = 95.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ScalarMode.parse(self.mode))
        if not isinstance(self.percentile, (int, float)) or not 0 < self.percentile <= 100:
            raise InputError(f"percentile must be in (0, 100], got {self.percentile!r}")


@dataclass(frozen=True)
class BinaryConfig:
    pass


@dataclass(frozen=True)
class PQConfig:
    """``m`` sub-vectors of ``nbits`` bits; ``m=None``: the largest divisor of d that is <= d/8."""

    m: int | None = None
    nbits: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m is not None and (not isinstance(self.m, int) or self.m < 1):
            raise InputError(f"m must be a positive integer or None, got {self.m!r}")
        if not isinstance(self.nbits, int) or not 1 <= self.nbits <= 16:
            raise InputError(f"nbits must be an integer between 1 and 16, got {self.nbits!r}")


def default_pq_m(d: int) -> int:
    """Largest divisor of ``d`` that is at most d/8 (sub-vectors of at least 8 dimensions)."""
    return max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)


class _Quantizer(SavedArrays):
    """Common fit/encode/decode/save/load behaviour."""

    _arrays: ClassVar[tuple[str, ...]] = ()
    _name: ClassVar[str] = "quantizer"
    config: Any

    def __init__(self) -> None:
        self.source_: str | None = None

    def fit(
        self, vectors: Any, fingerprint: str | None = None, model_id: str | None = None
    ) -> _Quantizer:
        """Calibrate on corpus vectors (n, d)."""
        x = as_vectors(vectors, f"{self._name} fit input")
        self.dim_ = int(x.shape[1])
        self.n_samples_ = int(x.shape[0])
        self.fingerprint_ = fingerprint
        self.model_id_ = model_id
        self.source_ = None
        self._fit(x)
        return self

    def _fit(self, x: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "dim_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError(
                f"this {type(self).__name__} is not fitted; call fit(vectors) or "
                f"{type(self).__name__}.load(folder) first"
            )

    def _check(self, vectors: Any, fingerprint: str | None) -> np.ndarray:
        self._require_fitted()
        x = as_vectors(vectors, f"{self._name} input")
        check_dim(self.dim_, x.shape[1], self._name, self.source_)
        check_fingerprint(self.fingerprint_, fingerprint, self._name, self.source_)
        return x

    @property
    def bytes_per_vector(self) -> int:  # pragma: no cover
        raise NotImplementedError

    @property
    def compression(self) -> float:
        """float32 bytes divided by code bytes."""
        return 4 * self.dim_ / self.bytes_per_vector

    def reconstruct(self, vectors: Any, fingerprint: str | None = None) -> np.ndarray:
        """``decode(encode(x))``."""
        return self.decode(self.encode(vectors, fingerprint=fingerprint))

    def encode(self, vectors: Any, fingerprint: str | None = None) -> np.ndarray:
        x = self._check(vectors, fingerprint)
        if len(x) <= ENCODE_ROWS:
            return self._encode(x)
        # a block at a time: the float temporaries of one block, not of the whole matrix
        return np.concatenate([self._encode(x[i : i + ENCODE_ROWS])
                               for i in range(0, len(x), ENCODE_ROWS)])

    def _encode(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def decode(self, codes: Any) -> np.ndarray:
        self._require_fitted()
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.bytes_per_vector:
            raise InputError(
                f"{self._name} codes must have shape (n, {self.bytes_per_vector}), "
                f"got {codes.shape}; pass what encode() returned"
            )
        return self._decode(codes)

    def _decode(self, codes: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def check_compatible(self, encoder: Any) -> None:
        """Raise :class:`IncompatibleError` unless ``encoder`` makes the vectors it was fit on."""
        self._require_fitted()
        check_dim(self.dim_, int(encoder.dimension), self._name, self.source_)
        check_fingerprint(self.fingerprint_, encoder.fingerprint, self._name, self.source_)

    # -- persistence ---------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        params = asdict(self.config)
        return {k: str(v) if isinstance(v, _Choice) else v for k, v in params.items()}

    def to_config(self) -> dict[str, Any]:
        self._require_fitted()
        config = base_config(self, self._params())
        config["bytes_per_vector"] = self.bytes_per_vector
        config["arrays"] = {name: f"{name.rstrip('_')}.npy" for name in self._arrays}
        return config

    def __repr__(self) -> str:
        state = f"dim={self.dim_}" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({self.config}, {state})"


class ScalarQuantizer(_Quantizer):
    """int8 scalar quantization with calibrated ranges.

    Per-dimension min/max ranges (Jacob et al. 2018, "Quantization and Training of Neural
    Networks for Efficient Integer-Arithmetic-Only Inference", Eq. 1 affine mapping) or one
    symmetric scale from a percentile of |x| (``mode="global"``).

    Fitted attributes: ``offset_`` (d,) and ``scale_`` (d,): x ≈ offset + scale * code.
    """

    _arrays = ("offset_", "scale_")
    _name = "int8 quantizer"

    def __init__(self, mode: ScalarMode | str = ScalarMode.PER_DIM, percentile: float = 95.0):
        super().__init__()
        self.config = ScalarConfig(mode=mode, percentile=percentile)

    def _fit(self, x: np.ndarray) -> None:
        if self.config.mode == ScalarMode.PER_DIM:
            lo, hi = x.min(axis=0), x.max(axis=0)
            scale = (hi - lo) / 255.0
            scale = np.where(scale > 0, scale, 1.0)
            # code -128 maps to lo, +127 to hi
            self.offset_ = (lo + 128.0 * scale).astype(np.float32)
            self.scale_ = scale.astype(np.float32)
        else:
            top = float(np.percentile(np.abs(x), self.config.percentile))
            step = top / 127.0 if top > 0 else 1.0
            self.offset_ = np.zeros(self.dim_, dtype=np.float32)
            self.scale_ = np.full(self.dim_, step, dtype=np.float32)

    @property
    def bytes_per_vector(self) -> int:
        self._require_fitted()
        return self.dim_

    def _encode(self, x: np.ndarray) -> np.ndarray:
        codes = np.rint((x - self.offset_) / self.scale_)
        return np.clip(codes, -128, 127).astype(np.int8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return (self.offset_ + codes.astype(np.float32) * self.scale_).astype(np.float32)

    def _expected_shape(self, attr: str, config: dict[str, Any]) -> tuple[int, ...]:
        return (self.dim_,)


class BinaryQuantizer(_Quantizer):
    """One sign bit per dimension, packed 8 to a byte.

    Sign binarisation as in Charikar 2002 ("Similarity Estimation Techniques from Rounding
    Algorithms", random-hyperplane LSH with the coordinate axes as hyperplanes). ``decode``
    returns ±``scale_`` per dimension, where ``scale_`` is the mean |x| of that dimension.
    """

    _arrays = ("scale_",)
    _name = "binary quantizer"

    def __init__(self) -> None:
        super().__init__()
        self.config = BinaryConfig()

    def _fit(self, x: np.ndarray) -> None:
        total = np.zeros(x.shape[1], dtype=np.float64)
        for i in range(0, len(x), ENCODE_ROWS):
            total += np.abs(x[i : i + ENCODE_ROWS]).sum(axis=0, dtype=np.float64)
        self.scale_ = (total / len(x)).astype(np.float32)

    @property
    def bytes_per_vector(self) -> int:
        self._require_fitted()
        return math.ceil(self.dim_ / 8)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > 0, axis=1)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(codes.astype(np.uint8, copy=False), axis=1, count=self.dim_)
        return np.where(bits > 0, self.scale_, -self.scale_).astype(np.float32)

    def _expected_shape(self, attr: str, config: dict[str, Any]) -> tuple[int, ...]:
        return (self.dim_,)


def hamming_scores(query_codes: np.ndarray, doc_codes: np.ndarray) -> np.ndarray:
    """Similarity = -(Hamming distance) between packed bit codes, shape (n_queries, n_docs)."""
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    out = np.empty((len(query_codes), len(doc_codes)), dtype=np.int32)
    for i, q in enumerate(query_codes):
        out[i] = table[np.bitwise_xor(doc_codes, q)].sum(axis=1)
    return -out


class ProductQuantizer(_Quantizer):
    """Product quantization with faiss: m sub-vectors, each coded by a k-means codebook.

    Jégou, Douze & Schmid 2011, "Product Quantization for Nearest Neighbor Search" (TPAMI),
    Sec. II-B. Fitted attribute: ``centroids_`` (m, 2**nbits, d/m).
    """

    _arrays = ("centroids_",)
    _name = "product quantizer"

    def __init__(self, m: int | None = None, nbits: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.config = PQConfig(m=m, nbits=nbits, seed=seed)

    @property
    def m_(self) -> int:
        self._require_fitted()
        return self.config.m or default_pq_m(self.dim_)

    def _fit(self, x: np.ndarray) -> None:
        faiss = _faiss()
        m, nbits = self.m_, self.config.nbits
        if self.dim_ % m:
            raise InputError(
                f"m={m} does not divide the dimension {self.dim_}; "
                f"pick m among the divisors of {self.dim_}, e.g. {default_pq_m(self.dim_)}"
            )
        k = 2**nbits
        if len(x) < k:
            raise InputError(
                f"product quantization with nbits={nbits} needs at least {k} training vectors, "
                f"got {len(x)}; fit on more texts or pass nbits={max(1, int(math.log2(len(x))))}"
            )
        if len(x) < 39 * k:
            logger.info("PQ codebooks trained on %d vectors for %d centroids each", len(x), k)
        pq = faiss.ProductQuantizer(self.dim_, m, nbits)
        pq.cp.seed = self.config.seed
        pq.cp.min_points_per_centroid = 1  # we log our own note instead of faiss's stderr line
        pq.train(x)
        self._pq = pq
        cent = faiss.vector_to_array(pq.centroids).reshape(m, k, self.dim_ // m)
        self.centroids_ = cent.astype(np.float32)

    def _after_load(self) -> None:
        faiss = _faiss()
        m, k, _ = self.centroids_.shape
        pq = faiss.ProductQuantizer(self.dim_, m, int(math.log2(k)))
        faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids_).ravel(), pq.centroids)
        self._pq = pq

    @property
    def bytes_per_vector(self) -> int:
        self._require_fitted()
        return math.ceil(self.m_ * self.config.nbits / 8)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self._pq.compute_codes(x)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self._pq.decode(np.ascontiguousarray(codes, dtype=np.uint8))

    def _expected_shape(self, attr: str, config: dict[str, Any]) -> tuple[int, ...]:
        m = self.m_
        return (m, 2**self.config.nbits, self.dim_ // m)


def _faiss() -> Any:
    import faiss  # a core dependency, imported only when PQ is used

    return faiss


_QUANTIZERS: dict[str, type[_Quantizer]] = {
    "ScalarQuantizer": ScalarQuantizer,
    "BinaryQuantizer": BinaryQuantizer,
    "ProductQuantizer": ProductQuantizer,
}


def load_quantizer(
    folder: str | Path, fingerprint: str | None = None, dim: int | None = None
) -> ScalarQuantizer | BinaryQuantizer | ProductQuantizer:
    """Load whichever quantizer ``folder/config.json`` names."""
    config = read_config(folder, tuple(_QUANTIZERS))
    cls = _QUANTIZERS[config["class"]]
    return cls.load(folder, fingerprint=fingerprint, dim=dim)
