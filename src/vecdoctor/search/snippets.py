"""Snippets: the passage of a hit that best matches the query, instead of its whole text.

A window of about ``width`` characters, cut at word boundaries, is slid over the text; the one
holding the most distinct query words (stemmed as BM25 stems them, stopwords left out) wins,
the earliest on ties, and an opening with no query word at all is the fallback. Cut ends are
marked with an ellipsis; :func:`mark` makes the matched words visible for people.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

WIDTH = 300
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset({"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have",
                   "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this",
                   "to", "was", "what", "when", "where", "which", "who", "why", "with"})


@lru_cache(maxsize=1)
def _stemmer() -> Callable[[str], str]:
    try:
        import Stemmer

        stem = Stemmer.Stemmer("english")
        return lambda w: str(stem.stemWord(w))
    except ImportError:  # pragma: no cover - PyStemmer is a dependency; plain words otherwise
        return lambda w: w


def _terms(query: str) -> set[str]:
    stem = _stemmer()
    return {stem(w) for w in (m.group().lower() for m in _WORD.finditer(query))
            if w not in _STOP and len(w) > 1}


def snippet(text: str, query: str, width: int = WIDTH) -> str:
    """The ``width``-character passage of ``text`` with the most distinct query words (among
    its first :data:`~vecdoctor.encode.tokens.MAX_TEXT_CHARS` characters, what was indexed)."""
    from vecdoctor.encode.tokens import MAX_TEXT_CHARS

    text = " ".join(text[:MAX_TEXT_CHARS].split())
    if len(text) <= width:
        return text
    terms = _terms(query)
    stem = _stemmer()
    words = [(m.start(), m.end(), stem(m.group().lower()) in terms) for m in _WORD.finditer(text)]
    best_start, best_score = 0, -1
    right, seen = 0, 0
    counts: dict[str, int] = {}
    spans = [(s, e, stem(text[s:e].lower()) if hit else "") for s, e, hit in words]
    for left in range(len(spans)):
        start = spans[left][0]
        while right < len(spans) and spans[right][1] - start <= width:
            key = spans[right][2]
            if key:
                counts[key] = counts.get(key, 0) + 1
                seen += counts[key] == 1
            right += 1
        if seen > best_score:
            best_start, best_score = start, seen
        key = spans[left][2]
        if key:
            counts[key] -= 1
            seen -= counts[key] == 0
        if right == len(spans):
            break
    if best_score <= 0:
        best_start = 0
    end = best_start + width
    if end < len(text):
        cut = text.rfind(" ", best_start, end)
        end = cut if cut > best_start else end
    piece = text[best_start:end].strip()
    return ("…" if best_start > 0 else "") + piece + ("…" if end < len(text) else "")


def mark(passage: str, query: str, left: str = "**", right: str = "**") -> str:
    """``passage`` with every query word (as stemmed) wrapped in ``left``/``right``."""
    terms = _terms(query)
    stem = _stemmer()

    def wrap(m: re.Match[str]) -> str:
        word = m.group()
        return f"{left}{word}{right}" if stem(word.lower()) in terms else word

    return _WORD.sub(wrap, passage)
