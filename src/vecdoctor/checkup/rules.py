"""The checkup's decision rules: pure functions from measured variants to pipeline choices.

Every rule reads :class:`Measured` rows (a variant's nDCG@10 and its per-query values, and where
it was measured) and returns its choice with a :class:`Decision` that quotes the numbers. No
rule reads time, so a decision never depends on how busy the machine was. One gate serves every
change (:func:`gate`): at least :data:`MIN_GAIN` nDCG@10 with a paired randomization test
p < :data:`MAX_P`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vecdoctor.config import _Choice
from vecdoctor.evaluate.metrics import MAX_P, MIN_GAIN, randomization_test
from vecdoctor.evaluate.runs import VariantsReport

PRECISION_KEEP = 0.99
"""Quantized storage must keep this share of float32 nDCG@10 (and lose less than MIN_GAIN)."""

MODES = ("bm25", "dense", "hybrid")
SIMPLER = {"bm25": 0, "dense": 1, "hybrid": 2}  # fewer parts first: no model, one retriever, two


class Frame(_Choice):
    """Where a variant was measured."""

    CORPUS = "corpus"
    """On the whole corpus: the number is the pipeline's own."""
    SAMPLE = "sample"
    """On a quick sample of the corpus, with hard distractors of every retriever compared."""
    LEXICAL_SAMPLE = "lexical sample"
    """On a quick sample whose hard distractors are BM25's only: dense numbers are optimistic,
    so the retrieval mode is not switched on its evidence."""


@dataclass(frozen=True)
class Measured:
    """One variant as a rule reads it."""

    name: str
    ndcg: float
    per_query: Mapping[str, float] = field(default_factory=dict, repr=False)
    bytes_per_doc: int | None = None
    frame: Frame = Frame.CORPUS


Scores = Mapping[str, Measured]


@dataclass
class Decision:
    """One choice in the recommended pipeline and the numbers behind it."""

    topic: str
    choice: str
    recommended: bool
    evidence: str
    gain: float | None = None  # measured nDCG@10 difference against what it replaces
    warning: bool = False  # the report puts it first: a simpler option scored higher

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "choice": self.choice, "recommended": self.recommended,
                "evidence": self.evidence,
                "gain": None if self.gain is None else round(self.gain, 4),
                **({"warning": True} if self.warning else {})}


@dataclass(frozen=True)
class Gate:
    """``a`` against ``b`` on the queries both were scored on."""

    a: str
    b: str
    delta: float
    p: float | None

    @property
    def passes(self) -> bool:
        return self.delta >= MIN_GAIN and (self.p is None or self.p < MAX_P)

    def words(self) -> str:
        p = "n/a" if self.p is None else f"{self.p:.3f}"
        return f"{self.a} vs {self.b}: Δ {self.delta:+.4f}, p={p}"


def gate(a: Measured, b: Measured) -> Gate:
    """The gate of every change: ``a`` passes when it adds >= MIN_GAIN nDCG@10 over ``b`` with a
    two-sided paired randomization test p < MAX_P (without per-query values, the size alone)."""
    p = randomization_test(a.per_query, b.per_query) if a.per_query and b.per_query else None
    return Gate(a.name, b.name, a.ndcg - b.ndcg, p)


def listing(scores: Scores, names: Sequence[str]) -> str:
    return ", ".join(f"{n} {scores[n].ndcg:.4f}" for n in names if n in scores)


def fmt(scores: Scores, name: str, against: str | None) -> str:
    """``name nDCG@10 x vs base y (Δ, p)``, or "not measured"."""
    r = scores.get(name)
    if r is None:
        return "not measured"
    text = f"{name} nDCG@10 {r.ndcg:.4f}"
    base = scores.get(against) if against else None
    if base is not None:
        g = gate(r, base)
        text += f" vs {base.name} {base.ndcg:.4f} (Δ {g.delta:+.4f}, p={'n/a' if g.p is None else f'{g.p:.3f}'})"
    return text


