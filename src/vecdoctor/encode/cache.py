"""Vector caches: an in-memory LRU with a TTL, and an optional SQLite file on disk.

Keys hash the pipeline fingerprint with the text, so any change to the model, pooling, max
length, window, normalisation or prefix gives new keys. The disk cache commits after every
batch, so an interrupted encode resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def cache_key(fingerprint: str, text: str) -> str:
    return hashlib.blake2b(f"{fingerprint}\x00{text}".encode(), digest_size=20).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class VectorCache:
    """In-memory LRU (cachetools) in front of an optional SQLite store in ``folder``."""

    def __init__(
        self,
        folder: str | Path | None = None,
        max_size: int = 100_000,
        ttl: float | None = None,
    ) -> None:
        import cachetools

        self.memory: cachetools.Cache = (
            cachetools.TTLCache(maxsize=max_size, ttl=ttl) if ttl else cachetools.LRUCache(max_size)
        )
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.folder / "vectors.sqlite", check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)"
                )
            except (sqlite3.Error, OSError) as exc:
                from vecdoctor.errors import InputError

                raise InputError(f"{self.folder}: cannot hold a vector cache ({exc}); give a "
                                 "folder you can write to, or leave out --cache") from None
            self._db.commit()

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        missing: list[int] = []
        with self._lock:
            for i, k in enumerate(keys):
                v = self.memory.get(k)
                if v is None:
                    missing.append(i)
                else:
                    out[i] = v
            if missing and self._db is not None:
                wanted = {keys[i]: i for i in missing}
                names = list(wanted)
                for start in range(0, len(names), 500):
                    part = names[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = self._db.execute(
                        f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part
                    ).fetchall()
                    for key, blob in rows:
                        vec = np.frombuffer(blob, dtype=np.float32).copy()
                        out[wanted[key]] = vec
                        self.memory[key] = vec
            found = sum(v is not None for v in out)
            self.stats.hits += found
            self.stats.misses += len(keys) - found
        return out

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            for k, v in zip(keys, vectors, strict=True):
                self.memory[k] = v.copy()
            if self._db is not None:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors (key, dim, vec) VALUES (?, ?, ?)",
                    [(k, int(v.shape[0]), v.tobytes()) for k, v in zip(keys, vectors, strict=True)],
                )
                self._db.commit()

    def __len__(self) -> int:
        if self._db is not None:
            with self._lock:
                return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        return len(self.memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
