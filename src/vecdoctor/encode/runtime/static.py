"""Static students: a vector per token, a text's vector the mean of its tokens' vectors.

No transformer runs at encoding time, so a static student encodes thousands of texts a second
on one core. ``vecdoctor distill`` makes one from a teacher (:mod:`vecdoctor.finetune.static`);
its folder holds::

    static_model.json   header, teacher, dimension, vocabulary size, how it was fitted
    embeddings.npy      float32 (vocabulary, dimension): one row per token id
    tokenizer.json      the teacher's tokenizer (the rows are its token ids)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vecdoctor.errors import InputError
from vecdoctor.folders import child, library_errors
from vecdoctor.models import STATIC_FILE, TOKENIZER, read_static_config  # the folder's format

EMBEDDINGS = "embeddings.npy"


class StaticBackend:
    """Text in, mean of its tokens' vectors out (pooled only: no token states, no windows)."""

    name = "static"
    native = True

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        from vecdoctor.io import load_npy

        folder = Path(folder)
        meta = read_static_config(folder)
        table = load_npy(child(folder, EMBEDDINGS), mmap=False)
        shape = (int(meta["vocabulary"]), int(meta["dimension"]))
        if table.dtype != np.float32 or tuple(table.shape) != shape:
            raise InputError(
                f"{folder / EMBEDDINGS}: holds a {table.dtype} array of shape {table.shape}, "
                f"expected float32 {shape} from {STATIC_FILE}; distill the student again"
            )
        if not np.isfinite(table).all():
            raise InputError(f"{folder / EMBEDDINGS}: holds NaN or infinite values; distill the student again")
        with library_errors(folder / TOKENIZER, "a tokenizer", "distill the student again"):
            self.tokenizer = Tokenizer.from_file(str(child(folder, TOKENIZER)))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        if self.tokenizer.get_vocab_size() > shape[0]:
            raise InputError(
                f"{folder}: the tokenizer has {self.tokenizer.get_vocab_size()} tokens but "
                f"{EMBEDDINGS} only {shape[0]} rows; distill the student again"
            )
        self.table = table
        self.hidden_size = shape[1]
        self.meta = meta

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, without special tokens."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """Mean token vector of each text (zeros for a text without tokens): a sparse
        (texts x vocabulary) matrix of token counts times the table, so no token vector is
        copied (gathering them costs 30x more on SciFact)."""
        import scipy.sparse as sp

        ids = self.token_ids(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(lengths.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        counts = sp.csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr),
                               shape=(len(ids), len(self.table)))
        sums = np.asarray(counts @ self.table, dtype=np.float32)
        return sums / np.maximum(lengths, 1)[:, None].astype(np.float32)

    def token_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
