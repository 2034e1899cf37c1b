"""Contrastive bi-encoder fine-tuning: MultipleNegativesRankingLoss with mined hard negatives.

Loss: InfoNCE over in-batch and hard negatives (Henderson et al., 2017, "Efficient Natural
Language Response Suggestion"; Karpukhin et al., 2020, DPR), scaled cosine similarities.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdoctor.data import Dataset, Document
from vecdoctor.errors import InputError
from vecdoctor.finetune import _training
from vecdoctor.finetune.negatives import mine_negatives
from vecdoctor.finetune.pairs import Pair
from vecdoctor.finetune.recipes import FinetuneConfig, NegativeSource
from vecdoctor.io import atomic_dir
from vecdoctor.persist import FINETUNED

logger = logging.getLogger(__name__)

CARD_JSON = "vecdoctor_finetune.json"


@dataclass(frozen=True, kw_only=True)
class FinetuneResult(_training.TrainingResult):
    """What a fine-tuning run did: steps, time, losses and the evaluation before and after."""

    COUNT = "pairs"
    pairs: int


def _load_sentence_transformer(model: str, device: str, purpose: str = "fine-tuning needs"
                               ) -> tuple[Any, Any]:
    """A PyTorch sentence-transformers model; any other backend is refused, ``purpose`` saying
    what needed it."""
    from vecdoctor.models import resolve

    resolved = resolve(model)
    if resolved.backend != "torch" or not resolved.path.is_dir():
        raise InputError(
            f"model {model!r} runs on the {resolved.backend} backend; {purpose} a PyTorch "
            "sentence-transformers model such as 'minilm' or a local model folder"
        )
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
    return st, resolved


def _train_dataset(pairs: Sequence[Pair], query_prefix: str, doc_prefix: str) -> Any:
    from datasets import Dataset as HFDataset

    columns: dict[str, list[str]] = {
        "anchor": [query_prefix + p.anchor for p in pairs],
        "positive": [doc_prefix + p.positive for p in pairs],
    }
    n = len(pairs[0].negatives)
    for i in range(n):
        columns[f"negative_{i + 1}"] = [doc_prefix + p.negatives[i] for p in pairs]
    return HFDataset.from_dict(columns)


def evaluate_encoder(
    model: str, data: Dataset, show_progress: bool = False, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Dense and BM25+dense (RRF) ``ndcg@10`` / ``recall@100`` of ``model`` on ``data``."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.finetune._retrieval import FirstStage, metrics

    stage = FirstStage(data.corpus, Encoder(model, device=device), show_progress=show_progress)
    return {
        "dense": metrics(stage.dense(data.queries, 100), data.qrels),
        "hybrid": metrics(stage.hybrid(data.queries, 100), data.qrels),
    }


def finetune(
    pairs: Sequence[Pair],
    output: str | Path,
    model: str = "minilm",
    config: FinetuneConfig | None = None,
    corpus: Sequence[Document] | None = None,
    evaluation: Dataset | None = None,
    resume: bool = True,
    overwrite: bool = False,
    show_progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> FinetuneResult:
    """Fine-tune a sentence-transformers bi-encoder on ``pairs`` and save it to ``output``.

    Hard negatives are mined from ``corpus`` (or from the pairs' own texts) unless the pairs
    already carry enough. Checkpoints go to ``OUTPUT.checkpoints`` every ``save_steps`` steps;
    with ``resume`` an interrupted run with the same settings continues from the last one.
    When ``evaluation`` (a labelled split) is given, the base and the fine-tuned model are both
    evaluated on it and the numbers are written into the model card (README.md and
    ``vecdoctor_finetune.json``). The output folder loads anywhere as ``-m OUTPUT``.
    Training seeds the global RNGs (the trainer does); their states are restored afterwards.
    """
    config = config or FinetuneConfig()
    _training.require_training_extras()
    output = _training.check_output(Path(output), overwrite, FINETUNED)
    pairs = list(pairs)
    if len(pairs) < 2:
        raise InputError(f"need at least 2 training pairs for in-batch negatives, got {len(pairs)}")
    if evaluation is not None and not evaluation.has_labels:
        raise InputError("the evaluation dataset has no queries and qrels; pass a labelled split")
    st, resolved = _load_sentence_transformer(model, config.device)
    inference_length = st.max_seq_length

    pairs = _with_negatives(pairs, corpus, config, model, resolved.max_length)
    before = (
        evaluate_encoder(model, evaluation, show_progress, config.device)
        if evaluation is not None
        else None
    )

    signature = {
        "kind": "bi-encoder",
        "model": resolved.id,
        "pairs": len(pairs),
        "config": config.to_dict(),
    }
    dataset = _train_dataset(pairs, resolved.query_prefix, resolved.document_prefix)
    st.max_seq_length = config.max_length
    run = _training.run_trainer(
        output, signature, resume, show_progress,
        lambda folder, losses: _trainer(st, dataset, config, folder, show_progress, [losses, *callbacks]),
    )
    st.max_seq_length = inference_length
    logger.info(
        "fine-tuned %s on %d pairs in %.0f s (%d steps)",
        resolved.id, len(pairs), run.seconds, run.trainer.state.global_step,
    )
    with atomic_dir(output) as tmp:
        st.save(str(tmp), create_model_card=False)
        _training.record_max_length(tmp, inference_length)
        report = None
        if evaluation is not None and before is not None:
            after = evaluate_encoder(str(tmp), evaluation, show_progress, config.device)
            report = {
                "data": f"{evaluation.name}/{evaluation.split}",
                "metrics": ["ndcg@10", "recall@100"],
                "results": {f"base {k}": v for k, v in before.items()}
                | {f"fine-tuned {k}": v for k, v in after.items()},
            }
        result = FinetuneResult(output=output, pairs=len(pairs), evaluation=report, **run.result_fields())
        result.write_card(
            tmp, CARD_JSON, "Fine-tuned bi-encoder", config,
            {"base_model": ("base model", resolved.id)},
        )
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    return result


def _with_negatives(pairs: list[Pair], corpus: Sequence[Document] | None, config: FinetuneConfig,
                    model: str, max_length: int) -> list[Pair]:
    """The pairs with ``config.negatives`` mined negatives each (none when 0)."""
    if not config.negatives:
        return [p.with_negatives(()) for p in pairs]
    encoder = None
    if config.negative_source in (NegativeSource.MODEL, NegativeSource.BOTH):
        from vecdoctor.encode.encoder import Encoder

        encoder = Encoder(model, max_length=min(config.max_length, max_length))
    return mine_negatives(pairs, corpus, config.mining(), encoder=encoder)


def _trainer(st: Any, dataset: Any, config: FinetuneConfig, folder: Path, show_progress: bool,
             callbacks: list[Any]) -> Any:
    """The sentence-transformers trainer: MNRL, batches without duplicate texts."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    steps_per_epoch = -(-len(dataset) // config.batch_size)
    args = SentenceTransformerTrainingArguments(
        per_device_train_batch_size=config.batch_size,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        **_training.common_args(config, folder, show_progress, steps_per_epoch),
    )
    return SentenceTransformerTrainer(
        model=st, args=args, train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(st, scale=config.scale), callbacks=callbacks,
    )
