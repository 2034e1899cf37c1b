"""Training settings (bi-encoder fine-tuning, negative mining, reranker training), importable
without NumPy or PyTorch: the CLI reads its option defaults from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vecdoctor.config import _Choice
from vecdoctor.errors import InputError


class NegativeSource(_Choice):
    """Which retriever proposes hard negatives."""

    BM25 = "bm25"
    """Lexical neighbours: documents that share the query's terms but are not judged relevant."""
    MODEL = "model"
    """Dense neighbours under the model being fine-tuned (before training)."""
    BOTH = "both"
    """BM25 and dense candidates interleaved, best first, duplicates removed."""
    NONE = "none"
    """No mining; missing negatives are drawn at random from the corpus."""


@dataclass(frozen=True)
class MiningConfig:
    """How many negatives each pair gets and where they come from.

    ``skip_top`` ranks are skipped after filtering, because the very top of an unjudged ranking
    often holds relevant documents nobody labelled. A candidate whose word set overlaps a
    positive's by more than ``max_overlap`` (Jaccard) counts as a near-duplicate and is skipped.
    """

    source: NegativeSource | str = NegativeSource.BM25
    count: int = 1
    depth: int = 30
    skip_top: int = 0
    max_overlap: float = 0.9
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", NegativeSource.parse(self.source))
        for name in ("count", "depth", "skip_top"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"mining {name} must be an integer >= 0, got {value!r}")
        if self.depth < self.skip_top + self.count:
            raise InputError(
                f"mining depth {self.depth} is smaller than skip_top + count "
                f"({self.skip_top} + {self.count}); raise the depth"
            )
        if not 0 < self.max_overlap <= 1:
            raise InputError(f"max_overlap must be in (0, 1], got {self.max_overlap!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of bi-encoder fine-tuning. Defaults were measured on SciFact train
    (919 pairs) on a 2-core CPU; see benchmarks/finetune_scifact.py."""

    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 192
    """Tokens per text while training; the saved model keeps its original limit for inference."""
    negatives: int = 1
    """Hard negatives per pair (0: in-batch negatives only)."""
    negative_source: NegativeSource | str = NegativeSource.BM25
    negative_depth: int = 30
    skip_top: int = 0
    scale: float = 20.0
    """Inverse temperature of the softmax over cosine similarities."""
    seed: int = 42
    save_steps: int = 50
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides ``epochs``)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "negative_source", NegativeSource.parse(self.negative_source))
        for name in ("batch_size", "max_length", "save_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise InputError(
                "batch_size must be >= 2: in-batch negatives need other pairs in the batch"
            )
        if not self.epochs > 0:
            raise InputError(f"epochs must be > 0, got {self.epochs!r}")
        if not 0 < self.learning_rate < 1:
            raise InputError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise InputError(
                f"max_steps must be a positive integer or None, got {self.max_steps!r}"
            )
        self.mining()  # validates the mining fields

    def mining(self) -> MiningConfig:
        return MiningConfig(
            self.negative_source, self.negatives, self.negative_depth, self.skip_top, seed=self.seed
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["negative_source"] = str(self.negative_source)
        return d


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
    layers: int | None = None
    """Keep this many of the initial model's transformer layers (evenly spread, the first and
    the last among them): a shallower cross-encoder, faster to train and to run. None: all."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", RerankLoss.parse(self.loss))
        if self.layers is not None and (
            isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1
        ):
            raise InputError(f"layers must be a whole number >= 1 or None, got {self.layers!r}")
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


class RerankRecipe(_Choice):
    """Which reranker recipe ``train-reranker`` starts from (explicit options override it)."""

    AUTO = "auto"
    """``cpu`` when no GPU is present (or ``--device cpu``), else ``full``."""
    FULL = "full"
    """The recipe chosen on a GPU (the :class:`RerankerConfig` defaults); hours on a small CPU."""
    CPU = "cpu"
    """Shorter inputs, shorter lists, fewer epochs: trains in well under 30 minutes on 2 cores
    (benchmarks/rerank_cpu.py)."""


CPU_RECIPE: dict[str, Any] = {"epochs": 2.0, "group_size": 8, "max_length": 128}
"""What the CPU recipe changes from the full one (measured in benchmarks/rerank_cpu.py)."""


def reranker_recipe(recipe: RerankRecipe | str, device: str, **explicit: Any) -> RerankerConfig:
    """The config of ``recipe`` on ``device`` with the ``explicit`` options (those not None)
    on top; ``auto`` means ``cpu`` on a CPU device and ``full`` on any other."""
    chosen = RerankRecipe.parse(recipe)
    if chosen is RerankRecipe.AUTO:
        chosen = RerankRecipe.CPU if str(device).startswith("cpu") else RerankRecipe.FULL
    base = dict(CPU_RECIPE) if chosen is RerankRecipe.CPU else {}
    base.update({k: v for k, v in explicit.items() if v is not None})
    return RerankerConfig(device=device, **base)
