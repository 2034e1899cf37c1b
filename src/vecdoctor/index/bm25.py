"""Lexical retrieval: BM25 (Robertson et al., 1994; Lucene variant) over bm25s sparse scores.

Texts are lower-cased, split like scikit-learn's CountVectorizer (words of two or more
characters), English stopwords removed, then stemmed with the Snowball English stemmer
(PyStemmer). The same function tokenizes documents and queries.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import IncompatibleError, InputError
from vecdoctor.folders import child as safe_child
from vecdoctor.folders import read_json
from vecdoctor.io import load_npy, save_npy, write_json
from vecdoctor.persist import header, read_header

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_FILES = ("data.npy", "indices.npy", "indptr.npy")


@dataclass(frozen=True)
class BM25Config:
    """BM25 hyperparameters (bm25s defaults) and text processing."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if not self.k1 > 0:
            raise InputError(f"BM25 k1 must be > 0, got {self.k1!r}")
        if not 0 <= self.b <= 1:
            raise InputError(f"BM25 b must be between 0 and 1, got {self.b!r}")
        if self.method not in {"lucene", "robertson", "atire"}:
            raise InputError(
                f"unknown BM25 method {self.method!r}; valid values: lucene, robertson, atire"
            )
        if self.stopwords not in {None, "en"}:
            raise InputError(f"unknown stopword list {self.stopwords!r}; valid values: en, None")


