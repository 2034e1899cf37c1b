"""`vecdoctor diagnose` and `vecdoctor fit` driven through Typer's runner on real SciFact files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app

runner = CliRunner()


def _write_corpus(path, docs):
    path.write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory, beir_dir):
    """A BEIR folder: 8 test queries, their relevant documents and 16 other documents."""
    from vecdoctor.data import load_dataset, write_qrels

    full = load_dataset(beir_dir)
    qids = sorted(full.qrels)[:8]
    relevant = {d for q in qids for d in full.qrels[q]}
    docs = [d for d in full.corpus if d.id in relevant]
    docs += [d for d in full.corpus if d.id not in relevant][:16]
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    _write_corpus(root / "corpus.jsonl", docs)
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": full.queries[q]}) + "\n" for q in qids)
    )
    write_qrels({q: full.qrels[q] for q in qids}, root / "qrels" / "test.tsv")
    return root


def test_diagnose_writes_report_and_prints_verdicts(tmp_path, tiny_beir):
    out = tmp_path / "report"
    result = runner.invoke(
        app, ["diagnose", str(tiny_beir), "-o", str(out), "--sample", "20", "--fixes", "abtt"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [c["check"] for c in summary["checks"]] == [
        "isotropy",
        "length",
        "truncation",
        "vocabulary",
        "position",
        "quantization",
    ]
    assert summary["sample"] == 20 and summary["fixes"][0]["fix"] == "abtt"
    assert summary["fixes"][0]["recall_before"] is not None
    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["n_queries"] == 8 and data["meta"]["model"] == "minilm"
    assert "<html" in (out / "report.html").read_text()


def test_missing_qrels_file_is_a_clear_error_and_writes_nothing(tmp_path, tiny_beir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_beir, broken)
    (broken / "qrels" / "test.tsv").unlink()
    (broken / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["diagnose", str(broken), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "test.tsv" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "texts, message",
    [(["only one"], "at least 2"), (["same words here"] * 4, "identical")],
)
def test_bad_corpora_fail_cleanly_without_partial_report(tmp_path, texts, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["diagnose", str(corpus), "-o", str(out), "--fixes", "none"])
    assert result.exit_code == 1 and message in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]


def test_diagnose_rejects_unknown_fix(tmp_path, tiny_beir):
    result = runner.invoke(
        app, ["diagnose", str(tiny_beir), "-o", str(tmp_path / "o"), "--fixes", "pca"]
    )
    assert result.exit_code == 1 and "unknown fix 'pca'" in result.stderr


def test_fit_whitening_then_encode_with_transform(tmp_path, tiny_beir, minilm):
    from vecdoctor.data import load_corpus
    from vecdoctor.fix.transform import load_transform

    out = tmp_path / "white"
    result = runner.invoke(
        app, ["fit", "whitening", str(tiny_beir), "-o", str(out), "--n-components", "8"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["output_dimension"] == 8 and summary["dimension"] == 384
    white = load_transform(out, fingerprint=minilm.fingerprint)
    docs = load_corpus(tiny_beir)
    assert white.n_samples_ == len(docs)

    vectors = tmp_path / "v.npy"
    result = runner.invoke(
        app,
        ["encode", str(tiny_beir / "corpus.jsonl"), "-o", str(vectors), "--transform", str(out)],
    )
    assert result.exit_code == 0, result.output
    expected = white.transform(minilm.encode_documents([d.content for d in docs]))
    np.testing.assert_allclose(np.load(vectors), expected, atol=1e-4)


def test_fit_abtt_and_errors(tmp_path, tiny_beir):
    out = tmp_path / "abtt"
    result = runner.invoke(app, ["fit", "abtt", str(tiny_beir), "-o", str(out), "-k", "2"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["class"] == "AllButTheTop" and config["n_components_fitted"] == 2

    bad = runner.invoke(app, ["fit", "pca", str(tiny_beir), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "whitening, abtt" in bad.stderr
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    clash = runner.invoke(app, ["fit", "abtt", str(tiny_beir), "-o", str(occupied)])
    assert clash.exit_code == 1 and "not a vecdoctor fitted transform" in clash.stderr
    assert (occupied / "notes.txt").read_text() == "mine"
