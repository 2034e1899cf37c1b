"""Run every check on a sample of the corpus and collect them in a :class:`DiagnosisReport`."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.diagnose._common import Verdict, to_jsonable
from vecdoctor.diagnose.fixes import FixResult, RetrievalSet, evaluate_fixes
from vecdoctor.diagnose.isotropy import IsotropyResult, check_isotropy
from vecdoctor.diagnose.length import LengthResult, check_length, recall_by_length_quartile
from vecdoctor.diagnose.position import PositionResult, check_position
from vecdoctor.diagnose.quantization import QuantizationResult, check_quantization
from vecdoctor.diagnose.truncation import TruncationResult, check_truncation
from vecdoctor.diagnose.vocabulary import VocabularyResult, check_vocabulary
from vecdoctor.errors import InputError, VecdoctorError

logger = logging.getLogger(__name__)

STEPS = (
    "tokenize",
    "encode documents",
    "encode queries",
    "hidden layers",
    "attention",
    "vocabulary",
    "quantization",
    "fixes",
)
"""The steps reported to ``progress``, in order."""

CHECKS = ("isotropy", "length", "truncation", "vocabulary", "position", "quantization")


@dataclass(frozen=True)
class DiagnosisReport:
    """Every check's result, before/after numbers for each fix, and what was measured."""

    meta: dict[str, Any]
    isotropy: IsotropyResult
    length: LengthResult
    truncation: TruncationResult
    vocabulary: VocabularyResult | None
    position: PositionResult | None
    quantization: QuantizationResult
    fixes: tuple[FixResult, ...] = field(default_factory=tuple)

    def checks(self) -> list[tuple[str, Any]]:
        """(name, result) for each check that ran, in report order."""
        return [(name, getattr(self, name)) for name in CHECKS if getattr(self, name) is not None]

    def summary(self) -> list[dict[str, Any]]:
        """One row per check: verdict, measured value, rule and recommendation."""
        return [
            {
                "check": name,
                "verdict": str(result.verdict),
                "value": round(float(result.value), 4),
                "rule": result.threshold.describe(),
                "recommendation": result.recommendation,
            }
            for name, result in self.checks()
        ]

    @property
    def worst(self) -> Verdict:
        order = [Verdict.OK, Verdict.WARN, Verdict.FAIL]
        return max((r.verdict for _, r in self.checks()), key=order.index)

    def to_dict(self) -> dict[str, Any]:
        from vecdoctor.persist import header

        out: dict[str, Any] = {**header("DiagnosisReport", 1), "meta": to_jsonable(self.meta),
                               "summary": self.summary()}
        for name in CHECKS:
            out[name] = to_jsonable(getattr(self, name))
        out["fixes"] = to_jsonable(self.fixes)
        return out

    def save(self, folder: str | Path, force: bool = False) -> Path:
        """Write ``report.json`` and ``report.html`` into ``folder`` (replaced atomically, and
        only when it holds a diagnosis report, or with ``force``)."""
        from vecdoctor.report.diagnosis import write_report

        return write_report(self, folder, force)


def _texts_of(data: Any) -> tuple[list[str], Any]:
    """Corpus texts and the Dataset (or None) from a Dataset, documents, strings or a path."""
    from vecdoctor.data import Dataset, Document, load_dataset

    if isinstance(data, (str, Path)):
        data = load_dataset(data)
    if isinstance(data, Dataset):
        return [d.content for d in data.corpus], data
    if isinstance(data, Sequence):
        items = list(data)
        if all(isinstance(d, Document) for d in items):
            return [d.content for d in items], None
        if all(isinstance(d, str) for d in items):
            return items, None
    raise TypeError(
        "data must be a Dataset, a list of Documents, a list of strings or a path to a corpus, "
        f"got {type(data).__name__}"
    )


