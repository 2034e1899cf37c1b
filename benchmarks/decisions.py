"""Are the checkup's decisions right on data it was not tuned on?

For every labelled set in ../shared/data (scifact, cranfield, cisi, medline, lisa) and the
built-in sample, the checkup runs four ways: ``--quick`` and full, with the labels and
label-free (the corpus alone, so it makes self-supervised queries). Each run is the real CLI in
its own process. The pipeline.json it writes is built into an index over the whole true corpus
(``Index.from_pipeline``, as ``vecdoctor index --pipeline`` does) and scored with the true test
qrels, next to plain bm25, dense and hybrid. Per set and way: the pick, its nDCG@10, the best
simple option, the **regret** (best simple option minus the pick), each quick variant's
whole-corpus estimate next to the value the full run of the same way measured, and the wall
time. ``--load`` runs the quick ways again with both cores kept busy and reports whether the
pipeline is the same. The built-in sample has no labels: its truth is its own self-supervised
queries, so only its two label-free ways run.

    .venv/bin/python benchmarks/decisions.py                  # every set, the four ways
    .venv/bin/python benchmarks/decisions.py --sets cisi --ways quick-labels --load
    .venv/bin/python benchmarks/decisions.py --work runs/ --reuse runs/   # resumable

Writes benchmarks/results/decisions/<cpu>-<variant>.json (``--variant``, default ``default``). Vectors are cached on disk
(benchmarks/results/.cache/) for the full runs and the scoring; the quick runs never use that
cache, so their wall time is what a user waits.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, RESULTS, machine, versions, write_result  # noqa: E402

SETS = ("scifact", "cranfield", "cisi", "medline", "lisa", "sample")
WAYS = ("quick-labels", "quick-free", "full-labels", "full-free")
MODES = ("bm25", "dense", "hybrid")
SAME_KEYS = ("model", "backend", "model_precision", "pooling", "window", "chunks", "transform",
             "storage", "mode", "fusion", "rrf_k", "fusion_weights", "rerank")
CACHE = RESULTS / ".cache" / "decisions"


def _busy(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


def _cli(args: list[str]) -> tuple[dict[str, Any], float]:
    exe = Path(sys.executable).parent / "vecdoctor"
    started = time.perf_counter()
    done = subprocess.run([str(exe), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"vecdoctor {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), seconds


def _source(name: str, free: bool, work: Path) -> list[str]:
    """The checkup's DATA argument: the BEIR folder, or a folder holding its corpus alone."""
    if name == "sample":
        return ["--sample", "python-docs"]
    folder = DATA / name
    if not free:
        return [str(folder)]
    bare = work / name
    bare.mkdir(parents=True, exist_ok=True)
    link = bare / "corpus.jsonl.gz"
    if not link.exists():
        link.symlink_to(folder / "corpus.jsonl.gz")
    return [str(bare)]


def _truth(name: str) -> Any:
    """The data the picks are scored on: the true test split, or the sample's own queries."""
    from vecdoctor.data import load_dataset, sample_corpus
    from vecdoctor.evaluate.metrics import self_supervised

    if name == "sample":
        made = self_supervised(sample_corpus("python-docs"), n_queries=300, seed=0)
        made.name = "python-docs"
        return made
    return load_dataset(DATA / name, "test")


def _score(pipeline_file: Path, truth: Any, cache: Any) -> float:
    """The pipeline built into an index over the whole true corpus, scored on the truth."""
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.index.store import Index
    from vecdoctor.pipeline import Pipeline

    pipeline = Pipeline.load(pipeline_file)
    index = Index.from_pipeline(truth.corpus, pipeline_file, encoder_options={"cache": cache},
                                baseline=False)
    report = evaluate_index(index, truth, [str(pipeline.mode)])
    return round(report.results[0].ndcg, 4)


def _simple(truth: Any, model: str, cache: Any) -> dict[str, float]:
    from vecdoctor.evaluate.variants import evaluate_variants

    report = evaluate_variants(truth, model, list(MODES), cache=cache)
    return {r.name: round(r.ndcg, 4) for r in report.results}


