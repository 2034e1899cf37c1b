"""Child process for the kill -9 tests: writes successive generations and acknowledges each.

    python crash_worker.py index FOLDER PRECISION   # Index.load/add/save, one generation a loop
    python crash_worker.py whitening FOLDER         # Whitening.fit/save
    python crash_worker.py cache FOLDER             # VectorCache.put_many (SQLite)

Each loop prints ``ACK <generation>`` only after the write returned; the parent kills the
process at a random moment and checks that every acknowledged generation is on disk. The
index worker uses a small deterministic hashing encoder (no model) so each child starts in
about a second; the write path is the one real indexes use. The parent imports the same
helpers (``gen_docs``, ``HashEncoder``, ``whitening_data``, ``cache_batch``) to verify.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

DIM = 16
DOCS_PER_GEN = 6
CACHE_BATCH = 40


class HashEncoder:
    """Deterministic vectors from text hashes: same text, same vector, in any process."""

    model_id = "hash-encoder"
    model_fingerprint = "hash-encoder-v1"
    fingerprint = "hash-encoder-v1/16"
    dimension = DIM

    def config(self) -> dict:
        return {"model": self.model_id, "model_fingerprint": self.model_fingerprint,
                "dimension": DIM}

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def encode_documents(self, texts, show_progress: bool = False) -> np.ndarray:
        return self._encode(list(texts))

    def encode_queries(self, texts, show_progress: bool = False) -> np.ndarray:
        return self._encode(list(texts))

    def token_lengths(self, texts) -> np.ndarray:
        return np.array([len(t.split()) + 2 for t in texts], dtype=np.int64)


WORDS = ["protein", "cell", "cancer", "gene", "vitamin", "insulin", "heart", "brain", "immune", "virus", "dose", "trial", "mouse", "patient", "receptor", "enzyme"]


def gen_docs(gen: int) -> list:
    from vecdoctor.data import Document

    rng = np.random.default_rng(gen)
    docs = []
    for i in range(DOCS_PER_GEN):
        words = " ".join(rng.choice(WORDS, size=12))
        docs.append(Document(id=f"g{gen}-d{i}", text=f"{words} generation {gen}", title=f"t{gen}"))
    return docs


def whitening_data(gen: int) -> np.ndarray:
    return np.random.default_rng(1000 + gen).standard_normal((120, DIM)).astype(np.float32) * (
        1 + np.arange(DIM, dtype=np.float32)
    )


def cache_batch(gen: int) -> tuple[list[str], np.ndarray]:
    keys = [f"gen{gen}-item{i}" for i in range(CACHE_BATCH)]
    vecs = np.random.default_rng(5000 + gen).standard_normal((CACHE_BATCH, DIM)).astype(
        np.float32
    )
    return keys, vecs


def _ack(gen: int) -> None:
    sys.stdout.write(f"ACK {gen}\n")
    sys.stdout.flush()


def run_index(folder: Path, precision: str) -> None:
    from vecdoctor.index import Index

    enc = HashEncoder()
    if (folder / "config.json").is_file():
        index = Index.load(folder)
        index.use_encoder(enc)
        gen = len(index) // DOCS_PER_GEN
    else:
        index = Index.build(gen_docs(0), enc, precision=precision)
        index.save(folder)
        _ack(0)
        gen = 1
    print("READY", flush=True)
    while True:
        index.add(gen_docs(gen))
        index.save(folder)
        _ack(gen)
        gen += 1


def run_whitening(folder: Path) -> None:
    from vecdoctor.transform import Whitening

    print("READY", flush=True)
    gen = 0
    while True:
        Whitening().fit(whitening_data(gen)).save(folder)
        _ack(gen)
        gen += 1


def run_cache(folder: Path) -> None:
    from vecdoctor.encode.cache import VectorCache

    cache = VectorCache(folder)
    gen = len(cache) // CACHE_BATCH
    print("READY", flush=True)
    while True:
        keys, vecs = cache_batch(gen)
        cache.put_many(keys, vecs)
        _ack(gen)
        gen += 1


if __name__ == "__main__":
    kind, target = sys.argv[1], Path(sys.argv[2])
    if kind == "index":
        run_index(target, sys.argv[3] if len(sys.argv) > 3 else "float32")
    elif kind == "whitening":
        run_whitening(target)
    elif kind == "cache":
        run_cache(target)
    else:
        raise SystemExit(f"unknown worker {kind!r}")