def choose_mode(scores: Scores, self_supervised: bool = False) -> tuple[str, Decision]:
    """BM25, dense or hybrid.

    Hybrid is the default: it combines both signals and is rarely far from the better of the
    two. A single retriever replaces it when it scores at least MIN_GAIN higher; with judged
    queries measured on the whole corpus that point estimate is the pipeline's own number, so the
    higher one is recommended even when the lead is not proven (the evidence says so and what
    would settle it). Self-supervised queries are sentences cut from their own document, which
    favours exact word overlap, so there the lead must also pass the paired test. On a sample
    without dense distractors (:attr:`Frame.LEXICAL_SAMPLE`) hybrid stays."""
    modes = {n: scores[n] for n in MODES if n in scores}
    names = list(modes)
    if not modes:
        raise ValueError("no retrieval mode was measured")
    words = listing(scores, names)
    hybrid = modes.get("hybrid")
    if hybrid is None:
        best = max(modes.values(), key=lambda r: r.ndcg)
        return best.name, Decision("retrieval", best.name, True, f"highest nDCG@10 of {words}")
    single = max((r for n, r in modes.items() if n != "hybrid"), key=lambda r: r.ndcg, default=None)
    if single is None:
        return "hybrid", Decision("retrieval", "hybrid", True, f"the only mode measured: {words}")
    g = gate(single, hybrid)
    if hybrid.frame is Frame.LEXICAL_SAMPLE:
        return "hybrid", Decision(
            "retrieval", "hybrid", True,
            f"{words}; kept as the default: the sample holds BM25's hard distractors only, so "
            "dense numbers on it are optimistic and do not decide the mode (run without "
            "--quick to measure it on the whole corpus)")
    needed = g.passes if self_supervised else g.delta >= MIN_GAIN
    if needed:
        proven = g.passes
        return single.name, Decision(
            "retrieval", single.name, True,
            f"{single.name} scores higher than hybrid ({g.words()}); "
            + ("the lead passes the paired test" if proven else
               "the lead is larger than the gate's margin but not proven "
               f"(p >= {MAX_P}): more judged queries would settle it")
            + f"; {words}", g.delta)
    if g.delta <= 0:
        return "hybrid", Decision("retrieval", "hybrid", True, f"highest nDCG@10 of {words}",
                                  -g.delta)
    rule = (f"needs >= {MIN_GAIN} with p < {MAX_P} on self-supervised queries" if self_supervised
            else f"needs a lead of >= {MIN_GAIN}")
    return "hybrid", Decision(
        "retrieval", "hybrid", True,
        f"{single.name} is not measurably better than hybrid ({g.words()}; {rule}); {words}",
        -g.delta)


TRANSFORMS = (("dense+whiten", "whitening"), ("dense+whiten-k", "whitening-k"),
              ("dense+abtt", "abtt"))


def choose_transform(scores: Scores, uses_dense: bool, why_not: str) -> tuple[str | None, list[Decision]]:
    """The best transform that passes the gate against plain dense, or none; a decision for each
    measured one. ``whitening-k`` is whitening kept to its top components."""
    base = scores.get("dense")
    decisions: list[Decision] = []
    passing: list[tuple[float, str]] = []
    for name, value in TRANSFORMS:
        r = scores.get(name)
        if r is None or base is None:
            continue
        g = gate(r, base)
        if g.passes:
            passing.append((r.ndcg, value))
        decisions.append(Decision("transform", value, False,
                                  fmt(scores, name, "dense") + (why_not if g.passes else ""),
                                  g.delta))
    best = max(passing)[1] if passing and uses_dense else None
    for d in decisions:
        d.recommended = d.choice == best
    return best, decisions


LONG_TEXT = (("dense+window", "windows 256:128:max", {"window": "256:128:max"}),
             ("dense+chunks-first", "chunks max+first", {"chunks": "max+first"}),
             ("dense+chunks", "chunks max", {"chunks": "max"}))
"""Long-text strategies measured against truncation (plain dense): the variant, its name in the
decisions and the pipeline settings it stands for."""


def chunk_candidate(scores: Scores) -> tuple[str | None, str]:
    """The chunk scoring chosen up front: MaxP + first (it keeps the document's opening, which
    truncation ranks by, in the score), replaced by MaxP alone only when MaxP beats it through
    the gate. One scoring is then gated once against truncation: no correction for two looks."""
    first, plain = scores.get("dense+chunks-first"), scores.get("dense+chunks")
    if first is None:
        return ("dense+chunks", "") if plain is not None else (None, "")
    if plain is None:
        return "dense+chunks-first", ""
    g = gate(plain, first)
    if g.passes:
        return "dense+chunks", f"; MaxP beats MaxP + first ({g.words()})"
    return "dense+chunks-first", (f"; MaxP is not measurably better than MaxP + first "
                                  f"({g.words()}), which keeps the document's opening in the score")


