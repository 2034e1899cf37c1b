"""What does `diagnose` find on SciFact with MiniLM (mean and CLS pooling), and how fast is it?

Runs the full diagnosis (every check, whitening and all-but-the-top before/after) on the whole
SciFact corpus (5,183 documents, 300 test queries) for each pooling and writes one JSON file to
benchmarks/results/diagnose_scifact/ with the machine, library versions, the command, wall times and the numbers.
The mean-pooling run is the baseline; the CLS run is reported as ratios against it.

    .venv/bin/python benchmarks/diagnose_scifact.py [--sample N] [--pooling mean cls]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DATA, machine, versions, write_result  # noqa: E402

SCIFACT = DATA / "scifact"


def numbers(report) -> dict[str, object]:  # type: ignore[no-untyped-def]
    iso = report.isotropy.stats
    out: dict[str, object] = {
        "verdicts": {r["check"]: r["verdict"] for r in report.summary()},
        "isotropy": round(iso.isotropy, 4),
        "mean_cosine": round(iso.mean_cosine, 4),
        "top1_share": round(iso.top1_share, 4),
        "top10_share": round(iso.top10_share, 4),
        "effective_rank": round(iso.effective_rank, 1),
        "layer_mean_cosine": report.isotropy.layer_mean_cosine,
        "length_spearman_norm": round(report.length.spearman_norm, 4),
        "length_spearman_centroid": round(report.length.spearman_centroid, 4),
        "recall10_by_length_quartile": report.length.quartiles.recall
        if report.length.quartiles else None,
        "share_truncated": round(report.truncation.share_truncated, 4),
        "share_tokens_dropped": round(report.truncation.share_tokens_dropped, 4),
        "fertility": round(report.vocabulary.fertility, 4),
        "fragmented_share": round(report.vocabulary.fragmented_share, 4),
        "top_fragmented": [
            f"{t.word} -> {' '.join(t.pieces)}" for t in report.vocabulary.terms[:5]
        ],
        "quantization": {
            r.name: {
                "bytes": r.bytes_per_vector,
                "compression": round(r.compression, 2),
                "mse": float(f"{r.mse:.3g}"),
                "mean_cosine": round(r.mean_cosine, 4),
                "recall10_overlap": round(r.recall_overlap, 4),
                "rescored_overlap": (
                    None if r.rescored_overlap is None else round(r.rescored_overlap, 4)
                ),
            }
            for r in report.quantization.rows
        },
        "fixes": {
            f.name: {
                "isotropy_after": round(f.after.isotropy, 4),
                "mean_cosine_after": round(f.after.mean_cosine, 4),
                "recall10_before": f.recall_before,
                "recall10_after": f.recall_after,
                "improves": f.improves,
            }
            for f in report.fixes
        },
        "timings_s": report.meta["timings_s"],
    }
    if report.position is not None:
        out["position_attention_share"] = report.position.attention_share
        out["position_share"] = report.position.position_share
        out["position_first_bucket_ratio"] = round(report.position.first_bucket_ratio, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="texts to encode (default: all)")
    parser.add_argument("--pooling", nargs="+", default=["mean", "cls"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reports", type=Path, default=ROOT / "out" / "bench-diagnose",
                        help="where the HTML/JSON reports go (not committed)")
    args = parser.parse_args()
    if not (SCIFACT / "corpus.jsonl.gz").exists():
        sys.exit(f"SciFact not found at {SCIFACT}; place the BEIR folder in ../shared/data/scifact")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from vecdoctor.data import load_dataset
    from vecdoctor.diagnose import diagnose
    from vecdoctor.encode.encoder import Encoder

    dataset = load_dataset(SCIFACT, split="test")
    sample = args.sample or len(dataset.corpus)
    runs = {}
    for pooling in args.pooling:
        encoder = Encoder("minilm", pooling=pooling)
        start = time.perf_counter()
        report = diagnose(dataset, encoder, sample=sample, seed=args.seed)
        wall = time.perf_counter() - start
        report.save(args.reports / pooling)
        runs[pooling] = {"wall_s": round(wall, 1), **numbers(report)}
        print(f"{pooling}: {wall:.0f}s, isotropy {runs[pooling]['isotropy']}, "
              f"mean cosine {runs[pooling]['mean_cosine']}", file=sys.stderr)
    base = args.pooling[0]
    ratios = {
        p: {
            "wall_time": round(runs[p]["wall_s"] / runs[base]["wall_s"], 3),
            "mean_cosine": round(runs[p]["mean_cosine"] / runs[base]["mean_cosine"], 3),
        }
        for p in args.pooling[1:]
    }
    result = {
        "question": "What does diagnose report on SciFact with MiniLM (mean vs CLS pooling)?",
        "machine": machine(),
        "versions": versions("numpy", "scipy", "torch", "transformers", "tokenizers", "faiss-cpu"),
        "dataset": {"name": "scifact", "documents": len(dataset.corpus),
                    "queries": len(dataset.queries), "sample": sample, "seed": args.seed},
        "baseline": base,
        "runs": runs,
        "ratios_vs_baseline": ratios,
    }
    print(write_result("diagnose_scifact", result))


if __name__ == "__main__":
    main()
