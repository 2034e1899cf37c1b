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
    source = config.source
    if source in (NegativeSource.MODEL, NegativeSource.BOTH) and encoder is None:
        raise InputError(
            f"negative source {source!s} needs an encoder; pass encoder=Encoder(model)"
        )
    picker = _Picker(corpus, pairs, config)
    rankings = _candidate_rankings(list(picker.positives), picker.contents, config, encoder)
    rng = random.Random(config.seed)
    out = [p.with_negatives(picker.negatives(p, rankings[p.anchor], rng)) for p in pairs]
    logger.info(
        "mined %d negatives per pair for %d pairs (%s); skipped %d candidates that were "
        "positives or near-duplicates of one",
        config.count, len(out), source, picker.dropped,
    )
    return out


def _candidate_rankings(
    anchors: list[str], contents: list[str], config: MiningConfig, encoder: Any
) -> dict[str, list[int]]:
    """Per anchor, corpus rows best first: BM25, dense, or both interleaved."""
    source = config.source
    rankings: dict[str, list[int]] = {a: [] for a in anchors}
    if not config.count or source is NegativeSource.NONE:
        return rankings
    depth = min(config.depth, len(contents))
    lexical = dense = None
    if source in (NegativeSource.BM25, NegativeSource.BOTH):
        lexical = _rankings(anchors, contents, depth)
    if source in (NegativeSource.MODEL, NegativeSource.BOTH):
        dense = _rankings(anchors, contents, depth, encoder)
    for i, a in enumerate(anchors):
        if lexical is not None and dense is not None:
            rankings[a] = _interleave(lexical[i], dense[i])
        else:
            rankings[a] = (lexical or dense or [[]] * len(anchors))[i]
    return rankings


class _Picker:
    """Chooses each pair's negatives among ranked corpus rows, never a positive of its anchor
    (by id or text) nor a near-duplicate of one (word Jaccard above ``max_overlap``)."""

    def __init__(self, corpus: Sequence[Document], pairs: Sequence[Pair], config: MiningConfig) -> None:
        self.contents = [d.content for d in corpus]
        self.ids = [d.id for d in corpus]
        self.config = config
        self.positives: dict[str, tuple[set[str], set[str]]] = {}
        for p in pairs:
            pos_ids, pos_texts = self.positives.setdefault(p.anchor, (set(), set()))
            pos_texts.add(p.positive)
            if p.positive_id is not None:
                pos_ids.add(p.positive_id)
        self._words: dict[str, frozenset[str]] = {}
        self.dropped = 0

    def words(self, text: str) -> frozenset[str]:
        if text not in self._words:
            self._words[text] = _words(text)
        return self._words[text]

    def allowed(self, row: int, anchor: str, taken: list[str]) -> bool:
        pos_ids, pos_texts = self.positives[anchor]
        text = self.contents[row]
        if self.ids[row] in pos_ids or text in pos_texts or text in taken:
            return False
        limit = self.config.max_overlap
        return all(_jaccard(self.words(text), self.words(t)) <= limit for t in pos_texts)

    def negatives(self, pair: Pair, ranking: list[int], rng: random.Random) -> list[str]:
        """The pair's own negatives, then mined ones (past ``skip_top``), then random rows."""
        count = self.config.count
        taken = [n for n in pair.negatives if n not in self.positives[pair.anchor][1]][:count]
        ranked = [r for r in ranking if self.allowed(r, pair.anchor, [])]
        self.dropped += len(ranking) - len(ranked)
        for row in ranked[self.config.skip_top :]:
            if len(taken) >= count:
                break
            if self.contents[row] not in taken:
                taken.append(self.contents[row])
        tries = 0
        while len(taken) < count and tries < 50 * count:
            tries += 1
            row = rng.randrange(len(self.contents))
            if self.allowed(row, pair.anchor, taken):
                taken.append(self.contents[row])
        if len(taken) < count:
            raise InputError(
                f"could not find {count} negatives for anchor {pair.anchor[:60]!r}: the corpus "
                f"has too few documents that are not its positives; lower the negative count"
            )
        return taken
