"""How close does CPU encoding come to what this CPU can compute at all?

A roofline for the encoding targets of ``encode_speed.py``. In one run:

1. the CPU's peak multiply-accumulates per second with every core busy, for fp32 (FMA), bf16
   (VDPBF16PS) and int8 (VNNI), from ``peak_macs.c`` (compiled here with ``cc``);
2. the model's multiply-accumulates per document, counted from its configuration and the real
   token counts of the timed SciFact documents (weight matrix products, and attention's two
   products, which grow with length squared); the count is checked against PyTorch's FLOP
   counter on one full-length input;
3. documents/s of sentence-transformers fp32 (the baseline) and of vecdoctor's OpenVINO bf16
   and int8, on the same documents, timed in interleaved chunks;
4. OpenVINO's per-operation profile of one full-length batch: the time in weight products,
   in fused attention and in everything else, and the share of peak each reaches.

From these: each variant's share of its precision's peak, the most documents/s that peak
allows (every operation at 100% of peak, nothing else costing time), the ratio to the
baseline that bound gives, and the share of peak a target ratio would need.

    python benchmarks/cpu_roofline.py                 # 1,500 SciFact documents
    python benchmarks/cpu_roofline.py --docs 500 --chunks 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode_speed import build, encode_interleaved  # noqa: E402
from harness import DATA, log, machine, versions, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
PEAK_OF = {
    "st-fp32": "fp32",
    "torch-fp32": "fp32",
    "openvino-fp32": "fp32",
    "openvino-bf16": "bf16",
    "openvino-int8": "int8",
}
TARGETS = {"openvino-int8": 5.0, "openvino-bf16": 3.5}  # from the encoding issue


def peak_gmacs(threads: int, runs: int = 5) -> dict[str, float]:
    """Compile and run peak_macs.c; the best of ``runs`` GMAC/s per precision with ``threads``
    threads (a peak: a run that shares the cores with anything else only reads lower)."""
    isa = machine()["isa"]
    missing = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16") if f not in isa]
    if missing:
        sys.exit(
            f"this CPU lacks {', '.join(missing)}; the peak kernels need AVX-512 VNNI and BF16"
        )
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        sys.exit("no C compiler found: install gcc (or set CC) to measure the CPU's peak")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "peak_macs"
        subprocess.run(
            [
                compiler,
                "-O2",
                "-mavx512f",
                "-mavx512bw",
                "-mavx512vnni",
                "-mavx512bf16",
                "-pthread",
                str(HERE / "peak_macs.c"),
                "-o",
                str(exe),
            ],
            check=True,
        )
        results = [
            json.loads(
                subprocess.run(
                    [str(exe), str(threads)], check=True, capture_output=True, text=True
                ).stdout
            )
            for _ in range(runs)
        ]
    return {k: max(float(r[k]) for r in results) for k in ("fp32", "bf16", "int8")}


class Shape:
    """Multiply-accumulates of a BERT-like encoder for one sequence of ``n`` tokens."""

    def __init__(self, config: dict) -> None:
        self.hidden = int(config["hidden_size"])
        self.inner = int(config["intermediate_size"])
        self.layers = int(config["num_hidden_layers"])

    def weights(self, n: np.ndarray | int) -> np.ndarray:
        # query, key, value and output projections, then the two feed-forward products
        return (
            self.layers
            * np.asarray(n, dtype=np.float64)
            * (4 * self.hidden**2 + 2 * self.hidden * self.inner)
        )

    def attention(self, n: np.ndarray | int) -> np.ndarray:
        # scores (queries x keys) and the weighted sum of values, over every head
        return self.layers * 2.0 * np.asarray(n, dtype=np.float64) ** 2 * self.hidden


def torch_count(path: Path, n: int) -> float:
    """Multiply-accumulates PyTorch's FLOP counter sees in one forward pass of ``n`` tokens
    (eager attention, so that the attention products are counted too)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    ids = torch.full((1, n), 1000, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops() / 2


def profile(
    graph: Path,
    precision: str,
    batch: dict[str, np.ndarray],
    shape: Shape,
    peak: dict[str, float],
    repeats: int = 4,
) -> dict[str, object]:
    """OpenVINO's per-operation times on ``batch``: weight products, fused attention, the rest."""
    import openvino as ov

    from vecdoctor.config import ModelPrecision
    from vecdoctor.encode.runtime.openvino import _inference_precision, _states_only

    core = ov.Core()
    model, _ = _states_only(graph)
    hint = _inference_precision(ModelPrecision.parse(precision), core)
    compiled = core.compile_model(
        model,
        "CPU",
        {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint, "PERF_COUNT": "YES"},
    )
    request = compiled.create_infer_request()
    request.infer(batch)
    ms = {"weights": 0.0, "attention": 0.0, "other": 0.0}
    for _ in range(repeats):
        request.infer(batch)
        for node in request.get_profiling_info():
            kind = node.node_type
            part = (
                "weights"
                if kind.startswith("FullyConnected")
                else "attention"
                if kind in ("Subgraph", "ScaledDotProductAttention", "MHA")
                else "other"
            )
            ms[part] += node.real_time.total_seconds() * 1000 / repeats
    b, n = batch["input_ids"].shape
    macs = {"weights": float(shape.weights(n)) * b, "attention": float(shape.attention(n)) * b}
    total = sum(ms.values())
    out: dict[str, object] = {
        "batch": [int(b), int(n)],
        "inference_precision": hint,
        "ms": {k: round(v, 1) for k, v in ms.items()},
        "share_of_time": {k: round(v / total, 3) for k, v in ms.items()},
    }
    for part in ("weights", "attention"):
        rate = macs[part] / (ms[part] / 1000) / 1e9 if ms[part] else 0.0
        out[f"{part}_gmacs"] = round(rate, 1)
        out[f"{part}_share_of_peak"] = round(rate / peak[PEAK_OF["openvino-" + precision]], 3)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--docs", type=int, default=1500, help="SciFact documents timed (seeded sample)"
    )
    ap.add_argument("--chunks", type=int, default=4, help="interleaving chunks")
    ap.add_argument("--variants", default="st-fp32,openvino-bf16,openvino-int8")
    ap.add_argument("--variant", default="default",
                    help="result file: benchmarks/results/cpu_roofline/<cpu>-<variant>.json")
    args = ap.parse_args()
    names = args.variants.split(",")
    if names[0] != "st-fp32" or any(n not in PEAK_OF for n in names):
        sys.exit(f"variants: st-fp32 first, then any of {', '.join(list(PEAK_OF)[1:])}")
    return args


