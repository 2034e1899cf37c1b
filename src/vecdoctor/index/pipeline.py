"""pipeline.json: the description of an encoder + transform + index + search settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdoctor.errors import InputError
from vecdoctor.io import read_json


def encoder_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The encoder part of a pipeline: ``spec["encoder"]`` or its flat model keys."""
    nested = spec.get("encoder")
    if isinstance(nested, dict):
        return dict(nested)
    keys = ("model", "backend", "pooling", "window", "max_length")
    out = {k: spec[k] for k in keys if spec.get(k) is not None}
    if spec.get("model_precision") is not None:  # "precision" is the stored vectors' precision
        out["precision"] = spec["model_precision"]
    return out


def search_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The search settings a pipeline recommends (mode, fusion, rrf_k, rerank_fusion), validated."""
    from vecdoctor.config import Fusion, SearchMode
    from vecdoctor.rerank import RerankFusion

    out: dict[str, Any] = {}
    if spec.get("mode"):
        out["mode"] = str(SearchMode.parse(spec["mode"]))
    if spec.get("fusion"):
        out["fusion"] = str(Fusion.parse(spec["fusion"]))
    if spec.get("rrf_k") is not None:
        rrf_k = spec["rrf_k"]
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
            raise InputError(f"pipeline rrf_k must be a number >= 0, got {rrf_k!r}")
        out["rrf_k"] = rrf_k
    if spec.get("rerank_fusion"):
        out["rerank_fusion"] = str(RerankFusion.parse(spec["rerank_fusion"]))
    return out


def read_pipeline(path: str | Path) -> dict[str, Any]:
    """Read pipeline.json (as written by ``vecdoctor checkup``).

    The fitted transform's folder is ``transform_dir`` (or ``transform`` when that names a
    folder); a relative folder is taken from the file's folder. A transform named without a
    folder (e.g. ``"whitening"``) is an error: there is nothing fitted to apply.
    """
    path = Path(path)
    spec = read_json(path)
    if not isinstance(spec, dict):
        raise InputError(f"{path}: expected a JSON object describing the pipeline")
    named = spec.get("transform")
    folder = spec.get("transform_dir")
    if folder is None and isinstance(named, dict):  # {"folder": ...} as in an index config
        folder = named.get("folder")
    if folder is None and isinstance(named, str) and (path.parent / named).is_dir():
        folder = named
    if folder:
        resolved = Path(folder) if Path(folder).is_absolute() else path.parent / folder
        if not resolved.is_dir():
            raise InputError(f"{path}: transform folder {resolved} not found")
        spec["transform"] = str(resolved)
    elif named:
        raise InputError(
            f"{path}: names transform {named!r} but no fitted transform folder (transform_dir); "
            "keep the transform/ folder written next to pipeline.json"
        )
    return spec
