"""Training pairs for contrastive fine-tuning: from qrels, from a pairs file, or self-supervised."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vecdoctor.data import Dataset, Document, _jsonl, split_sentences
from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One training example: an anchor (query), a text that answers it, and optional negatives.

    ``positive_id`` is the corpus id of the positive when known (qrels); it lets mining exclude
    every judged positive of the anchor, not only the one in this pair.
    """

    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()
    anchor_id: str | None = None
    positive_id: str | None = None

    def with_negatives(self, negatives: Sequence[str]) -> Pair:
        return Pair(self.anchor, self.positive, tuple(negatives), self.anchor_id, self.positive_id)


def pairs_from_qrels(data: Dataset, min_score: int = 1) -> list[Pair]:
    """One pair per judged (query, document) with score >= ``min_score``, in qrels order."""
    if not data.has_labels:
        raise InputError(
            f"dataset {data.name!r} has no queries and qrels for split {data.split!r}; "
            "pass a BEIR folder with qrels/<split>.tsv, a pairs file (--pairs) or --self-supervised"
        )
    by_id = {d.id: d for d in data.corpus}
    pairs = []
    for qid, rels in data.qrels.items():
        for did, score in rels.items():
            if score >= min_score and did in by_id:
                pairs.append(Pair(data.queries[qid], by_id[did].content, (), qid, did))
    if not pairs:
        raise InputError(f"no judgement in split {data.split!r} has a score >= {min_score}")
    return pairs


def _text(obj: dict[str, object], key: str, path: Path, lineno: int) -> str:
    value = obj.get(key)
    if value is None:
        raise InputError(
            f'{path}:{lineno}: missing field {key!r}; each line needs "anchor" and "positive" '
            '(and optionally "negative": a string or a list of strings)'
        )
    if not isinstance(value, str):
        raise InputError(
            f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise InputError(f"{path}:{lineno}: field {key!r} is empty")
    return value


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a JSONL pairs file: ``{"anchor": ..., "positive": ..., "negative": str | [str]}``."""
    path = Path(path)
    pairs = []
    for lineno, obj in _jsonl(path):
        anchor = _text(obj, "anchor", path, lineno)
        positive = _text(obj, "positive", path, lineno)
        raw = obj.get("negative", obj.get("negatives"))
        if raw is None:
            negatives: list[str] = []
        elif isinstance(raw, str):
            negatives = [raw]
        elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            negatives = list(raw)
        else:
            raise InputError(
                f"{path}:{lineno}: field 'negative' must be a string or a list of strings"
            )
        if any(not n.strip() for n in negatives):
            raise InputError(f"{path}:{lineno}: field 'negative' holds an empty text")
        pairs.append(Pair(anchor, positive, tuple(negatives)))
    if not pairs:
        raise InputError(
            f"{path}: holds no pairs; write one JSON object a line with anchor and positive"
        )
    return pairs


def self_supervised_pairs(
    corpus: Sequence[Document],
    max_pairs: int | None = None,
    min_words: int = 6,
    seed: int = 13,
) -> list[Pair]:
    """Pairs without labels: one sentence of a document -> the rest of that document.

    The sentence is cut out of the positive, so the model cannot match it by copying
    (inverse cloze task; Lee, Chang & Toutanova, 2019).
    """
    rng = random.Random(seed)
    pairs = []
    for doc in corpus:
        sentences = split_sentences(doc.text)
        if len(sentences) < 2:
            continue
        choices = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
        if not choices:
            continue
        i = rng.choice(choices)
        rest = " ".join(sentences[:i] + sentences[i + 1 :])
        positive = f"{doc.title}. {rest}" if doc.title else rest
        pairs.append(Pair(sentences[i], positive, (), None, doc.id))
    if not pairs:
        raise InputError(
            "no self-supervised pairs: documents need at least two sentences, one of them "
            f"with >= {min_words} words"
        )
    rng.shuffle(pairs)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    logger.info("built %d self-supervised pairs from %d documents", len(pairs), len(corpus))
    return pairs
