"""Can a reranker be trained on a 2-core CPU in <= 30 minutes and still help on SciFact?

Trains vecdoctor's cross-encoder with a CPU recipe on SciFact train qrels (809 queries;
negatives from the base MiniLM + BM25 hybrid first stage), from the base MiniLM, then on the
300 test queries reports nDCG@10 of the hybrid first stage, of its top 30 reranked, and of the
reranked top 30 fused with the first stage (RRF) - the same evaluation `train-reranker` writes
into the model card. Wall time covers everything a user waits for: mining the negatives
(encoding the corpus), training and saving; the test evaluation is timed apart.

The reference is the full recipe trained on a GPU (`gpu_grid_rerank` / `listnet-base-2ep` in
results/finetune_scifact.json: the same first stage, fused nDCG@10 0.7591 against 0.7161).

    .venv/bin/python benchmarks/rerank_cpu.py [--recipes cpu,cpu-l3-256] [--max-steps N]

``--max-steps N`` stops each recipe after N steps (a probe of seconds per step; no quality).
Writes benchmarks/results/rerank_cpu.json (or rerank_cpu_probe.json with --max-steps); recipes
measured by earlier runs stay in it, their commands under ``earlier_commands``.
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

from harness import DATA, RESULTS, machine, result_path, versions, write_result  # noqa: E402

# each recipe: the `--recipe` it starts from and the options set on top of it
RECIPES: dict[str, dict] = {
    "cpu": {"recipe": "cpu"},
    "cpu-l3-256": {"recipe": "cpu", "layers": 3, "max_length": 256},
    "cpu-l3": {"recipe": "cpu", "layers": 3},
    "cpu-3ep": {"recipe": "cpu", "epochs": 3.0},
    "cpu-192": {"recipe": "cpu", "max_length": 192},
    "full": {"recipe": "full"},
}


GPU_GRID = RESULTS / "finetune_scifact" / "gpu-and-cpu-default.json"


def gpu_reference() -> dict:
    grid = json.loads(GPU_GRID.read_text())["gpu_grid_rerank"]
    first = grid["base"]["test"]["hybrid"]["ndcg@10"]
    fused = grid["reranker"]["listnet-base-2ep"]["scores"]["test"]["rerank@30+rrf"]
    return {"source": f"{GPU_GRID.relative_to(RESULTS.parent)} gpu_grid_rerank, listnet-base-2ep (from the base MiniLM)",
            "first_stage": first, "fused": fused, "gain": round(fused - first, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="cpu")
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()

    from vecdoctor.data import load_dataset
    from vecdoctor.finetune.recipes import reranker_recipe
    from vecdoctor.finetune.reranker import train_reranker

    train = load_dataset(DATA / "scifact", split="train")
    test = None if args.max_steps else load_dataset(DATA / "scifact", split="test")
    reference = gpu_reference()
    out: dict = {"train_queries": len(train.qrels), "gpu_reference": reference, "recipes": {}}
    for name in args.recipes.split(","):
        spec = dict(RECIPES[name])
        config = reranker_recipe(spec.pop("recipe"), "cpu", **spec, max_steps=args.max_steps,
                                 save_steps=10_000)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train_reranker(train, Path(tmp) / "reranker", config=config, evaluation=test)
            wall = time.perf_counter() - start
        row = {"config": config.to_dict(), "steps": result.steps,
               "train_seconds": round(result.train_seconds, 1),
               "seconds_per_step": round(result.train_seconds / max(result.steps, 1), 2),
               "wall_seconds_with_mining_and_test": round(wall, 1), "machine": machine()}
        if result.evaluation:
            scores = {k: v["ndcg@10"] for k, v in result.evaluation["results"].items()}
            first = scores["hybrid"]
            fused = scores["hybrid + rerank@30 + rrf"]
            row.update({"ndcg@10": scores, "fused_gain": round(fused - first, 4),
                        "share_of_gpu_fused_gain": round((fused - first) / reference["gain"], 3)})
        out["recipes"][name] = row
        print(name, row, flush=True)
    variant = "probe" if args.max_steps else "default"
    earlier = result_path("rerank_cpu", variant)
    if earlier.is_file():  # recipes measured by earlier runs stay, with the command that ran them
        before = json.loads(earlier.read_text())
        kept = {k: {"machine": before.get("machine"), **v} for k, v in before.get("recipes", {}).items()}
        out["recipes"] = {**kept, **out["recipes"]}
        out["earlier_commands"] = [*before.get("earlier_commands", []), before.get("command")]
    path = write_result("rerank_cpu", {"machine": machine(),
                               "versions": versions("torch", "sentence-transformers"), **out}, variant)
    print("wrote", path)


if __name__ == "__main__":
    main()
