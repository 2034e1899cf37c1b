"""Commands of production health: baseline, monitor, compare-pipelines."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from vecdoctor.cli._app import FORCE, command, emit


@command("baseline")
def baseline_command(
    index: Path = typer.Argument(..., help="Index folder written by `vecdoctor index`, or a "
                                 "LanceDB database"),
    table: str = typer.Option("documents", "--table", help="LanceDB: the table"),
    sample: int = typer.Option(2000, "--sample", help="Documents sampled for the baseline"),
    queries: int = typer.Option(300, "--queries", help="Self-supervised queries encoded"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Compute (again) the corpus baseline the monitor compares traffic with, and store it
    with the index: for indexes built before 0.3.0, or after a damaged baseline."""
    from vecdoctor.errors import InputError
    from vecdoctor.index.baseline import compute_baseline

    if sample < 2 or queries < 0:
        raise InputError(f"--sample must be >= 2 and --queries >= 0, got {sample} and {queries}")
    start = time.perf_counter()
    if (index / f"{table}.lance").is_dir():
        from vecdoctor.index.lance import LanceIndex, save_baseline

        lance = LanceIndex.load(str(index), table, baseline=False)
        baseline = compute_baseline(lance, sample=sample, n_queries=queries, seed=seed)
        save_baseline(lance, baseline)
    else:
        from vecdoctor.index.store import Index

        idx = Index.load(index, baseline=False)
        baseline = idx.baseline = compute_baseline(idx, sample=sample, n_queries=queries,
                                                   seed=seed)
        idx.save(index)
    emit({"index": str(index), "seconds": round(time.perf_counter() - start, 2),
          "baseline": baseline.summary()})


@command("monitor")
def monitor_command(
    index: Path = typer.Argument(..., help="Index folder (with its baseline)"),
    new: Path = typer.Argument(..., help="New documents (corpus.jsonl, one text a line) or a "
                               "query log (one query a line, or JSONL with 'query'/'text')"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for report.json and .html"),
    kind: str = typer.Option("auto", "--kind", help="documents, queries, or auto (documents when "
                             "the lines carry a title, queries otherwise)"),
    sample: int = typer.Option(1000, "--sample", help="New texts compared at most"),
    permutations: int = typer.Option(500, "--permutations", help="Of the two-sample test"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = FORCE,
) -> None:
    """Drift report of new documents or a query log against the index baseline (HTML + JSON)."""
    from vecdoctor.errors import InputError
    from vecdoctor.index.store import Index
    from vecdoctor.monitor.drift import TextKind, drift_report
    from vecdoctor.monitor.logs import read_text_log
    from vecdoctor.persist import DRIFT, check_output
    from vecdoctor.report.monitor import write_drift_report

    check_output(output, DRIFT, force)
    if kind != "auto":
        kind = str(TextKind.parse(kind))
    if sample < 10 or permutations < 99:
        raise InputError(f"--sample must be >= 10 and --permutations >= 99, got {sample} and "
                         f"{permutations}")
    texts, skipped, titled = read_text_log(new)
    if kind == "auto":
        kind = "documents" if titled else "queries"
    idx = Index.load(index)
    report = drift_report(idx, texts, kind, sample=sample, permutations=permutations, seed=seed,
                          skipped=skipped)
    write_drift_report(report, output, force)
    emit({
        "output": str(output), "report_html": str(output / "report.html"),
        "verdict": report.verdict, "kind": report.kind, "texts": report.texts,
        "skipped": report.skipped,
        "mmd_p_value": report.tests["embeddings_mmd"]["p_value"],
        "answerability_p_value": report.tests["answerability_mannwhitney"]["p_value"],
        "ood_share": round(report.answerability["ood_share"], 4),
        "actions": report.actions,
    })


@command("compare-pipelines")
def compare_pipelines_command(
    old: Path = typer.Argument(..., help="The pipeline served now: an index folder or a "
                               "pipeline.json"),
    new: Path = typer.Argument(..., help="The pipeline to switch to (same forms)"),
    data: Path = typer.Argument(None, help="BEIR folder (queries + qrels) or a corpus "
                                "(self-supervised queries); default: OLD's documents"),
    output: Path = typer.Option(None, "-o", "--output", help="Folder for report.json and .html"),
    split: str = typer.Option("test", "--split"),
    max_queries: int = typer.Option(300, "--max-queries", help="Queries compared at most"),
    max_docs: int = typer.Option(5000, "--max-docs", help="Documents indexed at most (judged "
                                 "ones first)"),
    cache: Path = typer.Option(None, "--cache", help="Vector cache folder shared by both builds"),
    force: bool = FORCE,
) -> None:
    """Migration guard: overlap@10, top-1 changes, rank correlation and nDCG@10 of OLD and
    NEW with a paired test; verdict equivalent, safe or regression."""
    from vecdoctor.cli._app import progress_enabled
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.monitor.migrate import compare_pipelines
    from vecdoctor.persist import MIGRATION, check_output
    from vecdoctor.report.monitor import write_migration_report

    if output is not None:
        check_output(output, MIGRATION, force)
    dataset = _comparison_data(old, data, split, max_queries, max_docs)
    options = {"cache": VectorCache(cache)} if cache is not None else None
    report = compare_pipelines(old, new, dataset, encoder_options=options,
                               show_progress=progress_enabled())
    if output is not None:
        write_migration_report(report, output, force)
    emit({**({"output": str(output)} if output is not None else {}),
          **{k: v for k, v in report.to_dict().items() if k not in {"class", "format_version"}}})


def _comparison_data(old: Path, data: Path | None, split: str, max_queries: int,
                     max_docs: int) -> object:
    """The dataset both pipelines are built and judged on."""
    from vecdoctor.data import Dataset, load_dataset
    from vecdoctor.errors import InputError
    from vecdoctor.evaluate.metrics import sample_dataset, self_supervised

    if max_queries < 10 or max_docs < 10:
        raise InputError(f"--max-queries and --max-docs must be >= 10, got {max_queries} and "
                         f"{max_docs}")
    if data is not None:
        dataset = load_dataset(data, split=split)
    else:
        from vecdoctor.index.store import Index

        if not (old / "config.json").is_file():
            raise InputError(f"{old}: pass DATA, or an index folder as OLD (its documents are used)")
        dataset = Dataset(corpus=list(Index.load(old, baseline=False).docs), queries={}, qrels={})
    if not dataset.qrels:
        dataset = self_supervised(dataset.corpus, n_queries=max_queries)
    return sample_dataset(dataset, max_queries, max_docs)
