"""The cross-encoder reranker on the fast CPU backends: ONNX Runtime and OpenVINO graphs
exported from the PyTorch model, cached, and checked against it.

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (a query-document pair
is two segments) and returns ``logits`` (b,), before the model's activation. Variants live in
``cache_home()/rerankers/converted/<model>-<fingerprint>/<backend>-<precision>`` with a
``vecdoctor_export.json`` that lists every file's hash, like the bi-encoder's
(:mod:`vecdoctor.encode.convert.cache`); a damaged folder is converted again. An fp32 graph must
reproduce PyTorch's logits within ``FP32_TOLERANCE``; the int8 difference is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ModelPrecision
from vecdoctor.encode.convert.cache import (
    ConvertedModel,
    check_backend,
    variant_dir,
)
from vecdoctor.encode.convert.core import Built, cached_variant, check_target, save_variant
from vecdoctor.encode.runtime.base import BACKENDS
from vecdoctor.errors import IncompatibleError, InputError, VecdoctorError
from vecdoctor.folders import library_errors, read_object, value
from vecdoctor.models import cache_home, check_model_config, resolve

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-3
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class RerankConversionError(VecdoctorError, RuntimeError):
    """A converted cross-encoder does not reproduce the PyTorch scores within tolerance."""


def check_rerank_backend(backend: str, precision: ModelPrecision | str) -> ModelPrecision:
    """Validate a (backend, precision) pair; fp32 everywhere, int8 on onnx and openvino."""
    if backend not in BACKENDS:
        raise InputError(
            f"unknown reranker backend {backend!r}; valid backends: {', '.join(BACKENDS)}"
        )
    precision = ModelPrecision.parse(precision)
    if precision is ModelPrecision.BF16 or (backend == "torch" and precision is not ModelPrecision.FP32):
        raise InputError(
            f"a {backend} reranker runs in fp32{'' if backend == 'torch' else ' or int8'}, not "
            f"{precision}; int8 runs on backend 'onnx' or 'openvino'"
        )
    return precision


# -- what the PyTorch model does, outside PyTorch ------------------------------------------------
def max_length_of(folder: Path) -> int:
    """The token limit sentence-transformers applies: ``max_seq_length``, else the tokenizer's,
    capped by the model's positions."""
    def read(name: str) -> dict[str, Any]:
        return read_object(folder, name, optional=True, links=True)

    where = folder / "sentence_bert_config.json"
    limit = value(read(where.name), "max_seq_length", int, where, 0, low=0, high=1 << 20)
    if not limit:
        limit = read("tokenizer_config.json").get("model_max_length")
    positions = value(read("config.json"), "max_position_embeddings", int, folder / "config.json",
                      512, low=1, high=1 << 24)
    return min(int(limit), positions) if isinstance(limit, int) and limit > 0 else positions


def activation_of(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The activation sentence-transformers applies to the logits (sigmoid for one label)."""
    where = folder / "config_sentence_transformers.json"
    name = value(read_object(folder, where.name, optional=True, links=True), "activation_fn",
                 str, where, "")
    if name.endswith("Sigmoid"):
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name.endswith("Identity") or not name:
        return lambda x: x
    raise InputError(
        f"{folder}: the cross-encoder's activation {name!r} is not supported on the fast "
        "backends; use backend='torch'"
    )


class PairTokenizer:
    """(query, document) pairs to padded numpy inputs, truncated longest-first as
    sentence-transformers does."""

    def __init__(self, folder: Path, max_length: int | None = None) -> None:
        from transformers import AutoTokenizer

        with library_errors(folder, "a tokenizer", "save the cross-encoder again"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_length = int(max_length or max_length_of(folder))

    def __call__(self, query: str, docs: Sequence[str]) -> dict[str, np.ndarray]:
        return self.pairs([query] * len(docs), list(docs))

    def pairs(self, queries: list[str], docs: list[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(
            queries,
            docs,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="np",
        )
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        types = enc.get("token_type_ids")
        return {
            "input_ids": ids,
            "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64),
            "token_type_ids": np.zeros_like(ids)
            if types is None
            else np.asarray(types, dtype=np.int64),
        }


def torch_module(folder: Path) -> Any:
    """The model as a module: (input_ids, attention_mask, token_type_ids) -> logits (b,).

    The padding mask is passed already expanded (b, 1, 1, L), which traces to a shape-free graph.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    with library_errors(folder, "a cross-encoder", "save the cross-encoder again"):
        check_model_config(folder)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), attn_implementation="eager", local_files_only=True
        ).eval()
    if int(model.config.num_labels) != 1:
        raise InputError(
            f"{folder}: the cross-encoder outputs {model.config.num_labels} labels per pair; "
            "a reranker needs one relevance score (train it with num_labels=1)"
        )

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            out = self.model(
                input_ids=input_ids, attention_mask=bias, token_type_ids=token_type_ids
            )
            return out.logits[:, 0]

    module = Logits().eval()
    module.model_ref = model
    module.hidden_size = int(model.config.hidden_size)  # type: ignore[assignment]
    module.num_heads = int(model.config.num_attention_heads)  # type: ignore[assignment]
    module.max_positions = int(getattr(model.config, "max_position_embeddings", 512))  # type: ignore[assignment]
    return module


