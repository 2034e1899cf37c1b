"""Converting a PyTorch model into OpenVINO or ONNX Runtime graphs, checked against PyTorch.

The graph takes ``input_ids`` and ``attention_mask`` and returns ``last_hidden_state``
(b, L, d) and ``first_attention`` (b, L): the last layer's attention from the first token, mean
of heads, so every pooling mode works on every backend. Each backend's export and
quantization is in its module (:mod:`vecdoctor.encode.runtime.openvino`,
:mod:`vecdoctor.encode.runtime.onnx`); the converted variants are kept and verified by the
cache in :mod:`vecdoctor.encode.convert.cache`.
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
    CONVERTED_BACKENDS,
    EXPORT_FILE,
    FORMAT_VERSION,
    ConvertedModel,
    check_backend,
    copy_model_files,
    list_converted,
    load_converted,
    texts_digest,
    variant_dir,
)
from vecdoctor.encode.convert.core import Built, cached_variant, check_target, save_variant
from vecdoctor.errors import InputError, VecdoctorError
from vecdoctor.models import ResolvedModel, resolve

__all__ = [
    "CALIBRATION_SIZE",
    "CHECK_SIZE",
    "CONVERTED_BACKENDS",
    "EXPORT_FILE",
    "FORMAT_VERSION",
    "ConversionError",
    "ConvertedModel",
    "check_backend",
    "ensure_converted",
    "export_model",
    "list_converted",
    "load_converted",
    "texts_digest",
    "torch_module",
    "variant_dir",
]

logger = logging.getLogger(__name__)

CALIBRATION_SIZE = 300
"""Texts drawn from the calibration corpus for int8 (a seeded sample when there are more)."""
CHECK_SIZE = 8


class ConversionError(VecdoctorError, RuntimeError):
    """A converted graph does not reproduce the PyTorch model within tolerance."""


def ensure_converted(
    resolved: ResolvedModel,
    backend: str,
    precision: ModelPrecision | str,
    calibration_texts: Sequence[str] | None = None,
    max_length: int | None = None,
) -> ConvertedModel:
    """The cached variant, converted (again) when it is missing, damaged or calibrated differently."""
    precision = ModelPrecision.parse(precision)
    folder = variant_dir(resolved, check_backend(backend), precision)
    # Only OpenVINO's static int8 depends on the calibration texts (ONNX Runtime's is dynamic).
    calibrated = precision is ModelPrecision.INT8 and backend == "openvino"

    def same_calibration(found: ConvertedModel) -> bool:
        if calibration_texts is None or not calibrated:
            return True
        if texts_digest(_calibration_sample(calibration_texts)) == found.calibration:
            return True
        logger.info("calibration texts changed; quantizing %s again", folder)
        return False

    found = cached_variant(folder, same_calibration)
    if found is not None:
        return found
    return export_model(
        resolved,
        backend,
        precision,
        output=folder,
        calibration_texts=calibration_texts,
        max_length=max_length,
        force=True,
    )


# -- the PyTorch side --------------------------------------------------------------------------
def torch_module(resolved: ResolvedModel) -> Any:
    """The model as a module: (input_ids, attention_mask) -> (last_hidden_state, first_attention).

    Eager attention, so the last layer's attention probabilities exist in the traced graph; the
    padding mask is passed already expanded (b, 1, 1, L), which traces to a shape-free graph.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(resolved.path), attn_implementation="eager").eval()
    use_types = int(getattr(model.config, "type_vocab_size", 0) or 0) > 0

    class StatesAndAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if use_types else {}
            out = self.model(
                input_ids=input_ids, attention_mask=bias, output_attentions=True, **extra
            )
            return out.last_hidden_state, out.attentions[-1][:, :, 0, :].mean(dim=1)

    module = StatesAndAttention().eval()
    module.hidden_size = int(model.config.hidden_size)  # type: ignore[assignment]
    module.num_heads = int(model.config.num_attention_heads)  # type: ignore[assignment]
    module.max_positions = int(getattr(model.config, "max_position_embeddings", 512))  # type: ignore[assignment]
    return module


def _calibration_sample(texts: Sequence[str] | None) -> list[str]:
    if texts is None:
        from vecdoctor.data import sample_corpus

        logger.warning(
            "no calibration texts given; calibrating int8 on the built-in sample. Pass "
            "calibration_texts (or --calibration) from your own corpus for the best quality"
        )
        texts = [d.content for d in sample_corpus()]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise InputError("calibration_texts holds no non-empty text; pass texts from your corpus")
    if len(texts) > CALIBRATION_SIZE:
        pick = np.random.default_rng(0).choice(len(texts), CALIBRATION_SIZE, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    return texts


def _tokenize(
    resolved: ResolvedModel, texts: Sequence[str], max_length: int
) -> list[dict[str, np.ndarray]]:
    from vecdoctor.encode.tokens import TextTokenizer

    tok = TextTokenizer(resolved.tokenizer_path, max_length)  # type: ignore[arg-type]
    seqs, _ = tok.sequences(list(texts), None)
    items = []
    for s in seqs:
        b = tok.pad([s])
        items.append({"input_ids": b.input_ids, "attention_mask": b.attention_mask})
    return items


def _check_batch(
    resolved: ResolvedModel, texts: Sequence[str], max_length: int
) -> dict[str, np.ndarray]:
    from vecdoctor.encode.tokens import TextTokenizer

    tok = TextTokenizer(resolved.tokenizer_path, max_length)  # type: ignore[arg-type]
    seqs, _ = tok.sequences(list(texts), None)
    b = tok.pad(seqs)
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask}


