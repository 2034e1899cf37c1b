"""Vocabulary fragmentation: domain words the tokenizer splits into meaningless sub-tokens.

Fertility (sub-tokens per word) as in Rust et al. 2021, "How Good is Your Tokenizer? On the
Monolingual Performance of Multilingual Language Models" (ACL), Sec. 4.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vecdoctor.diagnose._common import Threshold, Verdict
from vecdoctor.errors import InputError

FERTILITY = Threshold("sub-tokens per word", warn=1.3, fail=1.6)

# Runs of letters and digits that contain at least one letter; hyphens and other
# punctuation separate words (the tokenizer would split there anyway).
_WORD = re.compile(r"[^\W_]*[^\W\d_][^\W_]*")

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves however thus may might must shall within without via et al""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class FragmentedTerm:
    """A corpus word, how often it occurs, and the pieces the tokenizer cuts it into."""

    word: str
    count: int
    pieces: tuple[str, ...]


@dataclass(frozen=True)
class VocabularyResult:
    """Check 4: fertility over the corpus and the most frequent, most fragmented words."""

    n_texts: int
    n_words: int
    n_unique: int
    fertility: float
    fragmented_share: float
    """Share of word occurrences (stopwords included) cut into at least ``min_pieces`` pieces."""
    min_pieces: int
    terms: tuple[FragmentedTerm, ...]
    verdict: Verdict
    threshold: Threshold
    recommendation: str

    @property
    def value(self) -> float:
        return self.fertility


def words(text: str) -> list[str]:
    """The words of ``text`` as the fragmentation check sees them."""
    return _WORD.findall(text)


def _pieces(tokenizer: Any, vocab: list[str]) -> list[list[str]]:
    """Sub-tokens of each word; padding (some tokenizer.json files enable it) is dropped."""

    def real(encoding: Any) -> list[str]:
        mask = getattr(encoding, "attention_mask", None) or [1] * len(encoding.tokens)
        return [t for t, m in zip(encoding.tokens, mask, strict=False) if m]

    if hasattr(tokenizer, "encode_batch"):
        return [real(e) for e in tokenizer.encode_batch(vocab, add_special_tokens=False)]
    if hasattr(tokenizer, "encode"):
        return [real(tokenizer.encode(w, add_special_tokens=False)) for w in vocab]
    raise TypeError(
        f"tokenizer must be a tokenizers.Tokenizer (got {type(tokenizer).__name__}); "
        "pass encoder.tokenizer"
    )


def check_vocabulary(
    texts: Iterable[str],
    tokenizer: Any,
    top: int = 20,
    min_pieces: int = 3,
    min_count: int = 2,
    threshold: Threshold = FERTILITY,
) -> VocabularyResult:
    """Count sub-tokens per word and rank fragmented words by count x (pieces - 1)."""
    counts: Counter[str] = Counter()
    n_texts = 0
    for text in texts:
        counts.update(words(text))
        n_texts += 1
    if not counts:
        raise InputError("the corpus has no words to tokenize (all texts empty or non-alphabetic)")
    vocab = sorted(counts)
    split = dict(zip(vocab, _pieces(tokenizer, vocab), strict=True))
    n_words = sum(counts.values())
    n_tokens = sum(counts[w] * max(len(split[w]), 1) for w in vocab)
    fragmented = sum(counts[w] for w in vocab if len(split[w]) >= min_pieces)
    candidates = [
        w for w in vocab
        if len(split[w]) >= min_pieces and counts[w] >= min_count and w.lower() not in STOPWORDS
    ]
    candidates.sort(key=lambda w: (-counts[w] * (len(split[w]) - 1), -len(split[w]), w))
    terms = tuple(FragmentedTerm(w, counts[w], tuple(split[w])) for w in candidates[:top])
    fertility = n_tokens / n_words
    verdict = threshold.grade(fertility)
    examples = ", ".join(f"{t.word} -> {' '.join(t.pieces)}" for t in terms[:3])
    if verdict is Verdict.OK:
        rec = f"The tokenizer covers this vocabulary well ({fertility:.2f} sub-tokens per word)."
        if examples:
            rec += f" Most fragmented frequent terms: {examples}."
    else:
        rec = (
            f"Domain words are split into many pieces ({fertility:.2f} sub-tokens per word, "
            f"e.g. {examples or 'see the table'}): use hybrid search (BM25 keeps exact terms) and "
            "consider fine-tuning on pairs from this corpus."
        )
    return VocabularyResult(
        n_texts=n_texts,
        n_words=n_words,
        n_unique=len(vocab),
        fertility=float(fertility),
        fragmented_share=float(fragmented / n_words),
        min_pieces=min_pieces,
        terms=terms,
        verdict=verdict,
        threshold=threshold,
        recommendation=rec,
    )
