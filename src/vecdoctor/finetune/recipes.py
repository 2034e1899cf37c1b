"""Reranker training settings, importable without NumPy or PyTorch (the CLI reads its
option defaults from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vecdoctor.config import _Choice
from vecdoctor.errors import InputError


class RerankLoss(_Choice):
    """Training objective of the cross-encoder."""

    LISTNET = "listnet"
    """Cross-entropy between the softmax of scores and of labels over one query's list."""
    LAMBDA = "lambda"
    """LambdaLoss with the NDCG-Loss2++ weighting: pairwise, weighted by the nDCG change."""
    MNRL = "mnrl"
    """Softmax over the positive, the query's hard negatives and other queries' documents."""
    BCE = "bce"
    """Pointwise binary cross-entropy on each (query, document, label)."""


@dataclass(frozen=True)
class RerankerConfig:
    """Hyperparameters of reranker training.

    The defaults are the recipe chosen on held-out SciFact train queries among ListNet, LambdaLoss
    and MNRL, 2 or 4 epochs, 8 or 16 documents per list, with or without distillation, from the
    fine-tuned or the base bi-encoder (benchmarks/finetune_scifact.py, ``gpu_grid_rerank`` in
    its results): ListNet, 4 epochs, 16 documents per list.
    """

    loss: RerankLoss | str = RerankLoss.LISTNET
    epochs: float = 4.0
    batch_size: int = 8
    """Queries per batch (listwise, mnrl) or (query, document) pairs per batch (bce)."""
    group_size: int = 16
    """Documents in each query's list: its positives (at most half) and hard negatives."""
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    """Learning rate of the new scoring head (classifier and pooler)."""
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    depth: int = 30
    """First-stage candidates the negatives are taken from."""
    skip_top: int = 0
    distill: float = 0.0
    """Label of a negative = distill x its first-stage RRF score / the best one (0: hard labels)."""
    seed: int = 42
    save_steps: int = 100
    max_steps: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", RerankLoss.parse(self.loss))
        for name in ("batch_size", "group_size", "max_length", "depth", "save_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.group_size < 2:
            raise InputError("group_size must be >= 2 (a positive and at least one negative)")
        if self.depth < self.skip_top + self.group_size - 1:
            raise InputError(
                f"depth {self.depth} leaves too few candidates for group_size {self.group_size} "
                f"after skip_top {self.skip_top}; raise depth"
            )
        if not 0 <= self.distill < 1:
            raise InputError(f"distill must be in [0, 1), got {self.distill!r}")
        if self.distill and self.loss in (RerankLoss.MNRL, RerankLoss.BCE):
            raise InputError("distill needs a listwise loss (listnet or lambda)")
        if not self.epochs > 0:
            raise InputError(f"epochs must be > 0, got {self.epochs!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = str(self.loss)
        return d