def _raw_encoder(encoder: Any) -> Any:
    """A shallow copy that shares the model and the cache but returns unnormalised vectors
    (cache entries are stored before normalisation, so both encoders use the same ones)."""
    raw = copy.copy(encoder)
    raw.normalize = False
    return raw


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def diagnose(
    data: Any,
    encoder: Any,
    sample: int = 2000,
    seed: int = 0,
    fixes: Sequence[str | Any] = ("whitening", "abtt"),
    *,
    k: int = 10,
    layer_sample: int = 256,
    attention_sample: int = 128,
    max_queries: int = 500,
    vocabulary_texts: int = 50_000,
    progress: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> DiagnosisReport:
    """Diagnose the embedding space of ``encoder`` on ``data`` (deterministic for a ``seed``).

    ``data`` is a :class:`~vecdoctor.data.Dataset` (queries and judgements enable recall by
    length quartile and the recall of each fix), a list of documents or strings, or a path.
    ``sample`` texts are encoded; tokenizer-only checks use up to ``vocabulary_texts`` texts.
    """
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 2:
        raise InputError(f"sample must be an integer >= 2, got {sample!r}")
    texts, dataset = _texts_of(data)
    rng = np.random.default_rng(seed)
    idx, sample_texts = _sample(texts, sample, rng)
    clock = _Clock(progress)
    skipped: dict[str, str] = {}
    with clock.step("tokenize"):
        lengths = np.asarray(encoder.token_lengths(sample_texts))
        truncation = check_truncation(lengths, encoder.max_length, windowed=encoder.window is not None,
                                      windows_possible=encoder.tokenizer is not None)
    with clock.step("encode documents"):
        raw_encoder = _raw_encoder(encoder)
        raw = raw_encoder.encode_documents(sample_texts, show_progress=show_progress)
        vectors = _l2(raw) if encoder.normalize else raw
    with clock.step("encode queries"):
        retrieval, quartiles, query_vectors = None, None, None
        if dataset is not None and dataset.has_labels:
            retrieval, quartiles, query_vectors = _retrieval(
                dataset, encoder, raw_encoder, idx, raw, lengths, rng, max_queries, k, show_progress
            )
    with clock.step("hidden layers"):
        layers = _layers(encoder, _subsample(sample_texts, layer_sample, rng), skipped)
        isotropy = check_isotropy(vectors, layer_vectors=layers, seed=seed)
        length = check_length(lengths, raw, quartiles, pooling=str(encoder.pooling))
    with clock.step("attention"):
        position = _position(encoder, _subsample(sample_texts, attention_sample, rng), skipped)
    with clock.step("vocabulary"):
        vocabulary = _vocabulary(encoder, texts, vocabulary_texts, rng, skipped)
    with clock.step("quantization"):
        quantization = check_quantization(vectors, query_vectors, k=k, seed=seed)
    with clock.step("fixes"):
        fix_results = evaluate_fixes(
            vectors, fixes, retrieval, k=k, fingerprint=encoder.fingerprint,
            before=isotropy.stats, seed=seed,
        )
    meta = {
        **_encoder_meta(encoder),
        "dataset": getattr(dataset, "name", None),
        "split": getattr(dataset, "split", None),
        "dimension": int(vectors.shape[1]),
        "n_corpus": len(texts),
        "n_sample": len(idx),
        "seed": seed,
        "n_queries": len(retrieval.relevant) if retrieval is not None else 0,
        "k": k,
        "skipped": skipped,
        "timings_s": {name: round(v, 3) for name, v in clock.timings.items()},
    }
    return DiagnosisReport(
        meta, isotropy, length, truncation, vocabulary, position, quantization, fix_results
    )


class _Clock:
    """Seconds per diagnosis step, each step announced to ``progress`` as it starts."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start


def _sample(texts: list[str], sample: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A seeded sample of ``sample`` texts (sorted positions), refusing a space with no variance."""
    if len(texts) < 2:
        raise InputError(f"the corpus has {len(texts)} text(s); diagnosis needs at least 2")
    idx = np.sort(rng.choice(len(texts), min(sample, len(texts)), replace=False))
    sample_texts = [texts[i] for i in idx]
    if len(set(sample_texts)) < 2:
        raise InputError(
            f"all {len(sample_texts)} sampled texts are identical; the space has no variance to "
            "diagnose - check the corpus file"
        )
    return idx, sample_texts


def _subsample(texts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    return [texts[i] for i in np.sort(rng.choice(len(texts), min(n, len(texts)), replace=False))]


def _layers(encoder: Any, texts: list[str], skipped: dict[str, str]) -> Any:
    try:
        mode = str(encoder.pooling) if str(encoder.pooling) in {"mean", "cls", "max"} else "mean"
        return encoder.layer_embeddings(texts, pooling=mode)
    except VecdoctorError as exc:
        skipped["hidden layers"] = str(exc)
        return None


def _position(encoder: Any, texts: list[str], skipped: dict[str, str]) -> Any:
    try:
        return check_position(encoder.first_token_attention(texts), pooling=str(encoder.pooling))
    except VecdoctorError as exc:
        skipped["position"] = str(exc)
        return None


def _vocabulary(
    encoder: Any, texts: list[str], limit: int, rng: np.random.Generator, skipped: dict[str, str]
) -> Any:
    if encoder.tokenizer is None:
        skipped["vocabulary"] = f"model {encoder.model_id!r} exposes no tokenizer to inspect"
        return None
    if len(texts) > limit:
        texts = [texts[i] for i in rng.choice(len(texts), limit, replace=False)]
    return check_vocabulary(texts, encoder.tokenizer)


def _encoder_meta(encoder: Any) -> dict[str, Any]:
    from vecdoctor import __version__

    return {
        "vecdoctor_version": __version__,
        "model": encoder.model_id,
        "fingerprint": encoder.fingerprint,
        "model_fingerprint": encoder.model_fingerprint,
        "pooling": str(encoder.pooling),
        "max_length": encoder.max_length,
        "window": str(encoder.window) if encoder.window else None,
        "normalize": encoder.normalize,
    }


def _retrieval(
    dataset: Any,
    encoder: Any,
    raw_encoder: Any,
    idx: np.ndarray,
    raw: np.ndarray,
    lengths: np.ndarray,
    rng: np.random.Generator,
    max_queries: int,
    k: int,
    show_progress: bool,
) -> tuple[RetrievalSet, Any, np.ndarray]:
    """Encode queries; search the sample plus every document relevant to those queries."""
    position = {d.id: i for i, d in enumerate(dataset.corpus)}
    qids = sorted(q for q, rels in dataset.qrels.items() if any(s > 0 for s in rels.values()))
    if len(qids) > max_queries:
        qids = sorted(rng.choice(qids, max_queries, replace=False).tolist())
    relevant_corpus = sorted(
        {position[d] for q in qids for d, s in dataset.qrels[q].items() if s > 0}
    )
    in_sample = set(idx.tolist())
    extra = [i for i in relevant_corpus if i not in in_sample]
    extra_texts = [dataset.corpus[i].content for i in extra]
    extra_raw = (
        raw_encoder.encode_documents(extra_texts, show_progress=show_progress)
        if extra
        else np.zeros((0, raw.shape[1]), dtype=np.float32)
    )
    all_idx = np.concatenate([idx, np.asarray(extra, dtype=idx.dtype)])
    all_raw = np.vstack([raw, extra_raw])
    docs = _l2(all_raw) if encoder.normalize else all_raw
    all_lengths = lengths
    if extra:
        all_lengths = np.concatenate([lengths, encoder.token_lengths(extra_texts)])
    row_of = {int(c): r for r, c in enumerate(all_idx)}
    relevant = tuple(
        tuple(sorted(row_of[position[d]] for d, s in dataset.qrels[q].items() if s > 0))
        for q in qids
    )
    query_texts = [dataset.queries[q] for q in qids]
    queries = encoder.encode_queries(query_texts, show_progress=show_progress)
    quartiles = recall_by_length_quartile(queries, docs, all_lengths, relevant, k=k)
    return RetrievalSet(queries, docs, relevant), quartiles, queries
