"""`vecdoctor encode` driven through Typer's runner on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app

runner = CliRunner()


@pytest.fixture()
def small_corpus(tmp_path, real_corpus):
    f = tmp_path / "corpus.jsonl"
    f.write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in real_corpus[:12])
    )
    return f


def test_encode_to_npy_matches_library(tmp_path, small_corpus, minilm, real_corpus):
    out = tmp_path / "v.npy"
    result = runner.invoke(app, ["encode", str(small_corpus), "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 12 and summary["dimension"] == 384
    np.testing.assert_allclose(np.load(out), minilm.encode([d.content for d in real_corpus[:12]]), atol=1e-6)


def test_encode_to_parquet_with_ids_and_window(tmp_path, small_corpus):
    import pyarrow.parquet as pq

    out = tmp_path / "v.parquet"
    result = runner.invoke(
        app, ["encode", str(small_corpus), "-o", str(out), "--pooling", "max", "--window", "128:64:mean"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 12 and table.column("id")[0].as_py() == json.loads(small_corpus.read_text().splitlines()[0])["_id"]
    assert len(table.column("vector")[0].as_py()) == 384
    assert json.loads(result.stdout)["window"] == "128:64:mean"


def test_encode_from_stdin(tmp_path):
    out = tmp_path / "v.npy"
    result = runner.invoke(app, ["encode", "-", "-o", str(out)], input="first text\n\nsecond text\n")
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (2, 384)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "missing.jsonl", "-o", "x.npy"], "no such file"),
        (["encode", "{corpus}", "-o", "x.npy", "-m", "nope"], "unknown model 'nope'"),
        (["encode", "{corpus}", "-o", "x.npy", "--pooling", "median"], "valid values: mean, cls"),
        (["encode", "{corpus}", "-o", "x.csv"], "must end in .npy or .parquet"),
        (["encode", "{corpus}", "-o", "x.npy", "--window", "big"], "bad window"),
        (["encode", "{bad}", "-o", "x.npy"], ":2: bad JSON"),
        (["encode", "{empty}", "-o", "x.npy"], "empty"),
    ],
)
def test_user_errors_are_one_line_exit_1(tmp_path, small_corpus, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "ok"}\nnot json\n')
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    args = [a.format(corpus=small_corpus, bad=bad, empty=empty) for a in args]
    args = [str(tmp_path / a) if a.endswith((".npy", ".csv")) else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not any(tmp_path.glob("x.*"))
