"""Training vecdoctor's own cross-encoder reranker on the user's labelled queries.

Each training query gets a list of candidates from the pipeline's own first stage (BM25 +
dense, RRF): its judged positives plus the hardest unjudged candidates as negatives. Listwise
losses compare the candidates of one query with each other: ListNet (Cao et al., 2007),
LambdaLoss (Wang et al., 2018), or a softmax over the positive against hard and in-batch
negatives; pointwise binary cross-entropy is kept for comparison.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdoctor.data import Dataset
from vecdoctor.errors import InputError
from vecdoctor.finetune import _training
from vecdoctor.finetune.recipes import RerankerConfig, RerankLoss
from vecdoctor.io import atomic_dir
from vecdoctor.persist import RERANKER

logger = logging.getLogger(__name__)

CARD_JSON = "vecdoctor_reranker.json"
HEAD_PATTERN = r"\.(classifier|pooler)\."


@dataclass(frozen=True, kw_only=True)
class RerankerResult(_training.TrainingResult):
    """What a reranker training run did: steps, time, losses and the evaluation."""

    COUNT = "queries"
    queries: int


def training_lists(
    data: Dataset, candidates: dict[str, list[tuple[str, float]]], config: RerankerConfig
) -> list[tuple[str, list[str], list[float]]]:
    """Per query: (query text, document texts, labels) with positives first.

    Negatives are the best first-stage candidates that are not judged positive; a query whose
    candidates run out is topped up with random documents (seeded).
    """
    rng = random.Random(config.seed)
    docs = {d.id: d for d in data.corpus}
    ids = list(docs)
    out = []
    max_pos = max(1, config.group_size // 2)
    for qid, rels in data.qrels.items():
        positives = [d for d, s in rels.items() if s > 0 and d in docs][:max_pos]
        if not positives:
            continue
        judged = set(rels)
        ranked = [(d, s) for d, s in candidates.get(qid, []) if d not in judged]
        ranked = ranked[config.skip_top :][: config.group_size - len(positives)]
        best = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
        negatives = [d for d, _ in ranked]
        labels = [config.distill * s / best for _, s in ranked]
        while len(negatives) < config.group_size - len(positives):
            d = rng.choice(ids)
            if d not in judged and d not in negatives:
                negatives.append(d)
                labels.append(0.0)
        texts = [docs[d].content for d in positives + negatives]
        out.append((data.queries[qid], texts, [1.0] * len(positives) + labels))
    if not out:
        raise InputError("no training query has a judged document in the corpus")
    return out


def _hf_dataset(lists: Sequence[tuple[str, list[str], list[float]]], loss: RerankLoss) -> Any:
    from datasets import Dataset as HFDataset

    if loss in (RerankLoss.LISTNET, RerankLoss.LAMBDA):
        return HFDataset.from_dict(
            {
                "query": [q for q, _, _ in lists],
                "docs": [d for _, d, _ in lists],
                "labels": [lab for _, _, lab in lists],
            }
        )
    if loss is RerankLoss.BCE:
        rows = [
            (q, d, lab) for q, docs, labels in lists for d, lab in zip(docs, labels, strict=True)
        ]
        return HFDataset.from_dict(
            {
                "query": [r[0] for r in rows],
                "doc": [r[1] for r in rows],
                "label": [float(r[2]) for r in rows],
            }
        )
    columns: dict[str, list[str]] = {"query": [], "positive": []}
    n_neg = min(sum(1 for lab in labels if lab < 1) for _, _, labels in lists)
    for i in range(n_neg):
        columns[f"negative_{i + 1}"] = []
    for q, docs, labels in lists:
        negatives = [d for d, lab in zip(docs, labels, strict=True) if lab < 1][:n_neg]
        for d, lab in zip(docs, labels, strict=True):
            if lab >= 1:
                columns["query"].append(q)
                columns["positive"].append(d)
                for i, neg in enumerate(negatives):
                    columns[f"negative_{i + 1}"].append(neg)
    return HFDataset.from_dict(columns)


def _loss(model: Any, loss: RerankLoss) -> Any:
    from sentence_transformers.cross_encoder import losses

    if loss is RerankLoss.LISTNET:
        return losses.ListNetLoss(model)
    if loss is RerankLoss.LAMBDA:
        return losses.LambdaLoss(model)
    if loss is RerankLoss.MNRL:
        return losses.MultipleNegativesRankingLoss(model)
    return losses.BinaryCrossEntropyLoss(model)


def _load_cross_encoder(model: str, config: RerankerConfig) -> tuple[Any, str]:
    from vecdoctor.models import resolve

    resolved = resolve(model)
    if resolved.backend != "torch" or not resolved.path.is_dir():
        raise InputError(
            f"model {model!r} runs on the {resolved.backend} backend; a reranker is initialised "
            "from a PyTorch model such as 'minilm', a fine-tuned bi-encoder folder or a cross-encoder folder"
        )
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(
        str(resolved.path),
        num_labels=1,
        max_length=config.max_length,
        device=config.device,
        local_files_only=True,
    )
    if config.layers is not None:
        from vecdoctor.finetune.layers import kept_layers, prune_layers

        keep = kept_layers(int(ce.model.config.num_hidden_layers), config.layers)
        prune_layers(ce.model, keep)
        logger.info("cross-encoder cut to layers %s of %s", keep, resolved.id)
    return ce, resolved.id


def evaluate_reranker(
    reranker: Any, stage: Any, data: Dataset, depth: int = 30
) -> dict[str, dict[str, float]]:
    """``ndcg@10`` of the hybrid first stage, of the same list with its top ``depth`` reranked,
    and of the reranked top fused with the first stage's (RRF, as ``--rerank-fusion rrf``)."""
    from vecdoctor.finetune._retrieval import metrics, rerank_run
    from vecdoctor.search.fusion import fuse_with_first_stage

    first = stage.hybrid(data.queries, 100)
    docs = {d.id: d for d in data.corpus}
    reranked = rerank_run(reranker, first, data.queries, docs, depth)
    fused = {}
    for q, hits in first.items():
        top = fuse_with_first_stage(hits[:depth], reranked[q][:depth], "rrf")
        # ranks only: fused scores and the first stage's tail are on different scales
        fused[q] = [(d, -float(i)) for i, (d, _) in enumerate(top + hits[depth:])]
    return {
        "hybrid": metrics(first, data.qrels),
        f"hybrid + rerank@{depth}": metrics(reranked, data.qrels),
        f"hybrid + rerank@{depth} + rrf": metrics(fused, data.qrels),
    }


