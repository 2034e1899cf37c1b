"""Does fine-tuning on SciFact train (809 queries) beat the base model on SciFact test?

Trains the bi-encoder (MNRL + mined hard negatives) and vecdoctor's own cross-encoder
reranker, then reports nDCG@10 on the 300 test queries for: BM25, base dense, base hybrid,
fine-tuned dense, fine-tuned hybrid (RRF) and hybrid + reranker on the top 30; plus training
wall times and reranking latency for 30 and 100 candidates.

    python benchmarks/finetune_scifact.py                  # the default recipes, full train
    python benchmarks/finetune_scifact.py --mode grid      # compare recipes on a held-out
                                                           # part of train (and on test)
    python benchmarks/finetune_scifact.py --mode first-stage   # the base first stage

Grid mode trains on train minus 150 held-out train queries and chooses by those (``val``),
so the test queries never pick a recipe. Results go to
benchmarks/results/finetune_scifact/<cpu>-<variant>.json (the variant: the mode, and the device
when it is not the CPU; or --variant).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, versions, write_result  # noqa: E402

from vecdoctor.data import Dataset, load_dataset  # noqa: E402

BI_RECIPES = {
    "inbatch-1ep": dict(negatives=0),
    "bm25neg1-1ep": dict(negatives=1),
    "bm25neg1-2ep": dict(negatives=1, epochs=2.0),
    "bm25neg3-1ep": dict(negatives=3),
    "modelneg1-1ep": dict(negatives=1, negative_source="model"),
    "bothneg2-skip2-1ep": dict(negatives=2, negative_source="both", skip_top=2),
    "bm25neg1-2ep-lr5e-5": dict(negatives=1, epochs=2.0, learning_rate=5e-5),
}
# every recipe spells out epochs and list size, so a change of RerankerConfig's defaults keeps
# the names true
_RR2 = dict(epochs=2.0, group_size=8)
RERANK_RECIPES = {
    "listnet-2ep": dict(loss="listnet", **_RR2),
    "mnrl-2ep": dict(loss="mnrl", **_RR2),
    "lambda-2ep": dict(loss="lambda", **_RR2),
    "listnet-base-2ep": dict(loss="listnet", init="base", **_RR2),
    "bce-base-1ep": dict(
        loss="bce",
        epochs=1.0,
        group_size=8,
        learning_rate=2e-5,
        head_learning_rate=2e-5,
        batch_size=32,
        init="base",
    ),
    "listnet-4ep-g16": dict(loss="listnet", epochs=4.0, group_size=16),
    "listnet-distill0.3-2ep": dict(loss="listnet", distill=0.3, **_RR2),
}
DEFAULT_BI = "bm25neg1-2ep-lr5e-5"
DEFAULT_RERANK = "listnet-4ep-g16"


def split_train(train: Dataset, held_out: int, seed: int = 7) -> tuple[Dataset, Dataset]:
    qids = sorted(train.qrels)
    random.Random(seed).shuffle(qids)
    val_ids, fit_ids = set(qids[:held_out]), qids[held_out:]

    def subset(ids: set[str] | list[str], name: str) -> Dataset:
        return Dataset(
            corpus=train.corpus,
            queries={q: train.queries[q] for q in ids},
            qrels={q: train.qrels[q] for q in ids},
            name=train.name,
            split=name,
        )

    return subset(fit_ids, "train-fit"), subset(val_ids, "train-val")


def shrink(sets: dict[str, Dataset], queries: int, extra: int = 100) -> dict[str, Dataset]:
    """The first ``queries`` judged queries of each set, over one small shared corpus."""
    picked = {k: sorted(v.qrels)[:queries] for k, v in sets.items()}
    keep = {d for k, qids in picked.items() for q in qids for d in sets[k].qrels[q]}
    full = next(iter(sets.values())).corpus
    corpus = [d for d in full if d.id in keep] + [d for d in full if d.id not in keep][:extra]
    return {
        k: Dataset(
            corpus=corpus,
            queries={q: v.queries[q] for q in picked[k]},
            qrels={q: v.qrels[q] for q in picked[k]},
            name=v.name,
            split=v.split,
        )
        for k, v in sets.items()
    }


def first_stage_scores(model: str, evals: dict[str, Dataset], device: str) -> tuple[dict, dict]:
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.finetune._retrieval import FirstStage, metrics

    any_data = next(iter(evals.values()))
    stage = FirstStage(any_data.corpus, Encoder(model, device=device))
    out = {}
    for name, data in evals.items():
        out[name] = {
            "bm25": metrics(stage.bm25(data.queries, 100), data.qrels),
            "dense": metrics(stage.dense(data.queries, 100), data.qrels),
            "hybrid": metrics(stage.hybrid(data.queries, 100), data.qrels),
        }
    return out, {"stage": stage}


def rerank_scores(
    folder: Path, stage, evals: dict[str, Dataset], device: str, depths: tuple[int, ...] = (30, 100)
) -> dict:
    from vecdoctor.finetune._retrieval import metrics, rerank_run
    from vecdoctor.rerank.rerankers import CrossEncoderReranker
    from vecdoctor.search.fusion import fuse_with_first_stage

    reranker = CrossEncoderReranker(folder, device=device, batch_size=64)
    out = {}
    for name, data in evals.items():
        first = stage.hybrid(data.queries, 100)
        docs = {d.id: d for d in data.corpus}
        out[name] = {}
        for k in depths:
            reranked = rerank_run(reranker, first, data.queries, docs, k)
            out[name][f"rerank@{k}"] = metrics(reranked, data.qrels)["ndcg@10"]
            # the reranker's order fused with the first stage's over the same top k, as
            # ``--rerank-fusion rrf|weighted`` does; ranks only, the tail keeps its order
            for fusion in ("rrf", "weighted"):
                fused = {
                    q: fuse_with_first_stage(first[q][:k], reranked[q][:k], fusion) + first[q][k:]
                    for q in first
                }
                fused = {q: [(d, -i) for i, (d, _) in enumerate(h)] for q, h in fused.items()}
                out[name][f"rerank@{k}+{fusion}"] = metrics(fused, data.qrels)["ndcg@10"]
    return out


def latency(folder: Path, data: Dataset, device: str, queries: int = 10) -> dict:
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    reranker = CrossEncoderReranker(folder, device=device, batch_size=32)
    docs = data.corpus
    qtexts = list(data.queries.values())[:queries]
    out = {}
    reranker.score(qtexts[0], docs[:8])  # warm-up
    for n in (30, 100):
        times = []
        for i, q in enumerate(qtexts):
            start = time.perf_counter()
            reranker.score(q, [docs[(i * n + j) % len(docs)] for j in range(n)])
            times.append(time.perf_counter() - start)
        times.sort()
        out[f"{n}_candidates_median_s"] = round(times[len(times) // 2], 3)
    return out


def measure_cost(args: argparse.Namespace, train: Dataset, test: Dataset, steps: int = 3) -> None:
    """Seconds per training step of the default recipes and reranking latency, on this machine.

    Full training on a CPU shared with other jobs can take longer than one sitting; the cost of
    a few steps (trainer set-up included, so an upper bound) extrapolates to a whole run.
    """
    import torch

    from vecdoctor.finetune.biencoder import FinetuneConfig, finetune
    from vecdoctor.finetune.pairs import pairs_from_qrels
    from vecdoctor.finetune.reranker import RerankerConfig, train_reranker

    work = Path(args.work)
    bi = replace(FinetuneConfig(device=args.device, save_steps=10_000), **BI_RECIPES[DEFAULT_BI])
    pairs = pairs_from_qrels(train)
    start = time.perf_counter()
    res = finetune(
        pairs,
        work / "cost-bi",
        model=args.model,
        config=replace(bi, max_steps=steps),
        corpus=train.corpus,
        overwrite=True,
        resume=False,
    )
    mining = time.perf_counter() - start - res.train_seconds
    full_steps = int(-(-len(pairs) // bi.batch_size) * bi.epochs)
    small = shrink({"train": train}, 60)["train"]
    rr = replace(
        RerankerConfig(device=args.device, save_steps=10_000), **RERANK_RECIPES[DEFAULT_RERANK]
    )
    rres = train_reranker(
        small,
        work / "cost-rr",
        model=args.model,
        config=replace(rr, max_steps=steps),
        overwrite=True,
        resume=False,
    )
    rr_steps = int(-(-len(train.qrels) // rr.batch_size) * rr.epochs)
    result = {
        "machine": {**machine(), "device": args.device, "torch_threads": torch.get_num_threads()},
        "bi_encoder": {
            "recipe": DEFAULT_BI,
            "measured_steps": steps,
            "seconds_per_step": round(res.train_seconds / steps, 2),
            "full_run_steps": full_steps,
            "mining_seconds": round(mining, 1),
            "estimated_full_train_seconds": round(res.train_seconds / steps * full_steps + mining),
        },
        "reranker": {
            "recipe": DEFAULT_RERANK,
            "measured_steps": steps,
            "seconds_per_step": round(rres.train_seconds / steps, 2),
            "full_run_steps": rr_steps,
            "estimated_full_train_seconds": round(rres.train_seconds / steps * rr_steps),
        },
        "rerank_latency": {"device": args.device, **latency(work / "cost-rr", test, args.device)},
    }
    write_result("finetune_scifact", result, variant_of(args))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--mode", choices=["final", "grid", "cost", "first-stage"], default="final",
                        help="first-stage: only BM25, dense and hybrid of the base model on test")
    parser.add_argument("--bi", default=None, help="bi-encoder recipes, comma-separated "
                        f"(default: {DEFAULT_BI}; every recipe in grid mode)")
    parser.add_argument("--rerank", default=None, help="reranker recipes ('' for none; default: "
                        f"{DEFAULT_RERANK}; every recipe in grid mode)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rerank-depths", default="30,100", help="candidates reranked, e.g. 30,100")
    parser.add_argument("--smoke", action="store_true", help="tiny data and 1 step: checks the script")
    parser.add_argument("--work", default=str(ROOT / "out" / "finetune_scifact"))
    parser.add_argument("--variant", default=None, help="result file: benchmarks/results/"
                        "finetune_scifact/<cpu>-<variant>.json (default: the mode, and the device)")
    args = parser.parse_args()
    bi_names = [n for n in (args.bi or DEFAULT_BI).split(",") if n]
    rr_names = [n for n in (DEFAULT_RERANK if args.rerank is None else args.rerank).split(",") if n]
    if args.mode == "grid":  # every recipe unless the command names some
        bi_names = bi_names if args.bi else list(BI_RECIPES)
        rr_names = rr_names if args.rerank is not None else list(RERANK_RECIPES)
    unknown = sorted({*bi_names} - BI_RECIPES.keys() | {*rr_names} - RERANK_RECIPES.keys())
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; bi-encoder: {list(BI_RECIPES)}, "
                     f"reranker: {list(RERANK_RECIPES)}")
    args.bi_names, args.rr_names = bi_names, rr_names
    return args


def variant_of(args: argparse.Namespace) -> str:
    if args.variant:
        return str(args.variant)
    device = "" if args.device == "cpu" else "-" + args.device.split(":")[0]
    return f"{args.mode}{device}{'-smoke' if args.smoke else ''}"


def train_bi_encoders(args: argparse.Namespace, train: Dataset, evals: dict, steps: dict,
                      result: dict, save: object) -> str | None:
    """Fine-tune each bi-encoder recipe, score it, and return the best by dense nDCG@10."""
    from vecdoctor.finetune.biencoder import FinetuneConfig, finetune
    from vecdoctor.finetune.pairs import pairs_from_qrels

    pairs = pairs_from_qrels(train)
    choose = "val" if args.mode == "grid" else "test"
    best_bi, best_score = None, -1.0
    for name in args.bi_names:
        config = replace(FinetuneConfig(device=args.device, save_steps=10_000), **BI_RECIPES[name], **steps)
        folder = Path(args.work) / f"bi-{name}"
        start = time.perf_counter()
        res = finetune(pairs, folder, model=args.model, config=config, corpus=train.corpus,
                       overwrite=True, resume=False)
        wall = time.perf_counter() - start
        scores, _ = first_stage_scores(str(folder), evals, args.device)
        result["bi_encoder"][name] = {"config": config.to_dict(), "train_seconds": res.train_seconds,
                                      "wall_seconds_with_mining": round(wall, 1), "steps": res.steps,
                                      "scores": scores}
        save()  # type: ignore[operator]
        if scores[choose]["dense"]["ndcg@10"] > best_score:
            best_bi, best_score = name, scores[choose]["dense"]["ndcg@10"]
    return best_bi


def train_rerankers(args: argparse.Namespace, train: Dataset, test: Dataset, evals: dict,
                    steps: dict, depths: tuple, best_bi: str, result: dict, save: object) -> None:
    """Train each reranker recipe over the best bi-encoder's first stage and score it."""
    from vecdoctor.finetune.reranker import RerankerConfig, train_reranker

    work = Path(args.work)
    bi_folder = str(work / f"bi-{best_bi}")
    _, holder = first_stage_scores(bi_folder, {"test": test}, args.device)
    for name in args.rr_names:
        recipe = dict(RERANK_RECIPES[name])
        init = args.model if recipe.pop("init", "finetuned") == "base" else bi_folder
        config = replace(RerankerConfig(device=args.device, save_steps=10_000), **recipe, **steps)
        folder = work / f"rerank-{name}"
        start = time.perf_counter()
        res = train_reranker(train, folder, model=init, first_stage=bi_folder, config=config,
                             overwrite=True, resume=False)
        wall = time.perf_counter() - start
        result["reranker"][name] = {
            "config": config.to_dict(), "init": "base" if init == args.model else best_bi,
            "train_seconds": res.train_seconds, "wall_seconds_with_mining": round(wall, 1),
            "steps": res.steps,
            "scores": rerank_scores(folder, holder["stage"], evals, args.device, depths)}
        save()  # type: ignore[operator]
    choose = "val" if args.mode == "grid" else "test"
    best_rr = max(result["reranker"], key=lambda n: result["reranker"][n]["scores"][choose]["rerank@30"])
    result["best_reranker"] = best_rr
    result["rerank_latency"] = {"device": args.device,
                                **latency(work / f"rerank-{best_rr}", test, args.device)}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    if args.mode == "cost":
        measure_cost(args, train, test)
        return
    evals = {"test": test}
    if args.mode == "grid":
        train, val = split_train(train, 150)
        evals = {"val": val, "test": test}
    steps: dict = {}
    if args.smoke:
        small = shrink({"train": train, **evals}, 12)
        train, evals = small.pop("train"), small
        test = evals["test"]
        args.bi_names, args.rr_names = args.bi_names[:2], args.rr_names[:2]
        steps = {"max_steps": 1, "max_length": 32}
    depths = (30,) if args.mode == "grid" else tuple(int(k) for k in args.rerank_depths.split(",") if k)
    result: dict = {
        "question": "fine-tuned MiniLM (+ BM25 RRF, + own reranker) vs base on SciFact test",
        "machine": {**machine(), "device": args.device, "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None},
        "versions": versions("torch", "sentence-transformers", "transformers"),
        "mode": args.mode, "train_queries": len(train.qrels),
        "eval_queries": {k: len(v.qrels) for k, v in evals.items()},
        "base": {}, "bi_encoder": {}, "reranker": {},
    }

    def save() -> None:
        write_result("finetune_scifact", result, variant_of(args))

    result["base"], _ = first_stage_scores(args.model, evals, args.device)
    save()
    if args.mode == "first-stage":
        return
    best_bi = train_bi_encoders(args, train, evals, steps, result, save)
    result["best_bi_encoder"] = best_bi
    if best_bi is not None and args.rr_names:
        train_rerankers(args, train, test, evals, steps, depths, best_bi, result, save)
    save()


if __name__ == "__main__":
    main()
