"""Fusion tuned by the checkup: on the train split's queries vs on one half of the test queries.

For each corpus and each dense side of a hybrid pipeline (plain, and chunks scored MaxP + first,
the long-text strategy the full SciFact checkup keeps), the checkup's own fusion step runs twice:

  * ``train``: the grid (RRF k, weighted fusion's dense weight) chosen on the train split's
    queries over the same corpus, confirmed on every test query;
  * ``half``: chosen on one half of the test queries (seeded), confirmed on the other half;

and the chosen setting's nDCG@10 on **all** test queries is reported next to RRF k=60's (the
default), so the two ways can be compared on the same queries. Test labels choose nothing in the
``train`` way; in the ``half`` way half of them do (that number is optimistic, and said so).

Corpora: SciFact (BEIR, train 809 / test 300 queries) and the built-in sample kept whole (long
documents, 300 self-supervised queries, no train split: only ``half``).

    .venv/bin/python benchmarks/fusion_tuning.py [--model minilm] [--corpora scifact,python-docs-whole]

Writes benchmarks/results/fusion_tuning.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, versions, write_result  # noqa: E402


def datasets(name: str):  # type: ignore[no-untyped-def]
    """(test dataset, train dataset or None) for a corpus name."""
    from vecdoctor.checkup.stages import tuning_split
    from vecdoctor.data import load_dataset

    if name == "scifact":
        test = load_dataset(DATA / "scifact", "test")
        return test, tuning_split(DATA / "scifact", "test", "train", test)
    from long_documents import dataset

    return dataset(name), None


def all_queries(chosen_param: tuple[str, float], bm25, dense, qrels) -> float:  # type: ignore[no-untyped-def]
    """nDCG@10 of a fusion setting on every test query."""
    import numpy as np

    from vecdoctor.checkup.fusion import _values

    values = _values(chosen_param[0], chosen_param[1], sorted(qrels), bm25, dense, qrels, 100)
    return float(np.mean(list(values.values())))


def measure(test, train, model: str, chunks: str | None, cache) -> dict:  # type: ignore[no-untyped-def]
    from vecdoctor.checkup.fusion import tune_fusion
    from vecdoctor.checkup.stages import Encoding, fusion_runs
    from vecdoctor.pipeline import Pipeline

    pipeline = Pipeline(model=model, mode="hybrid", chunks=chunks)
    t = time.perf_counter()
    bm25, dense, other = fusion_runs(test, pipeline, Encoding(model, cache, None), train)
    out: dict = {"dense_side": f"chunks {chunks}" if chunks else "plain",
                 "runs_seconds": round(time.perf_counter() - t, 1)}
    default = all_queries(("rrf", 60.0), bm25, dense, test.qrels)
    out["rrf60_all_test"] = round(default, 4)
    ways = {"half": None} if other is None else {"train": other, "half": None}
    for way, tuning in ways.items():
        tuned = tune_fusion(bm25, dense, test.qrels, tuning=tuning, tuning_split="train")
        chosen = (tuned.chosen or {"fusion": "rrf", "param": 60.0})
        setting = (str(chosen["fusion"]), float(chosen["param"]))
        score = all_queries(setting, bm25, dense, test.qrels)
        out[way] = {"chosen": chosen, "kept_by_gate": tuned.kept, "p_value": tuned.p_value,
                    "confirm_queries": tuned.confirm_queries,
                    "chosen_confirm": tuned.chosen_confirm, "default_confirm": tuned.default_confirm,
                    "chosen_all_test": round(score, 4),
                    "gain_all_test": round(score - default, 4),
                    "pipeline_all_test": round(score if tuned.kept else default, 4),
                    "reason": tuned.reason, "curve": tuned.curve}
        print(f"  {out['dense_side']:>16} {way:>5}: {chosen} kept={tuned.kept} "
              f"all-test {score:.4f} vs rrf60 {default:.4f} (p={tuned.p_value})", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--corpora", default="scifact,python-docs-whole")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from vecdoctor.encode.cache import VectorCache

    started = time.perf_counter()
    results: dict = {}
    for name in args.corpora.split(","):
        test, train = datasets(name)
        print(f"{name}: {len(test.corpus)} documents, {len(test.qrels)} test queries, "
              f"{len(train.qrels) if train else 0} train queries", flush=True)
        cache = VectorCache(max_size=4 * len(test.corpus) + 64)
        results[name] = {"documents": len(test.corpus), "test_queries": len(test.qrels),
                         "train_queries": len(train.qrels) if train else 0,
                         "sides": [measure(test, train, args.model, chunks, cache)
                                   for chunks in (None, "max+first")]}
    write_result("fusion_tuning", {"machine": machine(), "versions": versions(), "model": args.model,
                                   "seconds": round(time.perf_counter() - started, 1),
                                   "corpora": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