def _run_way(name: str, way: str, model: str, work: Path, load: bool = False,
             reuse: Path | None = None) -> dict[str, Any]:
    quick, free = way.startswith("quick"), way.endswith("free")
    out = work / f"{name}-{way}{'-load' if load else ''}"
    done = reuse / out.name if reuse is not None else None
    if done is not None and (done / "report.json").is_file():  # a folder this script wrote
        report = json.loads((done / "report.json").read_text())
        pipeline = json.loads((done / "pipeline.json").read_text())
        wall = done / "wall_seconds.txt"  # what the user waited, kept by the first run
        seconds = float(wall.read_text()) if wall.is_file() else report["meta"]["seconds"]
        return {"folder": done, "seconds": seconds, "report": report,
                "pipeline": {k: pipeline.get(k) for k in SAME_KEYS}, "reused": str(done)}
    args = ["checkup", *_source(name, free, work), "-o", str(out), "-m", model, "--force"]
    if quick:
        args.append("--quick")
    else:
        args += ["--cache", str(CACHE)]
    stop, workers = multiprocessing.Event(), []
    if load:
        workers = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(2)]
        for w in workers:
            w.start()
    try:
        printed, seconds = _cli(args)
    finally:
        stop.set()
        for w in workers:
            w.join()
    (out / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    report = json.loads((out / "report.json").read_text())
    pipeline = json.loads((out / "pipeline.json").read_text())
    if printed["recommended"].get("mode") != pipeline.get("mode"):
        raise RuntimeError(f"{out}: the printed pipeline and pipeline.json differ")
    return {"folder": out, "seconds": round(seconds, 1), "report": report,
            "pipeline": {k: pipeline.get(k) for k in SAME_KEYS}}


def _variants(report: dict[str, Any]) -> dict[str, float]:
    rows = {}
    for key in ("variants", "sample_variants"):
        part = report.get(key) or {}
        for r in part.get("variants", []):
            rows.setdefault(r["variant"], r["ndcg@10"])
    return rows


def _estimates(quick: dict[str, Any], full: dict[str, Any] | None) -> dict[str, Any]:
    """Each quick variant's whole-corpus estimate next to the full run's measured value."""
    est = quick["report"]["meta"].get("full_corpus_estimate") or {}
    measured = _variants(full["report"]) if full else {}
    rows = {}
    for variant, e in est.items():
        value = e.get("value") if isinstance(e, dict) else e
        truth = measured.get(variant)
        rows[variant] = {"estimate": value, "measured": truth,
                         "error": None if value is None or truth is None else round(value - truth, 4),
                         "how": e.get("how") if isinstance(e, dict) else None}
    return rows


def run_set(name: str, ways: list[str], model: str, load: bool, work: Path,
            reuse: Path | None = None, reused_only: bool = False) -> dict[str, Any]:
    from vecdoctor.encode.cache import VectorCache

    cache = VectorCache(CACHE)
    truth = _truth(name)
    simple = _simple(truth, model, cache)
    best = max(simple.values())
    print(f"{name}: simple {simple}", flush=True)
    if reused_only and reuse is not None:
        ways = [w for w in ways if (reuse / f"{name}-{w}" / "report.json").is_file()]
        load = load and all((reuse / f"{name}-{w}-load" / "report.json").is_file()
                            for w in ways if w.startswith("quick"))
    runs = {w: _run_way(name, w, model, work, reuse=reuse)
            for w in ways if not (name == "sample" and "labels" in w)}
    rows: dict[str, Any] = {}
    for way, r in runs.items():
        pick = _score(r["folder"] / "pipeline.json", truth, cache)
        row: dict[str, Any] = {
            "pick": r["pipeline"], "pick_ndcg@10": pick, "best_simple": best,
            "regret": round(best - pick, 4), "seconds": r["seconds"],
            "frame": r["report"]["meta"].get("frame"),
            "quick_plan": (r["report"]["meta"].get("quick_plan") or {}).get("reach"),
            "warnings": [d["evidence"] for d in r["report"]["decisions"] if d.get("warning")],
            **({"reused": r["reused"]} if "reused" in r else {}),
        }
        if way.startswith("quick"):
            row["estimates"] = _estimates(r, runs.get(way.replace("quick", "full")))
            errors = [abs(e["error"]) for e in row["estimates"].values() if e["error"] is not None]
            row["max_estimate_error"] = max(errors) if errors else None
        if load and way.startswith("quick"):
            again = _run_way(name, way, model, work, load=True, reuse=reuse)
            row["under_load"] = {"same_pipeline": again["pipeline"] == r["pipeline"],
                                 "seconds": again["seconds"],
                                 **({} if again["pipeline"] == r["pipeline"] else
                                    {"pipeline": again["pipeline"]})}
        rows[way] = row
        print(f"{name} {way}: pick {pick} (best simple {best}, regret {row['regret']}) in "
              f"{r['seconds']} s; {row.get('under_load', '')}", flush=True)
    return {"documents": len(truth.corpus), "queries": len(truth.qrels), "simple": simple,
            "ways": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--load", nargs="?", const="all", default=None, metavar="SETS",
                        help="run the quick ways again with both cores busy: on every set, or on "
                        "the sets named (comma-separated)")
    parser.add_argument("--table", type=Path, metavar="RESULT",
                        help="print a result as the README's Markdown table and stop")
    parser.add_argument("--variant", default="default",
                        help="result file: benchmarks/results/decisions/<cpu>-<variant>.json")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the report folders here (default: a temporary folder)")
    parser.add_argument("--reused-only", action="store_true",
                        help="with --reuse: score only the set-way folders found there; run none")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a folder holding SET-WAY report folders this script wrote before: "
                        "they are scored again instead of running the checkup")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                        help="write one result from results of this script run in parts "
                        "(a later file's way replaces an earlier one's); runs nothing")
    args = parser.parse_args()
    if args.table:
        print("\n".join(table(json.loads(args.table.read_text()))))
        return
    if args.merge:
        merged: dict[str, Any] = {}
        for path in args.merge:  # way by way: a set run in parts keeps every part
            for name, part in json.loads(path.read_text())["results"].items():
                ways = {**merged.get(name, {}).get("ways", {}), **part["ways"]}
                merged[name] = {**part, "ways": ways}
        payload = _payload(merged, args, time.time())
        payload["merged_from"] = [str(p) for p in args.merge]
        print(f"wrote {write_result('decisions', payload, args.variant)}")
        return
    sets = [s for s in args.sets.split(",") if s]
    ways = [w for w in args.ways.split(",") if w]
    bad = [w for w in ways if w not in WAYS] + [s for s in sets if s not in SETS]
    if bad:
        raise SystemExit(f"unknown: {bad}; sets {SETS}, ways {WAYS}")
    missing = [s for s in sets if s != "sample" and not (DATA / s).is_dir()]
    if missing:
        raise SystemExit(f"{DATA} lacks {missing}: these sets are read from ../shared/data")
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="vecdoctor-decisions-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in sets:
            load = args.load is not None and (args.load == "all" or name in args.load.split(","))
            results[name] = run_set(name, ways, args.model, load, work, args.reuse,
                                    args.reused_only)
            write_result("decisions", _payload(results, args, started), args.variant)
    path = write_result("decisions", _payload(results, args, started), args.variant)
    print(f"wrote {path}")


