"""Plumbing shared by bi-encoder and reranker training: checkpoints, RNG, loss logging, cards."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vecdoctor.io import write_json
from vecdoctor.persist import header

logger = logging.getLogger(__name__)

RUN_FILE = "vecdoctor_run.json"
TRAINER_STATE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME


def checkpoint_dir(output: Path) -> Path:
    """Checkpoints live beside the output (``OUT.checkpoints``) until training finishes."""
    return output.with_name(output.name + ".checkpoints")


def checkpoint_complete(checkpoint: Path) -> bool:
    """Whether the trainer finished writing ``checkpoint`` (``checkpoint-STEP``).

    The trainer writes the weights, optimizer, scheduler and RNG states first and
    ``trainer_state.json`` last, in place; a process killed before that file is whole leaves
    a folder without it, or with a truncated one.
    """
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        return int(state["global_step"]) == int(checkpoint.name.split("-")[-1])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _latest_complete(checkpoints: list[Path]) -> Path | None:
    """The newest complete checkpoint; newer, incomplete ones are removed."""
    for checkpoint in reversed(checkpoints):
        if checkpoint_complete(checkpoint):
            return checkpoint
        logger.warning(
            "removing %s: it was cut short while being written (no complete %s)",
            checkpoint,
            TRAINER_STATE,
        )
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def prepare_checkpoints(output: Path, signature: dict[str, Any], resume: bool) -> str | None:
    """Return the checkpoint to resume from, or ``None``; start a fresh folder otherwise.

    A checkpoint is reused only when it was written by a run with the same ``signature``
    (model, data size, hyperparameters); any other checkpoint folder is replaced. Resuming
    takes the newest complete checkpoint: one whose writing was interrupted is removed.
    """
    folder = checkpoint_dir(output)
    run_file = folder / RUN_FILE
    previous = json.loads(run_file.read_text()) if run_file.is_file() else None
    checkpoints = (
        sorted(
            (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        if folder.is_dir()
        else []
    )
    if resume and checkpoints and previous == signature:
        latest = _latest_complete(checkpoints)
        if latest is not None:
            logger.info("resuming from %s", latest)
            return str(latest)
        logger.warning("%s holds no complete checkpoint; starting over", folder)
    elif resume and checkpoints:
        logger.warning("%s holds checkpoints of a different run; starting over", folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(run_file, signature)
    return None


def check_output(output: Path, overwrite: bool, kind: Any) -> Path:
    """A trained model is never replaced without ``overwrite`` (``--force``), even by another."""
    from vecdoctor.persist import check_output as check

    return check(output, kind, force=overwrite, replace_same=False)


@contextlib.contextmanager
def preserve_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states after training seeds them."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def loss_logger() -> Any:
    """A trainer callback that keeps every logged training loss as ``history``."""
    from transformers import TrainerCallback

    class _LossLog(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[tuple[int, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.history.append((int(state.global_step), float(logs["loss"])))

    return _LossLog()


@dataclass
class TrainingRun:
    """A finished trainer run: the trainer, its wall time, the step it resumed from, the losses
    and the checkpoint folder (removed once the model is saved)."""

    trainer: Any
    seconds: float
    resumed_from_step: int | None
    losses: Any
    checkpoints: Path

    def result_fields(self) -> dict[str, Any]:
        """The :class:`TrainingResult` fields this run fills."""
        return {
            "steps": int(self.trainer.state.global_step),
            "train_seconds": round(self.seconds, 1),
            "resumed_from_step": self.resumed_from_step,
            "loss_history": self.losses.history,
        }


def run_trainer(
    output: Path,
    signature: dict[str, Any],
    resume: bool,
    show_progress: bool,
    make_trainer: Callable[[Path, Any], Any],
) -> TrainingRun:
    """Train with checkpoints under ``OUTPUT.checkpoints`` (resumed when ``signature`` matches
    the interrupted run's), the global RNGs restored afterwards and the trainer kept quiet.
    ``make_trainer(checkpoint_folder, loss_callback)`` builds the sentence-transformers trainer."""
    checkpoint = prepare_checkpoints(output, signature, resume)
    folder = checkpoint_dir(output)
    losses = loss_logger()
    start = time.perf_counter()
    with preserve_rng():
        trainer = make_trainer(folder, losses)
        quiet_trainer(trainer, show_progress)
        trainer.train(resume_from_checkpoint=checkpoint)
    resumed = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None
    return TrainingRun(trainer, time.perf_counter() - start, resumed, losses, folder)


def common_args(
    config: Any, folder: Path, show_progress: bool, steps_per_epoch: int
) -> dict[str, Any]:
    """TrainingArguments shared by both trainers (CPU-safe, no reporting, deterministic)."""
    return {
        "output_dir": str(folder),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        "data_seed": config.seed,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 1,
        "logging_steps": max(1, min(50, steps_per_epoch // 4 or 1)),
        "report_to": "none",
        "disable_tqdm": not show_progress,
        "use_cpu": config.device == "cpu",
        "dataloader_num_workers": 0,
        "save_only_model": False,
    }


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did: steps, time, losses and the evaluation it was given.

    Each trainer's result adds the one field that counts its examples (``COUNT``).
    """

    COUNT: ClassVar[str]
    """Name of the field counting the training examples (``pairs``, ``queries``)."""

    output: Path
    steps: int
    train_seconds: float
    resumed_from_step: int | None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"output": str(d.pop("output")), self.COUNT: d.pop(self.COUNT)} | d

    def write_card(
        self,
        folder: Path,
        card_json: str,
        title: str,
        config: Any,
        origin: dict[str, tuple[str, Any]],
    ) -> None:
        """Write the model card: ``card_json`` and README.md, into ``folder``.

        ``origin`` maps the card's JSON keys to (label in README.md, value) for the models
        the run started from.
        """
        counts = {self.COUNT: getattr(self, self.COUNT), "steps": self.steps}
        write_json(
            Path(folder) / card_json,
            header(type(self).__name__, 1)
            | {key: value for key, (_, value) in origin.items()}
            | {"config": config.to_dict()}
            | counts
            | {
                "train_seconds": self.train_seconds,
                "loss_history": self.loss_history,
                "evaluation": self.evaluation,
            },
        )
        facts = (
            dict(origin.values()) | counts | {"train seconds": self.train_seconds}
        ) | config.to_dict()
        (Path(folder) / "README.md").write_text(
            card_markdown(title, facts, self.evaluation), encoding="utf-8"
        )


