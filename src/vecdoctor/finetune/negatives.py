"""Hard-negative mining with BM25 and/or a dense model, never returning a known positive."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from vecdoctor.data import Document
from vecdoctor.errors import InputError
from vecdoctor.finetune.pairs import Pair
from vecdoctor.finetune.recipes import MiningConfig, NegativeSource

__all__ = ["MiningConfig", "NegativeSource", "mine_negatives"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _rankings(
    anchors: list[str], texts: list[str], depth: int, encoder: Any = None
) -> list[list[int]]:
    """Rows of ``texts`` ranked for each anchor: BM25 without an encoder, dense with one; both
    through the first stage that search uses."""
    from vecdoctor.finetune._retrieval import FirstStage

    stage = FirstStage([Document(str(i), t) for i, t in enumerate(texts)], encoder)
    queries = {str(i): a for i, a in enumerate(anchors)}
    run = stage.dense(queries, depth) if encoder is not None else stage.bm25(queries, depth)
    return [[int(doc) for doc, _ in run[str(i)]] for i in range(len(anchors))]


def _interleave(a: list[int], b: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for pair in zip(a, b, strict=False):
        for row in pair:
            if row not in seen:
                seen.add(row)
                out.append(row)
    for row in a[len(b) :] + b[len(a) :]:
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


def mine_negatives(
    pairs: Sequence[Pair],
    corpus: Sequence[Document] | None = None,
    config: MiningConfig | None = None,
    encoder: Any = None,
) -> list[Pair]:
    """Give every pair exactly ``config.count`` negatives (its own first, then mined ones).

    Every positive of an anchor (the same anchor text in any pair, by corpus id and by text) is
    excluded, as are near-duplicates of those positives. Without a ``corpus`` the candidates are
    the positives and negatives of the pairs themselves. ``encoder`` (a
    :class:`~vecdoctor.encode.encoder.Encoder`) is needed for the ``model`` and ``both`` sources.
    """
    config = config or MiningConfig()
    if not pairs:
        raise InputError("no pairs to mine negatives for")
    if corpus is None:
        texts = list(
            dict.fromkeys([p.positive for p in pairs] + [n for p in pairs for n in p.negatives])
        )
        corpus = [Document(id=f"text-{i}", text=t) for i, t in enumerate(texts)]
    contents = [d.content for d in corpus]
    ids = [d.id for d in corpus]
    source = config.source
    if source in (NegativeSource.MODEL, NegativeSource.BOTH) and encoder is None:
        raise InputError(
            f"negative source {source!s} needs an encoder; pass encoder=Encoder(model)"
        )

    positives: dict[str, tuple[set[str], set[str]]] = {}
    for p in pairs:
        pos_ids, pos_texts = positives.setdefault(p.anchor, (set(), set()))
        pos_texts.add(p.positive)
        if p.positive_id is not None:
            pos_ids.add(p.positive_id)
    anchors = list(positives)
    depth = min(config.depth, len(contents))
    rankings: dict[str, list[int]] = {a: [] for a in anchors}
    if config.count and source is not NegativeSource.NONE:
        lexical = (
            _rankings(anchors, contents, depth)
            if source in (NegativeSource.BM25, NegativeSource.BOTH)
            else None
        )
        dense = (
            _rankings(anchors, contents, depth, encoder)
            if source in (NegativeSource.MODEL, NegativeSource.BOTH)
            else None
        )
        for i, a in enumerate(anchors):
            if lexical is not None and dense is not None:
                rankings[a] = _interleave(lexical[i], dense[i])
            else:
                rankings[a] = (lexical or dense)[i]  # type: ignore[index]

    rng = random.Random(config.seed)
    word_cache: dict[str, frozenset[str]] = {}

    def words(text: str) -> frozenset[str]:
        if text not in word_cache:
            word_cache[text] = _words(text)
        return word_cache[text]

    def allowed(row: int, anchor: str, taken: list[str]) -> bool:
        pos_ids, pos_texts = positives[anchor]
        text = contents[row]
        if ids[row] in pos_ids or text in pos_texts or text in taken:
            return False
        return all(_jaccard(words(text), words(t)) <= config.max_overlap for t in pos_texts)

    dropped = 0
    out = []
    for p in pairs:
        taken = [n for n in p.negatives if n not in positives[p.anchor][1]][: config.count]
        ranked = [r for r in rankings[p.anchor] if allowed(r, p.anchor, [])]
        dropped += len(rankings[p.anchor]) - len(ranked)
        for row in ranked[config.skip_top :]:
            if len(taken) >= config.count:
                break
            if contents[row] not in taken:
                taken.append(contents[row])
        tries = 0
        while len(taken) < config.count and tries < 50 * config.count:
            tries += 1
            row = rng.randrange(len(contents))
            if allowed(row, p.anchor, taken):
                taken.append(contents[row])
        if len(taken) < config.count:
            raise InputError(
                f"could not find {config.count} negatives for anchor {p.anchor[:60]!r}: the corpus "
                f"has too few documents that are not its positives; lower the negative count"
            )
        out.append(p.with_negatives(taken))
    logger.info(
        "mined %d negatives per pair for %d pairs (%s); skipped %d candidates that were "
        "positives or near-duplicates of one",
        config.count,
        len(out),
        source,
        dropped,
    )
    return out
