"""How ``--quick`` measures: what it encodes whole, what it samples, and whether the sample is fair.

The plan is made before any encoding, from the corpus' token counts and the model's constant
cost per token (:func:`vecdoctor.models.encoding_cost`), never from a timing, so the same
command makes the same plan on an idle and on a busy machine:

- ``corpus``: the chosen model encodes the whole corpus once (reading what it reads anyway).
  Every variant that needs only those vectors (BM25, dense, hybrid, whitening, all-but-the-top,
  int8, binary) is measured on the whole corpus; the variants that encode differently (windows,
  chunks, other poolings) on a sample whose hard distractors come from BM25 and dense alike.
- ``proxy``: the whole corpus would cost too much, its first :data:`PROXY_TOKENS` tokens do
  not: those vectors find the dense distractors, and everything is measured on the sample.
- ``lexical``: even that would cost too much; the sample holds BM25's distractors only, so it
  is not fair to dense retrieval and the retrieval mode is not switched on its evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdoctor.config import _Choice
from vecdoctor.data import Dataset

logger = logging.getLogger(__name__)

QUICK = {"max_queries": 100, "max_docs": 500, "diagnose_sample": 400, "layer_sample": 128,
         "attention_sample": 64, "corpus_queries": 1000, "model_tokens": 150_000,
         "encode_tokens": 2_000_000}
"""Sizes of ``--quick``. ``max_queries``/``max_docs``: the sample; ``corpus_queries``: the
queries measured on the whole corpus; ``encode_tokens``: what the chosen model may encode of the
whole corpus, in minilm-equivalent tokens (tokens x the model's cost; about 7 minutes of minilm
on 2 cores); ``model_tokens``: the same for each other installed model on the comparison sample
(models named with ``-m`` always run)."""

PROXY_TOKENS = 128
"""Tokens per text read to find dense distractors when whole texts cost too much."""

COUNT_SAMPLE = 2000
"""Texts whose tokens are counted to estimate a larger corpus' total (seeded, so repeatable)."""


class Reach(_Choice):
    """What ``--quick`` encodes of the whole corpus with the chosen model."""

    CORPUS = "corpus"
    """Every text, as the pipeline would read it."""
    PROXY = "proxy"
    """The first PROXY_TOKENS tokens of every text, to find dense distractors only."""
    LEXICAL = "lexical"
    """Nothing: the sample's distractors are BM25's only."""


@dataclass(frozen=True)
class QuickPlan:
    """The plan and the numbers it was made from."""

    model: str
    documents: int
    tokens: int  # tokens the model reads over the whole corpus (each text cut at its limit)
    proxy_tokens: int  # the same, each text cut at PROXY_TOKENS
    cost: float  # the model's time per token relative to minilm
    budget: int
    reach: Reach

    def words(self) -> str:
        cost = f"{self.tokens:,} tokens x {self.cost:g}"
        if self.reach is Reach.CORPUS:
            return (f"the {self.documents:,} documents are encoded whole ({cost} within the "
                    f"{self.budget:,} budget): BM25, dense, hybrid, transforms and storage are "
                    "measured on the whole corpus")
        if self.reach is Reach.PROXY:
            return (f"the whole corpus ({cost}) is over the {self.budget:,} budget; its first "
                    f"{PROXY_TOKENS} tokens a text ({self.proxy_tokens:,} x {self.cost:g}) find "
                    "the sample's dense distractors")
        return (f"the whole corpus ({cost}), even its first {PROXY_TOKENS} tokens a text "
                f"({self.proxy_tokens:,} x {self.cost:g}), is over the {self.budget:,} budget: "
                "the sample holds BM25's distractors only, so the retrieval mode is not switched "
                "on its evidence (run without --quick to measure it)")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "documents": self.documents, "tokens": self.tokens,
                "proxy_tokens": self.proxy_tokens, "cost": self.cost, "budget": self.budget,
                "reach": str(self.reach)}