def pick_words(pick: dict[str, Any]) -> str:
    """A pipeline in a few words: ``hybrid + chunks max+first + binary``."""
    return " + ".join(str(v) for v in (
        pick["mode"], pick.get("chunks") and f"chunks {pick['chunks']}",
        pick.get("window") and f"windows {pick['window']}", pick.get("transform"),
        pick.get("storage") if pick.get("storage") != "float32" else None,
        pick.get("fusion") == "weighted" and "weighted fusion") if v)


def table(result: dict[str, Any]) -> list[str]:
    """The result as the Markdown table the README and the docs show."""
    lines = ["| set | way | pick | pick nDCG@10 | best of bm25/dense/hybrid | regret | "
             "max estimate error | same under load | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for name, part in result["results"].items():
        for way, row in part["ways"].items():
            load = row.get("under_load", {}).get("same_pipeline")
            err = row.get("max_estimate_error")
            lines.append(f"| {name} | {way} | {pick_words(row['pick'])} | {row['pick_ndcg@10']:.4f} | "
                         f"{row['best_simple']:.4f} | {row['regret']:+.4f} | "
                         f"{'-' if err is None else f'{err:.4f}'} | "
                         f"{'-' if load is None else ('yes' if load else 'NO')} | "
                         f"{row['seconds'] / 60:.1f} |")
    return lines


def _payload(results: dict[str, Any], args: Any, started: float) -> dict[str, Any]:
    regrets = [w["regret"] for s in results.values() for w in s["ways"].values()]
    errors = [w["max_estimate_error"] for s in results.values() for w in s["ways"].values()
              if w.get("max_estimate_error") is not None]
    loads = [w["under_load"]["same_pipeline"] for s in results.values()
             for w in s["ways"].values() if "under_load" in w]
    return {
        "question": "the checkup's pick scored on the whole corpus with the true test qrels, "
                    "against the best of bm25, dense and hybrid, on every set and four ways",
        "machine": machine(), "versions": versions("torch", "sentence-transformers", "bm25s"),
        "model": args.model,
        "summary": {"max_regret": max(regrets) if regrets else None,
                    "max_estimate_error": max(errors) if errors else None,
                    "same_pipeline_under_load": all(loads) if loads else None},
        "results": results, "seconds": round(time.time() - started, 1),
    }


if __name__ == "__main__":
    main()
