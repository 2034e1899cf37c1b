"""The corpus baseline stored with every index: what healthy traffic and documents look like.

Computed once at build time from a seeded sample of the indexed documents (their stored
vectors, no encoding) and a few hundred self-supervised queries (sentences of sampled
documents, encoded through the index's own embedder):

- geometry of the documents: mean vector, mean pairwise cosine, isotropy, norm quantiles;
- token lengths and the truncation rate at the model's limit;
- ``query_scores``: for each self-supervised query, the best dense score among the *other*
  documents (its own document contains the sentence verbatim and would flatter it), through
  the index's own dense search; ``doc_scores`` the same for sampled documents. On
  SciFact these quantiles match those of the real test queries (p5 0.395 against 0.409),
  while sentences from another domain score far below them (STS-B p95 under 0.30);
- BM25: share of those queries with no match, and the agreement of BM25 and dense top-10;
- samples of document and query vectors and of token lengths, for the two-sample tests of
  :mod:`vecdoctor.monitor`.

Saved as ``baseline/`` in the index folder (``baseline.json`` plus arrays); an index without
one (built before 0.3.0) gets one with ``vecdoctor baseline INDEX``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import IncompatibleError, InputError

logger = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
FORMAT_VERSION = 1
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
OOD_QUANTILE = "p10"
"""The quantile of the baseline's best scores below which a text is out of domain."""
_ARRAYS = {
    "centroid": "centroid.npy",
    "doc_sample": "doc_vectors.npy",
    "query_sample": "query_vectors.npy",
    "length_sample": "token_lengths.npy",
    "query_best": "query_best_scores.npy",
    "doc_best": "document_best_scores.npy",
}


def quantiles(values: np.ndarray) -> dict[str, float]:
    """``{"p1": ..., "p5": ..., "p50": ..., "mean": ...}`` of ``values`` (empty: ``{}``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    out = {f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES),
                                                          strict=True)}
    out["mean"] = float(values.mean())
    return out


def mean_cosine(vectors: np.ndarray) -> float:
    """The diagnosis' mean pairwise cosine, NaN below two rows."""
    from vecdoctor.diagnose.isotropy import mean_pairwise_cosine

    if len(vectors) < 2:
        return float("nan")
    return float(mean_pairwise_cosine(np.asarray(vectors, dtype=np.float32)))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b): how far one mean vector has moved from another."""
    return float(1 - a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def isotropy(vectors: np.ndarray) -> float:
    """The diagnosis' isotropy score (1 ~ spread out, 0 ~ a narrow cone)."""
    from vecdoctor.diagnose.isotropy import isotropy_score

    return float(isotropy_score(np.asarray(vectors, dtype=np.float32)))