def count_macs(shape: Shape, model_path: Path, lengths: np.ndarray, n: int) -> tuple[float, float, dict]:
    """Multiply-accumulates of weights and attention over ``lengths``, and the check of the
    count against PyTorch's FLOP counter on one input of ``n`` tokens (exits if they differ)."""
    weights, attention = shape.weights(lengths).sum(), shape.attention(lengths).sum()
    check = {
        "tokens": n,
        "counted": float(shape.weights(n) + shape.attention(n)),
        "torch_flop_counter": torch_count(model_path, n),
    }
    check["ratio"] = round(check["counted"] / check["torch_flop_counter"], 5)
    if abs(check["ratio"] - 1) > 0.01:
        sys.exit(f"the count of multiply-accumulates disagrees with PyTorch's: {check}")
    return float(weights), float(attention), check


def roofline_rows(names: list[str], seconds: dict, docs: int, peak: dict, macs_per_doc: float) -> list[dict]:
    base = docs / seconds["st-fp32"]
    rows = []
    for name in names:
        rate = docs / seconds[name]
        p = peak[PEAK_OF[name]]
        bound = p * 1e9 / macs_per_doc
        row = {
            "variant": name,
            "peak_used": PEAK_OF[name],
            "docs_per_s": round(rate, 1),
            "ratio": round(rate / base, 2),
            "gmacs": round(rate * macs_per_doc / 1e9, 1),
            "share_of_peak": round(rate * macs_per_doc / 1e9 / p, 3),
            "bound_docs_per_s": round(bound, 1),
            "bound_ratio": round(bound / base, 2),
        }
        if name in TARGETS:
            row["target_ratio"] = TARGETS[name]
            row["share_of_peak_target_needs"] = round(
                TARGETS[name] * base * macs_per_doc / 1e9 / p, 3
            )
        rows.append(row)
    return rows


