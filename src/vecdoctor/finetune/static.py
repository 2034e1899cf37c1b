"""Distil a static student from a teacher, fitted on the user's corpus.

1. **Token vectors from the teacher**: every token of the teacher's vocabulary is run through
   the teacher alone (with its special tokens) and pooled as the teacher pools, the way
   model2vec distils (Tulkens & van Dongen, 2024).
2. **Weights from the corpus**: each token vector is scaled by a / (a + p), p its frequency in
   the corpus (smooth inverse frequency, Arora et al., 2017), so frequent words count less.
3. **The corpus' own words** (``vocabulary="corpus"``, WordPiece teachers): every word of the
   corpus that the teacher splits into pieces and that occurs at least ``min_count`` times gets
   a token of its own, its row starting as the sum of its pieces' rows (so before fitting the
   student encodes every text as it would without the word). Fitting then gives domain terms
   vectors of their own. Words distilled one by one through the teacher, out of context,
   measured worse than the teacher's vocabulary; words fitted in context measure better.
4. **Fitted on the corpus**: the token table is trained so that the mean of a text's token
   vectors points where the teacher's vector of that text points (cosine loss over the corpus'
   documents and their sentences; tokenlearn fits a static model to a teacher's sentence
   vectors the same way), and so that the cosines between the texts of a batch match the
   teacher's (relational distillation, Park et al., 2019: retrieval ranks by those cosines).
   A held-out share of the texts measures the cosine to the teacher before and after; the
   epoch with the best held-out cosine is kept, and fitting stops after ``patience`` epochs
   without a better one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError
from vecdoctor.io import atomic_dir, save_npy, write_json
from vecdoctor.persist import STATIC, check_output, header

logger = logging.getLogger(__name__)

SIF_A = 1e-3
HELD_OUT = 0.05
RELATION = 10.0  # weight of the in-batch cosine term beside the cosine to the teacher
MAX_WORDS = 50_000  # corpus words added at most (the most frequent first)
VOCABULARIES = ("corpus", "teacher")


@dataclass
class StaticReport:
    """What ``vecdoctor distill`` did and measured."""

    teacher: str
    student: str
    vocabulary: int
    dimension: int
    texts: int
    held_out: int
    epochs: int
    best_epoch: int
    cosine_to_teacher_before: float  # held-out texts, token vectors as distilled and weighted
    cosine_to_teacher_after: float
    seconds_teacher: float
    seconds_training: float
    words_added: int = 0  # corpus words given a token of their own

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def training_texts(texts: Sequence[str], max_texts: int, seed: int = 0) -> list[str]:
    """The corpus' documents and their sentences (>= 4 words), without repeats, at most
    ``max_texts`` of them (a seeded sample, documents first in line)."""
    from vecdoctor.data import split_sentences

    docs = [t for t in texts if t.strip()]
    sentences = [s for t in docs for s in split_sentences(t) if len(s.split()) >= 4]
    pool = list(dict.fromkeys([*docs, *sentences]))
    if len(pool) <= max_texts:
        return pool
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(pool), size=max_texts, replace=False))
    return [pool[i] for i in keep]


def token_table(teacher: Any, batch: int = 512) -> np.ndarray:
    """Every vocabulary token through the teacher alone, pooled as the teacher pools."""
    from vecdoctor.encode.pooling import pool
    from vecdoctor.encode.tokens import TokenSeq

    tok = teacher._tok
    probe = tok.tokenizer.encode("")
    lead, trail = probe.ids[: tok.n_lead], probe.ids[tok.n_lead :]
    vocab = tok.tokenizer.get_vocab_size()
    out = np.zeros((vocab, teacher.dimension), dtype=np.float32)
    for start in range(0, vocab, batch):
        ids = range(start, min(start + batch, vocab))
        seqs = [TokenSeq(np.array([*lead, i, *trail], dtype=np.int64),
                         np.array([-1] * len(lead) + [0] + [-1] * len(trail), dtype=np.int32),
                         np.array([1] * len(lead) + [0] + [1] * len(trail), dtype=np.int8), 0)
                for i in ids]
        b = tok.pad(seqs)
        result = teacher.backend.forward(b.input_ids, b.attention_mask)
        out[start : start + len(seqs)] = pool(teacher.pooling, result.states, b.attention_mask,
                                              word_ids=b.word_ids, special=b.special)
    return out


def corpus_words(tokenizer: Any, texts: Sequence[str], min_count: int,
                 limit: int = MAX_WORDS) -> list[tuple[str, list[int]]]:
    """Words of ``texts`` (as the tokenizer normalises and splits them) that it cuts into two or
    more pieces and that occur at least ``min_count`` times: (word, its pieces' ids), the most
    frequent first, at most ``limit``."""
    from collections import Counter

    counts: Counter[str] = Counter()
    normalize, split = tokenizer.normalizer, tokenizer.pre_tokenizer
    for text in texts:
        counts.update(w for w, _ in split.pre_tokenize_str(normalize.normalize_str(text)))
    vocab = tokenizer.get_vocab()
    words: list[tuple[str, list[int]]] = []
    for word, n in counts.most_common():
        if n < min_count or len(words) >= limit:
            break
        if word in vocab:
            continue
        pieces = [t.id for t in tokenizer.model.tokenize(word)]
        if len(pieces) > 1:
            words.append((word, pieces))
    return words


def with_words(tokenizer_file: Path, words: Sequence[str]) -> str:
    """The teacher's tokenizer (JSON) with ``words`` appended to its WordPiece vocabulary."""
    config = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    vocab = config["model"]["vocab"]
    start = max(vocab.values()) + 1
    for i, word in enumerate(words):
        vocab[word] = start + i
    return json.dumps(config, ensure_ascii=False)


def _add_words(enc: Any, texts: Sequence[str], table: np.ndarray, min_count: int,
               say: Callable[[str], None]) -> tuple[Any, str | None, np.ndarray, int]:
    """The tokenizer, its JSON (``None``: the teacher's file), the (weighted) table with a row
    per added corpus word (the sum of its pieces' rows) and the number of words added."""
    from tokenizers import Tokenizer

    tokenizer = enc.tokenizer
    if type(tokenizer.model).__name__ != "WordPiece" or tokenizer.pre_tokenizer is None:
        say(f"the teacher's tokenizer is {type(tokenizer.model).__name__}, not WordPiece: "
            "the student keeps the teacher's vocabulary")
        return tokenizer, None, table, 0
    words = corpus_words(tokenizer, texts, min_count)
    if not words:
        return tokenizer, None, table, 0
    text = with_words(enc.resolved.tokenizer_path, [w for w, _ in words])
    extended = Tokenizer.from_str(text)
    extended.no_truncation()
    extended.no_padding()
    rows = np.stack([table[pieces].sum(axis=0) for _, pieces in words]).astype(np.float32)
    say(f"vocabulary: {len(words)} corpus words seen >= {min_count} times get a token of their own")
    return extended, text, np.concatenate([table, rows]), len(words)


def _bags(tokenizer: Any, texts: Sequence[str], limit: int) -> list[np.ndarray]:
    """Token ids of each text without special tokens, cut at ``limit`` (what the teacher read)."""
    encoded = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids[:limit], dtype=np.int64) for e in encoded]


