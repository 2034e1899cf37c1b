"""The converted-models cache: where converted variants live, how they are described and checked.

A converted variant is one folder holding the graph, the tokenizer, the model's
sentence-transformers settings and ``vecdoctor_export.json`` (backend, precision, source model
and its fingerprint, calibration, the check against PyTorch, and the size and hash of every
file). Variants live in ``cache_home()/converted/<model>-<fingerprint>/<backend>-<precision>``;
a folder that fails its hash check is converted again, never used. Conversion itself is in
:mod:`vecdoctor.encode.convert.export`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdoctor.config import Backend, ModelPrecision
from vecdoctor.encode.runtime.base import EXPORT_FILE
from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.folders import child as safe_child
from vecdoctor.folders import read_object, value
from vecdoctor.models import ResolvedModel, cache_home
from vecdoctor.persist import header

FORMAT_VERSION = 1
CONVERTED_BACKENDS = (str(Backend.OPENVINO), str(Backend.ONNX))
"""Backends a PyTorch model can be converted to."""
_COPIED = (
    "tokenizer.json",
    "config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/config.json",
)


@dataclass(frozen=True)
class ConvertedModel:
    """A converted variant on disk."""

    path: Path
    backend: str
    precision: ModelPrecision
    graph: str  # file name of the graph inside ``path``
    info: dict[str, Any] = field(repr=False)

    @property
    def graph_path(self) -> Path:
        return self.path / self.graph

    @property
    def calibration(self) -> str | None:
        return self.info.get("calibration", {}).get("sha256")


def check_backend(backend: str) -> str:
    if backend not in CONVERTED_BACKENDS:
        raise InputError(
            f"cannot convert to backend {backend!r}; valid backends: {', '.join(CONVERTED_BACKENDS)}"
        )
    return backend


def variant_dir(
    resolved: ResolvedModel, backend: str, precision: ModelPrecision | str, home: Path | None = None
) -> Path:
    """Where the cache keeps one converted variant of ``resolved``."""
    name = Path(resolved.id).name if os.sep in resolved.id else resolved.id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"
    folder = f"{backend}-{ModelPrecision.parse(precision)}"
    return (home or cache_home()) / "converted" / f"{slug}-{resolved.fingerprint}" / folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def load_converted(folder: Path) -> ConvertedModel:
    """Open a converted variant, checking every file's size and hash.

    Raises FileNotFoundError when the folder holds no export, IncompatibleError when the
    description or a file is missing, damaged or names a path outside the folder (the message
    names the file).
    """
    folder = Path(folder)
    meta = folder / EXPORT_FILE
    if not meta.exists() and not meta.is_symlink():
        raise FileNotFoundError(f"{folder}: no converted model ({EXPORT_FILE} missing)")
    try:
        info = read_object(folder, EXPORT_FILE)
        files = value(info, "files", dict, meta)
        backend = value(info, "backend", str, meta)
        precision = ModelPrecision.parse(value(info, "precision", str, meta))
        graph = value(info, "graph", str, meta)
        version = info.get("format_version", info.get("format"))  # "format": before the header
    except InputError as exc:
        raise IncompatibleError(f"{exc}; convert again") from None
    if version != FORMAT_VERSION:
        raise IncompatibleError(
            f"{meta}: export format {version!r}, expected {FORMAT_VERSION}; convert again"
        )
    if graph not in files:
        raise IncompatibleError(f"{meta}: the graph {graph!r} is not among its files; convert again")
    for rel, want in files.items():
        _check_file(folder, meta, rel, want)
    return ConvertedModel(folder, backend, precision, graph, info)


def _check_file(folder: Path, meta: Path, rel: str, want: Any) -> None:
    """One file listed in the description: inside the folder, a plain file, size and hash."""
    try:
        path = safe_child(folder, rel)
    except InputError as exc:
        raise IncompatibleError(f"{meta}: lists {rel!r}, outside the folder ({exc})") from None
    try:
        size = value(want, "size", int, meta, low=0)
        digest = value(want, "sha256", str, meta)
    except InputError as exc:
        raise IncompatibleError(f"{exc} (entry {rel!r}); convert again") from None
    if path.exists() and not path.is_file():
        raise IncompatibleError(f"{path}: not a regular file; convert again")
    if not path.exists():
        raise IncompatibleError(f"{path}: file of the converted model is missing; convert again")
    if path.stat().st_size != size or _sha256(path) != digest:
        raise IncompatibleError(
            f"{path}: file of the converted model is damaged (hash mismatch); convert again"
        )


def list_converted(home: Path | None = None) -> list[dict[str, Any]]:
    """Every converted variant in the models cache: model, backend, precision, size, check, path."""
    root = (home or cache_home()) / "converted"
    rows = []
    for meta in sorted(root.glob(f"*/*/{EXPORT_FILE}")):
        try:
            load_converted(meta.parent)
            info = read_object(meta.parent, EXPORT_FILE)
        except (InputError, IncompatibleError):  # damaged: converted again on next use
            continue
        size = sum(f["size"] for f in info["files"].values())
        rows.append(
            {
                "name": info.get("model"),
                "description": f"converted: {info.get('backend')} {info.get('precision')}",
                "dimension": info.get("hidden_size"),
                "backend": info.get("backend"),
                "precision": info.get("precision"),
                "installed": True,
                "install": f"vecdoctor export {info.get('model')} --backend {info.get('backend')} "
                f"--precision {info.get('precision')}",
                "size_mb": round(size / 2**20, 1),
                "min_cosine_to_torch": info.get("check", {}).get("min_cosine"),
                "created": info.get("created"),
                "path": str(meta.parent),
            }
        )
    return rows


def copy_model_files(resolved: ResolvedModel, folder: Path) -> None:
    """Copy the tokenizer and the sentence-transformers settings beside the graph."""
    sources = {"tokenizer.json": resolved.tokenizer_path}
    for rel in _COPIED[1:]:
        sources[rel] = resolved.path / rel
    for rel, src in sources.items():
        if src is not None and Path(src).is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / rel)


def describe_variant(
    resolved: ResolvedModel,
    backend: str,
    precision: ModelPrecision,
    graph: str,
    folder: Path,
    calib: list[str],
    check: dict[str, float],
    max_length: int,
    seconds: float,
    module: Any,
) -> dict[str, Any]:
    """The content of ``vecdoctor_export.json`` for the variant written in ``folder``."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        files[path.relative_to(folder).as_posix()] = {
            "size": path.stat().st_size,
            "sha256": _sha256(path),
        }
    return {
        **header("ConvertedModel", FORMAT_VERSION),
        "model": resolved.id,
        "model_fingerprint": resolved.fingerprint,
        "backend": backend,
        "precision": str(precision),
        "graph": graph,
        "outputs": ["last_hidden_state", "first_attention"],
        "hidden_size": module.hidden_size,
        "max_positions": module.max_positions,
        "max_length": resolved.max_length,
        "query_prefix": resolved.query_prefix,
        "document_prefix": resolved.document_prefix,
        "default_pooling": resolved.default_pooling,
        "calibration": {
            "texts": len(calib),
            "sha256": texts_digest(calib),
            "max_length": max_length,
        }
        if calib
        else {},
        "check": check,
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            name: ver(name)
            for name in (
                "vecdoctor",
                "torch",
                "transformers",
                "openvino",
                "nncf",
                "onnxruntime",
                "onnx",
            )
        },
        "files": files,
    }


def install_variant(tmp: Path, target: Path) -> None:
    """Put the complete folder ``tmp`` at ``target`` in one atomic step (the previous folder
    stays whole until then, and no moment exists without one)."""
    from vecdoctor.io import swap_in

    target.parent.mkdir(parents=True, exist_ok=True)
    swap_in(tmp, target)
