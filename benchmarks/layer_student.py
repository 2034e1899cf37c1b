"""A layer-pruned student of minilm trained on SciFact: speed on the same backend as the
teacher, quality alone and in a hybrid with BM25, in one run.

  1. `distill_layers` on the SciFact corpus (documents and their sentences; the teacher's
     vectors of at most --max-texts of them are the targets). No query or judgement is used.
  2. docs/s on the same SciFact documents for teacher and student on each backend (PyTorch
     fp32; OpenVINO int8, calibrated on 300 SciFact documents), timed in interleaved chunks so
     load from other processes hits both alike; sentence-transformers fp32 as the outside
     baseline.
  3. nDCG@10 on SciFact test (300 queries): dense and hybrid (RRF with BM25) for teacher and
     student through the same evaluation as the checkup, on each backend.

    .venv/bin/python benchmarks/layer_student.py [--layers 3] [--epochs 4] [--keep DIR]

``--keep DIR`` keeps the student there (and reuses it when DIR already holds one: the
distillation is then not timed again, and the result says so).

Writes benchmarks/results/layer_student.json (or layer_student_K.json for --layers K != 3).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, interleaved, machine, versions, write_result  # noqa: E402

BACKENDS = {"torch-fp32": {"backend": "torch"},
            "openvino-int8": {"backend": "openvino", "precision": "int8"}}


def interleaved_rates(runs: dict, texts: list[str], chunks: int) -> dict[str, float]:
    """docs/s of each callable over ``texts`` split in chunks, the order rotating per chunk."""
    size = -(-len(texts) // chunks)
    seconds, _ = interleaved({k: (lambda c, run=run: run(texts[c * size : (c + 1) * size]))
                              for k, run in runs.items()}, rounds=chunks, warmup=False)
    return {k: len(texts) / sum(v) for k, v in seconds.items()}


def distill(folder: Path, texts: list[str], args: argparse.Namespace, keep: bool) -> dict:
    from vecdoctor.finetune.layers import STUDENT_FILE, distill_layers

    if (folder / STUDENT_FILE).is_file():
        return {"reused": str(folder), **json.loads((folder / STUDENT_FILE).read_text())}
    start = time.perf_counter()
    report = distill_layers("minilm", texts, folder, layers=args.layers, epochs=args.epochs,
                            max_texts=args.max_texts, progress=lambda m: print(m, flush=True))
    return {**report.to_dict(), "seconds": round(time.perf_counter() - start, 1),
            "student": str(folder) if keep else "(temporary folder)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-texts", type=int, default=30_000)
    parser.add_argument("--docs", type=int, default=1000, help="documents timed per variant")
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from vecdoctor.data import load_dataset
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.variants import evaluate_variants
    from vecdoctor.models import resolve

    ds = load_dataset(DATA / "scifact")
    texts = [d.content for d in ds.corpus]
    calibration = texts[::17][:300]
    out: dict = {"question": "Does a layer-pruned student of minilm, trained on the corpus, keep "
                             ">= 97% of the teacher's dense nDCG@10 at >= 1.8x its docs/s on the "
                             "same backend?"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "student"
        out["distill"] = distill(folder, texts, args, args.keep is not None)
        print(out["distill"], flush=True)
        models = {"teacher": "minilm", "student": str(folder)}
        sample = texts[: args.docs]
        st = SentenceTransformer(str(resolve("minilm").path), device="cpu")
        runs = {"sentence-transformers fp32": lambda t: st.encode(t, batch_size=32)}
        for backend, options in BACKENDS.items():
            for who, model in models.items():
                extra = {"calibration_texts": calibration} if options.get("precision") == "int8" else {}
                enc = Encoder(model, **options, **extra)
                runs[f"{who} {backend}"] = enc.encode_documents
        for run in runs.values():  # warm-up: first calls pay for lazy set-up
            run(sample[:32])
        rates = interleaved_rates(runs, sample, chunks=4)
        base = rates["sentence-transformers fp32"]
        out["docs_per_second"] = {k: {"docs_per_second": round(v, 1), "x_sentence_transformers": round(v / base, 2)}
                                  for k, v in rates.items()}
        out["student_speedup_same_backend"] = {
            b: round(rates[f"student {b}"] / rates[f"teacher {b}"], 2) for b in BACKENDS}
        print(out["docs_per_second"], out["student_speedup_same_backend"], flush=True)
        quality: dict = {}
        for backend, options in BACKENDS.items():
            for who, model in models.items():
                extra = {"calibration_texts": calibration} if options.get("precision") == "int8" else {}
                rep = evaluate_variants(ds, model, ["dense", "hybrid"],
                                        encoder_options={**options, **extra})
                quality[f"{who} {backend}"] = {r.name: round(r.ndcg, 4) for r in rep.results}
                print(who, backend, quality[f"{who} {backend}"], flush=True)
        out["ndcg@10"] = quality
        out["student_share_of_teacher"] = {
            b: {m: round(quality[f"student {b}"][m] / quality[f"teacher {b}"][m], 4)
                for m in ("dense", "hybrid")} for b in BACKENDS}
    variant = "default" if args.layers == 3 else f"layers-{args.layers}"
    path = write_result("layer_student", {"machine": machine(),
                               "versions": versions("torch", "sentence-transformers", "openvino"),
                               **out}, variant)
    print(out["student_share_of_teacher"], "wrote", path)


if __name__ == "__main__":
    main()