def _batch(bags: list[np.ndarray], rows: np.ndarray) -> tuple[Any, Any]:
    import torch

    chosen = [bags[i] for i in rows]
    lengths = np.array([len(b) for b in chosen], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(chosen) if len(chosen) else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(flat), torch.from_numpy(offsets)


def _cosine(table: Any, bags: list[np.ndarray], targets: Any, rows: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        flat, offsets = _batch(bags, rows)
        pred = torch.nn.functional.embedding_bag(flat, table, offsets, mode="mean")
        return float(torch.nn.functional.cosine_similarity(pred, targets[rows]).mean())


def _loss(pred: Any, target: Any, relation: float) -> Any:
    """1 - cosine to the teacher, plus ``relation`` x the mean squared difference between the
    student's and the teacher's cosines of every two texts of the batch."""
    import torch

    nn = torch.nn.functional
    p, t = nn.normalize(pred, dim=1), nn.normalize(target, dim=1)
    pointwise = (1 - (p * t).sum(dim=1)).mean()
    if not relation:
        return pointwise
    return pointwise + relation * ((p @ p.T - t @ t.T) ** 2).mean()


def _fit(table: np.ndarray, bags: list[np.ndarray], targets: Any, fit: np.ndarray,
         held: np.ndarray, epochs: int, batch_size: int, learning_rate: float, patience: int,
         seed: int, relation: float, say: Callable[[str], None]
         ) -> tuple[np.ndarray, float, float, int, int]:
    """Fit the token table (:func:`_loss`, Adam); returns the table of the epoch with the best
    held-out cosine, the held-out cosine before and at that epoch, that epoch and the epochs
    run."""
    import torch

    weight = torch.nn.Parameter(torch.from_numpy(table.copy()))
    before = _cosine(weight.detach(), bags, targets, held)
    best, best_epoch, best_table = before, 0, table.copy()
    optimizer = torch.optim.Adam([weight], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    epoch = 0
    for epoch in range(1, epochs + 1):
        perm = fit[torch.randperm(len(fit), generator=generator).numpy()]
        for start in range(0, len(perm), batch_size):
            rows = perm[start : start + batch_size]
            flat, offsets = _batch(bags, rows)
            pred = torch.nn.functional.embedding_bag(flat, weight, offsets, mode="mean")
            loss = _loss(pred, targets[rows], relation)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = _cosine(weight.detach(), bags, targets, held)
        say(f"epoch {epoch}: held-out cosine to the teacher {score:.4f}")
        if score > best:
            best, best_epoch, best_table = score, epoch, weight.detach().numpy().copy()
        elif epoch - best_epoch >= patience:
            say(f"no better held-out cosine for {patience} epochs: stop, keep epoch {best_epoch}")
            break
    return best_table, before, best, best_epoch, epoch


def check_settings(learning_rate: float, **numbers: tuple[int, int]) -> None:
    """Refuse a learning rate outside (0, 1) and any ``name=(value, lowest)`` that is not a
    whole number at or above its lowest."""
    for name, (number, low) in numbers.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < low:
            raise InputError(f"{name} must be a whole number >= {low}, got {number!r}")
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < 1):
        raise InputError(f"learning_rate must be in (0, 1), got {learning_rate!r}")


def _weighted_table(enc: Any, texts: Sequence[str], train: Sequence[str], vocabulary: str,
                    min_count: int, say: Callable[[str], None]
                    ) -> tuple[np.ndarray, list[np.ndarray], str | None, int]:
    """The SIF-weighted token table (with the corpus' words when asked), the training texts'
    token bags under its tokenizer, that tokenizer's JSON (``None``: the teacher's file) and the
    number of words added."""
    table = token_table(enc)
    budget = enc.max_length - enc._tok.n_lead - enc._tok.n_trail
    bags = _bags(enc.tokenizer, train, budget)
    counts = np.bincount(np.concatenate(bags), minlength=len(table)).astype(np.float64)
    table *= (SIF_A / (SIF_A + counts / max(counts.sum(), 1.0)))[:, None].astype(np.float32)
    if vocabulary == "teacher":
        return table, bags, None, 0
    tokenizer, text, table, added = _add_words(enc, texts, table, min_count, say)
    if added:
        bags = _bags(tokenizer, train, budget)
    return table, bags, text, added


def _check_arguments(learning_rate: float, epochs: int, batch_size: int, max_texts: int,
                     min_count: int, relation: float, vocabulary: str) -> None:
    check_settings(learning_rate, epochs=(epochs, 1), batch_size=(batch_size, 1),
                   max_texts=(max_texts, 20), min_count=(min_count, 1))
    if not (isinstance(relation, (int, float)) and 0 <= relation < 1e3):
        raise InputError(f"relation must be a number in [0, 1000), got {relation!r}")
    if vocabulary not in VOCABULARIES:
        raise InputError(f"vocabulary must be one of {', '.join(VOCABULARIES)}, got {vocabulary!r}")


def _write_student(output: Path, table: np.ndarray, tokenizer_json: str | None,
                   teacher_tokenizer: Any, meta: dict[str, Any]) -> None:
    """The student folder, written whole or not at all."""
    from vecdoctor.encode.runtime.static import EMBEDDINGS
    from vecdoctor.models import STATIC_FILE, TOKENIZER

    with atomic_dir(output) as tmp:
        save_npy(tmp / EMBEDDINGS, np.ascontiguousarray(table, dtype=np.float32))
        if tokenizer_json is None:
            shutil.copyfile(str(teacher_tokenizer), tmp / TOKENIZER)
        else:
            (tmp / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        write_json(tmp / STATIC_FILE, meta)


def distill_static(
    teacher: Any,
    texts: Sequence[str],
    output: str | Path,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    learning_rate: float = 1e-2,
    patience: int = 3,
    max_texts: int = 30_000,
    vocabulary: str = "corpus",
    min_count: int = 5,
    relation: float = RELATION,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> StaticReport:
    """Distil ``teacher`` (an :class:`~vecdoctor.encode.encoder.Encoder` or a model name) into
    a static student fitted on ``texts`` and write it to ``output`` (atomically; an existing
    folder is replaced only when it holds a static student, or with ``force``).

    ``vocabulary``: ``corpus`` gives the corpus' words split by the teacher and seen at least
    ``min_count`` times a token of their own (WordPiece teachers); ``teacher`` keeps the
    teacher's tokens only. ``relation`` weighs the in-batch cosine term (0: the cosine to the
    teacher alone)."""
    import torch

    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.models import STATIC_FORMAT_VERSION as FORMAT_VERSION

    say = progress or (lambda _m: None)
    _check_arguments(learning_rate, epochs, batch_size, max_texts, min_count, relation, vocabulary)
    output = check_output(output, STATIC, force)
    enc = Encoder(teacher) if isinstance(teacher, str) else teacher
    if enc.tokenizer is None:
        raise InputError(
            f"teacher {enc.model_id!r} returns pooled vectors only; a static student is distilled "
            "from a model with token states (e.g. minilm)")
    train = training_texts(texts, max_texts, seed)
    if len(train) < 20:
        raise InputError(f"the corpus gives {len(train)} texts to fit on; a static student needs at "
                         "least 20 (documents and their sentences)")
    say(f"teacher: {len(train)} texts")
    started = time.perf_counter()
    targets = torch.from_numpy(enc.encode_documents(train))
    table, bags, tokenizer_json, added = _weighted_table(enc, texts, train, vocabulary, min_count, say)
    seconds_teacher = time.perf_counter() - started
    usable = np.array([len(b) > 0 for b in bags])
    order = np.random.default_rng(seed).permutation(np.flatnonzero(usable))
    n_held = max(10, int(len(order) * HELD_OUT))
    held, fit = order[:n_held], order[n_held:]
    started = time.perf_counter()
    fitted = _fit(table, bags, targets, fit, held, epochs, batch_size, learning_rate, patience,
                  seed, relation, say)
    seconds_training = time.perf_counter() - started
    best_table, before, best, best_epoch, epoch = fitted
    meta = {
        **header("StaticModel", FORMAT_VERSION),
        "teacher": enc.model_id,
        "teacher_fingerprint": enc.fingerprint,
        "dimension": int(best_table.shape[1]),
        "vocabulary": int(best_table.shape[0]),
        "fitted_on": {"texts": len(train), "held_out": len(held), "epochs": epochs,
                      "epochs_run": epoch, "best_epoch": best_epoch,
                      "cosine_to_teacher": round(best, 4),
                      "cosine_before_fitting": round(before, 4),
                      "vocabulary": vocabulary, "min_count": min_count, "words_added": added,
                      "relation": relation},
    }
    _write_student(output, best_table, tokenizer_json, enc.resolved.tokenizer_path, meta)
    return StaticReport(enc.model_id, str(output), len(best_table), int(best_table.shape[1]),
                        len(train), len(held), epochs, best_epoch, before, best,
                        seconds_teacher, seconds_training, added)