@dataclass
class Baseline:
    """The reference the monitor compares traffic and new documents with."""

    documents: int
    fingerprint: str
    sample: int
    mean_cosine: float
    isotropy: float
    norms: dict[str, float]
    token_lengths: dict[str, float]
    truncation_rate: float | None
    max_length: int | None
    query_scores: dict[str, float]
    doc_scores: dict[str, float]
    queries: int
    query_mean_cosine: float
    bm25_no_match: float | None
    bm25_dense_agreement: float | None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    centroid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    doc_sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    query_sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    length_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    query_best: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    doc_best: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    @property
    def ood_threshold(self) -> float:
        """A query whose best dense score is below this is out of domain: 90% of the sentences
        the corpus answers about itself score higher (see :mod:`vecdoctor.monitor.answerability`
        for why the 10th percentile)."""
        return float(self.query_scores.get(OOD_QUANTILE, float("nan")))

    def summary(self) -> dict[str, Any]:
        """The JSON part (no arrays)."""
        data = asdict(self)
        for name in _ARRAYS:
            data.pop(name)
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v
                for k, v in data.items()}

    def save(self, folder: str | Path) -> None:
        """Write ``folder`` (a fresh one: callers write into a temporary index folder)."""
        from vecdoctor.io import save_npy, write_json
        from vecdoctor.persist import header

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, filename in _ARRAYS.items():
            save_npy(folder / filename, getattr(self, name))
        write_json(folder / "baseline.json", {**header("Baseline", FORMAT_VERSION), **self.summary()})

    @classmethod
    def load(cls, folder: str | Path) -> Baseline:
        """Read a saved baseline; damaged files are clear errors."""
        from vecdoctor.folders import read_object, value
        from vecdoctor.io import load_npy
        from vecdoctor.persist import read_header

        folder = Path(folder)
        where = folder / "baseline.json"
        meta = read_object(folder, "baseline.json")
        read_header(meta, "Baseline", FORMAT_VERSION, where)
        numbers = {k: value(meta, k, float, where, None) for k in (
            "mean_cosine", "isotropy", "query_mean_cosine", "truncation_rate", "bm25_no_match",
            "bm25_dense_agreement")}
        dicts = {k: _float_dict(value(meta, k, dict, where, {}), where, k) for k in (
            "norms", "token_lengths", "query_scores", "doc_scores")}
        arrays = {}
        for name, filename in _ARRAYS.items():
            from vecdoctor.folders import child

            arr = load_npy(child(folder, filename))
            if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
                raise InputError(f"{folder / filename}: holds {arr.dtype} values, expected finite "
                                 "numbers; run `vecdoctor baseline` on the index again")
            arrays[name] = arr
        dim = arrays["centroid"].shape
        for name in ("doc_sample", "query_sample"):
            if arrays[name].ndim != 2 or arrays[name].shape[1:] != dim:
                raise InputError(f"{folder / _ARRAYS[name]}: shape {arrays[name].shape} does not "
                                 f"match the centroid's {dim}; run `vecdoctor baseline` again")
        return cls(
            documents=value(meta, "documents", int, where, low=1),
            fingerprint=value(meta, "fingerprint", str, where),
            sample=value(meta, "sample", int, where, low=0),
            queries=value(meta, "queries", int, where, low=0),
            max_length=value(meta, "max_length", int, where, None, low=1),
            created=value(meta, "created", str, where, ""),
            mean_cosine=numbers["mean_cosine"] if numbers["mean_cosine"] is not None else float("nan"),
            isotropy=numbers["isotropy"] if numbers["isotropy"] is not None else float("nan"),
            query_mean_cosine=numbers["query_mean_cosine"]
            if numbers["query_mean_cosine"] is not None else float("nan"),
            truncation_rate=numbers["truncation_rate"],
            bm25_no_match=numbers["bm25_no_match"],
            bm25_dense_agreement=numbers["bm25_dense_agreement"],
            norms=dicts["norms"],
            token_lengths=dicts["token_lengths"],
            query_scores=dicts["query_scores"],
            doc_scores=dicts["doc_scores"],
            centroid=arrays["centroid"].astype(np.float32),
            doc_sample=arrays["doc_sample"].astype(np.float32),
            query_sample=arrays["query_sample"].astype(np.float32),
            length_sample=arrays["length_sample"].astype(np.int64),
            query_best=arrays["query_best"].astype(np.float32),
            doc_best=arrays["doc_best"].astype(np.float32),
        )

    def check(self, fingerprint: str, source: str | Path) -> None:
        """Refuse a baseline of other vectors (another model, pooling or transform)."""
        if fingerprint and self.fingerprint != fingerprint:
            raise IncompatibleError(
                f"{source}: the baseline was computed for pipeline {self.fingerprint}, the index "
                f"holds {fingerprint}; run `vecdoctor baseline {Path(source).parent}` again"
            )


def _float_dict(raw: dict[str, Any], where: Path, key: str) -> dict[str, float]:
    from vecdoctor.folders import value

    return {str(k): float(value(raw, k, float, f"{where} ({key})")) for k in raw}


def self_queries(
    docs: Any, rows: np.ndarray, rng: np.random.Generator, min_words: int = 6
) -> tuple[list[str], list[int]]:
    """One sentence (not the first, at least ``min_words`` words) of each document in ``docs``,
    with the row of the document it came from (``rows``, aligned with ``docs``)."""
    from vecdoctor.data import split_sentences

    texts, sources = [], []
    for doc, row in zip(docs, rows, strict=True):
        sentences = split_sentences(doc.text)
        eligible = [s for s in sentences[1:] if len(s.split()) >= min_words]
        if eligible:
            texts.append(eligible[int(rng.integers(len(eligible)))])
            sources.append(int(row))
    return texts, sources


def _lengths(encoder: Any, texts: list[str]) -> np.ndarray | None:
    try:
        return np.asarray(encoder.token_lengths(texts), dtype=np.int64)
    except (AttributeError, NotImplementedError):
        return None


