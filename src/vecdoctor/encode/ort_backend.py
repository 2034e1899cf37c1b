"""ONNX Runtime: export from PyTorch (``torch.onnx.export``, dynamic batch and sequence axes),
graph fusions, and dynamic int8 quantization (per-channel signed weights).

Running the graph is :class:`vecdoctor.encode.backends.OnnxBackend`, which also runs ONNX
graphs shipped in packages.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ModelPrecision
from vecdoctor.errors import require

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

    from vecdoctor.encode.backends import OnnxBackend

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