def _reference(module: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of the unmodified PyTorch model (its own masking), the target of the check."""
    import torch

    with torch.inference_mode():
        out = module.model_ref(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return out.logits[:, 0].numpy().astype(np.float64)


def _sample_pairs() -> list[tuple[str, str]]:
    """Matching and mismatched (title, text) pairs from the built-in sample corpus."""
    from vecdoctor.data import sample_corpus

    docs = [d for d in sample_corpus() if d.title and d.text][:24]
    return [(a.title, b.text) for i, a in enumerate(docs) for b in (docs[i], docs[i - 1])]


# -- running a converted graph -------------------------------------------------------------------
class GraphScorer:
    """A converted cross-encoder graph: padded pair inputs -> logits (b,)."""

    def __init__(self, converted: ConvertedModel, threads: int | None = None) -> None:
        self.backend, self.precision = converted.backend, converted.precision
        if converted.info.get("kind") != "cross-encoder":
            raise IncompatibleError(
                f"{converted.path}: not a converted cross-encoder; convert the reranker again"
            )
        if self.backend == "onnx":
            from vecdoctor.encode.runtime.onnx import session

            self._session = session(converted.graph_path, threads)
        else:
            from vecdoctor.encode.runtime.openvino import compile_graph

            compiled, self.inference_precision = compile_graph(
                converted.graph_path, self.precision, threads
            )
            self._request = compiled.create_infer_request()

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.backend == "onnx":
            (logits,) = self._session.run(["logits"], batch)
        else:
            logits = self._request.infer(batch)["logits"]
        return np.asarray(logits, dtype=np.float64).reshape(-1)


# -- conversion ----------------------------------------------------------------------------------
def _convert_onnx(module: Any, tmp: Path, precision: ModelPrecision, example: dict) -> str:
    from vecdoctor.encode.runtime.onnx import GRAPH, export_graph

    export_graph(module, example, ["logits"], tmp / GRAPH, precision)
    return GRAPH


def _convert_openvino(
    module: Any, tmp: Path, precision: ModelPrecision, example: dict, calibration: list[dict]
) -> str:
    from vecdoctor.encode.runtime.openvino import GRAPH, save_graph

    save_graph(module, example, ["logits"], tmp / GRAPH, precision, calibration)
    return GRAPH


def _check(got: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    diff = np.abs(got - reference)
    return {
        "pairs": len(got),
        "max_abs_logit_difference": round(float(diff.max()), 6),
        "mean_abs_logit_difference": round(float(diff.mean()), 6),
        "same_order": bool(
            (np.argsort(-got, kind="stable") == np.argsort(-reference, kind="stable")).all()
        ),
    }


def reranker_variant_dir(folder: str | Path, backend: str, precision: ModelPrecision | str) -> Path:
    """Where the cache keeps one converted variant of the cross-encoder in ``folder``."""
    return variant_dir(resolve(str(folder)), backend, precision, home=cache_home() / "rerankers")


def export_cross_encoder(
    folder: str | Path,
    backend: str,
    precision: ModelPrecision | str = ModelPrecision.FP32,
    output: str | Path | None = None,
    check_pairs: Sequence[tuple[str, str]] | None = None,
    force: bool = False,
) -> ConvertedModel:
    """Export a saved cross-encoder to ``backend`` (``onnx`` or ``openvino``; int8 quantized),
    check its scores against PyTorch on ``check_pairs`` (default: built-in sample pairs, which
    also calibrate OpenVINO's int8) and save it (default: the reranker cache)."""
    from vecdoctor.encode.convert.export import require_packages

    source = Path(folder)
    backend = check_backend(backend)
    precision = check_rerank_backend(backend, precision)
    require_packages(backend, precision)
    resolved = resolve(str(source))
    target = Path(output) if output is not None else reranker_variant_dir(source, backend, precision)
    check_target(target, force, refuse_foreign=output is not None)
    started = time.perf_counter()
    pairs = list(check_pairs or _sample_pairs())
    tokenizer = PairTokenizer(source)
    batch = tokenizer.pairs([q for q, _ in pairs], [d for _, d in pairs])
    module = torch_module(source)
    reference = _reference(module, batch)

    def build(tmp: Path) -> Built:
        if backend == "onnx":
            graph = _convert_onnx(module, tmp, precision, batch)
        else:
            calibration = [tokenizer.pairs([q], [d]) for q, d in pairs]
            graph = _convert_openvino(module, tmp, precision, batch, calibration)
        partial = ConvertedModel(tmp, backend, precision, graph, {"kind": "cross-encoder"})
        check = _check(GraphScorer(partial)(batch), reference)
        if precision is ModelPrecision.FP32 and check["max_abs_logit_difference"] >= FP32_TOLERANCE:
            raise RerankConversionError(
                f"the {backend} fp32 graph of {source} differs from PyTorch (largest logit "
                f"difference {check['max_abs_logit_difference']} >= {FP32_TOLERANCE} on "
                f"{len(pairs)} pairs); not saved"
            )
        calibrated = backend == "openvino" and precision is ModelPrecision.INT8
        return Built(
            graph, check, module, tokenizer.max_length,
            [f"{q}\x00{d}" for q, d in pairs] if calibrated else [],
            {"kind": "cross-encoder", "outputs": ["logits"], "inputs": list(INPUTS)},
        )

    converted = save_variant(resolved, backend, precision, target, build, started)
    logger.info(
        "converted cross-encoder %s to %s %s in %.1fs (largest logit difference %.2g): %s",
        source, backend, precision, converted.info["seconds"],
        converted.info["check"]["max_abs_logit_difference"], target,
    )
    return converted


def ensure_cross_encoder(
    folder: str | Path, backend: str, precision: ModelPrecision | str
) -> ConvertedModel:
    """The cached variant, converted (again) when it is missing or damaged."""
    target = reranker_variant_dir(folder, backend, precision)
    found = cached_variant(target)
    if found is not None:
        return found
    return export_cross_encoder(folder, backend, precision, output=target, force=True)
