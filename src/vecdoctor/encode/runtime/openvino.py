"""OpenVINO: conversion from PyTorch, int8 post-training quantization (NNCF), and the backend.

fp32 and bf16 share one fp32 graph; bf16 is OpenVINO's inference precision hint, which runs
matrix products in bfloat16 on CPUs with AVX512_BF16 or AMX. int8 quantizes weights and
activations with NNCF's transformer preset (softmax, layer norms and the first-token attention
output stay in floating point), calibrated on texts from the user's corpus.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ModelPrecision
from vecdoctor.encode.runtime.base import EXPORT_FILE, ForwardOutput
from vecdoctor.errors import InputError, require
from vecdoctor.folders import library_errors, value

logger = logging.getLogger(__name__)

GRAPH = "model.xml"

# Chosen by measurement on 2 cores (benchmarks/encode_speed.py): bf16 for the parts int8 leaves
# in float is faster and no less accurate than f32.
_INFERENCE_PRECISION = {
    ModelPrecision.FP32: "f32",
    ModelPrecision.BF16: "bf16",
    ModelPrecision.INT8: "bf16",
}


def _inference_precision(precision: ModelPrecision, core: Any) -> str:
    """bf16 where the CPU supports it; f32 otherwise (with a warning for bf16)."""
    want = _INFERENCE_PRECISION[precision]
    if want == "bf16":
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in caps:
            if precision is ModelPrecision.BF16:
                logger.warning(
                    "this CPU has no bf16 support (%s); running the bf16 variant in f32", caps
                )
            return "f32"
    return want


def convert(
    module: Any,
    folder: Path,
    precision: ModelPrecision,
    calibration: list[dict[str, np.ndarray]],
    example: dict[str, np.ndarray],
) -> tuple[str, Any]:
    """Trace ``module`` into an OpenVINO graph in ``folder`` (quantized for int8); return a runner."""
    outputs = ["last_hidden_state", "first_attention"]
    save_graph(module, example, outputs, folder / GRAPH, precision, calibration)
    backend = OpenVINOBackend(folder / GRAPH, precision)

    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = backend.forward(batch["input_ids"], batch["attention_mask"], attention=True)
        return out.states, out.first_attention  # type: ignore[return-value]

    return GRAPH, run


def save_graph(
    module: Any,
    example: dict[str, np.ndarray],
    output_names: list[str],
    path: Path,
    precision: ModelPrecision,
    calibration: list[dict[str, np.ndarray]],
) -> None:
    """Trace ``module`` on ``example`` with OpenVINO's PyTorch frontend, name its outputs,
    quantize it for int8 (calibrated on ``calibration`` batches) and save it to ``path``."""
    ov = require("openvino", "fast")
    import torch

    model = ov.convert_model(  # type: ignore[attr-defined]
        module, example_input={k: torch.from_numpy(v) for k, v in example.items()}
    )
    for output, name in zip(model.outputs, output_names, strict=True):
        output.get_tensor().set_names({name})
    if precision is ModelPrecision.INT8:
        model = _quantize(model, calibration)
    ov.save_model(model, str(path), compress_to_fp16=False)  # type: ignore[attr-defined]


def _quantize(model: Any, calibration: list[dict[str, np.ndarray]]) -> Any:
    """Post-training int8 of weights and activations (NNCF, transformer preset, SmoothQuant)."""
    nncf = require("nncf", "fast")
    if not calibration:
        raise InputError("int8 quantization needs calibration texts; pass calibration_texts")
    dataset = nncf.Dataset(calibration)  # type: ignore[attr-defined]
    # NNCF draws progress bars on standard output; the library must not print, so they go to a buffer.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        quantized = nncf.quantize(  # type: ignore[attr-defined]
            model,
            dataset,
            model_type=nncf.ModelType.TRANSFORMER,  # type: ignore[attr-defined]
            preset=nncf.QuantizationPreset.MIXED,  # type: ignore[attr-defined]
            subset_size=len(calibration),
        )
    logger.debug("nncf: %s", buffer.getvalue()[-2000:])
    return quantized


def compile_graph(
    graph: Path | Any, precision: ModelPrecision, threads: int | None = None, hint: str = "LATENCY"
) -> tuple[Any, str]:
    """The graph (a file or an ``ov.Model``) compiled for the CPU (latency hint: one stream on
    every core; throughput: as many streams as OpenVINO finds best), and the inference
    precision chosen."""
    ov = require("openvino", "fast")
    core = ov.Core()  # type: ignore[attr-defined]
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": hint,
        "INFERENCE_PRECISION_HINT": _inference_precision(precision, core),
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    model = str(graph) if isinstance(graph, (str, Path)) else graph
    return core.compile_model(model, "CPU", config), config["INFERENCE_PRECISION_HINT"]


def _states_only(graph: Path) -> tuple[Any, bool]:
    """The graph with ``last_hidden_state`` as its only output, and whether the full graph
    also has ``first_attention``. Without the attention-probability branch OpenVINO can fuse
    the last layer's attention too: int8 MiniLM on SciFact encodes about 8% more documents/s."""
    ov = require("openvino", "fast")
    model = ov.Core().read_model(str(graph))  # type: ignore[attr-defined]
    results = model.get_results()
    has_attention = any("first_attention" in r.output(0).get_names() for r in results)
    keep = [r for r in results if "last_hidden_state" in r.output(0).get_names()]
    if len(keep) == len(results) or not keep:
        return model, has_attention
    return ov.Model(keep, model.get_parameters(), "states"), has_attention  # type: ignore[attr-defined]


