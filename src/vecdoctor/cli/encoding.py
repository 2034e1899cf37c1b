"""Commands: encode, models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from vecdoctor.cli._app import command, emit, make_encoder, progress_enabled


def _read_input(source: str) -> list:
    from vecdoctor.data import Document, load_corpus
    from vecdoctor.errors import InputError

    if source == "-":
        texts = [line.rstrip("\r\n") for line in sys.stdin]
        docs = [Document(id=str(i + 1), text=t) for i, t in enumerate(texts) if t.strip()]
        if not docs:
            raise InputError("standard input is empty; pipe one text per line")
        return docs
    return load_corpus(Path(source))


@command("encode")
def encode(
    source: str = typer.Argument(..., help="corpus.jsonl[.gz], a BEIR folder, a .txt file (one text a line) or - for stdin"),
    output: Path = typer.Option(..., "-o", "--output", help="Output file: .npy (vectors) or .parquet (ids + vectors)"),
    model: str = typer.Option("minilm", "-m", "--model", help="Registry name or local model folder"),
    pooling: str = typer.Option(None, "--pooling", "-p", help="mean|cls|max|subword|attention (default: the model's)"),
    window: str = typer.Option(None, "--window", help="Token windows SIZE:STRIDE[:max|mean], e.g. 256:128:max"),
    max_length: int = typer.Option(None, "--max-length", help="Tokens per model input (default: the model's)"),
    transform: Path = typer.Option(None, "--transform", help="Folder of a fitted whitening / all-but-the-top"),
    cache: Path = typer.Option(None, "--cache", help="Folder for an on-disk vector cache (resumes after interruption)"),
    batch_size: int = typer.Option(32, "--batch-size"),
    backend: str = typer.Option(None, "--backend", help="torch | openvino | onnx (default: the model's)"),
    precision: str = typer.Option(None, "--precision", help="fp32 | bf16 | int8 (openvino/onnx; see `vecdoctor export`)"),
    no_normalize: bool = typer.Option(False, "--no-normalize", help="Keep raw (unnormalised) vectors"),
    engine: str = typer.Option("local", "--engine", help="local | ray (resumable job on a Ray actor pool; output: a folder of Parquet parts or a .lance dataset)"),
    address: str = typer.Option(None, "--address", help="--engine ray: cluster address (default: start a local Ray)"),
    workers: int = typer.Option(1, "--workers", help="--engine ray: encoder actors"),
) -> None:
    """Encode a corpus into vectors."""
    import time

    from vecdoctor.errors import InputError

    if engine not in {"local", "ray"}:
        raise InputError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        if cache is not None or precision is not None:
            raise InputError("--cache and --precision are not available with --engine ray")
        from vecdoctor.cli.scaling import encode_with_ray

        encode_with_ray(source, output, model, pooling, window, max_length, transform, batch_size,
                        backend, not no_normalize, address, workers)
        return
    suffix = output.suffix.lower()
    if suffix not in {".npy", ".parquet"}:
        raise InputError(f"{output}: output must end in .npy or .parquet")
    docs = _read_input(source)
    enc = make_encoder(
        model,
        window,
        pooling=pooling,
        max_length=max_length,
        normalize=not no_normalize,
        cache=cache,
        batch_size=batch_size,
        backend=backend,
        precision=precision,
        calibration_texts=[d.content for d in docs] if precision == "int8" else None,
    )
    fitted = None
    if transform is not None:
        from vecdoctor.fix.transform import load_transform

        fitted = load_transform(transform)
    start = time.perf_counter()
    vectors = enc.encode_documents([d.content for d in docs], show_progress=progress_enabled())
    if fitted is not None:
        fitted.check_compatible(enc)
        vectors = fitted.transform(vectors)
    seconds = time.perf_counter() - start
    _write_vectors(output, [d.id for d in docs], vectors, enc.fingerprint)
    emit(
        {
            "output": str(output),
            "count": len(docs),
            "dimension": int(vectors.shape[1]),
            "model": enc.model_id,
            "pooling": str(enc.pooling),
            "window": str(enc.window) if enc.window else None,
            "transform": str(transform) if transform else None,
            "truncated": enc.truncated_count,
            "cache_hits": enc.cache_stats.hits,
            "seconds": round(seconds, 3),
            "docs_per_second": round(len(docs) / seconds, 1) if seconds > 0 else None,
            "fingerprint": enc.fingerprint,
        }
    )


def _write_vectors(path: Path, ids: list[str], vectors: Any, fingerprint: str) -> None:
    import io

    import numpy as np

    from vecdoctor.io import atomic_write_bytes

    if path.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, vectors.astype(np.float32), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    ).replace_schema_metadata({"vecdoctor.fingerprint": fingerprint})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


@command("models")
def models(plain: bool = typer.Option(False, "--plain", help="A table for people instead of JSON")) -> None:
    """List registered models (dimension, backend, installed, how to install) and converted variants."""
    from vecdoctor.encode.convert.cache import list_converted
    from vecdoctor.models import list_models

    rows = list_models()
    variants = list_converted()
    if not plain:
        emit(rows + variants)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "dim", "backend", "installed", "install / description")
    for r in rows:
        table.add_row(
            str(r["name"]), str(r["dimension"]), str(r["backend"]),
            "yes" if r["installed"] else "no",
            str(r["description"]) if r["installed"] else str(r["install"]),
        )
    Console().print(table)
    if variants:
        conv = Table("converted", "backend", "precision", "MB", "cosine to torch", "path")
        for v in variants:
            conv.add_row(str(v["name"]), str(v["backend"]), str(v["precision"]), str(v["size_mb"]),
                         str(v["min_cosine_to_torch"]), str(v["path"]))
        Console().print(conv)
