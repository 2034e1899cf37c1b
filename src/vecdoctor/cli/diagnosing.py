"""Commands: diagnose, fit (whitening | abtt)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from vecdoctor.cli._app import FORCE, command, emit, make_encoder, progress_enabled
from vecdoctor.config import TransformKind

FIT_KINDS = tuple(str(k) for k in TransformKind)

_DATA = "A BEIR folder (corpus, optional queries + qrels) or a corpus file"
_CORPUS = "A BEIR folder, corpus.jsonl[.gz], a .txt file or a text folder"
_MODEL = "Registry name or local model folder"
_POOLING = "mean|cls|max|subword|attention (default: the model's)"
_WINDOW = "Token windows SIZE:STRIDE[:max|mean], e.g. 256:128:max"
_MAX_LENGTH = "Tokens per model input (default: the model's)"
_BACKEND = "torch | onnx (default: the model's)"
_COMPONENTS = "whitening: keep k dimensions (default all); abtt: directions removed (default d/100)"


def _quiet_libraries() -> None:
    # faiss announces which SIMD build it loaded at INFO; not useful on a user's terminal.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


@command("diagnose")
def diagnose_command(
    data: Path = typer.Argument(..., help=_DATA),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for report.json and .html"),
    model: str = typer.Option("minilm", "-m", "--model", help=_MODEL),
    pooling: str = typer.Option(None, "--pooling", "-p", help=_POOLING),
    sample: int = typer.Option(2000, "--sample", "-n", help="Texts encoded for the diagnosis"),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling; same seed, same numbers"),
    split: str = typer.Option("test", "--split", help="Qrels split used when DATA has queries"),
    window: str = typer.Option(None, "--window", help=_WINDOW),
    max_length: int = typer.Option(None, "--max-length", help=_MAX_LENGTH),
    fixes: str = typer.Option("whitening,abtt", "--fixes", help="Fixes to try, comma-separated"),
    batch_size: int = typer.Option(32, "--batch-size"),
    backend: str = typer.Option(None, "--backend", help=_BACKEND),
    plain: bool = typer.Option(False, "--plain", help="A verdict table for people instead of JSON"),
    force: bool = FORCE,
) -> None:
    """Diagnose the embedding space on your corpus; write an HTML and a JSON report."""
    from vecdoctor.data import load_dataset
    from vecdoctor.errors import InputError
    from vecdoctor.persist import DIAGNOSIS, check_output

    check_output(output, DIAGNOSIS, force)

    _quiet_libraries()
    if sample < 2:
        raise InputError(f"--sample must be at least 2, got {sample}")
    fix_names = [f.strip() for f in fixes.split(",") if f.strip()]
    if [f.lower() for f in fix_names] == ["none"]:
        fix_names = []
    for name in fix_names:
        if name not in FIT_KINDS:
            valid = ", ".join(FIT_KINDS)
            raise InputError(f"unknown fix {name!r} in --fixes; valid: {valid}, none")
    dataset = load_dataset(data, split=split)
    enc = make_encoder(model, window, pooling=pooling, max_length=max_length,
                       batch_size=batch_size, backend=backend)
    report = _diagnose_with_bar(dataset, enc, sample, seed, fix_names)
    report.save(output, force)
    if plain:
        _print_verdicts(report.summary(), output)
        return
    emit(
        {
            "output": str(output),
            "report_html": str(output / "report.html"),
            "report_json": str(output / "report.json"),
            "model": enc.model_id,
            "pooling": str(enc.pooling),
            "sample": report.meta["n_sample"],
            "worst": str(report.worst),
            "checks": [
                {k: r[k] for k in ("check", "verdict", "value", "recommendation")}
                for r in report.summary()
            ],
            "fixes": [
                {"fix": f.name, "isotropy_before": round(f.before.isotropy, 4),
                 "isotropy_after": round(f.after.isotropy, 4), "recall_before": f.recall_before,
                 "recall_after": f.recall_after, "improves": f.improves}
                for f in report.fixes
            ],
        }
    )


def _diagnose_with_bar(dataset: Any, enc: Any, sample: int, seed: int, fixes: list[str]) -> Any:
    """The diagnosis, with a bar of its steps on a terminal."""
    from vecdoctor.diagnose import diagnose

    bar = None
    if progress_enabled():
        from tqdm.auto import tqdm

        from vecdoctor.diagnose.run import STEPS

        bar = tqdm(total=len(STEPS), desc="diagnose", unit="step", leave=False)

    def progress(step: str) -> None:
        if bar is not None:
            if bar.n or step != "tokenize":
                bar.update(1)
            bar.set_postfix_str(step)

    try:
        return diagnose(dataset, enc, sample=sample, seed=seed, fixes=fixes,
                        progress=progress, show_progress=progress_enabled())
    finally:
        if bar is not None:
            bar.close()


def _print_verdicts(rows: list[dict[str, Any]], output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table("check", "verdict", "value", "recommendation", title=str(output / "report.html"))
    for r in rows:
        verdict = f"[{colour[r['verdict']]}]{r['verdict']}[/]"
        table.add_row(r["check"], verdict, f"{r['value']:.3f}", r["recommendation"])
    Console().print(table)


@command("fit")
def fit_command(
    kind: str = typer.Argument(..., help="What to fit: whitening | abtt (all-but-the-top)"),
    corpus: Path = typer.Argument(..., help=_CORPUS),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the fitted transform"),
    model: str = typer.Option("minilm", "-m", "--model", help=_MODEL),
    pooling: str = typer.Option(None, "--pooling", "-p", help=_POOLING),
    n_components: int = typer.Option(None, "--n-components", "-k", help=_COMPONENTS),
    sample: int = typer.Option(None, "--sample", "-n", help="Fit on N texts (default: all)"),
    seed: int = typer.Option(0, "--seed"),
    window: str = typer.Option(None, "--window", help=_WINDOW),
    max_length: int = typer.Option(None, "--max-length", help=_MAX_LENGTH),
    batch_size: int = typer.Option(32, "--batch-size"),
    backend: str = typer.Option(None, "--backend", help=_BACKEND),
    force: bool = FORCE,
) -> None:
    """Fit whitening or all-but-the-top on a corpus and save it (apply with --transform)."""
    from vecdoctor.errors import InputError
    from vecdoctor.persist import TRANSFORM, check_output

    if kind not in FIT_KINDS:
        raise InputError(f"unknown transform {kind!r}; valid: {', '.join(FIT_KINDS)}")
    check_output(output, TRANSFORM, force)
    if sample is not None and sample < 2:
        raise InputError(f"--sample must be at least 2, got {sample}")
    from vecdoctor.data import load_corpus
    from vecdoctor.diagnose.fixes import fit_on_corpus

    texts = [d.content for d in load_corpus(corpus)]
    if len(texts) < 2:
        raise InputError(f"{corpus}: has {len(texts)} text(s); fitting needs at least 2")
    enc = make_encoder(model, window, pooling=pooling, max_length=max_length,
                       batch_size=batch_size, backend=backend)
    fit = fit_on_corpus(texts, enc, kind, n_components, sample, seed, progress_enabled())
    transform, before, after = fit.transform, fit.before, fit.after
    transform.save(output, force)
    emit(
        {
            "output": str(output),
            "transform": type(transform).__name__,
            "model": enc.model_id,
            "pooling": str(enc.pooling),
            "fingerprint": enc.fingerprint,
            "n_samples": transform.n_samples_,
            "dimension": transform.dim_,
            "output_dimension": transform.output_dim,
            "isotropy_before": round(before.isotropy, 4),
            "isotropy_after": round(after.isotropy, 4),
            "mean_cosine_before": round(before.mean_cosine, 4),
            "mean_cosine_after": round(after.mean_cosine, 4),
            "seconds": round(fit.seconds, 3),
        }
    )
