"""The :class:`Pipeline`: every choice from text to ranked hits, in one frozen object; and the
:class:`Embedder`, the one path from text to a stored vector (encoder, then transform).

``pipeline.json`` (written by ``vecdoctor checkup``, read by ``vecdoctor index --pipeline``) and
the ``pipeline`` entry of an index folder's ``config.json`` are its serialisation::

    {"class": "Pipeline", "format_version": 2, "vecdoctor_version": "0.7.0",
     "model": "minilm", "backend": null, "model_precision": null, "pooling": null,
     "max_length": null, "window": null,
     "transform": "whitening", "transform_dir": "transform",
     "storage": "int8", "ann": null, "oversample": 4.0,
     "mode": "hybrid", "fusion": "rrf", "rrf_k": 60,
     "rerank": null, "rerank_fusion": "rrf", "rerank_backend": null, "rerank_precision": null,
     "evidence": {...}, "measured_on": {...}}

``model_precision`` is the precision the model runs in (fp32, bf16, int8); ``storage`` is the
precision of the stored vectors (float32, int8, binary). Files written by vecdoctor 0.1.0
(no header; ``precision`` for the storage, ``transform_dir`` or a nested ``encoder``) still load.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import (
    DEFAULT_OVERSAMPLE,
    AnnConfig,
    Backend,
    Chunking,
    Fusion,
    ModelPrecision,
    Pooling,
    Precision,
    RerankFusion,
    Role,
    SearchMode,
    TransformKind,
    Window,
)
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.folders import read_json
from vecdoctor.io import write_json
from vecdoctor.persist import header, read_header

__all__ = ["FORMAT_VERSION", "Embedder", "Pipeline", "header", "read_header"]

FORMAT_VERSION = 2
"""2: the header and ``storage``; 1 (vecdoctor 0.1.0): no header, ``precision`` for storage."""


_ENCODER_KEYS = ("model", "backend", "pooling", "window", "max_length")


def _optional(parse: Any, value: Any) -> Any:
    return None if value is None else parse(value)


def _number(name: str, value: Any, low: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        what = "a whole number" if integer else "a finite number"
        raise InputError(f"pipeline {name} must be {what} >= {low:g}, got {value!r}")
    if value < low:
        raise InputError(f"pipeline {name} must be >= {low:g}, got {value!r}")
    return value


@dataclass(frozen=True)
class Pipeline:
    """Model, backend, model precision, pooling, max length, windows, chunks, fitted transform,
    storage precision, ANN, search mode, fusion and reranker: what turns a corpus into ranked hits.

    ``chunks`` (``max`` or ``max+first``; the key is left out of the JSON when off) indexes
    every token window of a document as its own vector and ranks a document by its best chunk
    (see :mod:`vecdoctor.index.chunks`); ``window`` then sets the chunk size and stride.

    Every field is validated on construction (strings become enums; numbers must be finite and
    in range), so a Pipeline that exists is one vecdoctor can build. ``transform_dir`` is the
    fitted transform's folder; ``evidence`` and ``measured_on`` record why each choice was made
    and on what data (they do not take part in comparisons).
    """

    model: str = "minilm"
    backend: Backend | None = None
    model_precision: ModelPrecision | None = None
    pooling: Pooling | None = None
    max_length: int | None = None
    window: Window | None = None
    chunks: Chunking | None = None  # chunk-level retrieval (every window its own vector)
    transform: TransformKind | None = None
    transform_dir: Path | None = None
    storage: Precision = Precision.FLOAT32
    ann: AnnConfig | None = None
    oversample: float = DEFAULT_OVERSAMPLE
    mode: SearchMode = SearchMode.HYBRID
    fusion: Fusion = Fusion.RRF
    rrf_k: float = 60
    fusion_weights: tuple[float, float] | None = None  # (bm25, dense); None: the searcher's
    rerank: str | None = None
    rerank_depth: int | None = None  # candidates the reranker scores; None: the searcher's
    rerank_fusion: RerankFusion = RerankFusion.RRF
    rerank_backend: Backend | None = None
    rerank_precision: ModelPrecision | None = None
    evidence: Mapping[str, str] = field(default_factory=dict, compare=False)
    measured_on: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f'the pipeline names no model; set "model", got {self.model!r}')
        put("backend", _optional(Backend.parse, self.backend))
        put("model_precision", _optional(ModelPrecision.parse, self.model_precision))
        put("pooling", _optional(Pooling.parse, self.pooling))
        if self.max_length is not None:
            _number("max_length", self.max_length, 1, integer=True)
        window = self.window
        put("window", Window(**window) if isinstance(window, dict) else Window.parse(window))
        put("chunks", _optional(Chunking.parse, self.chunks))
        put("transform", _optional(TransformKind.parse, self.transform))
        put("transform_dir", _optional(Path, self.transform_dir))
        put("storage", Precision.parse(self.storage))
        put("ann", AnnConfig.parse(self.ann))
        put("oversample", float(_number("oversample", self.oversample, 1)))
        put("mode", SearchMode.parse(self.mode))
        put("fusion", Fusion.parse(self.fusion))
        _number("rrf_k", self.rrf_k, 0)
        if self.fusion_weights is not None:
            weights = self.fusion_weights
            if not isinstance(weights, (list, tuple)) or len(weights) != 2:
                raise InputError(f"fusion_weights must be two numbers (bm25, dense), got {weights!r}")
            for w in weights:
                _number("fusion_weights", w, 0)
            if not any(w > 0 for w in weights):
                raise InputError(f"fusion_weights must not all be 0, got {weights!r}")
            put("fusion_weights", (float(weights[0]), float(weights[1])))
        if self.rerank is not None and (not isinstance(self.rerank, str) or not self.rerank):
            raise InputError(f"pipeline rerank must be a reranker folder or 'maxsim', got {self.rerank!r}")
        if self.rerank_depth is not None:
            _number("rerank_depth", self.rerank_depth, 1, integer=True)
        put("rerank_fusion", RerankFusion.parse(self.rerank_fusion))
        put("rerank_backend", _optional(Backend.parse, self.rerank_backend))
        put("rerank_precision", _optional(ModelPrecision.parse, self.rerank_precision))
        for name in ("evidence", "measured_on"):
            if not isinstance(getattr(self, name), Mapping):
                raise InputError(f"pipeline {name} must be an object, got {getattr(self, name)!r}")
        if self.ann is not None and self.storage is not Precision.FLOAT32:
            raise InputError(
                f"an ANN index ({self.ann.kind}) searches float32 vectors; storage is {self.storage}"
            )

    # -- derived views ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> Pipeline:
        """A copy with ``changes`` applied; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def encoder_config(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Encoder.from_config` this pipeline asks for."""
        out: dict[str, Any] = {"model": self.model}
        for key in ("backend", "pooling", "max_length"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value if key == "max_length" else str(value)
        if self.window is not None:
            out["window"] = self.window
        if self.model_precision is not None:
            out["precision"] = str(self.model_precision)
        return out

    def search_settings(self) -> dict[str, Any]:
        """Default settings of a :class:`~vecdoctor.search.searcher.Searcher` on this pipeline."""
        return {
            "mode": str(self.mode),
            "fusion": str(self.fusion),
            "rrf_k": self.rrf_k,
            "weights": list(self.fusion_weights) if self.fusion_weights is not None else None,
            "rerank_depth": self.rerank_depth,
            "rerank_fusion": str(self.rerank_fusion),
        }

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self, folder: str | Path | None = None) -> dict[str, Any]:
        """The JSON object, with the header; ``transform_dir`` relative to ``folder``.

        The transform folder must lie inside ``folder`` (that is where a loader looks for it).
        """
        out = header("Pipeline", FORMAT_VERSION)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "chunks" and value is None:
                continue  # written only when on, so vecdoctor 0.3.0 reads pipelines without chunks
            if f.name == "transform_dir":
                value = _relative(value, folder)
            elif f.name == "ann":
                value = value.to_dict() if value is not None else None
            elif f.name in {"evidence", "measured_on"}:
                value = dict(value)
            elif f.name == "fusion_weights":
                value = list(value) if value is not None else None
            elif value is not None and (
                isinstance(value, enum.Enum) or not isinstance(value, (int, float, str))
            ):
                value = str(value)  # enums and windows as their plain strings
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, spec: Any, folder: str | Path | None = None, source: str | Path = "pipeline") -> Pipeline:
        """Parse a pipeline object (this format or 0.1.0's); ``transform_dir`` is resolved
        inside ``folder`` (no symbolic link, nothing outside it) and must exist."""
        version = read_header(spec, "Pipeline", FORMAT_VERSION, source)
        fields = {f.name for f in dataclasses.fields(cls)}
        if version >= 2:
            unknown = sorted(set(spec) - fields - {"class", "format_version", "vecdoctor_version"})
            if unknown:
                raise InputError(
                    f"{source}: unknown pipeline keys {unknown}; valid keys: {', '.join(sorted(fields))}"
                )
            values = {k: v for k, v in spec.items() if k in fields}
        else:
            values = _from_v1(spec, fields)
        if values.get("transform_dir") is not None:
            values["transform_dir"] = _confined(values["transform_dir"], folder, source)
        try:
            pipeline = cls(**values)
        except TypeError as exc:  # a field of the wrong JSON type deep inside (e.g. ann)
            raise InputError(f"{source}: bad pipeline entry ({exc})") from None
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        if pipeline.transform_dir is None and pipeline.transform is not None and folder is not None:
            raise InputError(
                f"{source}: names transform {str(pipeline.transform)!r} but no fitted transform "
                "folder (transform_dir); keep the transform/ folder written next to pipeline.json"
            )
        return pipeline

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Read a pipeline.json (this format or vecdoctor 0.1.0's)."""
        path = Path(path)
        if path.is_dir():
            path = path / "pipeline.json"
        if not path.is_file():
            raise InputError(f"{path}: no such pipeline file; `vecdoctor checkup` writes one")
        return cls.from_dict(read_json(path), path.parent, path)

    def save(self, path: str | Path) -> Path:
        """Write pipeline.json atomically (``transform_dir`` must lie in its folder)."""
        path = Path(path)
        write_json(path, self.to_dict(path.parent))
        return path

    def validate(self) -> Pipeline:
        """Round-trip through JSON: the check a loader would make, without a file."""
        json.dumps(self.to_dict(self.transform_dir.parent if self.transform_dir else None))
        return self


def _from_v1(spec: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """vecdoctor 0.1.0's pipeline.json: flat or nested encoder keys, ``precision`` for storage,
    ``transform`` a kind name or a folder, ``transform_dir`` the folder."""
    values = {k: v for k, v in spec.items() if k in fields and k not in {"transform", "transform_dir"}}
    nested = spec.get("encoder")
    if isinstance(nested, dict):
        values.update({k: nested[k] for k in _ENCODER_KEYS if nested.get(k) is not None})
        if nested.get("precision") is not None:
            values["model_precision"] = nested["precision"]
    if spec.get("precision") is not None:
        values["storage"] = spec["precision"]
    values = {k: v for k, v in values.items() if v is not None}
    named, folder = spec.get("transform"), spec.get("transform_dir")
    if isinstance(named, dict):  # {"class": ..., "folder": ...} as in a 0.1.0 index config
        folder = folder or named.get("folder")
        named = {"Whitening": "whitening", "AllButTheTop": "abtt"}.get(str(named.get("class")))
    elif isinstance(named, str) and named.lower() not in set(TransformKind):
        folder, named = folder or named, None  # a folder given as "transform"
    values["transform"] = named
    values["transform_dir"] = folder
    search = spec.get("search")
    if isinstance(search, dict):  # a 0.1.0 index config's search defaults
        values.update({k: v for k, v in search.items() if k in fields and v is not None})
    return values


def _relative(folder: Path | None, base: str | Path | None) -> str | None:
    if folder is None:
        return None
    if base is None:
        return str(folder)
    try:
        return Path(folder).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        raise InputError(
            f"the transform folder {folder} is not inside {base}; copy it there so that the "
            "pipeline travels as one folder"
        ) from None


def _confined(name: Any, folder: str | Path | None, source: str | Path) -> Path:
    """``folder/name``, refusing absolute names, ``..``, symbolic links and missing folders."""
    if not isinstance(name, str) or not name:
        raise InputError(f"{source}: transform_dir must be a folder name, got {name!r}")
    if folder is None:
        return Path(name)
    base = Path(folder)
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(
            f"{source}: transform_dir {name!r} leaves the pipeline's folder; keep the fitted "
            "transform in a folder beside pipeline.json and name it relatively"
        )
    current = base
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise InputError(f"{source}: {current} is a symbolic link; saved folders hold plain files")
    if not current.is_dir():
        raise InputError(f"{source}: transform folder {current} not found")
    return current


class Embedder:
    """The one path from text to a stored vector: the encoder, then the fitted transform.

    Documents at build time and queries at search time go through the same object, so they
    can never be embedded differently. The encoder is loaded from ``encoder_config`` on first
    use; another one (a cache, another backend) can be put in with :meth:`use`, which checks
    that it makes the same vectors.
    """

    def __init__(
        self, encoder_config: dict[str, Any], transform: Any = None, encoder: Any = None
    ) -> None:
        self.encoder_config = dict(encoder_config)
        self.transform = transform
        self._encoder = encoder
        self._lock = threading.Lock()
        self._waiting = 0  # searches waiting for the encoder: bulk work yields to them
        self._waiting_lock = threading.Lock()

    @property
    def loaded(self) -> Any:
        """The encoder in use, or ``None`` before the first one is loaded."""
        return self._encoder

    @property
    def encoder(self) -> Any:
        """The encoder that made the vectors (loaded from the saved config on first use)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self.load_encoder()
        return self._encoder

    def load_encoder(self, **overrides: Any) -> Any:
        """A new encoder from the saved config (``overrides``: e.g. ``cache``, ``batch_size``)."""
        from vecdoctor.encode.encoder import Encoder

        enc = Encoder.from_config(self.encoder_config, **overrides)
        self.check_encoder(enc)
        return enc

    @property
    def fingerprint(self) -> str:
        return str(self.encoder_config.get("fingerprint", ""))

    @property
    def model_id(self) -> str:
        return str(self.encoder_config.get("model", ""))

    def check_encoder(self, encoder: Any) -> None:
        """Raise :class:`IncompatibleError` unless ``encoder`` makes the vectors this path made."""
        expected = self.encoder_config.get("model_fingerprint")
        got = getattr(encoder, "model_fingerprint", None)
        if expected and got and expected != got:
            raise IncompatibleError(
                f"the index was built with model {self.model_id!r} (fingerprint {expected}) "
                "but the "
                f"query encoder is {getattr(encoder, 'model_id', '?')!r} (fingerprint {got}); "
                f"search with model {self.model_id!r} or rebuild the index with the new model"
            )
        expected = self.encoder_config.get("fingerprint")
        got = getattr(encoder, "fingerprint", None)
        if expected and got and expected != got and not _same_vectors(self.encoder_config, encoder):
            theirs = encoder.config()
            keys = sorted((set(self.encoder_config) | set(theirs)) - {"fingerprint", "dimension"})
            diff = {
                k: (self.encoder_config.get(k), theirs.get(k))
                for k in keys
                if self.encoder_config.get(k) != theirs.get(k)
            }
            raise IncompatibleError(
                "the index was built with other encoder settings than the query encoder "
                f"(setting: (index, query) = {diff}); use the index's settings or rebuild the index"
            )

    def use(self, encoder: Any) -> None:
        """Encode queries and new documents with ``encoder`` (checked against the index)."""
        self.check_encoder(encoder)
        with self._lock:
            self._encoder = encoder

    def embed(
        self, texts: Sequence[str], role: Role | str, show_progress: bool = False,
        urgent: bool = True,
    ) -> np.ndarray:
        """Vectors of ``texts`` as queries or documents (:class:`Role`): encoder, then transform.

        One forward pass runs at a time (torch already uses every core). ``urgent`` calls (a
        search's query) are counted while they wait, so :meth:`embed_bulk` lets them go first.
        """
        enc = self.encoder
        if urgent:
            with self._waiting_lock:
                self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            if urgent:
                with self._waiting_lock:
                    self._waiting -= 1
        try:
            if Role.parse(role) is Role.QUERY:
                vecs = enc.encode_queries(list(texts), show_progress=show_progress)
            else:
                vecs = enc.encode_documents(list(texts), show_progress=show_progress)
        finally:
            self._lock.release()
        if self.transform is not None:
            # the encoder passed check_encoder: its vectors are those the transform was fitted on
            vecs = self.transform.transform(vecs, fingerprint=self.fingerprint or enc.fingerprint)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors through the index's own encoder and transform."""
        return self.embed(texts, role=Role.QUERY)

    def embed_chunks(
        self, texts: Sequence[str], show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk vectors of documents and the position of each chunk's document
        (:meth:`Encoder.encode_chunks <vecdoctor.encode.encoder.Encoder.encode_chunks>`, then
        the transform)."""
        enc = self.encoder
        with self._lock:
            vecs, owners = enc.encode_chunks(list(texts), show_progress=show_progress)
        if self.transform is not None and len(vecs):
            vecs = self.transform.transform(vecs, fingerprint=self.fingerprint or enc.fingerprint)
        return np.ascontiguousarray(vecs, dtype=np.float32), owners

    def embed_bulk(self, texts: Sequence[str], role: Role | str, chunk: int = 8) -> np.ndarray:
        """:meth:`embed` ``chunk`` texts at a time, each chunk waiting while a search waits for
        the encoder: a large batch cannot hold searches up for more than one chunk's time."""
        import time

        parts = []
        for start in range(0, len(texts), chunk):
            while self._waiting:
                time.sleep(0.001)
            parts.append(self.embed(texts[start : start + chunk], role, urgent=False))
        if not parts:
            return np.zeros((0, int(self.encoder.dimension)), dtype=np.float32)
        return np.concatenate(parts)

    def embed_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.embed(texts, role=Role.DOCUMENT, show_progress=show_progress)


def _same_vectors(config: dict[str, Any], encoder: Any) -> bool:
    from vecdoctor.encode.identity import same_vectors

    theirs = encoder.config() if hasattr(encoder, "config") else None
    return isinstance(theirs, dict) and same_vectors(config, theirs)
