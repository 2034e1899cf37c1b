"""Fast tokenization, truncation and sliding token windows.

Windows are cut over tokens, never whitespace words: a text longer than the model's max length
becomes overlapping windows of content tokens, each wrapped in the model's special tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vecdoctor.config import MAX_TEXT_CHARS, Window
from vecdoctor.errors import ModelNotAvailableError
from vecdoctor.folders import library_errors

HEAD_CHARS_PER_TOKEN = 64
"""Without windows only a text's first ``max_length`` tokens are read, and no token of a fast
tokenizer spans more characters than this: the rest of the text is never tokenized."""

logger = logging.getLogger(__name__)


def clip(texts: Sequence[str], limit: int = MAX_TEXT_CHARS) -> list[str]:
    """``texts`` with each cut to ``limit`` characters; the count of cut ones is logged."""
    long = sum(len(t) > limit for t in texts)
    if not long:
        return list(texts)
    logger.warning("%d text(s) longer than %s characters were read up to that point",
                   long, f"{limit:,}")
    return [t[:limit] for t in texts]


@dataclass(frozen=True)
class TokenSeq:
    """One model input: a whole (possibly truncated) text or one window of it."""

    ids: np.ndarray  # int64 token ids with special tokens
    word_ids: np.ndarray  # int32, -1 for special tokens
    special: np.ndarray  # int8, 1 for special tokens
    owner: int  # index of the text it came from

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray  # (b, L) int64
    attention_mask: np.ndarray  # (b, L) int64
    word_ids: np.ndarray  # (b, L) int32, -1 for special and padding
    special: np.ndarray  # (b, L) int8
    lengths: np.ndarray  # (b,) int


class TextTokenizer:
    """A `tokenizers` fast tokenizer with truncation and padding handled here."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        if path is None or not Path(path).exists():
            raise ModelNotAvailableError(f"tokenizer file not found: {path}")
        with library_errors(path, "a tokenizer", "save the model again with its tokenizer.json"):
            self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = int(max_length)
        probe = self.tokenizer.encode("")
        mask = probe.special_tokens_mask
        self.n_lead = len(mask) // 2 if mask else 0
        self.n_trail = len(mask) - self.n_lead
        pad = self.tokenizer.token_to_id("[PAD]")
        if pad is None:
            pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = int(pad or 0)

    def encode_batch(self, texts: Sequence[str]) -> list:
        return self.tokenizer.encode_batch(list(texts), add_special_tokens=True)

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts including special tokens, before truncation (of each text's first
        :data:`MAX_TEXT_CHARS` characters)."""
        return np.array([len(e.ids) for e in self.encode_batch(clip(texts))], dtype=np.int64)

    def sequences(
        self, texts: Sequence[str], window: Window | None, owners: Sequence[int] | None = None
    ) -> tuple[list[TokenSeq], np.ndarray]:
        """Model inputs for ``texts`` and a per-text flag telling whether tokens were dropped."""
        budget = self.max_length - self.n_lead - self.n_trail
        seqs: list[TokenSeq] = []
        truncated = np.zeros(len(texts), dtype=bool)
        head = self.max_length * HEAD_CHARS_PER_TOKEN
        read = clip(texts) if window is not None else [t[:head] for t in texts]
        for i, enc in enumerate(self.encode_batch(read)):
            owner = owners[i] if owners is not None else i
            ids = np.asarray(enc.ids, dtype=np.int64)
            words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int32)
            special = np.asarray(enc.special_tokens_mask, dtype=np.int8)
            n = len(ids)
            lead, trail = slice(0, self.n_lead), slice(n - self.n_trail, n)
            content = slice(self.n_lead, n - self.n_trail)
            n_content = n - self.n_lead - self.n_trail
            if n_content <= budget:
                seqs.append(TokenSeq(ids, words, special, owner))
                continue
            if window is None:
                truncated[i] = True
                starts = [0]
                size = budget
            else:
                size = min(window.size, budget)
                starts = list(range(0, n_content - size + 1, window.stride))
                if starts[-1] + size < n_content:
                    starts.append(n_content - size)
            c_ids, c_words, c_special = ids[content], words[content], special[content]
            for s in starts:
                part = slice(s, s + size)
                seqs.append(
                    TokenSeq(
                        np.concatenate([ids[lead], c_ids[part], ids[trail]]),
                        np.concatenate([words[lead], c_words[part], words[trail]]),
                        np.concatenate([special[lead], c_special[part], special[trail]]),
                        owner,
                    )
                )
        return seqs, truncated

    def pad(self, seqs: Sequence[TokenSeq]) -> Batch:
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        width = int(lengths.max())
        b = len(seqs)
        input_ids = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        word_ids = np.full((b, width), -1, dtype=np.int32)
        special = np.zeros((b, width), dtype=np.int8)
        for r, s in enumerate(seqs):
            n = len(s)
            input_ids[r, :n] = s.ids
            mask[r, :n] = 1
            word_ids[r, :n] = s.word_ids
            special[r, :n] = s.special
        return Batch(input_ids, mask, word_ids, special, lengths)


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None) -> list[np.ndarray]:
    """Group sequence indices sorted by length (longest first) into batches.

    A batch closes when it holds ``batch_size`` sequences or when its padded size
    (count x longest) would pass ``max_tokens``.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0
    for idx in order:
        n = int(lengths[idx])
        new_longest = max(longest, n)
        too_many = len(current) >= batch_size
        too_big = max_tokens is not None and current and new_longest * (len(current) + 1) > max_tokens
        if current and (too_many or too_big):
            batches.append(np.asarray(current))
            current, new_longest = [], n
        current.append(int(idx))
        longest = new_longest
    if current:
        batches.append(np.asarray(current))
    return batches
