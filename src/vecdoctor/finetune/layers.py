"""Distil a layer-pruned student: k of the teacher's transformer layers, trained on the user's
corpus to reproduce the teacher's vectors.

1. **Layers kept**: k layers spread evenly over the teacher's stack, the first and the last
   always among them (the last one writes the space the pooled vector lives in); the
   embeddings, the tokenizer and the pooling stay the teacher's.
2. **Trained on the corpus**: the student's pooled vector of each training text (the corpus'
   documents and their sentences, as for the static student) is pulled towards the teacher's
   vector of the same text (cosine loss, AdamW, warm-up then linear decay). Texts are batched by
   length so short sentences are not padded to a document's length.
3. **Checked on held-out texts**: the cosine to the teacher on a held-out share before training
   and after each epoch; the epoch with the best one is kept, and training stops after
   ``patience`` epochs without a better one.

The result is an ordinary sentence-transformers folder: ``-m STUDENT`` works everywhere, on
every backend (``--backend openvino --model-precision int8`` included), and
``vecdoctor_student.json`` beside the weights says what it was distilled from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError
from vecdoctor.io import atomic_dir, write_json
from vecdoctor.persist import LAYERS, check_output, header

logger = logging.getLogger(__name__)

STUDENT_FILE = "vecdoctor_student.json"
FORMAT_VERSION = 1
HELD_OUT = 0.05
WARMUP = 0.05


@dataclass
class LayersReport:
    """What ``vecdoctor distill --student layers:K`` did and measured."""

    teacher: str
    student: str
    layers_kept: list[int]
    teacher_layers: int
    texts: int
    held_out: int
    epochs_run: int
    best_epoch: int
    cosine_to_teacher_before: float  # held-out texts, pruned but not trained
    cosine_to_teacher_after: float
    seconds_teacher: float
    seconds_training: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def parse_student(kind: str) -> tuple[str, int | None]:
    """``static`` -> ("static", None); ``layers:K`` -> ("layers", K)."""
    text = str(kind).strip().lower()
    if text == "static":
        return "static", None
    name, _, number = text.partition(":")
    if name == "layers":
        if not number.isdigit() or int(number) < 1:
            raise InputError(f"--student {kind!r}: give the layers to keep as a whole number >= 1, "
                             "e.g. layers:3")
        return "layers", int(number)
    raise InputError(f"unknown --student {kind!r}; choose static or layers:K (K layers of the "
                     "teacher, e.g. layers:3)")


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layer indices, evenly spread, the first and the last included."""
    if keep >= total:
        raise InputError(f"the model has {total} layers; pruning keeps fewer "
                         f"(layers:1 ... layers:{total - 1}), not {keep}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(model: Any, keep: list[int]) -> None:
    """Keep only the ``keep`` layers of a transformers model, with or without a head (in place)."""
    import torch

    base = getattr(model, "base_model", model)
    encoder: Any = getattr(base, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise InputError(f"the model ({type(model).__name__}) has no BERT-style layer stack "
                         "(encoder.layer); layer pruning supports BERT, MiniLM, MPNet-like models")
    encoder.layer = torch.nn.ModuleList([stack[i] for i in keep])
    base.config.num_hidden_layers = len(keep)
    for position, layer in enumerate(encoder.layer):  # caches and attention masks index by layer
        attention = getattr(layer, "attention", None)
        inner = getattr(attention, "self", attention)
        if inner is not None and hasattr(inner, "layer_idx"):
            inner.layer_idx = position


def _length_batches(texts: Sequence[str], rows: np.ndarray, batch_size: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """``rows`` in batches of similar text length (little padding), the batches in random order."""
    lengths = np.array([len(texts[i]) for i in rows], dtype=np.float64)
    order = rows[np.argsort(lengths + rng.random(len(rows)), kind="stable")]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _embed(st: Any, texts: list[str]) -> Any:
    features = (getattr(st, "preprocess", None) or st.tokenize)(texts)
    features = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in features.items()}
    return st(features)["sentence_embedding"]


def _held_cosine(st: Any, texts: Sequence[str], targets: Any, held: np.ndarray) -> float:
    import torch

    st.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(held), 64):
            rows = held[start : start + 64]
            pred = _embed(st, [texts[i] for i in rows])
            scores.append(torch.nn.functional.cosine_similarity(pred, targets[rows]))
    st.train()
    return float(torch.cat(scores).mean())


@dataclass(frozen=True)
class _Plan:
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int


def _train(st: Any, texts: Sequence[str], targets: Any, fit: np.ndarray, held: np.ndarray,
           plan: _Plan, say: Callable[[str], None]) -> tuple[dict[str, Any], float, float, int, int]:
    """Train the student (cosine loss to the teacher's vectors); returns the weights of the
    epoch with the best held-out cosine, the cosine before training and at that epoch, that
    epoch and the epochs run."""
    import torch

    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    before = _held_cosine(st, texts, targets, held)
    say(f"pruned, before training: held-out cosine to the teacher {before:.4f}")
    best, best_epoch = before, 0
    best_state = {k: v.detach().clone() for k, v in st.state_dict().items()}
    optimizer = torch.optim.AdamW(st.parameters(), lr=plan.learning_rate, weight_decay=0.01)
    steps = plan.epochs * -(-len(fit) // plan.batch_size)
    warm = max(1, int(steps * WARMUP))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    st.train()
    epoch = 0
    for epoch in range(1, plan.epochs + 1):
        for rows in _length_batches(texts, fit, plan.batch_size, rng):
            pred = _embed(st, [texts[i] for i in rows])
            loss = (1 - torch.nn.functional.cosine_similarity(pred, targets[rows])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        score = _held_cosine(st, texts, targets, held)
        say(f"epoch {epoch}: held-out cosine to the teacher {score:.4f}")
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in st.state_dict().items()}
        elif epoch - best_epoch >= plan.patience:
            say(f"no better held-out cosine for {plan.patience} epochs: stop, keep epoch {best_epoch}")
            break
    return best_state, before, best, best_epoch, epoch


def distill_layers(
    teacher: str,
    texts: Sequence[str],
    output: str | Path,
    *,
    layers: int,
    epochs: int = 4,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    patience: int = 1,
    max_texts: int = 30_000,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LayersReport:
    """Distil ``layers`` of ``teacher`` (a registry name or a PyTorch model folder) into a
    student trained on ``texts`` and write it to ``output`` as a sentence-transformers folder
    (atomically; an existing folder is replaced only when it holds a layer-pruned student, or
    with ``force``)."""
    import torch

    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.finetune._training import record_max_length
    from vecdoctor.finetune.biencoder import _load_sentence_transformer
    from vecdoctor.finetune.static import check_settings, training_texts

    say = progress or (lambda _m: None)
    check_settings(learning_rate, layers=(layers, 1), epochs=(epochs, 1),
                   batch_size=(batch_size, 2), max_texts=(max_texts, 20))
    output = check_output(output, LAYERS, force)
    st, resolved = _load_sentence_transformer(teacher, "cpu", "a layer-pruned student is cut from")
    total = int(st[0].auto_model.config.num_hidden_layers)
    keep = kept_layers(total, layers)
    train = training_texts(texts, max_texts, seed)
    if len(train) < 20:
        raise InputError(f"the corpus gives {len(train)} texts to train on; a student needs at "
                         "least 20 (documents and their sentences)")
    enc = Encoder(teacher)
    say(f"teacher: {len(train)} texts; keeping layers {keep} of {total}")
    started = time.perf_counter()
    targets = torch.from_numpy(enc.encode(train))  # no prefixes: the student is trained without
    seconds_teacher = time.perf_counter() - started
    prune_layers(st[0].auto_model, keep)
    st.max_seq_length = enc.max_length
    order = np.random.default_rng(seed).permutation(len(train))
    n_held = max(10, int(len(order) * HELD_OUT))
    held, fit = order[:n_held], order[n_held:]
    started = time.perf_counter()
    plan = _Plan(epochs, batch_size, float(learning_rate), patience, seed)
    state, before, best, best_epoch, epoch = _train(st, train, targets, fit, held, plan, say)
    seconds_training = time.perf_counter() - started
    st.load_state_dict(state)
    st.eval()
    meta = {
        **header("LayerStudent", FORMAT_VERSION),
        "teacher": enc.model_id,
        "teacher_fingerprint": enc.model_fingerprint,
        "teacher_layers": total,
        "layers_kept": keep,
        "fitted_on": {"texts": len(train), "held_out": len(held), "epochs": epochs,
                      "epochs_run": epoch, "best_epoch": best_epoch,
                      "cosine_to_teacher": round(best, 4),
                      "cosine_before_training": round(before, 4)},
    }
    with atomic_dir(output) as tmp:
        st.save(str(tmp))
        record_max_length(tmp, enc.max_length)
        write_json(tmp / STUDENT_FILE, meta)
    logger.info("layer-pruned student of %s written to %s", resolved.id, output)
    return LayersReport(enc.model_id, str(output), keep, total, len(train), len(held), epoch,
                        best_epoch, before, best, seconds_teacher, seconds_training)