def profiles_of(names: list[str], resolved: object, tok: object, seqs: list, n: int,
                shape: Shape, peak: dict) -> dict:
    """OpenVINO's per-operation profile of one batch of 16 full-length documents per variant."""
    from vecdoctor.encode.convert.export import variant_dir

    full = [s for s in seqs if len(s) == n][:16]
    profiles: dict = {}
    if len(full) < 16:
        return profiles
    batch = tok.pad(full)  # type: ignore[attr-defined]
    feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    for name in names:
        if name.startswith("openvino-"):
            log(f"profiling {name}")
            precision = name.split("-")[1]
            graph = variant_dir(resolved, "openvino", precision) / "model.xml"
            profiles[name] = profile(graph, precision, feed, shape, peak)
    return profiles


COLUMNS = ["variant", "docs_per_s", "ratio", "gmacs", "share_of_peak", "bound_docs_per_s",
           "bound_ratio", "target_ratio", "share_of_peak_target_needs"]


def main() -> None:
    args = parse_args()
    from vecdoctor.data import load_corpus
    from vecdoctor.encode.tokens import TextTokenizer
    from vecdoctor.models import resolve

    names = args.variants.split(",")
    threads = len(os.sched_getaffinity(0))
    log(f"peak multiply-accumulates, {threads} threads")
    peak = peak_gmacs(threads)
    log(f"peak GMAC/s: {peak}")
    resolved = resolve(args.model)
    shape = Shape(json.loads((Path(resolved.path) / "config.json").read_text()))
    texts = [d.content for d in load_corpus(DATA / "scifact")]
    pick = np.random.default_rng(0).choice(len(texts), min(args.docs, len(texts)), replace=False)
    timed = [texts[i] for i in np.sort(pick)]
    tok = TextTokenizer(resolved.tokenizer_path, args.max_length)
    seqs, _ = tok.sequences(timed, None)
    lengths = np.array([len(s) for s in seqs])
    weights, attention, check = count_macs(shape, Path(resolved.path), lengths, args.max_length)
    macs_per_doc = (weights + attention) / len(timed)
    runs = {}
    for name in names:
        log(f"loading {name}")
        runs[name], _ = build(name, args.model, texts, args.max_length)
        runs[name](texts[:8], "document")  # warm-up
    log(f"timing {len(timed)} documents")
    started = time.perf_counter()
    seconds, _, _, _ = encode_interleaved(runs, timed, args.chunks)
    rows = roofline_rows(names, seconds, len(timed), peak, macs_per_doc)
    profiles = profiles_of(names, resolved, tok, seqs, args.max_length, shape, peak)
    result = {
        "question": "what share of the CPU's peak do the encoders reach, and what ratio to "
        "sentence-transformers does the peak allow",
        "machine": machine(),
        "versions": versions("torch", "sentence-transformers", "openvino", "nncf"),
        "settings": {"model": args.model, "max_length": args.max_length,
                     "docs_timed": len(timed), "chunks": args.chunks, "threads": threads},
        "peak_gmacs": peak,
        "model": {"hidden": shape.hidden, "intermediate": shape.inner, "layers": shape.layers,
                  "mean_tokens": round(float(lengths.mean()), 1),
                  "gmacs_per_doc": round(macs_per_doc / 1e9, 3),
                  "attention_share_of_macs": round(attention / (weights + attention), 3),
                  "count_check": check},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "profiles": profiles,
    }
    path = write_result("cpu_roofline", result, args.variant)
    print(" | ".join(COLUMNS))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in COLUMNS))
    for name, prof in profiles.items():
        print(name, json.dumps(prof))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
