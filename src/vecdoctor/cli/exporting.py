"""Command: export (convert a model to OpenVINO or ONNX Runtime at fp32, bf16 or int8)."""

from __future__ import annotations

from pathlib import Path

import typer

from vecdoctor.cli._app import command, emit


@command("export")
def export(
    model: str = typer.Argument(..., help="Registry name or local sentence-transformers folder"),
    backend: str = typer.Option("openvino", "--backend", "-b", help="openvino | onnx"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 (openvino) | int8"),
    output: Path = typer.Option(
        None, "-o", "--output", help="Folder to write (default: the models cache, where encoders look)"
    ),
    calibration: str = typer.Option(
        None, "--calibration", help="int8: corpus to calibrate on (default: the built-in sample)"
    ),
    max_length: int = typer.Option(None, "--max-length", help="Tokens per calibration input"),
    force: bool = typer.Option(False, "--force", help="Replace an existing export"),
) -> None:
    """Convert a model for fast CPU encoding; checked against PyTorch before it is saved."""
    from vecdoctor.encode.convert.export import export_model

    texts = None
    if calibration is not None:
        from vecdoctor.data import load_corpus

        texts = [d.content for d in load_corpus(Path(calibration))]
    converted = export_model(
        model,
        backend,
        precision,
        output=output,
        calibration_texts=texts,
        max_length=max_length,
        force=force,
    )
    info = converted.info
    emit(
        {
            "output": str(converted.path),
            "model": info["model"],
            "backend": info["backend"],
            "precision": info["precision"],
            "size_mb": round(sum(f["size"] for f in info["files"].values()) / 2**20, 1),
            "check": info["check"],
            "calibration": info["calibration"] or None,
            "seconds": info["seconds"],
        }
    )
