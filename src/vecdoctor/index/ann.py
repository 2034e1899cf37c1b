"""Optional approximate nearest-neighbour search with faiss: HNSW (Malkov & Yashunin, 2018)
or IVF-Flat (Jegou et al., 2011), both on inner product over the float32 vectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError, require

ANN_KINDS = ("hnsw", "ivf")


@dataclass(frozen=True)
class AnnConfig:
    """ANN settings: ``kind`` hnsw or ivf; ``m``/``ef_*`` for HNSW; ``nlist`` (0 means
    4*sqrt(n)) and ``nprobe`` for IVF."""

    kind: str = "hnsw"
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int = 0
    nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in ANN_KINDS:
            raise InputError(
                f"unknown ann kind {self.kind!r}; valid values: {', '.join(ANN_KINDS)}"
            )
        for name in ("m", "ef_construction", "ef_search", "nprobe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"ann {name} must be a positive integer, got {value!r}")
        if isinstance(self.nlist, bool) or not isinstance(self.nlist, int) or self.nlist < 0:
            raise InputError(f"ann nlist must be an integer >= 0, got {self.nlist!r}")

    @classmethod
    def parse(cls, value: AnnConfig | str | dict[str, Any] | None) -> AnnConfig | None:
        if value is None or isinstance(value, AnnConfig):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, str):
            return None if value.lower() in {"", "none", "exact"} else cls(kind=value.lower())
        raise TypeError(
            f"ann must be None, 'hnsw', 'ivf' or an AnnConfig, got {type(value).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_ann(vectors: np.ndarray, config: AnnConfig) -> Any:
    """Build a faiss index over ``vectors`` (rows keep their positions as ids)."""
    faiss: Any = require("faiss", "all")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    else:
        nlist = config.nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    index.add(x)
    configure(index, config)
    return index


def configure(index: Any, config: AnnConfig) -> None:
    """Set the search-time parameters (efSearch / nprobe)."""
    if config.kind == "hnsw":
        index.hnsw.efSearch = config.ef_search
    else:
        index.nprobe = config.nprobe


def ann_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows and inner products; faiss marks missing results with row -1."""
    k = min(int(k), int(index.ntotal))
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows.astype(np.int64), scores.astype(np.float32)


def save_ann(index: Any, path: Path) -> None:
    faiss: Any = require("faiss", "all")
    faiss.write_index(index, str(path))


def load_ann(path: Path, config: AnnConfig, n_rows: int) -> Any:
    faiss: Any = require("faiss", "all")
    if not path.is_file():
        raise InputError(f"{path}: file not found; the index folder is incomplete")
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:  # a crafted size field can ask for any amount
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InputError(
            f"{path}: cannot be read ({first}); the file is corrupt, rebuild the index"
        ) from None
    if int(index.ntotal) != n_rows:
        raise InputError(
            f"{path}: holds {index.ntotal} vectors but the index has {n_rows} documents; rebuild it"
        )
    configure(index, config)
    return index
