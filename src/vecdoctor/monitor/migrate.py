"""The migration guard: is switching from one pipeline to another safe?

    report = compare_pipelines("old-index", "new/pipeline.json", dataset)

OLD and NEW are index folders or ``pipeline.json`` files (another model, backend, precision,
transform, storage or vecdoctor version). Both are built on the same corpus (the dataset's,
or the OLD index's documents with self-supervised queries) and searched with their own
settings through the one :class:`~vecdoctor.search.searcher.Searcher`. Per query:

- **overlap@10** of the two top-10 lists and whether the **top-1** changed;
- **rank correlation** (Spearman) of the dense scores the two pipelines give the union of
  their top-10 documents: do the two vector spaces order the same documents the same way?
- **nDCG@10** of both against the judgements, with a two-sided paired randomization test.

Verdict: ``regression`` when NEW loses at least 0.005 nDCG@10 at p < 0.05; ``equivalent``
when it does not and the results hardly change (mean overlap@10 >= 0.8, top-1 kept for 80%
of queries); ``safe`` otherwise (results differ, quality does not drop; an improvement of
0.005 or more at p < 0.05 is said so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError
from vecdoctor.evaluate.metrics import MAX_P, MIN_GAIN

logger = logging.getLogger(__name__)

SAME_OVERLAP = 0.8
SAME_TOP1 = 0.8


@dataclass
class MigrationReport:
    old: dict[str, Any]
    new: dict[str, Any]
    queries: int
    documents: int
    self_supervised: bool
    verdict: str
    message: str
    overlap_at_10: float
    top1_changed: float
    rank_correlation: float
    ndcg_old: float
    ndcg_new: float
    p_value: float
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from vecdoctor.diagnose._common import to_jsonable
        from vecdoctor.persist import header

        data = {k: v for k, v in self.__dict__.items() if k != "per_query"}
        return {**header("MigrationReport", 1), **to_jsonable(data)}


def load_pipeline(location: str | Path) -> Any:
    """The :class:`~vecdoctor.pipeline.Pipeline` of an index folder or a pipeline.json."""
    from vecdoctor.index.store import Index
    from vecdoctor.pipeline import Pipeline

    path = Path(location)
    if path.is_dir() and (path / "config.json").is_file():
        return Index.load(path, baseline=False).pipeline
    if path.is_dir() and (path / "pipeline.json").is_file():
        return Pipeline.load(path / "pipeline.json")
    if path.is_file():
        return Pipeline.load(path)
    raise InputError(f"{location}: neither an index folder nor a pipeline.json; pass the folder "
                     "`vecdoctor index` wrote or the pipeline.json `vecdoctor checkup` wrote")


def _describe(pipeline: Any, location: str | Path) -> dict[str, Any]:
    return {"location": str(location), "model": pipeline.model, "backend": str(pipeline.backend),
            "model_precision": str(pipeline.model_precision), "pooling": str(pipeline.pooling),
            "transform": str(pipeline.transform) if pipeline.transform else None,
            "storage": str(pipeline.storage), "mode": str(pipeline.mode)}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two score vectors (NaN below 3 values or without variance)."""
    from scipy import stats

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def compare_pipelines(old: str | Path, new: str | Path, dataset: Any,
                      encoder_options: dict[str, Any] | None = None,
                      show_progress: bool = False) -> MigrationReport:
    """Build both pipelines on ``dataset``'s corpus, search its queries, compare (see module)."""
    from vecdoctor.evaluate.metrics import evaluate_run, randomization_test
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    pipelines = {"old": load_pipeline(old), "new": load_pipeline(new)}
    searchers: dict[str, Any] = {}
    for name, pipeline in pipelines.items():
        index = Index.from_pipeline(dataset.corpus, pipeline, encoder_options=encoder_options,
                                    show_progress=show_progress, baseline=False)
        searchers[name] = Searcher(index, cache_size=0)
    qids = sorted(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    hits = {name: s.search_batch(texts, k=10) for name, s in searchers.items()}
    vectors = {name: s.embed(texts) for name, s in searchers.items()}
    overlap, changed, rho = [], [], []
    for i in range(len(qids)):
        a = [h.id for h in hits["old"][i]]
        b = [h.id for h in hits["new"][i]]
        overlap.append(len(set(a) & set(b)) / max(min(len(a), len(b)), 1))
        changed.append(bool(a[:1] != b[:1]))
        union = sorted(set(a) | set(b))
        scores = {}
        for name, searcher in searchers.items():
            rows = [searcher.index.row(d) for d in union]
            scores[name] = searcher.index.vectors.score_rows(vectors[name][i], rows)
        rho.append(spearman(scores["old"], scores["new"]))
    runs = {name: {q: {h.id: h.score - 1e-9 * r for r, h in enumerate(hits[name][i])}
                   for i, q in enumerate(qids)} for name in hits}
    ndcg = {name: evaluate_run(dataset.qrels, run, ["ndcg@10"]) for name, run in runs.items()}
    per_query = {name: e.per_query["ndcg@10"] for name, e in ndcg.items()}
    p = randomization_test(per_query["new"], per_query["old"])
    report = MigrationReport(
        old=_describe(pipelines["old"], old), new=_describe(pipelines["new"], new),
        queries=len(qids), documents=len(dataset.corpus),
        self_supervised=bool(getattr(dataset, "self_supervised", False)), verdict="", message="",
        overlap_at_10=float(np.mean(overlap)), top1_changed=float(np.mean(changed)),
        rank_correlation=float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
        ndcg_old=ndcg["old"].metrics["ndcg@10"], ndcg_new=ndcg["new"].metrics["ndcg@10"],
        p_value=p, per_query={"overlap@10": dict(zip(qids, overlap, strict=True)),
                              "ndcg_old": per_query["old"], "ndcg_new": per_query["new"]},
    )
    report.verdict, report.message = decide(report)
    return report


def decide(report: MigrationReport) -> tuple[str, str]:
    """The verdict (see the module) and one sentence with its numbers."""
    delta = report.ndcg_new - report.ndcg_old
    numbers = (f"nDCG@10 {report.ndcg_old:.4f} -> {report.ndcg_new:.4f} ({delta:+.4f}, paired "
               f"p={report.p_value:.3g}), overlap@10 {report.overlap_at_10:.2f}, top-1 changed for "
               f"{report.top1_changed:.0%} of {report.queries} queries, rank correlation "
               f"{report.rank_correlation:.2f}")
    if delta <= -MIN_GAIN and report.p_value < MAX_P:
        return "regression", f"the new pipeline is worse: {numbers}; do not switch"
    if report.overlap_at_10 >= SAME_OVERLAP and 1 - report.top1_changed >= SAME_TOP1:
        return "equivalent", f"the new pipeline returns nearly the same results: {numbers}"
    better = delta >= MIN_GAIN and report.p_value < MAX_P
    return "safe", (f"the new pipeline {'is better' if better else 'is no worse'} but its results "
                    f"differ: {numbers}; clients will see different rankings")