def choose_long_text(scores: Scores, uses_dense: bool, why_not: str,
                     truncated_share: float | None = None) -> tuple[dict[str, str], list[Decision]]:
    """Truncation, windows pooled into one vector, or chunk-level retrieval, and a decision for
    each strategy measured. Windows are kept when they pass the gate against truncation; the
    chunk scoring of :func:`chunk_candidate` when it passes, and it replaces passing windows only
    when it beats them through the gate (a vector per window costs more than one per document).
    When texts were found truncated and nothing passes, a decision says truncation stays."""
    base = scores.get("dense")
    measured = [(n, label, settings) for n, label, settings in LONG_TEXT
                if n in scores and base is not None]
    candidate, why = chunk_candidate(scores)
    windows = scores.get("dense+window")
    windows_pass = windows is not None and base is not None and gate(windows, base).passes
    chosen: str | None = "dense+window" if windows_pass else None
    if candidate is not None and base is not None and gate(scores[candidate], base).passes:
        if windows_pass and windows is not None:
            g = gate(scores[candidate], windows)
            if g.passes:
                chosen = candidate
            else:
                why = f"; {g.words()}: chunks are not measurably better, the cheaper windows stay"
        else:
            chosen = candidate
    if not uses_dense:
        chosen = None
    settings: dict[str, str] = {}
    decisions: list[Decision] = []
    for name, label, values in measured:
        g = gate(scores[name], scores["dense"])
        picked = name == chosen
        if picked:
            settings = dict(values)
        note = why if picked or (name == candidate and chosen == "dense+window") else ""
        decisions.append(Decision("long texts", label, picked,
                                  fmt(scores, name, "dense") + note + (why_not if g.passes else ""),
                                  g.delta))
    if measured and chosen is None and truncated_share and uses_dense:
        tried = "; ".join(f"{label}: {fmt(scores, n, 'dense')}" for n, label, _ in measured)
        decisions.append(Decision(
            "long texts", "truncation", True,
            f"{truncated_share:.0%} of texts are longer than the model reads, but no long-text "
            f"strategy is measurably better than truncating them (gate: >= {MIN_GAIN} nDCG@10 "
            f"with p < {MAX_P}; one chunk scoring, chosen up front): {tried}"))
    return settings, decisions


POOLINGS = ("dense+cls", "dense+max", "dense+subword", "dense+attention")


def choose_pooling(scores: Scores, uses_dense: bool) -> tuple[str | None, list[Decision]]:
    """The best pooling that passes the gate against the model's own, or none."""
    base = scores.get("dense")
    decisions: list[Decision] = []
    passing: list[tuple[float, str]] = []
    for name in POOLINGS:
        r = scores.get(name)
        if r is None or base is None:
            continue
        g = gate(r, base)
        value = name.split("+", 1)[1]
        if g.passes:
            passing.append((r.ndcg, value))
        decisions.append(Decision("pooling", value, False, fmt(scores, name, "dense"), g.delta))
    best = max(passing)[1] if passing and uses_dense else None
    for d in decisions:
        d.recommended = d.choice == best
    return best, decisions


def choose_precision(scores: Scores, uses_dense: bool, why_not: str) -> tuple[str, list[Decision]]:
    """Binary, else int8, storage when it keeps PRECISION_KEEP of float32 nDCG@10 and loses less
    than MIN_GAIN of it (so it can never cost more than the gate's margin); else float32."""
    dense = scores.get("dense")
    storage = "float32"
    decisions: list[Decision] = []
    for prec in ("binary", "int8"):
        r = scores.get(prec)
        if r is None or dense is None:
            continue
        share = r.ndcg / dense.ndcg if dense.ndcg > 0 else 0.0
        keeps = share >= PRECISION_KEEP and dense.ndcg - r.ndcg < MIN_GAIN
        ok = uses_dense and keeps and storage == "float32"
        if ok:
            storage = prec
        size = (f" at {r.bytes_per_doc} instead of {dense.bytes_per_doc} bytes per document"
                if r.bytes_per_doc is not None and dense.bytes_per_doc is not None else "")
        decisions.append(Decision(
            "precision", prec, ok,
            f"{prec} with rescoring keeps {share:.1%} of float32 nDCG@10 ({r.ndcg:.4f} vs "
            f"{dense.ndcg:.4f}){size} (rule: keep >= {PRECISION_KEEP:.0%} and lose < {MIN_GAIN})"
            + (why_not if keeps else ""), r.ndcg - dense.ndcg))
    return storage, decisions


def choose_rerank(scores: Scores, mode: str) -> tuple[bool, Decision | None]:
    """The reranker when ``hybrid+rerank`` passes the gate against hybrid (and hybrid is kept)."""
    r, base = scores.get("hybrid+rerank"), scores.get("hybrid")
    if r is None or base is None:
        return False, None
    g = gate(r, base)
    ok = g.passes and mode == "hybrid"
    return ok, Decision("rerank", "reranker on the hybrid top candidates", ok,
                        fmt(scores, "hybrid+rerank", "hybrid"), g.delta)


