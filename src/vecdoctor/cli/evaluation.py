"""Commands: evaluate, compare-models, checkup."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vecdoctor.cli._app import (
    FORCE,
    RERANK_BACKEND,
    RERANK_FUSION,
    RERANK_PRECISION,
    command,
    emit,
    progress_enabled,
)

if TYPE_CHECKING:
    from vecdoctor.evaluate.runs import VariantsReport


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


def _dataset(data: Path, split: str, sample: str | None, keep_self_hits: bool = False) -> Any:
    from vecdoctor.checkup.run import prepare_dataset
    from vecdoctor.data import Dataset, sample_corpus
    from vecdoctor.errors import InputError

    if sample:
        ds = prepare_dataset(Dataset(corpus=sample_corpus(sample), name=sample))
    elif data is None:
        raise InputError("give a DATA folder or file, or --sample python-docs")
    else:
        ds = prepare_dataset(data, split=split)
    ds.keep_self_hits = keep_self_hits
    return ds


KEEP_SELF_HITS = typer.Option(
    False, "--keep-self-hits", help="Count a retrieved document whose id is the query's id "
    "(left out by default, as BEIR and MTEB do: a query that is itself a document)")


_VARIANTS_HELP = (
    "Comma-separated variants, listed in the README (default: bm25,dense,dense+whiten,dense+whiten-k,"
    "dense+abtt,dense+window,hybrid,int8,binary, less those no --store can run)"
)


@command("evaluate")
def evaluate(
    data: Path = typer.Argument(None, help="BEIR folder (corpus, queries, qrels) or a corpus without labels"),
    model: str = typer.Option(None, "-m", "--model", help="Model (default: minilm); with --index: "
                              "fail unless the index was built with this model"),
    variants: str = typer.Option(None, "--variants", help=_VARIANTS_HELP),
    store: str = typer.Option(
        None, "--store", help="Where each variant's index is built: dir (an index folder; also: folder) | lancedb "
        "| dir,lancedb for both in one table, rows named VARIANT@STORE (default: dir)",
    ),
    uri: str = typer.Option(
        None, "--uri", help="--store lancedb: keep the tables in this LanceDB database "
        "(default: a temporary folder, removed afterwards)",
    ),
    index: Path = typer.Option(
        None, "--index", help="Evaluate this saved index (folder or LanceDB) instead of building variants",
    ),
    modes: str = typer.Option(None, "--modes", help="With --index: bm25,dense,hybrid (default: all three)"),
    table: str = typer.Option(None, "--table", help="With --index on a LanceDB database: the table "
                              "(default: documents)"),
    split: str = typer.Option("test", "--split"),
    rerank: str = typer.Option(None, "--rerank", help="Reranker for hybrid+rerank: a cross-encoder folder or maxsim"),
    rerank_fusion: str = RERANK_FUSION,
    rerank_backend: str = RERANK_BACKEND,
    rerank_precision: str = RERANK_PRECISION,
    output: Path = typer.Option(None, "-o", "--output", help="Folder for results.json and TREC run files"),
    sample: str = typer.Option(None, "--sample", help="Use a built-in sample corpus instead of DATA"),
    plain: bool = typer.Option(False, "--plain", help="A table for people instead of JSON"),
    keep_self_hits: bool = KEEP_SELF_HITS,
    force: bool = FORCE,
) -> None:
    """Evaluate pipeline variants, or a saved index: nDCG@10, recall, MRR, speed and size in one table."""
    from vecdoctor.persist import EVALUATION, check_output

    if output is not None:
        check_output(output, EVALUATION, force)
    if index is not None:
        report = _evaluate_saved(data, index, table or "documents", model, modes, split,
                                 {"--variants": variants, "--store": store, "--uri": uri,
                                  "--rerank": rerank, "--rerank-fusion": rerank_fusion, "--sample": sample},
                                 keep_self_hits)
    else:
        from vecdoctor.errors import InputError
        from vecdoctor.evaluate.variants import (
            DEFAULT_VARIANTS,
            evaluate_variants,
            parse_stores,
            parse_variants,
        )

        if modes is not None or table is not None:
            raise InputError("--modes and --table are for --index; to choose what is built, use --variants")
        names = parse_variants(variants) if variants is not None else None
        stores = parse_stores(store or "dir")
        ds = _dataset(data, split, sample, keep_self_hits)
        steps = _Steps(len(names or DEFAULT_VARIANTS) * len(stores))
        report = evaluate_variants(ds, model or "minilm", names, reranker=rerank, progress=steps,
                                   store=stores, uri=uri, rerank_fusion=rerank_fusion or "rrf",
                                   rerank_backend=rerank_backend, rerank_precision=rerank_precision,
                                   show_progress=progress_enabled())
    out = report.to_dict()
    if output is not None:
        _write_results(report, out, output, force)
        out["output"] = str(output)
    if plain:
        _print_table(report.table(), ["variant", "ndcg@10", "recall@10", "recall@100", "mrr@10",
                                      "docs_per_second", "query_ms_p50", "bytes_per_doc", "delta_ndcg@10", "p_value"])
        for s in report.skipped:
            typer.echo(f"skipped {s['variant']} on {s['store']}: {s['reason']}")
        if report.coverage and report.coverage["missing_from_index"]:
            c = report.coverage
            typer.echo(f"the index lacks {c['missing_from_index']} of the {c['judged_documents']} "
                       "judged documents; they count as not found")
        if report.self_supervised:
            typer.echo("(self-supervised queries: no labels were found; with --index each query "
                       "is a sentence the index holds verbatim, so compare indexes of this corpus "
                       "with these numbers, not judged ones)" if index is not None else
                       "(self-supervised queries: no labels were found)")
    else:
        emit(out)


def _evaluate_saved(data: Path | None, location: Path, table: str, model: str | None,
                    modes: str | None, split: str, ignored: dict[str, str | None],
                    keep_self_hits: bool = False) -> VariantsReport:
    """`evaluate DATA --index PATH`: the dataset's queries through a saved index, per mode."""
    from vecdoctor.cli.retrieval import check_model, open_index
    from vecdoctor.data import load_dataset
    from vecdoctor.errors import InputError
    from vecdoctor.evaluate.saved import evaluate_index
    from vecdoctor.evaluate.variants import parse_modes

    given = [name for name, value in ignored.items() if value is not None]
    if given:
        raise InputError(f"--index evaluates the saved pipeline as it is; drop {', '.join(given)}")
    if data is None:
        raise InputError("give the DATA folder (queries and qrels, or a corpus for "
                         "self-supervised queries) to evaluate --index against")
    chosen = parse_modes(modes or "bm25,dense,hybrid")
    idx = open_index(location, table)
    check_model(idx, model)
    ds = load_dataset(data, split=split)
    if not ds.has_labels:
        # as the checkup does; the saved index holds each query's sentence verbatim, so the
        # numbers compare indexes of this corpus with each other, not with judged ones
        from vecdoctor.checkup.run import prepare_dataset

        ds = prepare_dataset(ds, split=split)
    ds.keep_self_hits = keep_self_hits
    return evaluate_index(idx, ds, chosen, progress=_Steps(len(chosen)))


