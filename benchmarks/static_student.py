"""A static student of minilm fitted on SciFact: speed against sentence-transformers, quality
alone and in a hybrid with BM25, against the teacher, in one run.

  1. `distill_static` on the SciFact corpus (documents and their sentences; the teacher's
     vectors of at most --max-texts of them are the targets). No query or judgement is used.
  2. docs/s on the same 1,000 SciFact documents: sentence-transformers fp32 (its own
     `SentenceTransformer.encode`, batch 32), vecdoctor's teacher on PyTorch, the student
     (median of 3 runs each).
  3. nDCG@10 on SciFact test (300 queries): bm25, dense, hybrid (RRF) for the teacher and the
     student through the same evaluation as the checkup, with query latency p50 end to end.

    .venv/bin/python benchmarks/static_student.py [--max-texts 30000] [--epochs 20] [--keep DIR]

``--keep DIR`` keeps the student there (and reuses it when DIR already holds one: the
distillation is then not timed again, and the result says so).

Writes benchmarks/results/static_student.json.
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

from _common import DATA, machine, versions, write_result  # noqa: E402


def rate(encode, texts: list[str], runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        encode(texts)
        times.append(time.perf_counter() - start)
    times.sort()
    return len(texts) / times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-texts", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from vecdoctor.data import load_dataset
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.variants import evaluate_variants
    from vecdoctor.finetune.static import distill_static
    from vecdoctor.models import resolve

    ds = load_dataset(DATA / "scifact")
    texts = [d.content for d in ds.corpus]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "static"
        if (folder / "static_model.json").is_file():
            out["distill"] = {"reused": str(folder), **json.loads((folder / "static_model.json").read_text())}
        else:
            start = time.perf_counter()
            report = distill_static("minilm", texts, folder, epochs=args.epochs, max_texts=args.max_texts,
                                    progress=lambda m: print(m, flush=True))
            out["distill"] = {**report.to_dict(), "seconds": round(time.perf_counter() - start, 1)}
            out["distill"]["student"] = str(args.keep) if args.keep else "(temporary folder)"
        print(out["distill"], flush=True)
        sample = texts[:1000]
        st = SentenceTransformer(str(resolve("minilm").path), device="cpu")
        teacher = Encoder("minilm")
        student = Encoder(str(folder))
        speeds = {
            "sentence-transformers fp32": rate(lambda t: st.encode(t, batch_size=32), sample, runs=1),
            "vecdoctor minilm torch fp32": rate(teacher.encode_documents, sample, runs=1),
            "vecdoctor static student": rate(student.encode_documents, sample),
        }
        base = speeds["sentence-transformers fp32"]
        out["docs_per_second"] = {k: {"docs_per_second": round(v, 1), "x_sentence_transformers": round(v / base, 1)}
                                  for k, v in speeds.items()}
        print(out["docs_per_second"], flush=True)
        quality = {}
        for label, model in (("teacher minilm", "minilm"), ("static student", str(folder))):
            rep = evaluate_variants(ds, model, ["bm25", "dense", "hybrid"])
            quality[label] = {r.name: {"ndcg@10": round(r.ndcg, 4), "query_ms_p50": round(r.query_ms_p50, 3)}
                              for r in rep.results}
            print(label, quality[label], flush=True)
        out["quality"] = quality
        t, s = quality["teacher minilm"], quality["static student"]
        out["student_share_of_teacher"] = {m: round(s[m]["ndcg@10"] / t[m]["ndcg@10"], 4)
                                           for m in ("dense", "hybrid")}
    path = write_result("static_student", {"machine": machine(),
                                            "versions": versions("torch", "sentence-transformers"),
                                            **out})
    print(out["student_share_of_teacher"], "wrote", path)


if __name__ == "__main__":
    main()
