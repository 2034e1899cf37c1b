"""Does the checkup's evidence hold on SciFact, and does --quick agree with the full run?

One run on SciFact test (300 queries, 5,183 documents):
  1. a full checkup: the model comparison over the given (default: every installed) models,
     the diagnosis and every default pipeline variant of the chosen model;
  2. the quality gates on `minilm`'s variants: bm25 >= 0.68, dense >= 0.64, hybrid >= 0.71 and
     above both, int8/binary with rescoring, and whether the whitening verdict matches its effect;
  3. a --quick checkup, its wall time, and whether its recommendations match the full run's
     (without --models: every installed model under the quick time budget, so slow models are
     skipped, and it is also compared with the full run's pick among the models it measured);
     then the quick checkup of minilm alone (when each step began) against the decisions that
     the full run's minilm variants give.

    .venv/bin/python benchmarks/checkup_scifact.py [--models minilm,minilm-l3-onnx] [--part all|full|quick]

Writes benchmarks/results/checkup_scifact.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, RESULTS, machine, versions, write_result  # noqa: E402

KEYS = ("model", "mode", "pooling", "window", "chunks", "transform", "storage", "rerank", "fusion")


def _keys(table: list[dict]) -> tuple[str, ...]:
    """The KEYS a saved variant table can decide (one without chunk variants has no say on
    chunks, and decide() alone never tunes fusion)."""
    chunked = any("chunks" in r["variant"] for r in table)
    return tuple(k for k in KEYS if k != "fusion" and (chunked or k != "chunks"))


def choices(pipeline) -> dict:  # type: ignore[no-untyped-def]
    """The KEYS of a Pipeline, or of a pipeline saved by an earlier run (``precision`` was the
    storage's name before the Pipeline's format 2)."""
    d = pipeline.to_dict() if hasattr(pipeline, "to_dict") else dict(pipeline)
    if "storage" not in d:
        d["storage"] = d.get("precision")
    d["fusion"] = (f"rrf k={d.get('rrf_k', 60)}" if d.get("fusion", "rrf") == "rrf"
                   else f"{d.get('fusion')} {d.get('fusion_weights')}")
    return {k: d.get(k) for k in KEYS}


def full_part(ds, models: list[str], tuning=None) -> dict:  # type: ignore[no-untyped-def]
    from vecdoctor.checkup.run import checkup
    from vecdoctor.evaluate.variants import DEFAULT_VARIANTS, evaluate_variants

    out: dict = {}
    t = time.perf_counter()
    full = checkup(ds, models, tuning=tuning)  # fusion tuned on train, as the command line does
    out["full_checkup"] = {"seconds": round(time.perf_counter() - t, 1), "pipeline": full.pipeline.to_dict(),
                           "decisions": [d.to_dict() for d in full.decisions],
                           "diagnosis": full.diagnosis.summary() if full.diagnosis else None}
    out["models"] = full.comparison.to_dict()
    print("full", out["full_checkup"], flush=True)
    print(out["models"], flush=True)
    variants = full.variants
    if variants.model != "minilm":  # the gates are stated for minilm
        variants = evaluate_variants(ds, "minilm", list(DEFAULT_VARIANTS))
    out["variants_model"] = variants.model
    out["variants"] = variants.table()
    nd = {r.name: r.ndcg for r in variants.results}
    out["gates"] = {
        "bm25 >= 0.68": nd["bm25"] >= 0.68,
        "dense >= 0.64": nd["dense"] >= 0.64,
        "hybrid >= 0.71": nd["hybrid"] >= 0.71,
        "hybrid above bm25 and dense": nd["hybrid"] > max(nd["bm25"], nd["dense"]),
        "int8 >= 99% of dense": nd["int8"] >= 0.99 * nd["dense"],
        "binary >= 97% of dense": nd["binary"] >= 0.97 * nd["dense"],
        "every given model in the comparison": {r.model for r in full.comparison.rows} >= set(models),
    }
    whiten = variants.get("dense+whiten")
    verdict = next((d for d in full.decisions if d.topic == "transform" and d.choice == "whitening"), None)
    if whiten is not None and verdict is not None:
        out["gates"]["whitening verdict matches its measured effect"] = verdict.recommended == (
            whiten.delta_ndcg >= 0.005 and whiten.p_value < 0.05 and full.pipeline.mode != "bm25")
    print({k: round(v, 4) for k, v in nd.items()}, out["gates"], flush=True)
    return out


def quick_part(ds, models: list[str] | None, full: dict, minilm_table: list[dict]) -> dict:  # type: ignore[no-untyped-def]
    """``models`` None: every installed model, under the quick time budget."""
    from vecdoctor.checkup.run import checkup, decide
    from vecdoctor.evaluate.compare import ModelRow, recommend

    out: dict = {}
    if models == ["minilm"]:  # the default model alone: the part below
        return quick_minilm(ds, minilm_table)
    t = time.perf_counter()
    steps: list[tuple[str, float]] = []
    quick = checkup(ds, models, quick=True,
                    progress=lambda m: steps.append((m, round(time.perf_counter() - t, 1))))
    rows = quick.comparison.rows
    out["quick_checkup"] = {
        "seconds": round(time.perf_counter() - t, 1), "steps_started_at_s": steps,
        "models_measured": [r.model for r in rows if r.measured],
        "models_skipped": {r.model: r.skipped for r in rows if r.skipped},
        "pipeline": quick.pipeline.to_dict(), "decisions": [d.to_dict() for d in quick.decisions],
    }
    # each model's nDCG@10 as the quick run compared it (estimate for the whole corpus), on its
    # sample, and as the full run measured it on the whole corpus
    whole = {r["model"]: r.get("ndcg@10") for r in full["models"]["models"]}
    out["quick_checkup"]["model_sample"] = quick.meta.get("model_sample") or quick.meta.get("sample_design")
    out["quick_checkup"]["model_ndcg_estimate_sample_full"] = {
        r.model: [r.ndcg_at_10, r.ndcg_on_sample, whole.get(r.model)] for r in rows if r.measured}
    mine, theirs = choices(quick.pipeline), choices(full["full_checkup"]["pipeline"])
    out["quick_matches_full"] = {k: mine[k] == theirs[k] for k in KEYS}
    # what the full run recommends among the models the quick run measured
    fields = {f for f in ModelRow.__dataclass_fields__}
    full_rows = [ModelRow(**{k: v for k, v in {**r, "ndcg_at_10": r.get("ndcg@10"),
                                                "recall_at_10": r.get("recall@10")}.items() if k in fields})
                 for r in full["models"]["models"]]
    measured = set(out["quick_checkup"]["models_measured"])
    if measured == {r.model for r in full_rows}:  # the full run's own pick (its gate had per-query values)
        among = {"model": full["models"]["recommended"]}
    else:  # saved rows carry no per-query values: the size rule of the gate alone
        pick, _ = recommend([r for r in full_rows if r.model in measured], full["models"]["prefer"])
        among = {"model": pick.model if pick else None}
    if among["model"] == full.get("variants_model", "minilm"):
        among = choices(decide(_report_from_table(minilm_table), among["model"])[0])
    out["quick_matches_full_among_measured_models"] = {
        "reference": among,
        "matches": {k: choices(quick.pipeline)[k] == among[k] for k in _keys(minilm_table) if k in among},
    }
    print("quick", out["quick_checkup"], out["quick_matches_full"],
          out["quick_matches_full_among_measured_models"], flush=True)
    return {**out, **quick_minilm(ds, minilm_table)}


def quick_minilm(ds, minilm_table: list[dict]) -> dict:  # type: ignore[no-untyped-def]
    from vecdoctor.checkup.run import checkup, decide

    out: dict = {}
    # the quick checkup of minilm alone (the default model), with the time each step began,
    # against the decisions the full run's minilm variants give
    t = time.perf_counter()
    steps: list[tuple[str, float]] = []
    one = checkup(ds, ["minilm"], quick=True,
                  progress=lambda m: steps.append((m, round(time.perf_counter() - t, 1))))
    reference = choices(decide(_report_from_table(minilm_table), "minilm")[0])
    out["quick_checkup_minilm"] = {
        "seconds": round(time.perf_counter() - t, 1),
        "steps_started_at_s": steps, "pipeline": one.pipeline.to_dict(), "full_minilm_pipeline": reference,
        "matches_full": {k: choices(one.pipeline)[k] == reference[k] for k in _keys(minilm_table)},
        "sample_design": one.meta.get("sample_design"),
        "long_text_decisions": [d.to_dict() for d in one.decisions if d.topic == "long texts"],
        # each variant's nDCG@10: on the sample, carried over to the whole corpus, and measured
        # on the whole corpus by the full run
        "ndcg_sample_estimate_full": {
            r.name: [round(r.ndcg, 4), one.meta.get("full_corpus_estimate", {}).get(r.name),
                     next((row["ndcg@10"] for row in minilm_table if row["variant"] == r.name), None)]
            for r in one.variants.results},
    }
    print("quick, minilm", out["quick_checkup_minilm"], flush=True)
    return out


def _report_from_table(rows: list[dict]):  # type: ignore[no-untyped-def]
    """The full run's minilm variant table (as saved) as a report decide() reads."""
    from vecdoctor.evaluate.metrics import Evaluation
    from vecdoctor.evaluate.variants import VariantResult, VariantsReport

    results = [
        VariantResult(
            name=r["variant"], description=r["description"],
            evaluation=Evaluation({"ndcg@10": r["ndcg@10"]}, {}), docs_per_second=r["docs_per_second"],
            query_ms_p50=r["query_ms_p50"], query_ms_p95=r["query_ms_p95"], bytes_per_doc=r["bytes_per_doc"],
            run={}, baseline=r["baseline"], delta_ndcg=r["delta_ndcg@10"], p_value=r["p_value"],
        )
        for r in rows
    ]
    return VariantsReport("scifact", "minilm", 0, 0, False, results)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--part", choices=("all", "full", "quick"), default="all",
                        help="quick reuses the full run's result file (run full first)")
    parser.add_argument("--models", default=None, help="comma-separated; default every installed "
                        "model; with --part quick, minilm alone runs only the minilm quick checkup")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from vecdoctor.checkup.run import installed_models, tuning_split
    from vecdoctor.data import load_dataset

    ds = load_dataset(args.data, "test")
    named = args.models.split(",") if args.models else None
    models = named or installed_models()
    head = {"machine": machine(), "versions": versions("torch", "sentence-transformers", "bm25s")}
    path = RESULTS / "checkup_scifact.json"
    if args.part == "quick":
        saved = json.loads(path.read_text())
        alone = named == ["minilm"]  # only quick_checkup_minilm is run again
        out = {**saved, f"command_quick{'_minilm' if alone else ''}":
               " ".join([Path(sys.executable).name, *sys.argv]),
               f"machine_quick{'_minilm' if alone else ''}": head["machine"]}
        out.update(quick_part(ds, named, saved, saved["variants"]))
        out.pop("command", None)
        out = {"command_full": saved.get("command_full", saved.get("command")), **out}
    else:
        out = {**head}
        out.update(full_part(ds, models, tuning_split(args.data, "test", "train", ds)))
        if args.part == "all":
            out.update(quick_part(ds, named, out, out["variants"]))
    written = write_result("checkup_scifact", out)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
