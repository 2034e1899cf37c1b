"""Does vecdoctor's own reranker, trained on a CPU, help on SciFact — alone or fused with the first stage?

Trains one cross-encoder recipe on SciFact train qrels (ListNet over groups of 1 positive + 7
hybrid negatives, initialised from the base MiniLM) on the CPU, time-boxed, then on the 300
test queries reports nDCG@10 of the hybrid first stage (base MiniLM + BM25, RRF) top-30, of the
reranker alone on that top-30, and of the reranker fused with the first stage (RRF of the two
orders); and rerank latency for 30 and 100 candidates on each backend (PyTorch fp32, ONNX
Runtime fp32/int8, OpenVINO fp32/int8).

    python benchmarks/rerank_scifact.py --stage train    # train (time-boxed), writes the model
    python benchmarks/rerank_scifact.py --stage quality  # nDCG@10 of that model on test
    python benchmarks/rerank_scifact.py --stage latency  # rerank latency per backend

Every stage writes into one JSON result (benchmarks/results/rerank_scifact/<cpu>-<variant>.json).
Run it under ``nice`` on a shared machine: times are then pessimistic.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, result_path, versions, write_result  # noqa: E402

from vecdoctor.data import Dataset, load_dataset  # noqa: E402

RECIPE = dict(loss="listnet", epochs=1.0, batch_size=8, group_size=8, max_length=256, depth=30)


def subset(train: Dataset, queries: int, seed: int = 7) -> Dataset:
    """A seeded sample of ``queries`` judged train queries (all of them when there are fewer)."""
    qids = sorted(train.qrels)
    random.Random(seed).shuffle(qids)
    keep = qids[:queries]
    return Dataset(
        corpus=train.corpus,
        queries={q: train.queries[q] for q in keep},
        qrels={q: train.qrels[q] for q in keep},
        name=train.name,
        split=f"train[{len(keep)} of {len(qids)}]",
    )


class TimeBox:
    """A trainer callback that stops training after ``seconds`` of wall time."""

    def __new__(cls, seconds: float):  # noqa: D102 - built lazily so transformers loads late
        from transformers import TrainerCallback

        class _Box(TrainerCallback):
            def __init__(self) -> None:
                self.start = time.perf_counter()
                self.stopped_at: int | None = None

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if time.perf_counter() - self.start > seconds:
                    control.should_training_stop = True
                    self.stopped_at = state.global_step
                return control

        return _Box()


def train_stage(args: argparse.Namespace, result: dict, save) -> None:
    from vecdoctor.finetune.reranker import RerankerConfig, train_reranker

    train = load_dataset(args.data, "train")
    data = subset(train, args.train_queries)
    config = RerankerConfig(**RECIPE, save_steps=10_000, device="cpu")
    box = TimeBox(args.time_box)
    start = time.perf_counter()
    res = train_reranker(
        data, Path(args.work) / "reranker", model=args.model, config=config,
        overwrite=True, resume=False, callbacks=[box],
    )
    wall = time.perf_counter() - start
    planned = -(-len(data.qrels) // config.batch_size)
    result["training"] = {
        "command": " ".join(["nice -n 19", Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "init_model": args.model,
        "first_stage": f"{args.model} + BM25 (RRF), top {config.depth}",
        "train_queries": res.queries,
        "train_queries_available": len(train.qrels),
        "config": config.to_dict(),
        "planned_steps": planned,
        "steps": res.steps,
        "stopped_by_time_box": box.stopped_at is not None,
        "time_box_seconds": args.time_box,
        "train_seconds": res.train_seconds,
        "wall_seconds_with_mining": round(wall, 1),
        "loss_first_last": [res.loss_history[0], res.loss_history[-1]] if res.loss_history else None,
    }
    save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--stage", choices=["train", "quality", "latency"], required=True)
    parser.add_argument("--train-queries", type=int, default=809,
                        help="train queries used (a seeded sample when fewer than 809)")
    parser.add_argument("--time-box", type=float, default=25 * 60,
                        help="stop training after this many seconds of wall time")
    parser.add_argument("--depth", type=int, default=30, help="first-stage candidates reranked")
    parser.add_argument("--quality-backends", default="onnx-fp32,onnx-int8",
                        help="backend-precision pairs whose scores give the quality numbers")
    parser.add_argument("--latency-queries", type=int, default=5)
    parser.add_argument("--latency-model", default=None,
                        help="cross-encoder folder to time (default: the trained one; latency "
                        "does not depend on the weights)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per pair when timing")
    parser.add_argument("--work", default=str(ROOT / "out" / "rerank_scifact"))
    parser.add_argument("--variant", default="default",
                        help="result file: benchmarks/results/rerank_scifact/<cpu>-<variant>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = result_path("rerank_scifact", args.variant)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.setdefault("question", __doc__.splitlines()[0])
    result["versions"] = versions("torch", "transformers", "sentence-transformers", "onnxruntime", "onnx", "openvino")
    result["note"] = (
        "CPU only, run under nice -n 19 with OMP_NUM_THREADS=2 on a 2-core machine shared with "
        "other jobs: times are pessimistic and vary with the load; compare backends by ratio."
    )

    def save() -> None:
        write_result("rerank_scifact", result, args.variant)

    {"train": train_stage, "quality": eval_stage, "latency": latency_stage}[args.stage](
        args, result, save
    )


BACKENDS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
            ("openvino", "int8")]


def scored_runs(reranker, first: dict, data: Dataset, depth: int, cache: Path) -> dict:
    """The reranker's scores of each test query's first-stage top ``depth`` (cached on disk)."""
    from vecdoctor.finetune._retrieval import rerank_run

    if cache.exists():
        return json.loads(cache.read_text())
    docs = {d.id: d for d in data.corpus}
    start = time.perf_counter()
    run = rerank_run(reranker, {q: first[q][:depth] for q in first}, data.queries, docs, depth)
    seconds = time.perf_counter() - start
    cache.write_text(json.dumps({"seconds": seconds, "run": run}))
    return {"seconds": seconds, "run": run}


def fused(first: dict, reranked: dict, depth: int, method: str) -> dict:
    from vecdoctor.search.fusion import fuse_with_first_stage

    out = {}
    for q, hits in first.items():
        top = fuse_with_first_stage(hits[:depth], reranked[q], method)
        # rank-only runs: the evaluation must not mix the fused scores with the tail's
        out[q] = [(d, -float(i)) for i, (d, _) in enumerate(top + hits[depth:])]
    return out


def latency(folder: Path, first: dict, data: Dataset, queries: int, max_length: int) -> dict:
    """Median seconds to rerank 30 and 100 first-stage candidates, per backend (1 warm-up)."""
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    docs = {d.id: d for d in data.corpus}
    qids = list(first)[:queries]
    out = {}
    for backend, precision in BACKENDS:
        start = time.perf_counter()
        reranker = CrossEncoderReranker(
            folder, backend=backend, precision=precision, max_length=max_length
        )
        load = time.perf_counter() - start
        reranker.score(data.queries[qids[0]], [docs[d] for d, _ in first[qids[0]][:8]])
        row = {"load_or_convert_seconds": round(load, 1)}
        for n in (30, 100):
            times = []
            for q in qids:
                cands = [docs[d] for d, _ in first[q][:n]]
                t0 = time.perf_counter()
                reranker.score(data.queries[q], cands)
                times.append(time.perf_counter() - t0)
            row[f"{n}_candidates_median_s"] = round(float(np.median(times)), 3)
        if backend != "torch":
            row["check_against_torch"] = reranker.converted.info["check"]
        out[f"{backend}-{precision}"] = row
        logging.info("latency %s %s: %s", backend, precision, row)
    base = out["torch-fp32"]
    for row in out.values():
        row["speedup_vs_torch_100"] = round(base["100_candidates_median_s"] / row["100_candidates_median_s"], 2)
    return out


def eval_stage(args: argparse.Namespace, result: dict, save) -> None:
    from vecdoctor.finetune._retrieval import metrics
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    test = load_dataset(args.data, "test")
    folder = Path(args.work) / "reranker"
    work = Path(args.work)
    first, _ = first_stage(args, test)
    depth = args.depth
    quality: dict = {
        "first_stage": f"{args.model} dense + BM25, RRF k=60",
        "depth": depth,
        "hybrid": metrics(first, test.qrels)["ndcg@10"],
    }
    for backend, precision in [tuple(b.split("-")) for b in args.quality_backends.split(",")]:
        reranker = CrossEncoderReranker(folder, backend=backend, precision=precision, batch_size=32)
        got = scored_runs(reranker, first, test, depth, work / f"scores-{backend}-{precision}.json")
        reranked = {q: [(d, s) for d, s in hits] for q, hits in got["run"].items()}
        rerank_only = {q: reranked[q] + [(d, -1e9 - i) for i, (d, _) in enumerate(first[q][depth:])]
                       for q in first}
        quality[f"{backend}-{precision}"] = {
            "rerank_seconds_all_queries": round(got["seconds"], 1),
            "reranker_alone": metrics(rerank_only, test.qrels)["ndcg@10"],
            "fused_rrf": metrics(fused(first, reranked, depth, "rrf"), test.qrels)["ndcg@10"],
            "fused_weighted": metrics(fused(first, reranked, depth, "weighted"), test.qrels)["ndcg@10"],
        }
        result["quality_ndcg@10_test"] = quality
        save()
    result["quality_command"] = " ".join(["nice -n 19", Path(sys.executable).name, *sys.argv])
    result["quality_machine"] = machine()
    save()


def latency_stage(args: argparse.Namespace, result: dict, save) -> None:
    test = load_dataset(args.data, "test")
    from vecdoctor.finetune._retrieval import FirstStage

    folder = Path(args.latency_model or Path(args.work) / "reranker")
    # BM25's top 100 are as long as the hybrid's (most abstracts fill the 256 tokens) and need
    # no corpus encoding
    first = FirstStage(test.corpus).bm25(test.queries, 100)
    result["latency"] = {
        "command": " ".join(["nice -n 19", Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "model": str(folder),
        "max_length": args.max_length,
        "queries": args.latency_queries,
        "candidates": "each query's own BM25 top 30 / top 100",
        "backends": latency(folder, first, test, args.latency_queries, args.max_length),
    }
    save()


def first_stage(args: argparse.Namespace, data: Dataset) -> tuple[dict, object]:
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.finetune._retrieval import FirstStage

    # fp32 ONNX vectors equal PyTorch's (checked at conversion) and encode faster
    encoder = Encoder(args.model, backend="onnx", cache=Path(args.work) / "vectors")
    stage = FirstStage(data.corpus, encoder)
    return stage.hybrid(data.queries, 100), stage


if __name__ == "__main__":
    main()
