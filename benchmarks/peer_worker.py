"""sentence-transformers' own fastest CPU paths, run in the peer environment for encode_speed.py.

Started by ``benchmarks/encode_speed.py --peer`` with the peer environment's Python (see
``peer_env.py``): never imported by vecdoctor, never run with the project's environment. It
exports the model the way sentence-transformers documents it ("Speeding up Inference"):

- ``st-openvino-int8``: ``export_static_quantized_openvino_model`` (OpenVINO post-training static
  int8 through optimum-intel / NNCF), calibrated on the texts the caller hands over (its default
  calibration set is downloaded from a hub, which is not reachable here, so a local folder with the
  same column layout takes its place);
- ``st-onnx-int8``: ``export_dynamic_quantized_onnx_model`` with the configuration named after the
  CPU's instruction set (``avx512_vnni`` where the CPU has it);
- ``st-torch-fp32``: the same library's plain PyTorch path, a check that the process boundary costs
  nothing (it must match the baseline in the main process).

Protocol (one JSON object per line): the first line on stdin is the set-up
``{"variant", "model", "work", "max_length", "batch_size", "calibration": [...]}``; the worker
answers ``{"ready": true, "facts": {...}}``. Every later line is ``{"texts": [...], "out": PATH}``;
the worker encodes, writes the normalised float32 vectors to PATH (.npy) and answers
``{"seconds": S}``, the time of the ``encode`` call alone. An empty line ends it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def cpu_flags() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return line
    return ""


def onnx_config() -> str:
    flags = cpu_flags()
    if " avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if " avx512f" in flags else "avx2"


def export(variant: str, folder: Path, calibration: list[str], max_length: int) -> tuple[object, dict]:
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    if variant == "st-torch-fp32":
        model = SentenceTransformer(str(folder), device="cpu")
        model.max_seq_length = max_length
        return model, {"load_or_convert_seconds": round(time.perf_counter() - started, 1)}
    if variant == "st-openvino-int8":
        from optimum.intel import OVQuantizationConfig
        from sentence_transformers import export_static_quantized_openvino_model

        calib = folder / "calibration"
        calib.mkdir(exist_ok=True)
        with open(calib / "train.jsonl", "w", encoding="utf-8") as fh:
            for text in calibration:
                fh.write(json.dumps({"sentence": text}) + "\n")
        model = SentenceTransformer(str(folder), backend="openvino")
        config = OVQuantizationConfig(num_samples=len(calibration))
        export_static_quantized_openvino_model(model, config, str(folder), dataset_name=str(calib),
                                               dataset_config_name="default", dataset_split="train",
                                               column_name="sentence")
        file_name = "openvino/openvino_model_qint8_quantized.xml"
        backend = "openvino"
    elif variant == "st-onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        config_name = onnx_config()
        model = SentenceTransformer(str(folder), backend="onnx")
        export_dynamic_quantized_onnx_model(model, config_name, str(folder))
        # model_qint8_<config>.onnx, or model_quint8_avx2.onnx (AVX2 quantizes activations unsigned)
        file_name = str(next((folder / "onnx").glob(f"model_*int8_{config_name}.onnx"))
                        .relative_to(folder))
        backend = "onnx"
    else:
        raise SystemExit(f"unknown peer variant {variant!r}")
    model = SentenceTransformer(str(folder), backend=backend, model_kwargs={"file_name": file_name})
    model.max_seq_length = max_length
    size = sum(p.stat().st_size for p in (folder / file_name).parent.glob(Path(file_name).stem + ".*"))
    return model, {"load_or_convert_seconds": round(time.perf_counter() - started, 1),
                   "disk_mb": round(size / 2**20, 1), "file": file_name}


def main() -> None:
    # The answers go to a private copy of stdout; everything the libraries print (progress bars,
    # warnings) goes to stderr, so it can never be read as an answer.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    setup = json.loads(sys.stdin.readline())
    folder = Path(setup["work"]) / setup["variant"]
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(setup["model"], folder)
    model, facts = export(setup["variant"], folder, setup["calibration"], setup["max_length"])
    facts["versions"] = {p: version(p) for p in ("sentence-transformers", "transformers", "torch", "optimum",
                                                 "optimum-intel", "openvino", "nncf", "onnxruntime")}
    print(json.dumps({"ready": True, "facts": facts}), file=answers, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        job = json.loads(line)
        started = time.perf_counter()
        vectors = model.encode(job["texts"], batch_size=setup["batch_size"], normalize_embeddings=True)
        seconds = time.perf_counter() - started
        np.save(job["out"], np.asarray(vectors, dtype=np.float32))
        print(json.dumps({"seconds": seconds}), file=answers, flush=True)


if __name__ == "__main__":
    main()
