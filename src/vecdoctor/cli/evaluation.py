"""Commands: evaluate, compare-models, checkup."""

from __future__ import annotations

from pathlib import Path

import typer

from vecdoctor.cli._app import command, emit, progress_enabled


class _Steps:
    """Progress on stderr: one line per step with elapsed time and a rough estimate."""

    def __init__(self, total: int | None = None) -> None:
        import time

        self.start = time.perf_counter()
        self.done = 0
        self.total = total
        self.enabled = progress_enabled()

    def __call__(self, message: str) -> None:
        import time

        elapsed = time.perf_counter() - self.start
        eta = ""
        if self.total and self.done:
            remaining = max(self.total - self.done, 0) * elapsed / self.done
            eta = f", about {remaining:.0f}s left"
        self.done += 1
        if self.enabled:
            typer.echo(f"[{elapsed:6.1f}s{eta}] {message}", err=True)


def _dataset(data: Path, split: str, sample: str | None):  # type: ignore[no-untyped-def]
    from vecdoctor.checkup import prepare_dataset
    from vecdoctor.data import Dataset, sample_corpus
    from vecdoctor.errors import InputError

    if sample:
        return prepare_dataset(Dataset(corpus=sample_corpus(sample), name=sample))
    if data is None:
        raise InputError("give a DATA folder or file, or --sample python-docs")
    return prepare_dataset(data, split=split)


@command("evaluate")
def evaluate(
    data: Path = typer.Argument(None, help="BEIR folder (corpus, queries, qrels) or a corpus without labels"),
    model: str = typer.Option("minilm", "-m", "--model"),
    variants: str = typer.Option(
        "bm25,dense,dense+whiten,dense+abtt,dense+window,hybrid,int8,binary", "--variants",
        help="Comma-separated variants (see the README for the list)",
    ),
    split: str = typer.Option("test", "--split"),
    rerank: str = typer.Option(None, "--rerank", help="Reranker for hybrid+rerank: a cross-encoder folder or maxsim"),
    output: Path = typer.Option(None, "-o", "--output", help="Folder for results.json and TREC run files"),
    sample: str = typer.Option(None, "--sample", help="Use a built-in sample corpus instead of DATA"),
    plain: bool = typer.Option(False, "--plain", help="A table for people instead of JSON"),
) -> None:
    """Evaluate pipeline variants: nDCG@10, recall, MRR, speed and size in one table."""
    from vecdoctor.variants import evaluate_variants, parse_variants

    names = parse_variants(variants)
    ds = _dataset(data, split, sample)
    steps = _Steps(len(names))
    report = evaluate_variants(ds, model, names, reranker=rerank, progress=steps)
    out = report.to_dict()
    if output is not None:
        from vecdoctor.evaluate import write_trec_run
        from vecdoctor.io import atomic_dir

        with atomic_dir(output) as tmp:
            (tmp / "runs").mkdir()
            for r in report.results:
                write_trec_run(r.run, tmp / "runs" / f"{r.name}.trec", tag=r.name)
            import json

            (tmp / "results.json").write_text(json.dumps(out, indent=2) + "\n")
        out["output"] = str(output)
    if plain:
        _print_table(report.table(), ["variant", "ndcg@10", "recall@10", "recall@100", "mrr@10",
                                      "docs_per_second", "query_ms_p50", "bytes_per_doc", "delta_ndcg@10", "p_value"])
        if ds.self_supervised:
            typer.echo("(self-supervised queries: no labels were found)")
    else:
        emit(out)


def _print_table(rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(*("-" if r.get(c) is None else str(r.get(c)) for c in columns))
    Console().print(table)


@command("compare-models")
def compare_models_cmd(
    data: Path = typer.Argument(None, help="BEIR folder or a corpus without labels"),
    models: str = typer.Option(None, "-m", "--models", help="Comma-separated models (default: every installed one)"),
    prefer: str = typer.Option("quality", "--prefer", help="quality | speed | memory"),
    split: str = typer.Option("test", "--split"),
    sample: str = typer.Option(None, "--sample", help="Use a built-in sample corpus instead of DATA"),
    plain: bool = typer.Option(False, "--plain"),
) -> None:
    """Compare models on your data and recommend one by your priority."""
    from vecdoctor.checkup import installed_models
    from vecdoctor.compare import Prefer, compare_models

    Prefer.parse(prefer)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else installed_models()
    ds = _dataset(data, split, sample)
    comp = compare_models(ds, names, prefer=prefer, progress=_Steps(len(names)))
    if plain:
        _print_table([r.to_dict() for r in comp.rows],
                     ["model", "dimension", "ndcg@10", "recall@10", "docs_per_second", "query_ms_p50",
                      "isotropy", "mean_cosine", "bytes_per_vector", "error"])
        typer.echo(f"recommended ({comp.prefer}): {comp.recommended} — {comp.reason}")
    else:
        emit(comp.to_dict())


@command("checkup")
def checkup_cmd(
    data: Path = typer.Argument(None, help="BEIR folder or a corpus; omit with --sample"),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.html, report.json, pipeline.json)"),
    models: str = typer.Option(None, "-m", "--models", help="Comma-separated models (default: every installed one)"),
    prefer: str = typer.Option("quality", "--prefer", help="quality | speed | memory"),
    quick: bool = typer.Option(False, "--quick", help="Sample queries and documents; minutes instead of tens"),
    split: str = typer.Option("test", "--split"),
    rerank: str = typer.Option(None, "--rerank", help="Also test a reranker (cross-encoder folder or maxsim)"),
    sample: str = typer.Option(None, "--sample", help="Run on a built-in sample corpus: python-docs"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The main job: compare models, diagnose, evaluate fixes, recommend a pipeline, write a report."""
    from vecdoctor.checkup import checkup, write_checkup
    from vecdoctor.compare import Prefer

    Prefer.parse(prefer)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    ds = _dataset(data, split, sample)
    steps = _Steps(len(names or []) + 10)
    result = checkup(ds, names, prefer=prefer, quick=quick, reranker=rerank, seed=seed, progress=steps)
    write_checkup(result, output)
    emit(
        {
            "report": str(output / "report.html"),
            "pipeline": str(output / "pipeline.json"),
            "recommended": result.pipeline,
            "decisions": [d.to_dict() for d in result.decisions],
            "seconds": result.meta["seconds"],
        }
    )
    typer.echo(f"report written to {output / 'report.html'}", err=True)