def _compare(
    reference: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], mask: np.ndarray
) -> dict[str, float]:
    from vecdoctor.encode.pooling import mean_pool

    a, b = mean_pool(reference[0], mask), mean_pool(got[0], mask)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "texts": int(len(cos)),
        "min_cosine": round(float(cos.min()), 6),
        "mean_cosine": round(float(cos.mean()), 6),
        "max_attention_error": round(float(np.abs(reference[1] - got[1]).max()), 6),
    }


def _converter(backend: str) -> Callable[..., tuple[str, Callable[[dict[str, np.ndarray]], tuple]]]:
    if backend == "openvino":
        from vecdoctor.encode.runtime.openvino import convert
    else:
        from vecdoctor.encode.runtime.onnx import convert
    return convert


def export_model(
    model: str | ResolvedModel,
    backend: str,
    precision: ModelPrecision | str = ModelPrecision.FP32,
    output: str | Path | None = None,
    calibration_texts: Sequence[str] | None = None,
    max_length: int | None = None,
    check_texts: Sequence[str] | None = None,
    force: bool = False,
) -> ConvertedModel:
    """Convert (and for int8, quantize) a PyTorch model; check it against PyTorch; save it.

    Args:
        model: registry name, local sentence-transformers folder, or a resolved model.
        backend: ``openvino`` or ``onnx`` (ONNX Runtime).
        precision: ``fp32``, ``bf16`` (OpenVINO only) or ``int8``.
        output: target folder; defaults to the models cache (where encoders look).
        calibration_texts: int8 only: texts from your corpus (a seeded sample of 300 is used).
        max_length: tokens per calibration/check input; defaults to the model's.
        check_texts: texts for the PyTorch comparison; defaults to the first calibration texts.
        force: replace an existing folder.
    """
    resolved = resolve(model) if isinstance(model, str) else model
    backend, precision = _check_export(resolved, backend, precision)
    target = Path(output) if output is not None else variant_dir(resolved, backend, precision)
    check_target(target, force, refuse_foreign=output is not None)
    length = int(max_length or resolved.max_length)
    calib = (
        _calibration_sample(calibration_texts)
        if precision is ModelPrecision.INT8 and backend == "openvino"
        else []
    )
    own = [t for t in calibration_texts or [] if t.strip()]
    checks = list(check_texts or calib[:CHECK_SIZE] or own[:CHECK_SIZE] or _default_check_texts())
    started = time.perf_counter()
    import torch

    module = torch_module(resolved)
    batch = _check_batch(resolved, checks, length)
    with torch.inference_mode():
        ref = tuple(
            t.numpy()
            for t in module(
                torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
            )
        )

    def build(tmp: Path) -> Built:
        graph, run = _converter(backend)(
            module, tmp, precision, _tokenize(resolved, calib, length) if calib else [], batch
        )
        check = _compare(ref, run(batch), batch["attention_mask"])
        if precision is not ModelPrecision.INT8 and check["min_cosine"] <= 0.9999:
            raise ConversionError(
                f"the {backend} {precision} graph of {resolved.id!r} differs from PyTorch "
                f"(min cosine {check['min_cosine']} <= 0.9999 on {check['texts']} texts); not saved"
            )
        if precision is ModelPrecision.INT8 and check["min_cosine"] < 0.99:
            logger.warning(
                "int8 %s graph of %s: min cosine to PyTorch %.4f on %d texts",
                backend, resolved.id, check["min_cosine"], check["texts"],
            )
        copy_model_files(resolved, tmp)
        return Built(graph, check, module, length, calib)

    converted = save_variant(resolved, backend, precision, target, build, started)
    logger.info(
        "converted %s to %s %s in %.1fs (min cosine %.6f): %s",
        resolved.id, backend, precision, converted.info["seconds"],
        converted.info["check"]["min_cosine"], target,
    )
    return converted


def _check_export(
    resolved: ResolvedModel, backend: str, precision: ModelPrecision | str
) -> tuple[str, ModelPrecision]:
    """The backend and precision, checked against the model and the installed packages."""
    backend = check_backend(backend)
    precision = ModelPrecision.parse(precision)
    if resolved.backend != "torch":
        raise InputError(
            f"model {resolved.id!r} is a {resolved.backend} model; only PyTorch models can be "
            "converted (give a registry name or a sentence-transformers folder)"
        )
    if backend == "onnx" and precision is ModelPrecision.BF16:
        raise InputError(
            "bf16 runs on backend='openvino' only; ONNX Runtime's CPU provider has no "
            "bf16 kernels. Use precision 'fp32' or 'int8' with onnx"
        )
    require_packages(backend, precision)
    return backend, precision


def require_packages(backend: str, precision: ModelPrecision) -> None:
    """Fail before any work when a package of the ``fast`` extra is missing."""
    from vecdoctor.errors import require

    needed = {"openvino": ["openvino"], "onnx": ["onnxruntime", "onnx", "onnxscript"]}[backend]
    if backend == "openvino" and precision is ModelPrecision.INT8:
        needed.append("nncf")
    for module in needed:
        require(module, "fast")


def _default_check_texts() -> list[str]:
    from vecdoctor.data import sample_corpus

    return [d.content for d in sample_corpus()[:CHECK_SIZE]]