def _write_results(report: VariantsReport, out: dict[str, Any], output: Path, force: bool) -> None:
    """results.json and runs/<row>.trec, written atomically."""
    import json

    from vecdoctor.evaluate.runs import write_runs
    from vecdoctor.io import atomic_dir
    from vecdoctor.persist import EVALUATION, check_output, header

    check_output(output, EVALUATION, force)
    with atomic_dir(output) as tmp:
        (tmp / "runs").mkdir()
        write_runs(report.results, tmp / "runs")
        payload = {**header("EvaluationResults", 1), **out}
        (tmp / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def _print_table(rows: list[dict], columns: list[str]) -> None:
    """A table for people: numbers to 4 decimals, never cut (a pipe gets the whole width)."""
    from rich.console import Console
    from rich.table import Table

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    table = Table(*columns)
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(160, sum(len(c) + 12 for c in columns)))
    console.print(table)


@command("compare-models")
def compare_models_cmd(
    data: Path = typer.Argument(None, help="BEIR folder or a corpus without labels"),
    models: str = typer.Option(None, "-m", "--models", help="Comma-separated models (default: every installed one)"),
    prefer: str = typer.Option("quality", "--prefer", help="quality | speed | memory"),
    split: str = typer.Option("test", "--split"),
    sample: str = typer.Option(None, "--sample", help="Use a built-in sample corpus instead of DATA"),
    time_budget: float = typer.Option(
        None, "--time-budget", help="Seconds: models estimated to take longer to encode the corpus "
        "are listed as skipped, not measured (the fastest always runs)",
    ),
    plain: bool = typer.Option(False, "--plain"),
    keep_self_hits: bool = KEEP_SELF_HITS,
) -> None:
    """Compare models on your data and recommend one by your priority."""
    from vecdoctor.checkup.run import installed_models
    from vecdoctor.evaluate.compare import Prefer, compare_models

    Prefer.parse(prefer)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else installed_models()
    ds = _dataset(data, split, sample, keep_self_hits)
    comp = compare_models(ds, names, prefer=prefer, progress=_Steps(len(names)), time_budget=time_budget,
                          show_progress=progress_enabled())
    if plain:
        _print_table([r.to_dict() for r in comp.rows],
                     ["model", "dimension", "ndcg@10", "recall@10", "docs_per_second", "query_ms_p50",
                      "isotropy", "mean_cosine", "bytes_per_vector", "error", "skipped"])
        typer.echo(f"recommended ({comp.prefer}): {comp.recommended} — {comp.reason}")
    else:
        emit(comp.to_dict())


