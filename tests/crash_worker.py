"""Child process for the kill -9 tests: writes successive generations and acknowledges each.

    python crash_worker.py index FOLDER PRECISION   # Index.load/add/save, one generation a loop
    python crash_worker.py whitening FOLDER         # Whitening.fit/save
    python crash_worker.py cache FOLDER             # VectorCache.put_many (SQLite)
    python crash_worker.py finetune FOLDER SCIFACT  # finetune: checkpoints, then the model

Each loop prints ``ACK <generation>`` only after the write returned; the parent kills the
process at a random moment and checks that every acknowledged generation is on disk. The
index worker uses a small deterministic hashing encoder (no model) so each child starts in
about a second; the write path is the one real indexes use. The parent imports the same
helpers (``gen_docs``, ``HashEncoder``, ``whitening_data``, ``cache_batch``) to verify. The
finetune worker trains the real MiniLM for a few steps per generation (its seed is the
generation) and prints ``RESUMED <step>`` before each ``ACK``.
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
    from vecdoctor.fix.transform import Whitening

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


FINETUNE_PAIRS = 8


def finetune_config(gen: int):  # type: ignore[no-untyped-def]
    """A checkpoint at every one of 3 steps; the seed names the generation."""
    from vecdoctor.finetune.biencoder import FinetuneConfig

    return FinetuneConfig(
        batch_size=4, max_length=32, save_steps=1, max_steps=3, negatives=0, seed=gen
    )


def run_finetune(folder: Path, scifact: Path) -> None:
    import json

    from transformers.utils import logging as hf_logging

    from vecdoctor.data import load_dataset
    from vecdoctor.finetune.biencoder import CARD_JSON, finetune
    from vecdoctor.finetune.pairs import pairs_from_qrels

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    pairs = pairs_from_qrels(load_dataset(scifact, "train"))[:FINETUNE_PAIRS]
    card = folder / CARD_JSON
    gen = json.loads(card.read_text())["config"]["seed"] + 1 if card.is_file() else 0
    import sentence_transformers  # noqa: F401  (imported before READY: kills land in training)

    print("READY", flush=True)
    while True:
        result = finetune(pairs, folder, config=finetune_config(gen), overwrite=True)
        print(f"RESUMED {result.resumed_from_step}", flush=True)
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
    elif kind == "finetune":
        run_finetune(target, Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown worker {kind!r}")
