"""Long documents: truncation vs windows pooled into one vector vs chunk-level retrieval.

Two corpora, one run:
  * ``python-docs-whole``: the built-in sample (the Python reference topics shipped with
    CPython) with every topic kept whole instead of split into passages: long documents, with
    300 self-supervised queries (a sentence taken out of its document; seed 0);
  * ``scifact``: SciFact test (title + abstract, 300 judged queries), where abstracts run a
    little past the model's input.

For each, the variants ``dense`` (truncation), ``dense+window`` (windows pooled by max),
``dense+chunks`` (MaxP), ``dense+chunks-first`` (MaxP + FirstP), ``hybrid`` and
``hybrid+chunks`` (MaxP) / ``hybrid+chunks-first`` through the same evaluation as the checkup (nDCG@10, paired randomization
test against the baseline, query latency, bytes per document), then the build time, index size
on disk and chunk count of a plain and a chunked index built without any cache, and the
long-text decision the checkup takes from these numbers.

    .venv/bin/python benchmarks/long_documents.py [--corpora python-docs-whole,scifact]
        [--no-builds --variant decisions]

Writes benchmarks/results/long_documents.json (or NAME.json). ``--no-builds`` skips the
from-scratch builds (the variants and the decisions only).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, versions, write_result  # noqa: E402

VARIANTS = ["dense", "dense+window", "dense+chunks", "dense+chunks-first", "hybrid", "hybrid+chunks",
            "hybrid+chunks-first"]


def dataset(name: str):  # type: ignore[no-untyped-def]
    from vecdoctor.data import load_dataset, sample_corpus
    from vecdoctor.evaluate.metrics import self_supervised

    if name == "python-docs-whole":
        ds = self_supervised(sample_corpus(passage_chars=10**9), n_queries=300, seed=0)
        ds.name = name
        return ds
    if name == "scifact":
        return load_dataset(DATA / "scifact")
    raise SystemExit(f"unknown corpus {name!r}")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def builds(ds) -> dict:  # type: ignore[no-untyped-def]
    """Build time and size of a plain and a chunked index, each encoded from scratch."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, chunks in (("plain", None), ("chunks", "max")):
            enc = Encoder("minilm")
            start = time.perf_counter()
            index = Index.build(ds.corpus, enc, chunks=chunks, baseline=False)
            seconds = time.perf_counter() - start
            folder = index.save(Path(tmp) / label)
            out[label] = {"build_seconds": round(seconds, 1),
                          "vectors": int(getattr(index.vectors, "n_chunks", len(index))),
                          "index_bytes": folder_bytes(folder)}
            print(label, out[label], flush=True)
    out["chunks"]["build_time_ratio"] = round(out["chunks"]["build_seconds"] / out["plain"]["build_seconds"], 2)
    out["chunks"]["size_ratio"] = round(out["chunks"]["index_bytes"] / out["plain"]["index_bytes"], 2)
    return out


def one(name: str, with_builds: bool = True) -> dict:
    from vecdoctor.checkup.rules import decide, measured
    from vecdoctor.diagnose.truncation import check_truncation
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.variants import evaluate_variants

    ds = dataset(name)
    enc = Encoder("minilm")
    lengths = enc.token_lengths([d.content for d in ds.corpus])
    truncation = check_truncation(lengths, enc.max_length)
    print(name, len(ds.corpus), "documents,", len(ds.qrels), "queries;", truncation.recommendation, flush=True)
    start = time.perf_counter()
    report = evaluate_variants(ds, "minilm", VARIANTS, progress=lambda m: print(m, flush=True))
    rows = {r.name: {"ndcg@10": round(r.ndcg, 4), "recall@100": round(r.evaluation.metrics.get("recall@100", float("nan")), 4),
                     "baseline": r.baseline, "delta": None if r.delta_ndcg is None else round(r.delta_ndcg, 4),
                     "p": None if r.p_value is None else round(r.p_value, 4),
                     "query_ms_p50": round(r.query_ms_p50, 2), "bytes_per_doc": r.bytes_per_doc}
            for r in report.results}
    for row, values in rows.items():
        print(row, values, flush=True)
    _, decisions = decide(measured(report), "minilm", truncated_share=truncation.share_truncated)
    return {
        "documents": len(ds.corpus), "queries": len(ds.qrels), "self_supervised": ds.self_supervised,
        "tokens": {"mean": round(float(lengths.mean()), 1), "p50": float(truncation.percentiles[0]),
                   "p90": float(truncation.percentiles[1]), "longest": int(lengths.max()),
                   "max_length": enc.max_length, "share_truncated": round(truncation.share_truncated, 4),
                   "share_tokens_dropped": round(truncation.share_tokens_dropped, 4)},
        "variants": rows,
        "evaluation_seconds": round(time.perf_counter() - start, 1),
        "long_text_decisions": [d.to_dict() for d in decisions if d.topic == "long texts"],
        **({"builds": builds(ds)} if with_builds else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default="python-docs-whole,scifact")
    parser.add_argument("--no-builds", action="store_true", help="skip the from-scratch index builds")
    parser.add_argument("--variant", default="default", help="results/long_documents/<cpu>-<variant>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {name: one(name, not args.no_builds) for name in args.corpora.split(",")}
    path = write_result("long_documents", {"machine": machine(),
                                    "versions": versions("torch", "transformers"),
                                    "model": "minilm", "corpora": results}, args.variant)
    print("wrote", path)


if __name__ == "__main__":
    main()