def _tuning(data: Path, split: str, tune_split: str | None, ds: Any) -> Any:
    """The fusion-tuning split: ``train`` when present, a named one that must exist, or none."""
    from vecdoctor.checkup.run import tuning_split
    from vecdoctor.data import has_split
    from vecdoctor.errors import InputError

    if tune_split is None:
        return tuning_split(data, split, "train", ds)
    if tune_split.lower() == "none":
        return None
    if tune_split == split:
        raise InputError(f"--tune-split {tune_split} is the evaluated split: fusion chosen on the "
                         "queries that confirm it proves nothing; name another split or 'none'")
    if not has_split(data, tune_split):
        raise InputError(f"--tune-split {tune_split}: {data} has no queries with "
                         f"qrels/{tune_split}.tsv; name a split it has, or 'none'")
    return tuning_split(data, split, tune_split, ds)


@command("checkup")
def checkup_cmd(
    data: Path = typer.Argument(None, help="BEIR folder or a corpus; omit with --sample"),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (report.html, report.json, pipeline.json)"),
    models: str = typer.Option(None, "-m", "--models", help="Comma-separated models (default: every installed one)"),
    prefer: str = typer.Option("quality", "--prefer", help="quality | speed | memory"),
    quick: bool = typer.Option(False, "--quick", help="Sample queries and documents; minutes instead of tens"),
    split: str = typer.Option("test", "--split"),
    tune_split: str = typer.Option(
        None, "--tune-split", help="Labelled split of the same BEIR folder whose queries tune "
        "fusion, confirmed on --split (default: train when the folder has it); 'none', no such "
        "split, or --quick: one half of the evaluation queries"),
    rerank: str = typer.Option(None, "--rerank", help="Also test a reranker (cross-encoder folder or maxsim)"),
    rerank_fusion: str = RERANK_FUSION,
    rerank_backend: str = RERANK_BACKEND,
    rerank_precision: str = RERANK_PRECISION,
    sample: str = typer.Option(None, "--sample", help="Run on a built-in sample corpus: python-docs"),
    seed: int = typer.Option(0, "--seed"),
    cache: Path = typer.Option(
        None, "--cache", help="Folder for an on-disk vector cache: a second checkup of the same "
        "corpus encodes nothing again (decisions never depend on it)"),
    keep_self_hits: bool = KEEP_SELF_HITS,
    force: bool = FORCE,
) -> None:
    """The main job: compare models, diagnose, evaluate fixes, recommend a pipeline, write a report."""
    from vecdoctor.checkup.run import checkup, write_checkup
    from vecdoctor.evaluate.compare import Prefer
    from vecdoctor.persist import CHECKUP, check_output

    check_output(output, CHECKUP, force, reads=(data,))  # before minutes of work

    Prefer.parse(prefer)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    ds = _dataset(data, split, sample, keep_self_hits)
    tuning = _tuning(data, split, tune_split, ds) if data is not None and not sample else None
    steps = _Steps(len(names or []) + 11)
    vectors = None
    if cache is not None:
        from vecdoctor.encode.cache import VectorCache

        vectors = VectorCache(cache)
    result = checkup(ds, names, prefer=prefer, quick=quick, reranker=rerank, seed=seed, progress=steps,
                     rerank_fusion=rerank_fusion or "rrf", rerank_backend=rerank_backend,
                     rerank_precision=rerank_precision, tuning=tuning, cache=vectors,
                     show_progress=progress_enabled())
    write_checkup(result, output, force)
    emit(
        {
            "report": str(output / "report.html"),
            "pipeline": str(output / "pipeline.json"),
            "recommended": result.pipeline.to_dict(),
            "decisions": [d.to_dict() for d in result.decisions],
            "seconds": result.meta["seconds"],
        }
    )
    typer.echo(f"report written to {output / 'report.html'}", err=True)