def card_markdown(title: str, facts: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    lines = [f"# {title}", "", "Trained with vecdoctor.", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    if evaluation:
        lines += [
            "",
            f"## Evaluation ({evaluation.get('data', '')})",
            "",
            "| pipeline | " + " | ".join(evaluation["metrics"]) + " |",
            "|---" * (len(evaluation["metrics"]) + 1) + "|",
        ]
        for name, row in evaluation["results"].items():
            lines.append(
                f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in evaluation["metrics"]) + " |"
            )
    return "\n".join(lines) + "\n"


def quiet_trainer(trainer: Any, show_progress: bool) -> None:
    """Keep the trainer from printing its log dicts to stdout (the CLI writes JSON there)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    if show_progress:
        trainer.remove_callback(ProgressCallback)

        class _Bar(ProgressCallback):
            def on_log(self, *args: Any, **kwargs: Any) -> None:
                return None

        trainer.add_callback(_Bar())


def record_max_length(folder: Path, max_length: int) -> None:
    """Write the inference token limit into ``sentence_bert_config.json``.

    sentence-transformers 6 keeps it only in the tokenizer config; the key is read back by
    sentence-transformers (as the Transformer module's ``max_seq_length``) and by vecdoctor.
    """
    path = Path(folder) / "sentence_bert_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["max_seq_length"] = int(max_length)
    write_json(path, config)


def require_training_extras() -> None:
    """The sentence-transformers trainers need ``datasets`` and ``accelerate``."""
    from vecdoctor.errors import require

    require("datasets", "train")
    require("accelerate", "train")