def best_other(index: Any, queries: np.ndarray, own: list[int] | np.ndarray, k: int = 10
               ) -> tuple[np.ndarray, np.ndarray]:
    """Through the index's own dense search: each query's best score among the documents other
    than ``own[i]``, and its top-``k`` rows (own document included)."""
    n = len(index)
    rows, scores = index.vectors.search(queries, min(k + 1, n), True, index.oversample)
    best = np.full(len(queries), np.nan)
    for i in range(len(queries)):
        for r, sc in zip(rows[i], scores[i], strict=True):
            if r >= 0 and int(r) != int(own[i]):
                best[i] = float(sc)
                break
    return best[np.isfinite(best)], rows[:, :k]


def compute_baseline(
    index: Any, sample: int = 2000, n_queries: int = 300, seed: int = 0
) -> Baseline:
    """The baseline of ``index`` (a folder :class:`~vecdoctor.index.store.Index` or a
    LanceDB table: anything with ``sample_documents``): see the module."""
    n = len(index)
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    rows, docs_v, documents = index.sample_documents(positions)
    docs_v = np.asarray(docs_v, dtype=np.float32)
    texts = [d.content for d in documents]
    encoder = index.encoder
    lengths = _lengths(encoder, texts)
    max_length = getattr(encoder, "max_length", None)
    truncation = None
    chunked = getattr(getattr(index, "pipeline", None), "chunks", None) is not None
    if lengths is not None and max_length and getattr(encoder, "window", None) is None and not chunked:
        truncation = float((lengths > int(max_length)).mean())
    chosen = rng.permutation(len(rows))[: max(n_queries, 0)]
    q_texts, sources = self_queries([documents[i] for i in chosen], rows[chosen], rng)
    q_best = np.zeros(0)
    q_vecs = np.zeros((0, docs_v.shape[1]), np.float32)
    no_match = agreement = None
    if q_texts:
        q_vecs = np.asarray(index.embed_queries(q_texts), dtype=np.float32)
        q_best, top = best_other(index, q_vecs, sources)
        no_match, agreement = _bm25_agreement(index, q_texts, top)
    # a random 1000 of the sample (not its first rows: the sample is in corpus order, and
    # corpus order often follows topic or date)
    sub = np.sort(rng.permutation(len(rows))[:1000])
    d_best = best_other(index, docs_v[sub], rows[sub], k=1)[0] if n > 1 else np.zeros(0)
    return Baseline(
        documents=n,
        fingerprint=str(index.fingerprint),
        sample=len(rows),
        mean_cosine=mean_cosine(docs_v),
        isotropy=isotropy(docs_v) if len(docs_v) >= 2 else float("nan"),
        norms=quantiles(np.linalg.norm(docs_v, axis=1)),
        token_lengths=quantiles(lengths) if lengths is not None else {},
        truncation_rate=truncation,
        max_length=int(max_length) if max_length else None,
        query_scores=quantiles(q_best),
        doc_scores=quantiles(d_best),
        queries=len(q_texts),
        query_mean_cosine=mean_cosine(q_vecs) if len(q_vecs) >= 2 else float("nan"),
        bm25_no_match=no_match,
        bm25_dense_agreement=agreement,
        centroid=docs_v.mean(axis=0).astype(np.float32),
        doc_sample=docs_v[sub].astype(np.float32),
        query_sample=q_vecs.astype(np.float32),
        length_sample=lengths if lengths is not None else np.zeros(0, np.int64),
        query_best=q_best.astype(np.float32),
        doc_best=d_best.astype(np.float32),
    )


def _bm25_agreement(index: Any, queries: list[str], dense_top: np.ndarray) -> tuple[float, float]:
    """Share of ``queries`` BM25 finds nothing for, and the mean overlap of BM25 and dense
    top-10."""
    k = dense_top.shape[1]
    misses, overlaps = 0, []
    for i, query in enumerate(queries):
        rows, scores = index.bm25.search(query, k)
        if len(rows) == 0 or float(np.max(scores)) <= 0:
            misses += 1
            continue
        overlaps.append(len(set(rows.tolist()) & set(dense_top[i].tolist())) / k)
    return misses / len(queries), float(np.mean(overlaps)) if overlaps else 0.0