class Tokenizer:
    """Lower-case, split, drop stopwords, stem. Thread-safe (one stemmer per thread)."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        self.stemmer_name = stemmer
        if stopwords == "en":
            from bm25s.stopwords import STOPWORDS_EN

            self.stopwords = frozenset(STOPWORDS_EN)
        else:
            self.stopwords = frozenset()
        self._local = threading.local()
        if stemmer is not None:
            self._stemmer()  # fail early on an unknown language

    def _stemmer(self) -> Any:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            try:
                stemmer = Stemmer.Stemmer(self.stemmer_name)
            except KeyError:
                valid = ", ".join(Stemmer.algorithms())
                raise InputError(
                    f"unknown stemmer {self.stemmer_name!r}; valid values: {valid}"
                ) from None
            self._local.stemmer = stemmer
        return stemmer

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self.stopwords]
        if self.stemmer_name is None or not words:
            return words
        return list(self._stemmer().stemWords(words))


class BM25Index:
    """A BM25 index over a fixed list of texts; rows are positions in that list."""

    def __init__(self, config: BM25Config | None = None) -> None:
        self.config = config or BM25Config()
        self.tokenizer = Tokenizer(self.config.stemmer, self.config.stopwords)
        self.retriever_: Any = None

    @property
    def num_docs(self) -> int:
        return 0 if self.retriever_ is None else int(self.retriever_.scores["num_docs"])

    def build(self, texts: Sequence[str]) -> BM25Index:
        """Tokenize and index ``texts``; returns self."""
        import bm25s

        if not texts:
            raise InputError("cannot build a BM25 index over an empty corpus")
        from vecdoctor.encode.tokens import clip

        texts = clip(texts)  # a huge document is read up to MAX_TEXT_CHARS, as the encoder does
        # token ids as each text is tokenized: the token strings of the whole corpus are never
        # held at once (at 1M passages they took 3.8 GiB), and the vocabulary is numbered in
        # order of first occurrence, so the same corpus always gives the same index files
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in self.tokenizer(text)] for text in texts]
        retriever = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        retriever.index((ids, vocab), show_progress=False)
        self.retriever_ = retriever
        return self

    def _require_built(self) -> Any:
        if self.retriever_ is None:
            raise InputError("the BM25 index is empty; call build(texts) or load(dir) first")
        return self.retriever_

    def token_ids(self, tokens: Sequence[str]) -> np.ndarray:
        vocab = self._require_built().vocab_dict
        ids = [vocab[t] for t in tokens if t and t in vocab]
        return np.asarray(ids, dtype=np.int32)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (all zeros when no term matches)."""
        retriever = self._require_built()
        ids = self.token_ids(self.tokenizer(query))
        if ids.size == 0:
            return np.zeros(self.num_docs, dtype=np.float32)
        return retriever.get_scores_from_ids(ids)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and scores, best first; documents with score 0 are not returned."""
        from vecdoctor.index.dense import top_k

        scores = self.scores(query)
        rows, values = top_k(scores, k)
        keep = values > 0
        return rows[keep], values[keep]

    def save(self, folder: Path) -> None:
        """Write the sparse score matrix as .npy and the vocabulary/config as JSON."""
        retriever = self._require_built()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scores = retriever.scores
        save_npy(folder / "data.npy", np.asarray(scores["data"]))
        save_npy(folder / "indices.npy", np.asarray(scores["indices"]))
        save_npy(folder / "indptr.npy", np.asarray(scores["indptr"]))
        vocab = {str(k): int(v) for k, v in retriever.vocab_dict.items()}
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        import bm25s

        write_json(
            folder / "config.json",
            {
                **header("BM25Index", 1),
                "config": asdict(self.config),
                "num_docs": self.num_docs,
                "vocab_size": len(vocab),
                "bm25s_version": bm25s.__version__,
            },
        )

    @classmethod
    def load(cls, folder: Path, mmap: bool = False) -> BM25Index:
        """Load a folder written by :meth:`save`; missing or truncated files are clear errors."""
        import bm25s

        folder = Path(folder)
        meta = read_json(safe_child(folder, "config.json"))
        if isinstance(meta, dict) and meta.get("class") == "BM25Index":
            read_header(meta, "BM25Index", 1, folder / "config.json")
        if not isinstance(meta, dict) or meta.get("class") != "BM25Index":
            got = meta.get("class") if isinstance(meta, dict) else type(meta).__name__
            raise IncompatibleError(f"{folder}: not a BM25 index folder (class {got!r})")
        try:
            settings = meta["config"]
            if not isinstance(settings, dict):
                raise TypeError(f"'config' is {type(settings).__name__}, expected an object")
            config = BM25Config(**settings)
            if not (config.stemmer is None or isinstance(config.stemmer, str)):
                raise TypeError(f"stemmer {config.stemmer!r} is not a name")
            num_docs = meta["num_docs"]
            if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs < 0:
                raise TypeError(f"num_docs {num_docs!r} is not a count")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(
                f"{folder / 'config.json'}: missing or bad entry ({exc}); rebuild the index"
            ) from None
        index = cls(config)
        arrays = {name: load_npy(safe_child(folder, name), mmap=mmap) for name in _FILES}
        vocab_path = safe_child(folder, "vocab.json")
        vocab = read_json(vocab_path)
        if not isinstance(vocab, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()
        ):
            raise InputError(f"{vocab_path}: expected an object of term -> id; rebuild the index")
        indptr = arrays["indptr.npy"]
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.dtype.kind not in "iuf":
                raise InputError(
                    f"{folder / name}: expected a 1-d numeric array, got {arr.dtype} "
                    f"{arr.shape}; the index is corrupt, rebuild it"
                )
        data, indices = arrays["data.npy"], arrays["indices.npy"]
        if (
            len(indices) != len(data)
            or len(indptr) == 0
            or int(indptr[0]) != 0
            or bool(np.any(np.diff(indptr) < 0))
            or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_docs))
            or not bool(np.isfinite(data).all())
        ):
            raise InputError(
                f"{folder}: BM25 arrays are inconsistent (offsets, document rows or scores out "
                "of range); the index is corrupt, rebuild it"
            )
        terms = sum(1 for t in vocab if t)  # bm25s adds "" for queries without known terms
        if len(indptr) != terms + 1 or int(indptr[-1]) != len(arrays["data.npy"]):
            raise InputError(
                f"{folder}: BM25 arrays do not match the vocabulary ({len(indptr) - 1} columns for "
                f"{terms} terms); the index is corrupt, rebuild it"
            )
        ids = [i for t, i in vocab.items() if t]
        if any(not 0 <= i < terms for i in ids) or len(set(ids)) != len(ids):
            raise InputError(
                f"{vocab_path}: term ids must be distinct and between 0 and {terms - 1}; "
                "the index is corrupt, rebuild it"
            )
        retriever = bm25s.BM25(k1=index.config.k1, b=index.config.b, method=index.config.method)
        retriever.scores = {
            "data": arrays["data.npy"],
            "indices": arrays["indices.npy"],
            "indptr": indptr,
            "num_docs": num_docs,
        }
        retriever.vocab_dict = vocab
        retriever.unique_token_ids_set = set(vocab.values())
        retriever.nonoccurrence_array = None  # only BM25L/BM25+ use it
        index.retriever_ = retriever
        return index