def train_reranker(
    data: Dataset,
    output: str | Path,
    model: str = "minilm",
    first_stage: str | None = None,
    config: RerankerConfig | None = None,
    evaluation: Dataset | None = None,
    resume: bool = True,
    overwrite: bool = False,
    show_progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> RerankerResult:
    """Train a cross-encoder on ``data``'s queries and qrels and save it to ``output``.

    ``model`` initialises the cross-encoder (a bi-encoder, ideally the fine-tuned one, or an
    existing cross-encoder); ``first_stage`` is the bi-encoder whose BM25+dense candidates give
    the negatives (default: ``model``). With ``evaluation`` the reranker is compared with the
    first stage on that split, alone and fused with the first stage's order (RRF), and the
    numbers go into the card (README.md and ``vecdoctor_reranker.json``, whose ``helps`` says
    whether reranking beat the first stage and ``best_fusion`` which way did better).
    The folder loads with :class:`vecdoctor.rerank.rerankers.CrossEncoderReranker` (``--rerank DIR``).
    """
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.finetune._retrieval import FirstStage

    config = config or RerankerConfig()
    _training.require_training_extras()
    output = _training.check_output(Path(output), overwrite, RERANKER)
    if not data.has_labels:
        raise InputError(
            f"dataset {data.name!r} has no queries and qrels; reranker training needs a labelled "
            "split (qrels/<split>.tsv)"
        )
    first_stage = first_stage or model
    stage = FirstStage(
        data.corpus, Encoder(first_stage, device=config.device), show_progress=show_progress
    )
    candidates = stage.hybrid(data.queries, config.depth)
    lists = training_lists(data, candidates, config)
    ce, model_id = _load_cross_encoder(model, config)

    signature = {
        "kind": "reranker",
        "model": model_id,
        "first_stage": first_stage,
        "queries": len(lists),
        "config": config.to_dict(),
    }
    dataset = _hf_dataset(lists, RerankLoss.parse(config.loss))
    run = _training.run_trainer(
        output, signature, resume, show_progress,
        lambda folder, losses: _trainer(ce, dataset, config, folder, show_progress, [losses, *callbacks]),
    )
    logger.info("trained reranker from %s on %d queries in %.0f s", model_id, len(lists), run.seconds)
    with atomic_dir(output) as tmp:
        ce.save(str(tmp), create_model_card=False)
        _training.record_max_length(tmp, config.max_length)
        report = None
        if evaluation is not None:
            same = [d.id for d in evaluation.corpus] == stage.ids
            eval_stage = (
                stage
                if same
                else FirstStage(evaluation.corpus, Encoder(first_stage, device=config.device))
            )
            report = _report(tmp, eval_stage, evaluation, config.device)
        result = RerankerResult(output=output, queries=len(lists), evaluation=report, **run.result_fields())
        result.write_card(
            tmp,
            CARD_JSON,
            "vecdoctor cross-encoder reranker",
            config,
            {
                "init_model": ("initialised from", model_id),
                "first_stage": ("first stage", first_stage),
            },
        )
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    return result


def _trainer(ce: Any, dataset: Any, config: RerankerConfig, folder: Path, show_progress: bool,
             callbacks: list[Any]) -> Any:
    """The cross-encoder trainer: the chosen listwise or pointwise loss, its own head rate."""
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )

    steps_per_epoch = -(-len(dataset) // config.batch_size)
    args = CrossEncoderTrainingArguments(
        per_device_train_batch_size=config.batch_size,
        learning_rate_mapping={HEAD_PATTERN: config.head_learning_rate},
        **_training.common_args(config, folder, show_progress, steps_per_epoch),
    )
    return CrossEncoderTrainer(
        model=ce, args=args, train_dataset=dataset,
        loss=_loss(ce, RerankLoss.parse(config.loss)), callbacks=callbacks,
    )


def _report(folder: Path, stage: Any, evaluation: Dataset, device: str) -> dict[str, Any]:
    """The saved reranker against the first stage on ``evaluation``: alone and fused (RRF)."""
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    results = evaluate_reranker(CrossEncoderReranker(folder, device=device), stage, evaluation)
    first, reranked, fused = (row["ndcg@10"] for row in results.values())
    return {
        "data": f"{evaluation.name}/{evaluation.split}",
        "metrics": ["ndcg@10"],
        "results": results,
        "helps": max(reranked, fused) > first,
        "best_fusion": "rrf" if fused >= reranked else "none",
    }
