"""A static student of minilm fitted on SciFact: speed against sentence-transformers, quality
alone and in a hybrid with BM25, against the teacher, in one run.

  1. `distill_static` on the SciFact corpus (documents and their sentences; the teacher's
     vectors of at most --max-texts of them are the targets). No query or judgement is used.
  2. docs/s on the same 1,000 SciFact documents: sentence-transformers fp32 (its own
     `SentenceTransformer.encode`, batch 32), vecdoctor's teacher on PyTorch, the student
     (median of 3 runs each).
  3. nDCG@10 on SciFact test (300 queries): bm25, dense, hybrid (RRF) for the teacher and the
     student through the same evaluation as the checkup, with query latency p50 end to end.
  4. Fusion tuned on SciFact *train* (809 queries; the test labels are not looked at): every
     RRF k and dense weight of the checkup's grid fused from each model's BM25 and dense top
     100 on train, the best setting applied to test, for the teacher and the student alike.

    .venv/bin/python benchmarks/static_student.py [--max-texts 30000] [--epochs 20] [--keep DIR]
        [--vocabulary corpus|teacher] [--relation W] [--variant default]

``--keep DIR`` keeps the student there (and reuses it when DIR already holds one: the
distillation is then not timed again, and the result says so).

Writes benchmarks/results/NAME.json (static_student.json by default).
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

from harness import DATA, machine, versions, write_result  # noqa: E402


def tuned_fusion(model: str, cache) -> dict:  # type: ignore[no-untyped-def]
    """The fusion setting with the best nDCG@10 on train, and every setting's on train and test."""
    from vecdoctor.checkup.fusion import DENSE_WEIGHTS, RRF_KS, _fuse
    from vecdoctor.data import load_dataset
    from vecdoctor.evaluate.metrics import evaluate_run
    from vecdoctor.evaluate.variants import evaluate_variants

    grid: dict = {}
    for split in ("train", "test"):
        ds = load_dataset(DATA / "scifact", split)
        runs = {r.name: r.run for r in evaluate_variants(ds, model, ["bm25", "dense"], cache=cache).results}
        for fusion, params in (("rrf", RRF_KS), ("weighted", DENSE_WEIGHTS)):
            for p in params:
                fused = {q: _fuse(fusion, p, runs["bm25"].get(q, {}), runs["dense"].get(q, {}), 100)
                         for q in ds.qrels}
                score = evaluate_run(ds.qrels, fused, ("ndcg@10",)).metrics["ndcg@10"]
                grid.setdefault(f"{fusion} {p:g}", {})[split] = round(score, 4)
    best = max(grid, key=lambda key: grid[key]["train"])
    return {"chosen_on_train": best, "test_ndcg@10": grid[best]["test"], "default_test_ndcg@10": grid["rrf 60"]["test"],
            "grid": grid}


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
    parser.add_argument("--vocabulary", default="corpus", help="corpus or teacher (distill --vocabulary)")
    parser.add_argument("--relation", type=float, default=None,
                        help="weight of the in-batch cosine term (default: distill_static's)")
    parser.add_argument("--variant", default="default",
                        help="result file: benchmarks/results/static_student/<cpu>-<variant>.json")
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
            extra = {} if args.relation is None else {"relation": args.relation}
            report = distill_static("minilm", texts, folder, epochs=args.epochs, max_texts=args.max_texts,
                                    vocabulary=args.vocabulary, progress=lambda m: print(m, flush=True),
                                    **extra)
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
        from vecdoctor.encode.cache import VectorCache

        tuned = {label: tuned_fusion(model, VectorCache())
                 for label, model in (("teacher minilm", "minilm"), ("static student", str(folder)))}
        out["fusion_tuned_on_train"] = tuned
        student = tuned["static student"]["test_ndcg@10"]
        out["student_share_of_teacher"].update({
            "hybrid, student tuned vs teacher default": round(student / t["hybrid"]["ndcg@10"], 4),
            "hybrid, both tuned": round(student / tuned["teacher minilm"]["test_ndcg@10"], 4),
        })
        print(out["fusion_tuned_on_train"], flush=True)
    path = write_result("static_student", {"machine": machine(),
                                            "versions": versions("torch", "sentence-transformers"),
                                            **out}, args.variant)
    print(out["student_share_of_teacher"], "wrote", path)


if __name__ == "__main__":
    main()
