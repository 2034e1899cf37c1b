"""HTML of the drift report (``vecdoctor monitor``) and of the migration guard
(``vecdoctor compare-pipelines``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdoctor.report import figures
from vecdoctor.report.html import Figure, Section, Table, render_html, write_report_folder

_BADGE = {"no drift": "ok", "drift": "warn", "partial drift": "warn", "out of domain": "fail",
          "equivalent": "ok", "safe": "ok", "different": "warn", "regression": "fail"}


def _length_section(report: Any, what: str) -> Section:
    tests, lengths, figs = report.tests, report.lengths, report.figures
    length_rows = [(q, lengths["baseline_tokens"].get(q), lengths["tokens"].get(q))
                   for q in ("p5", "p50", "p95", "mean")]
    truncation = lengths["truncation_rate"]
    length_series = [("new", figs["lengths"])]
    if len(figs["ref_lengths"]):  # documents only: queries are not compared with documents
        length_series.insert(0, ("baseline", figs["ref_lengths"]))
    if tests["lengths_ks"]:
        said = (f"Truncated at the model's limit: {_pct(truncation)} (baseline "
                f"{_pct(lengths['baseline_truncation_rate'])}). Kolmogorov-Smirnov p = "
                f"{tests['lengths_ks']['p_value']:.3g}: {tests['lengths_ks']['meaning']}.")
        table = Table(["tokens", "baseline", "new"], length_rows, digits=1)
    else:  # queries: their lengths are not compared with the documents'
        said = (f"Truncated at the model's limit: {_pct(truncation)} of the {what}. Their "
                "lengths are shown alone: queries are not compared with documents' lengths.")
        table = Table(["tokens", what], [(q, v) for q, _, v in length_rows], digits=1)
    return Section(
        "Length",
        paragraphs=[said],
        tables=[table],
        figures=[Figure("token lengths", figures.distributions(length_series, "tokens"))],
    )


def drift_sections(report: Any) -> list[Section]:
    tests, answer, geo = report.tests, report.answerability, report.geometry
    mmd, mw = tests["embeddings_mmd"], tests["answerability_mannwhitney"]
    what = "queries" if report.kind == "queries" else "documents"
    skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report.skipped.items()) or "none"
    verdict = Section(
        "Verdict",
        paragraphs=[
            f"{report.verdict.upper()} ({report.answerability['verdict']}): {report.texts} new "
            f"{what} against the baseline of "
            f"{report.meta['baseline_documents']} documents ({tests['sample']} compared). "
            f"Lines skipped: {skipped}.",
            *[f"What to do: {a}" for a in report.actions],
        ],
        verdict=_BADGE.get(report.verdict),
    )
    figs = report.figures
    answerable = Section(
        "Can the index answer them?",
        paragraphs=[
            f"Best dense score of each text in the index, against the same score of the "
            f"corpus' own {what} in the baseline. {answer['ood_share']:.1%} fall below the "
            f"baseline's 10th percentile ({answer['threshold']:.3f}): they are out of domain. "
            f"A tenth of the corpus' own {what} do by definition, real {what} about the "
            f"corpus fewer; the alarm needs {answer['alarm_share']:.0%} of these "
            f"{tests['sample']} (more than chance allows, binomial p < 0.001). So: "
            f"{answer['verdict']}.",
            f"One-sided Mann-Whitney test (new lower): p = {mw['p_value']:.3g}; {mw['meaning']}.",
        ],
        figures=[Figure("best dense score", figures.distributions(
            [("baseline", figs["ref_best"]), ("new", figs["best"])], "best dense score in the index",
            marks=[("baseline 10th percentile", answer["threshold"])]))],
    )
    space = Section(
        "Embedding distribution",
        paragraphs=[
            f"Two-sample test (MMD, Gaussian kernel, {mmd['permutations']} permutations): "
            f"MMD² = {mmd['mmd2']:.4g}, p = {mmd['p_value']:.3g}: {mmd['meaning']}.",
            f"Centroid shift {geo['centroid']['shift']:.4f} (chance alone: up to "
            f"{geo['centroid']['chance_p95']:.4f}). Mean pairwise cosine {geo['mean_cosine']:.3f} "
            f"(baseline {geo['baseline_mean_cosine']:.3f}), isotropy {geo['isotropy']:.3f} "
            f"(baseline {geo['baseline_isotropy']:.3f}).",
        ],
        figures=[
            Figure("projection", figures.projection([("baseline", figs["reference"]),
                                                     ("new", figs["vectors"])])),
            Figure("permutation test", figures.distributions(
                [("MMD² under no change (permutations)", figs["null"])], "MMD²",
                marks=[("observed", mmd["mmd2"])])),
        ],
    )
    size = _length_section(report, what)
    vocab = Section(
        "Vocabulary",
        paragraphs=["Words in 2% or more of the new texts that at most 1 in 1000 corpus documents "
                    "uses, and the pieces the model's tokenizer cuts them into."
                    if report.vocabulary else "No frequent new words."],
        tables=[Table(["term", "share of new texts", "share of corpus", "pieces"],
                      [(v["term"], v["share_of_texts"], v["corpus_share"], v["pieces"])
                       for v in report.vocabulary])] if report.vocabulary else [],
    )
    return [verdict, answerable, space, size, vocab]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def write_drift_report(report: Any, folder: str | Path, force: bool = False) -> Path:
    """report.json and report.html, written together; ``folder`` is replaced only when it holds
    a drift report (or with ``force``)."""
    from vecdoctor.persist import DRIFT

    html = render_html(f"vecdoctor drift report: {report.verdict}", drift_sections(report),
                       meta={k: v for k, v in report.meta.items() if not isinstance(v, dict)},
                       subtitle=f"{report.texts} new {report.kind} · {report.meta['model']}")
    return Path(write_report_folder(folder, DRIFT, force, html, report.to_dict()))


def migration_sections(report: Any) -> list[Section]:
    rows = [(key, report.old.get(key), report.new.get(key)) for key in
            ("location", "model", "backend", "model_precision", "pooling", "transform", "storage",
             "mode")]
    per = report.per_query
    qids = sorted(per["ndcg_old"])
    labels = "self-supervised queries (no labels given)" if report.self_supervised else "judged queries"
    return [
        Section("Verdict", paragraphs=[f"{report.verdict.upper()}: {report.message}."],
                verdict=_BADGE.get(report.verdict)),
        Section("Pipelines", tables=[Table(["setting", "old", "new"], rows)]),
        Section(
            "Results",
            paragraphs=[f"{report.queries} {labels} over {report.documents} documents."],
            tables=[Table(["measure", "value"], [
                ("nDCG@10 old", report.ndcg_old), ("nDCG@10 new", report.ndcg_new),
                ("paired randomization test p", report.p_value),
                ("mean overlap@10", report.overlap_at_10),
                ("share of queries whose top-1 changed", report.top1_changed),
                ("rank correlation of dense scores (Spearman)", report.rank_correlation)],
                digits=4)],
            figures=[
                Figure("overlap@10", figures.distributions(
                    [("queries", [per["overlap@10"][q] for q in qids])], "overlap of the two top-10",
                    bins=11)),
                Figure("per-query nDCG@10", figures.paired_scatter(
                    [per["ndcg_old"][q] for q in qids], [per["ndcg_new"][q] for q in qids],
                    "nDCG@10 old", "nDCG@10 new")),
            ],
        ),
    ]


def write_migration_report(report: Any, folder: str | Path, force: bool = False) -> Path:
    """report.json and report.html of ``vecdoctor compare-pipelines``."""
    from vecdoctor.persist import MIGRATION

    html = render_html(f"vecdoctor pipeline comparison: {report.verdict}",
                       migration_sections(report),
                       subtitle=f"{report.old['model']} -> {report.new['model']}")
    return Path(write_report_folder(folder, MIGRATION, force, html, report.to_dict()))