def corpus_tokens(encoder: Any, texts: Sequence[str], seed: int = 0) -> tuple[int, int]:
    """Tokens ``encoder`` reads over ``texts`` (each cut at its max length) and at PROXY_TOKENS:
    counted on every text, or estimated from COUNT_SAMPLE seeded ones in a larger corpus."""
    n = len(texts)
    if n == 0:
        return 0, 0
    picked = (np.arange(n) if n <= COUNT_SAMPLE else
              np.sort(np.random.default_rng(seed).choice(n, COUNT_SAMPLE, replace=False)))
    lengths = encoder.token_lengths([texts[int(i)] for i in picked])
    scale = n / len(picked)
    whole = int(round(np.minimum(lengths, encoder.max_length).sum() * scale))
    proxy = int(round(np.minimum(lengths, min(PROXY_TOKENS, encoder.max_length)).sum() * scale))
    return whole, proxy


def plan_quick(full: Dataset, model: str, seed: int = 0, budget: int | None = None) -> QuickPlan:
    """The plan for ``model`` on ``full`` (see the module's docstring)."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.models import encoding_cost

    budget = QUICK["encode_tokens"] if budget is None else budget
    texts = [d.content for d in full.corpus]
    tokens, proxy = corpus_tokens(Encoder(model), texts, seed)
    cost = encoding_cost(model)
    reach = (Reach.CORPUS if tokens * cost <= budget else
             Reach.PROXY if proxy * cost <= budget else Reach.LEXICAL)
    return QuickPlan(model, len(texts), tokens, proxy, cost, budget, reach)


def sample_queries(full: Dataset, limit: int, seed: int) -> Dataset:
    """``full`` with at most ``limit`` of its queries (seeded), the whole corpus kept."""
    from vecdoctor.evaluate.metrics import sample_dataset

    return sample_dataset(full, limit, None, seed)


def quick_sample(full: Dataset, plan: QuickPlan | None, seed: int, cache: Any = None,
                 say: Callable[[str], None] = lambda _m: None) -> Dataset:
    """The ``--quick`` sample: QUICK["max_queries"] queries, their judged documents, their best
    BM25 and (by ``plan``) dense matches in the whole corpus, random others. With ``plan=None``
    (several models compared) BM25 matches only, which favours no model. The dense matches of a
    ``corpus`` plan come from the vectors of the whole-corpus encoding (``cache``)."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.metrics import HARD_SHARE, sample_dataset

    encoder = None
    if plan is not None and len(full.corpus) > QUICK["max_docs"] and plan.reach is not Reach.LEXICAL:
        if plan.reach is Reach.PROXY:
            encoder = Encoder(plan.model, max_length=PROXY_TOKENS)
            say(f"dense neighbours: the first {PROXY_TOKENS} tokens of the "
                f"{len(full.corpus)} documents with {plan.model}")
        else:
            encoder = Encoder(plan.model, cache=cache)
    return sample_dataset(full, QUICK["max_queries"], QUICK["max_docs"], seed,
                          hard_share=HARD_SHARE, encoder=encoder)


def model_budget_skips(models: Sequence[str], sample: Dataset, named: bool) -> dict[str, str]:
    """Installed models (not named) whose cost on the comparison sample (its tokens x the
    model's cost) is over QUICK["model_tokens"], with why; the cheapest and the default model
    always run. A constant cost, not a timing: the same models run on a busy machine."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.evaluate.compare import REFERENCE_MODEL
    from vecdoctor.models import encoding_cost

    if named or len(models) < 2:
        return {}
    texts = [d.content for d in sample.corpus]
    costs: dict[str, tuple[int, float]] = {}
    for m in models:
        try:
            tokens, _ = corpus_tokens(Encoder(m), texts)
        except Exception as exc:  # noqa: BLE001 - reported by the comparison itself
            logger.info("no token count for %s: %s", m, exc)
            continue
        costs[m] = (tokens, encoding_cost(m))
    over = {m for m, (t, c) in costs.items() if t * c > QUICK["model_tokens"]}
    if costs:
        over.discard(min(costs, key=lambda m: costs[m][0] * costs[m][1]))
    over.discard(REFERENCE_MODEL)
    return {m: (f"its cost on the {len(texts)}-document sample ({costs[m][0]:,} tokens x "
                f"{costs[m][1]:g}) is over the {QUICK['model_tokens']:,} budget of --quick; run "
                "without --quick (or name it with -m) to measure it") for m in sorted(over)}