def do_no_harm(recommended: Measured, simple: Scores) -> Decision | None:
    """The recommended pipeline against the simple options measured on the same queries in the
    same frame. A simple option that beats it through the gate replaces it (``recommended`` is
    then ``False`` on the returned decision and its choice names the option); one that scores
    MIN_GAIN or more higher without proof is said first, with what would settle it; otherwise
    ``None`` (a smaller difference is inside the gate's margin either way)."""
    options = [simple[n] for n in MODES if n in simple]
    if not options:
        return None
    best = max(options, key=lambda r: (r.ndcg, -SIMPLER[r.name]))
    g = gate(best, recommended)
    if g.delta < MIN_GAIN:
        return None
    if g.passes:
        return Decision("do no harm", best.name, False,
                        f"the plain {best.name} beats the recommended pipeline ({g.words()}): "
                        f"{best.name} is recommended instead", -g.delta, warning=True)
    return Decision("do no harm", best.name, True,
                    f"the plain {best.name} scores higher than the recommended pipeline without "
                    f"proof ({g.words()}; the gate needs >= {MIN_GAIN} with p < {MAX_P}): the "
                    "recommendation stands; more judged queries, or a run without --quick, "
                    "would settle it", -g.delta, warning=True)


@dataclass(frozen=True)
class ModelChoice:
    """The model comparison's pick as the decisions state it."""

    model: str
    reason: str
    backend: str | None = None
    precision: str | None = None


def decide(scores: Scores, model: str, *, encodings: Scores | None = None,
           chosen_model: ModelChoice | None = None, truncated_share: float | None = None,
           self_supervised: bool = False, rerank_how: Mapping[str, Any] | None = None,
           ) -> tuple[dict[str, Any], list[Decision]]:
    """The recommended pipeline's settings and the reasons for each choice.

    ``scores`` decide the retrieval mode, the transform, the storage and the reranker;
    ``encodings`` (variants that encode differently: windows, chunks, poolings, each with the
    plain ``dense`` measured beside it in the same frame) the long-text strategy and the
    pooling; they are ``scores`` when everything was measured in one frame."""
    encodings = scores if encodings is None else encodings
    decisions: list[Decision] = []
    settings: dict[str, Any] = {"model": model, "backend": None, "model_precision": None,
                                "pooling": None, "window": None, "chunks": None, "transform": None,
                                "mode": "dense", "fusion": "rrf", "rrf_k": 60, "rerank": None,
                                "storage": "float32"}
    if chosen_model is not None:
        label = (f"{model} on {chosen_model.backend} {chosen_model.precision}"
                 if chosen_model.backend else model)
        decisions.append(Decision("model", label, True, chosen_model.reason))
        settings["backend"], settings["model_precision"] = chosen_model.backend, chosen_model.precision
    if any(n in scores for n in MODES):
        settings["mode"], mode_decision = choose_mode(scores, self_supervised)
        decisions.append(mode_decision)
    uses_dense = settings["mode"] != "bm25"
    why_not = "; not applied: the recommended retrieval is bm25 alone" if not uses_dense else ""
    settings["transform"], found = choose_transform(scores, uses_dense, why_not)
    decisions += found
    sampled = encodings is not scores and any(m.frame is not Frame.CORPUS
                                               for m in encodings.values())
    long_settings, found = choose_long_text(encodings, uses_dense, why_not, truncated_share)
    settings.update(long_settings)
    decisions += said_where(found, sampled)
    settings["pooling"], found = choose_pooling(encodings, uses_dense)
    decisions += said_where(found, sampled)
    settings["storage"], found = choose_precision(scores, uses_dense, why_not)
    decisions += found
    keep, rerank = choose_rerank(scores, settings["mode"])
    if rerank is not None:
        decisions.append(rerank)
    if keep:
        how = dict(rerank_how or {})
        settings["rerank"] = how.get("reranker")
        for key in ("fusion", "backend", "precision"):
            if key in how:
                settings[f"rerank_{key}"] = how[key]
    if settings["transform"] == "whitening-k":
        settings["transform"] = "whitening"
    return settings, decisions


def said_where(decisions: list[Decision], sampled: bool) -> list[Decision]:
    """``decisions`` whose numbers come from the quick sample say so: they sit in one list with
    numbers of the whole corpus, and a sample's nDCG@10 is higher (fewer distractors)."""
    if sampled:
        for d in decisions:
            d.evidence += " (measured on the quick sample)"
    return decisions


def whitening_kept(decisions: Sequence[Decision]) -> bool:
    """Whether the recommended transform is whitening-k (whitening kept to its top components)."""
    return any(d.topic == "transform" and d.choice == "whitening-k" and d.recommended
               for d in decisions)


def measured(report: VariantsReport, frame: Frame = Frame.CORPUS) -> dict[str, Measured]:
    """The rows of an evaluation as the rules read them."""
    return {r.name: Measured(r.name, r.ndcg, r.evaluation.per_query.get("ndcg@10", {}),
                             r.bytes_per_doc, frame) for r in report.results}
