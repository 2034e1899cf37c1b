"""Offline drift report: new documents or a query log against the baseline of an index.

    report = drift_report(Index.load("my-index"), texts, kind="queries")
    report.verdict, report.actions, report.to_dict()

What is measured, new texts against the baseline (:mod:`vecdoctor.index.baseline`):

- **two-sample test** on the embeddings: maximum mean discrepancy (Gretton et al. 2012) with a
  Gaussian kernel (median-distance bandwidth) and a permutation p-value. Documents are compared
  with the baseline's documents; a query log with the baseline's self-supervised queries.
- **answerability** (what the index is for): each text's best dense score in the index
  (:mod:`vecdoctor.monitor.answerability`, the function the live observer uses), the share
  below the baseline's 10th percentile (out of domain) and, for information, a one-sided
  Mann-Whitney test against the baseline's distribution of the same score;
- centroid shift (1 - cosine of the two mean vectors, next to the shift two halves of the
  baseline sample show by chance), mean pairwise cosine and isotropy, token lengths (a
  Kolmogorov-Smirnov test) and truncation, vocabulary: frequent words of the new texts the
  corpus does not use, with the number of pieces the model's tokenizer cuts them into.

The verdict, in this order: ``out of domain`` (nearly every text is below the cut) or
``partial drift`` (more than chance allows for the corpus' own texts, with the share: "partial
drift: 48% of queries are out of domain"), then, for documents, ``drift`` (the embeddings'
distribution changed, MMD p < 0.01), else ``no drift``. For a query log, the embedding test
compares questions with corpus sentences, which differ in form even on topic; so for queries it
is reported, with what it means, but the verdict rests on answerability. Each action answers a
cause: off-topic texts, a squeezed space, truncation, new words.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecdoctor.config import Role, _Choice
from vecdoctor.errors import InputError

logger = logging.getLogger(__name__)

ALPHA = 0.01
_WORD = re.compile(r"[a-z][a-z0-9\-]{2,}")


class TextKind(_Choice):
    DOCUMENTS = "documents"
    QUERIES = "queries"


@dataclass
class DriftReport:
    kind: str
    texts: int
    skipped: dict[str, int]
    verdict: str
    actions: list[str]
    tests: dict[str, Any]
    geometry: dict[str, Any]
    answerability: dict[str, Any]
    lengths: dict[str, Any]
    vocabulary: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        from vecdoctor.diagnose._common import to_jsonable
        from vecdoctor.persist import header

        data = {k: v for k, v in self.__dict__.items() if k != "figures"}
        return {**header("DriftReport", 1), **to_jsonable(data)}


# -- statistics ----------------------------------------------------------------------------------
def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0
             ) -> dict[str, Any]:
    """MMD^2 (biased) between the rows of ``x`` and ``y`` with a Gaussian kernel whose bandwidth
    is the median pairwise distance, and its permutation p-value ((1 + #null >= observed) /
    (1 + permutations))."""
    z = np.vstack([x, y]).astype(np.float64)
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    upper = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-d2 / bandwidth)
    n, m = len(x), len(y)

    def stat(labels: np.ndarray) -> float:
        s = np.where(labels, 1.0 / n, -1.0 / m)
        return float(s @ kernel @ s)

    labels = np.arange(n + m) < n
    observed = stat(labels)
    rng = np.random.default_rng(seed)
    null = np.array([stat(rng.permutation(labels)) for _ in range(permutations)])
    p = (1 + int((null >= observed).sum())) / (1 + permutations)
    return {"mmd2": observed, "p_value": p, "permutations": permutations, "bandwidth": bandwidth,
            "null_p95": float(np.quantile(null, 0.95)), "null": null}


def centroid_shift(new: np.ndarray, centroid: np.ndarray, reference: np.ndarray, seed: int = 0
                   ) -> dict[str, float]:
    """1 - cos(mean of ``new``, ``centroid``), and the same between random halves of
    ``reference`` of ``new``'s size (what chance alone gives)."""
    from vecdoctor.index.baseline import cosine_distance as shift

    rng = np.random.default_rng(seed)
    size = min(len(new), len(reference) // 2)
    chance = []
    for _ in range(20):
        order = rng.permutation(len(reference))
        chance.append(shift(reference[order[:size]].mean(0), reference[order[size:]].mean(0)))
    return {"shift": shift(new.mean(0), centroid), "chance_p95": float(np.quantile(chance, 0.95))
            if size >= 2 else float("nan")}


def vocabulary_shift(index: Any, texts: list[str], top: int = 15) -> list[dict[str, Any]]:
    """Words frequent in ``texts`` (in 2% or more of them, at least 3) that the corpus uses in
    at most 1 of 1000 documents (sampled), with their pieces under the model's tokenizer."""
    def words(text: str) -> set[str]:
        return set(_WORD.findall(text.lower()))

    new = Counter(w for t in texts for w in words(t))
    rng = np.random.default_rng(0)
    rows = rng.choice(len(index), size=min(5000, len(index)), replace=False)
    corpus = Counter(w for r in rows for w in words(index.docs[int(r)].content))
    floor = max(3, int(0.02 * len(texts)))
    rare = [(w, c) for w, c in new.most_common() if c >= floor
            and corpus.get(w, 0) / len(rows) <= 0.001]
    pieces = _pieces(index, [w for w, _ in rare[:top]])
    return [{"term": w, "share_of_texts": c / len(texts), "corpus_share": corpus.get(w, 0) / len(rows),
             "pieces": pieces.get(w)} for w, c in rare[:top]]


def _pieces(index: Any, words: list[str]) -> dict[str, int]:
    encoder = index.embedder.loaded
    if encoder is None or not words:
        return {}
    try:
        lengths = np.asarray(encoder.token_lengths(words)) - int(encoder.token_lengths([""])[0])
    except (AttributeError, NotImplementedError):
        return {}
    return {w: int(n) for w, n in zip(words, lengths, strict=True)}


# -- the report --------------------------------------------------------------------------------
def drift_report(index: Any, texts: list[str], kind: TextKind | str = TextKind.DOCUMENTS,
                 sample: int = 1000, permutations: int = 500, seed: int = 0,
                 skipped: dict[str, int] | None = None) -> DriftReport:
    """Compare ``texts`` (new documents or queries) with the baseline of ``index``."""
    from scipy import stats as sps

    from vecdoctor.index.baseline import isotropy, mean_cosine, quantiles
    from vecdoctor.monitor import answerability

    kind = TextKind.parse(kind)
    base = getattr(index, "baseline", None)
    if base is None:
        where = getattr(index, "path", None) or "INDEX"
        raise InputError(f"{where}: the index has no baseline; add one with "
                         f"`vecdoctor baseline {where}` (an index built before vecdoctor 0.3.0)")
    if len(texts) < 10:
        raise InputError(f"{len(texts)} usable texts; a drift test needs at least 10")
    rng = np.random.default_rng(seed)
    chosen = [texts[int(i)] for i in np.sort(rng.choice(len(texts), min(sample, len(texts)),
                                                         replace=False))]
    role = "queries" if kind is TextKind.QUERIES else "documents"
    vectors = np.asarray(index.embedder.embed(
        chosen, role=Role.QUERY if kind is TextKind.QUERIES else Role.DOCUMENT), dtype=np.float32)
    reference = base.query_sample if kind is TextKind.QUERIES else base.doc_sample
    ref_best = base.query_best if kind is TextKind.QUERIES else base.doc_best
    low = answerability.cut(base, None if kind is TextKind.QUERIES else ref_best)
    best = answerability.scores(index, vectors)
    ood = answerability.share(best, low)
    mmd = mmd_test(vectors, reference[: max(sample, 1)], permutations, seed)
    answer = sps.mannwhitneyu(best, ref_best, alternative="less")
    lengths = np.asarray(index.encoder.token_lengths(chosen), dtype=np.int64)
    documents = kind is TextKind.DOCUMENTS  # lengths of queries are not compared with documents
    ks = sps.ks_2samp(lengths, base.length_sample) if documents and len(base.length_sample) \
        else None
    limit = base.max_length
    report = DriftReport(
        kind=str(kind), texts=len(texts), skipped=dict(skipped or {}), verdict="", actions=[],
        tests={
            "embeddings_mmd": {**{k: v for k, v in mmd.items() if k != "null"},
                               "meaning": MEANINGS["embeddings_mmd"][role]},
            "answerability_mannwhitney": {"u": float(answer.statistic),
                                          "p_value": float(answer.pvalue),
                                          "meaning": MEANINGS["answerability_mannwhitney"]},
            "lengths_ks": None if ks is None else {"d": float(ks.statistic),
                                                   "p_value": float(ks.pvalue),
                                                   "meaning": MEANINGS["lengths_ks"]},
            "sample": len(chosen), "reference": len(reference), "alpha": ALPHA,
        },
        geometry={
            "centroid": centroid_shift(vectors, reference.mean(0) if kind is TextKind.QUERIES
                                       else base.centroid, reference, seed),
            "mean_cosine": mean_cosine(vectors),
            "baseline_mean_cosine": base.query_mean_cosine if kind is TextKind.QUERIES
            else base.mean_cosine,
            "isotropy": isotropy(vectors),
            "baseline_isotropy": base.isotropy,
        },
        answerability={
            "best_score": quantiles(best), "baseline_best_score": quantiles(ref_best),
            "threshold": low, "ood_share": ood,
            "alarm_share": answerability.alarm_share(len(best)),
            "verdict": answerability.words(ood or 0.0, len(best)),
        },
        lengths={
            "tokens": quantiles(lengths), "baseline_tokens": base.token_lengths if documents else {},
            "truncation_rate": float((lengths > limit).mean()) if limit else None,
            "baseline_truncation_rate": base.truncation_rate if documents else None,
        },
        vocabulary=vocabulary_shift(index, chosen),
        meta={"documents": len(index), "baseline_documents": base.documents,
              "baseline_created": base.created, "model": index.model_id},
        figures={"best": best, "ref_best": ref_best, "lengths": lengths,
                 "ref_lengths": base.length_sample if documents else np.zeros(0), "null": mmd["null"], "vectors": vectors,
                 "reference": reference},
    )
    report.verdict, report.actions = decide(report, has_transform=index.transform is not None)
    return report


def decide(report: DriftReport, has_transform: bool) -> tuple[str, list[str]]:
    """The verdict and the actions, each answering a cause (see the module)."""
    from vecdoctor.monitor import answerability

    tests, queries = report.tests, report.kind == str(TextKind.QUERIES)
    share = report.answerability["ood_share"] or 0.0
    n = report.tests["sample"]
    verdict = answerability.verdict(share, n)
    off_topic = verdict != "no drift"
    drift = tests["embeddings_mmd"]["p_value"] < ALPHA and not queries
    actions: list[str] = []
    if off_topic:
        actions.append(
            f"{share:.0%} of the queries score below what 90% of the corpus' own sentences "
            "reach: these queries are outside your corpus; add documents on their topics, or "
            "route them elsewhere" if queries else
            f"{share:.0%} of the documents are unlike the corpus: re-run the checkup on the "
            "corpus with them (`vecdoctor checkup`), the chosen model and fixes may no longer "
            "be the best")
    elif drift:
        verdict = "drift"
        actions.append("the documents' distribution changed (MMD p="
                       f"{tests['embeddings_mmd']['p_value']:.3g}): re-run the checkup on the "
                       "new corpus (`vecdoctor checkup`)")
        if has_transform:
            actions.append("refit the transform on current text (`vecdoctor fit`): it was "
                           "fitted on the old distribution")
    actions += _causes(report, off_topic, queries)
    if not actions:
        actions.append("nothing to do: the new texts look like the corpus the index was built on")
    return verdict, actions


def _causes(report: DriftReport, off_topic: bool, queries: bool) -> list[str]:
    """Actions for what the off-topic share does not explain: a squeezed space, truncation,
    new words the model cuts into pieces."""
    actions: list[str] = []
    geometry = report.geometry
    squeezed = geometry["mean_cosine"] - geometry["baseline_mean_cosine"] > 0.1
    if squeezed and not off_topic:
        actions.append(f"mean pairwise cosine rose from {geometry['baseline_mean_cosine']:.2f} "
                       f"to {geometry['mean_cosine']:.2f}: the vectors are squeezed into a cone; "
                       "refit the transform on current text (`vecdoctor fit`)")
    lengths = report.lengths
    if lengths["truncation_rate"] is not None and lengths["truncation_rate"] - (
            lengths["baseline_truncation_rate"] or 0.0) >= 0.1:
        actions.append(f"{lengths['truncation_rate']:.0%} of the texts are longer than the model "
                       "reads" + (f" (baseline {lengths['baseline_truncation_rate']:.0%})"
                                  if lengths["baseline_truncation_rate"] is not None else "")
                       + ": index and search with windows (`--window`) or chunks")
    fragmented = [v for v in report.vocabulary if (v.get("pieces") or 0) >= 3]
    if len(fragmented) >= 3 and not off_topic:
        terms = ", ".join(f"{v['term']} ({v['pieces']} pieces)" for v in fragmented[:5])
        actions.append(f"new frequent words the model cuts into 3+ pieces: {terms}; fine-tune "
                       "on the new data (`vecdoctor finetune`); hybrid search keeps exact terms")
    return actions


MEANINGS: dict[str, Any] = {
    "embeddings_mmd": {
        "queries": "questions differ in form from the corpus' sentences even on topic, so this "
                   "test is shown for information and does not decide a query log's verdict",
        "documents": "p < 0.01: the new documents' vectors are distributed unlike the corpus' "
                     "(drift)"},
    "answerability_mannwhitney": "p < 0.01: the texts score lower than the corpus' own; the "
                                 "verdict reads the share below the cut instead, which says how "
                                 "many",
    "lengths_ks": "p < 0.01: the documents' token lengths changed (queries are not compared with "
                  "documents' lengths)",
}
"""What each test means for the verdict, shown beside its numbers."""
