"""Package-level promises: light import, fast --help, the model registry."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.models import REGISTRY, list_models


def test_import_does_not_load_torch():
    code = "import sys, vecdoctor, vecdoctor.cli; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "encode" in result.output and "models" in result.output


def test_models_lists_every_registered_model_with_install_command():
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == set(REGISTRY) >= {"minilm", "minilm-l3-onnx", "minilm-int8-onnx", "e5-small-q4", "mpnet"}
    assert rows["minilm"]["installed"] is True
    for r in rows.values():
        assert r["install"] and r["dimension"] in (384, 768)
    # the shipped weights' precision is a label; the int8 and 4-bit packages say so
    assert {n: r["weights"] for n, r in rows.items() if r["weights"] != "fp32"} == {
        "minilm-int8-onnx": "int8", "e5-small-q4": "4-bit"}


def test_models_cli_plain_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and '"minilm"' in result.output
    plain = runner.invoke(app, ["models", "--plain"])
    assert plain.exit_code == 0 and "minilm" in plain.output
