"""ONNX Runtime: export from PyTorch (``torch.onnx.export``, dynamic batch and sequence axes),
graph fusions, and dynamic int8 quantization (per-channel signed weights).

Running the graph is :class:`OnnxBackend`, which also runs ONNX graphs shipped in packages.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ModelPrecision
from vecdoctor.encode.runtime.base import ForwardOutput, hidden_size_from_export
from vecdoctor.errors import InputError, require
from vecdoctor.folders import library_errors

logger = logging.getLogger(__name__)

GRAPH = "model.onnx"


def convert(
    module: Any,
    folder: Path,
    precision: ModelPrecision,
    calibration: list[dict[str, np.ndarray]],
    example: dict[str, np.ndarray],
) -> tuple[str, Any]:
    """Export ``module`` to ``folder/model.onnx`` (fused; int8 weights for int8); return a runner.

    ``calibration`` is unused: dynamic quantization computes activation ranges per batch.
    """
    target = folder / GRAPH
    export_graph(
        module,
        {"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]},
        ["last_hidden_state", "first_attention"],
        target,
        precision,
    )

    backend = OnnxBackend(target)

    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = backend.forward(batch["input_ids"], batch["attention_mask"], attention=True)
        return out.states, out.first_attention  # type: ignore[return-value]

    return GRAPH, run


def export_graph(
    module: Any,
    example: dict[str, np.ndarray],
    output_names: list[str],
    target: Path,
    precision: ModelPrecision,
) -> Path:
    """``torch.onnx.export`` of ``module`` (its inputs named and ordered as ``example``, batch
    and sequence axes dynamic) to ``target``, with ONNX Runtime's fusions, and for int8 dynamic
    quantization of the weights (signed, per channel)."""
    require("onnxruntime", "fast")
    require("onnx", "fast")
    require("onnxscript", "fast")
    import torch

    folder = target.parent
    raw = folder / "raw.onnx"
    names = list(example)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    # The exporter reports its steps on standard output; the library must not print.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(example[name]) for name in names),
            str(raw),
            input_names=names,
            output_names=output_names,
            dynamic_shapes={name: axes for name in names},
            opset_version=18,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    logger.debug("torch.onnx: %s", buffer.getvalue()[-2000:])
    fused = folder / "fused.onnx"
    _fuse(raw, fused, module.num_heads, module.hidden_size)
    raw.unlink()
    if precision is ModelPrecision.INT8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fused), str(target), per_channel=True, weight_type=QuantType.QInt8)
        fused.unlink()
    else:
        fused.rename(target)
    return target


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation on."""
    ort = require("onnxruntime", "fast")
    options = ort.SessionOptions()  # type: ignore[attr-defined]
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # type: ignore[attr-defined]
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(  # type: ignore[attr-defined]
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _fuse(source: Path, target: Path, num_heads: int, hidden_size: int) -> None:
    """ONNX Runtime's transformer fusions (layer norm with skip, bias + GELU); a plain copy if
    the architecture is not one it knows."""
    import onnx

    try:
        from onnxruntime.transformers.optimizer import optimize_model

        model = optimize_model(
            str(source),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=1,
        )
        logger.debug("onnxruntime fusions: %s", model.get_fused_operator_statistics())
        model.save_model_to_file(str(target), use_external_data_format=False)
    except Exception as exc:  # noqa: BLE001 - fusions are an optimisation, never required
        logger.info("onnxruntime fusions skipped (%s); using the exported graph as is", exc)
        onnx.save(onnx.load(str(source)), str(target))


class OnnxBackend:
    """An ONNX graph run with ONNX Runtime whose output holds last-layer token states.

    Graphs that vecdoctor converted also output ``first_attention`` (attention pooling works);
    graphs shipped in packages usually expose token states only.
    """

    name = "onnx"
    supports_attention = False
    supports_layers = False

    def __init__(self, path: Path, output: str | None = None, threads: int | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "model.onnx"
        with library_errors(path, "an ONNX graph", "convert or install the model again"):
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
        self.hidden_size = int(dim) if isinstance(dim, int) else hidden_size_from_export(path)

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
