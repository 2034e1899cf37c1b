"""The checkup's result and how it is written: report.html, report.json, pipeline.json, runs/,
the fitted transform/ and, when labels were made from the corpus, the queries and qrels."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecdoctor.checkup.rules import Decision
from vecdoctor.data import Dataset
from vecdoctor.evaluate.compare import Comparison
from vecdoctor.evaluate.runs import VariantsReport
from vecdoctor.pipeline import Pipeline


@dataclass
class CheckupResult:
    """Everything one checkup measured and decided."""

    dataset: Dataset
    pipeline: Pipeline
    decisions: list[Decision]
    comparison: Comparison | None
    diagnosis: Any  # vecdoctor.diagnose.run.DiagnosisReport, or None when it failed
    variants: VariantsReport
    meta: dict[str, Any] = field(default_factory=dict)
    transform: Any = None  # the fitted transform of the recommended pipeline, if any
    fusion_tuning: Any = None  # vecdoctor.checkup.fusion.FusionTuning, for a hybrid pipeline
    rerank_budget: Any = None  # vecdoctor.checkup.rerank_budget.RerankBudget, with a reranker
    sample_variants: VariantsReport | None = None
    """``--quick`` on a corpus it encodes whole: the variants that encode differently (windows,
    chunks, poolings), measured on the sample beside its plain dense."""
    labels: Dataset | None = None
    """The whole evaluation set when its queries were made from the corpus (self-supervised)."""

    def to_dict(self) -> dict[str, Any]:
        from vecdoctor.persist import header

        return {
            **header("CheckupReport", 1),
            "meta": self.meta,
            "pipeline": self.pipeline.to_dict(),
            "decisions": [d.to_dict() for d in self.decisions],
            "model_comparison": self.comparison.to_dict() if self.comparison else None,
            "variants": self.variants.to_dict() if self.variants else None,
            "sample_variants": self.sample_variants.to_dict() if self.sample_variants else None,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "fusion_tuning": self.fusion_tuning.to_dict() if self.fusion_tuning else None,
            "rerank_budget": self.rerank_budget.to_dict() if self.rerank_budget else None,
        }


def pipeline_file(result: CheckupResult, transform_dir: Path | None = None) -> Pipeline:
    """The recommended pipeline with its evidence and data: what pipeline.json holds."""
    return dataclasses.replace(
        result.pipeline,
        transform_dir=transform_dir,
        evidence={d.topic + ":" + d.choice: d.evidence for d in result.decisions if d.recommended},
        measured_on={k: result.meta[k] for k in ("dataset", "documents", "queries", "self_supervised", "quick")},
    )


def write_checkup(result: CheckupResult, folder: str | Path, force: bool = False) -> Path:
    """Write report.html, report.json, pipeline.json, runs/ (runs/sample/ for the quick
    sample's rows), transform/ and, for self-supervised queries, ``queries/`` (a BEIR folder:
    corpus, queries and qrels/test.tsv, to evaluate again later) atomically; an existing folder
    is replaced only when it holds a checkup report (or with ``force``)."""
    from vecdoctor.data import write_corpus_jsonl
    from vecdoctor.evaluate.metrics import write_trec_run
    from vecdoctor.io import atomic_dir
    from vecdoctor.persist import CHECKUP, check_output
    from vecdoctor.report.checkup import render_checkup

    folder = check_output(folder, CHECKUP, force)
    html = render_checkup(result)
    payload = json.dumps(result.to_dict(), indent=2, default=_jsonable) + "\n"
    with atomic_dir(folder) as tmp:
        for sub, report in (("runs", result.variants), ("runs/sample", result.sample_variants)):
            if report is None:
                continue
            (tmp / sub).mkdir(parents=True)
            for r in report.results:
                write_trec_run(r.run, tmp / sub / f"{r.name}.trec", tag=r.name)
        transform_dir = None
        if result.transform is not None:
            transform_dir = tmp / "transform"
            result.transform.save(transform_dir)
        pipeline_file(result, transform_dir).save(tmp / "pipeline.json")
        if result.labels is not None and result.labels.self_supervised:
            _write_queries(tmp / "queries", result.labels, write_corpus_jsonl)
        (tmp / "report.json").write_text(payload, encoding="utf-8")
        (tmp / "report.html").write_text(html, encoding="utf-8")
    return folder


def _write_queries(folder: Path, labels: Dataset, write_corpus: Any) -> None:
    """The self-supervised queries as a BEIR folder: the corpus they were cut from, the queries
    and qrels/test.tsv."""
    folder.mkdir()
    write_corpus(labels.corpus, folder / "corpus.jsonl")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid in sorted(labels.queries):
            fh.write(json.dumps({"_id": qid, "text": labels.queries[qid]}) + "\n")
    (folder / "qrels").mkdir()
    rows = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{s}" for q in sorted(labels.qrels) for d, s in sorted(labels.qrels[q].items())]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _jsonable(obj: Any) -> Any:
    from vecdoctor.diagnose._common import to_jsonable

    return to_jsonable(obj)