class OpenVINOBackend:
    """A converted graph compiled by OpenVINO for the CPU; token states and first-token attention."""

    name = "openvino"
    supports_attention = True
    supports_layers = False
    # Padded tokens per forward pass. On one stream using every core (the latency hint) passes
    # of 16 x 256 tokens beat 32 x 256 on a 2-core Zen 5 by ~5% end to end; on throughput
    # streams of one core each, 8 x 256 beat 16 x 256 on a 2-core Zen 4 by ~2% (SciFact
    # documents, int8 MiniLM, paired chunks of 100). Short texts still go 32 at a time; the
    # Encoder's max_tokens overrides it.
    tokens_per_pass = 4096
    stream_tokens_per_pass = 2048

    def __init__(
        self, graph: Path, precision: ModelPrecision | str, threads: int | None = None
    ) -> None:
        self.precision = ModelPrecision.parse(precision)
        self._graph, self._threads = Path(graph), threads
        with library_errors(graph, "an OpenVINO graph", "convert the model again"):
            states_graph, self.supports_attention = _states_only(self._graph)
            self.compiled, self.inference_precision = compile_graph(
                states_graph, self.precision, threads
            )
        self._request = self.compiled.create_infer_request()
        self._attention_request: Any = None  # the whole graph, compiled on first need
        self._states_graph = states_graph
        self._stream_requests: list[Any] | None = None  # throughput streams, on first need
        if (threads or _cores()) > 1:
            self.tokens_per_pass = self.stream_tokens_per_pass
        outputs = {n for o in self.compiled.outputs for n in o.get_names()}
        if "last_hidden_state" not in outputs:
            raise InputError(
                f"{graph}: the graph has no 'last_hidden_state' output; convert the model again"
            )
        info = _export_info(Path(graph).parent)
        meta = Path(graph).parent / EXPORT_FILE
        self.hidden_size = value(info, "hidden_size", int, meta, None, low=1, high=1 << 16) or int(
            self.compiled.output("last_hidden_state").get_partial_shape()[2].get_length()
        )
        self.max_positions = value(info, "max_positions", int, meta, 512, low=1, high=1 << 24)

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput:
        if layers:
            raise InputError(
                "the openvino backend returns last-layer states only; use backend='torch' "
                "for per-layer diagnostics"
            )
        request = self._request
        if attention:
            if not self.supports_attention:
                raise InputError(
                    f"{self._graph}: the graph has no 'first_attention' output; convert the "
                    "model again"
                )
            if self._attention_request is None:
                compiled, _ = compile_graph(self._graph, self.precision, self._threads)
                self._attention_request = compiled.create_infer_request()
            request = self._attention_request
        result = request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        states = np.array(result["last_hidden_state"], dtype=np.float32)
        first = np.array(result["first_attention"], dtype=np.float32) if attention else None
        return ForwardOutput(states, first)

    def forward_many(
        self, passes: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[ForwardOutput]:
        """Last-layer states of each (input ids, attention mask) pass, in order, several passes
        at a time on OpenVINO's throughput streams (one per core on a small CPU).

        One pass on every core (the latency hint) makes the cores wait for each other inside
        every layer; streams of one core each do not. On 2 Zen 4 cores, int8 MiniLM encodes
        4-9% more SciFact documents/s on streams (passes of 8 x 256 tokens) than on the
        latency graph (16 x 256), measured in paired chunks of 100 and 600 documents (against
        sentence-transformers' OpenVINO int8: benchmarks/encode_speed.py). One more request
        than streams keeps every stream busy while the caller pools the pass before. Where
        OpenVINO picks one stream, the passes run one by one on the latency graph.
        """
        requests = self._streams()
        if len(requests) < 2:
            for ids, mask in passes:
                yield self.forward(ids, mask)
            return
        pending: deque[Any] = deque()
        try:
            for k, (ids, mask) in enumerate(passes):
                if len(pending) == len(requests):
                    yield _finished(pending.popleft())
                request = requests[k % len(requests)]
                request.start_async({"input_ids": ids, "attention_mask": mask})
                pending.append(request)
            while pending:
                yield _finished(pending.popleft())
        finally:  # a caller that stops early (an error while pooling) leaves no pass running
            for request in pending:
                request.wait()

    def _streams(self) -> list[Any]:
        if self._stream_requests is None:
            with library_errors(self._graph, "an OpenVINO graph", "convert the model again"):
                compiled, _ = compile_graph(self._states_graph, self.precision, self._threads,
                                            hint="THROUGHPUT")
            streams = int(compiled.get_property("NUM_STREAMS"))
            count = streams + 1 if streams > 1 else 0
            self._stream_requests = [compiled.create_infer_request() for _ in range(count)]
            logger.debug("openvino: %d throughput streams, %d requests", streams, count)
        return self._stream_requests


def _cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _finished(request: Any) -> ForwardOutput:
    request.wait()
    return ForwardOutput(np.array(request.get_tensor("last_hidden_state").data, dtype=np.float32))


def _export_info(folder: Path) -> dict[str, Any]:
    from vecdoctor.folders import read_object

    return read_object(folder, EXPORT_FILE, optional=True)
