"""`vecdoctor index`, `search` and `serve` driven through the real commands."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.cli import app

N_DOCS = 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = rs.subset()[0][:N_DOCS]
    return rs.write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", docs)


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "idx"
    result = CliRunner().invoke(
        app, ["index", str(corpus), "-m", "minilm", "--max-length", "64", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    return errors[0]


def test_index_writes_a_loadable_index(built):
    out, summary = built
    assert summary["documents"] == N_DOCS and summary["dim"] == 384
    assert summary["model"] == "minilm" and summary["precision"] == "float32"
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["max_length"] == 64
    assert config["counts"]["documents"] == N_DOCS
    # --ann auto by default: a small corpus is searched exactly, and the measurement says why
    assert summary["dense_search"]["chosen"] == "exact" == config["ann_choice"]["chosen"]
    assert "within the 10 ms budget" in summary["dense_search"]["reason"]


def test_search_json_and_plain(built):
    out, _ = built
    doc = rs.subset()[0][3]
    result = run("search", out, doc.title, "-k", 3, "--mode", "bm25")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["query"] == doc.title and len(body["hits"]) == 3
    assert body["hits"][0]["id"] == doc.id
    # each hit carries a snippet, not its whole text
    assert set(body["hits"][0]) == {"id", "score", "title", "snippet", "ranks_by_stage"}
    assert len(body["hits"][0]["snippet"]) <= 302
    plain = run("search", out, doc.title, "-k", 2, "--plain")
    assert plain.exit_code == 0
    ranked = [line for line in plain.stdout.splitlines() if line.lstrip()[:2] in {"1.", "2."}]
    assert len(ranked) == 2 and ranked[0].lstrip().startswith("1.") and doc.id in plain.stdout
    assert "**" in plain.stdout  # the query's words are marked in the snippet
    full = json.loads(run("search", out, doc.title, "-k", 1, "--mode", "bm25", "--full").stdout)
    assert full["hits"][0]["text"] == doc.text and "snippet" not in full["hits"][0]
    picked = json.loads(run("search", out, doc.title, "-k", 1, "--fields", "id,score").stdout)
    assert set(picked["hits"][0]) == {"id", "score"}
    bad = run("search", out, doc.title, "--fields", "id,body")
    assert bad.exit_code == 1 and "unknown hit field(s) 'body'" in bad.output


def test_search_reads_queries_from_stdin(built):
    out, _ = built
    result = run(
        "search", out, "-", "-k", 2, "--mode", "dense", input="cancer cells\n\nbone density\n"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [b["query"] for b in body] == ["cancer cells", "bone density"]


def test_search_k_over_the_corpus_is_clamped(built):
    out, _ = built
    result = run("search", out, "protein", "-k", 1000, "--mode", "dense")
    assert len(json.loads(result.stdout)["hits"]) == N_DOCS


@pytest.mark.parametrize(
    "args,text",
    [
        (["-k", "0"], "k must be >= 1"),
        (["-k", "-2"], "k must be >= 1"),
        (["--mode", "semantic"], "valid values: bm25, dense, hybrid"),
        (["--fusion", "borda"], "valid values: rrf, weighted"),
        (["--rerank", "/no/such/folder"], "no such folder"),
        (["--rerank-fusion", "borda"], "valid values: none, rrf, weighted"),
        (["--rerank-backend", "tensorrt"], "valid backends: torch, onnx, openvino"),
        (["--rerank-precision", "int8"], "int8 runs on backend 'onnx' or 'openvino'"),
    ],
)
def test_search_bad_options_are_one_line_errors(built, args, text):
    out, _ = built
    line = one_error_line(run("search", out, "protein", *args))
    assert text in line


def test_search_fuses_the_reranker_with_the_first_stage(built):
    out, _ = built
    result = run("search", out, "cancer cells", "-k", 5, "--rerank", "maxsim",
                 "--rerank-fusion", "rrf")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert [h["ranks_by_stage"]["rerank_fused"] for h in hits] == [1, 2, 3, 4, 5]
    for h in hits:
        ranks = h["ranks_by_stage"]
        assert h["score"] == pytest.approx(1 / (60 + ranks["fused"]) + 1 / (60 + ranks["rerank"]))


def test_search_empty_and_huge_queries(built):
    out, _ = built
    assert "query is empty" in one_error_line(run("search", out, "  "))
    assert "more than the limit" in one_error_line(run("search", out, "a" * 100_000))


def test_search_with_another_model_is_refused(built, tmp_path_factory):
    out, _ = built
    other = rs.other_model_dir(str(tmp_path_factory.mktemp("models")))
    line = one_error_line(run("search", out, "protein", "-m", other))
    assert "built with model 'minilm'" in line


def test_damaged_or_missing_index(built, tmp_path):
    out, _ = built
    assert "no such index folder" in one_error_line(run("search", tmp_path / "none", "q"))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "bm25" / "indices.npy").unlink()
    assert "indices.npy" in one_error_line(run("search", copy, "q"))


def test_index_refuses_to_overwrite_a_folder_that_is_not_an_index(corpus, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    line = one_error_line(run("index", corpus, "-o", tmp_path))
    assert "is not a vecdoctor index" in line
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_index_from_checkup_pipeline_with_precision_override(tmp_path):
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(
        json.dumps(
            {
                "model": "minilm",
                "pooling": "mean",
                "window": None,
                "transform": None,
                "mode": "dense",
                "fusion": "rrf",
                "rrf_k": 60,
                "rerank": None,
                "precision": "binary",
                "transform_dir": None,
                "evidence": {},
            }
        )
    )
    docs = rs.subset()[0][:10]
    small = rs.write_corpus(tmp_path / "small.jsonl", docs)
    out = tmp_path / "idx"
    result = run(
        "index", small, "--pipeline", pipeline, "--precision", "int8", "--max-length", 32, "-o", out
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["pipeline"]["storage"] == "int8" and config["encoder"]["max_length"] == 32
    assert config["encoder"]["pooling"] == "mean" and config["pipeline"]["max_length"] == 32
    settings = {k: config["pipeline"][k] for k in ("mode", "fusion", "rrf_k")}
    assert settings == {"mode": "dense", "fusion": "rrf", "rrf_k": 60}
    assert "codes.npy" in config["files"]
    hits = json.loads(run("search", out, docs[2].title, "-k", 2).stdout)["hits"]
    assert set(hits[0]["ranks_by_stage"]) == {"dense"}  # the pipeline's mode is the default


def test_index_with_a_fitted_transform(tmp_path):
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index import Index

    docs = rs.subset()[0][:30]
    enc = rs.encoder()
    vectors = rs.float_index().vectors.vectors[:30]
    with pytest.warns(UserWarning, match="rank-deficient"):
        whitening = Whitening(n_components=16).fit(vectors, fingerprint=enc.fingerprint)
    whitening.save(tmp_path / "transform")
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(
        json.dumps({"model": "minilm", "transform": "whitening", "transform_dir": "transform"})
    )
    small = rs.write_corpus(tmp_path / "small.jsonl", docs)
    result = run(
        "index",
        small,
        "--pipeline",
        pipeline,
        "--max-length",
        rs.MAX_LENGTH,
        "-o",
        tmp_path / "idx",
    )
    assert result.exit_code == 0, result.output
    index = Index.load(tmp_path / "idx")
    assert index.dim == 16 and type(index.transform).__name__ == "Whitening"
    index.use_encoder(enc)
    query = ["bone density"]
    want = whitening.transform(enc.encode_queries(query), fingerprint=enc.fingerprint)
    np.testing.assert_allclose(index.embed_queries(query), want, atol=1e-6)
    (tmp_path / "pipeline.json").write_text(
        json.dumps({"model": "minilm", "transform": "whitening"})
    )
    line = one_error_line(run("index", small, "--pipeline", pipeline, "-o", tmp_path / "idx2"))
    assert "no fitted transform folder" in line


def test_index_bad_precision(corpus, tmp_path):
    line = one_error_line(run("index", corpus, "--precision", "int4", "-o", tmp_path / "x"))
    assert "valid values: float32, int8, binary" in line
    assert not (tmp_path / "x").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_command_answers_http(built):
    out, _ = built
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from vecdoctor.cli import main; main()",
            "serve",
            str(out),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-k",
            "7",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.5)
        assert health.json() == {"status": "ok"}
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5)
        assert stats.json()["index"]["documents"] == N_DOCS
        r = httpx.post(f"http://127.0.0.1:{port}/search", json={"query": "cells", "k": 8})
        assert r.status_code == 422 and "less than or equal to 7" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_corpus_given_where_an_index_belongs_says_how_to_index_it(corpus, tmp_path):
    line = one_error_line(run("search", corpus, "cells"))
    assert "is a corpus, not an index" in line and f"vecdoctor index {corpus} -o INDEX" in line
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("some text")
    assert "is a corpus, not an index" in one_error_line(run("search", folder, "text"))


def test_an_output_that_holds_the_input_is_refused_without_suggesting_force(corpus, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("some text")
    for args in (["index", folder, "-o", folder], ["index", folder, "-o", tmp_path, "--force"]):
        line = one_error_line(run(*args))
        assert "holds the input" in line and "--force" not in line
    assert (folder / "a.txt").read_text() == "some text"


def test_evaluate_an_index_on_a_corpus_without_labels_uses_self_supervised_queries(corpus, built):
    out, _ = built
    result = run("evaluate", corpus, "--index", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["self_supervised"] is True and report["num_queries"] > 10
    assert {r["variant"] for r in report["variants"]} == {"bm25", "dense", "hybrid"}


def test_serve_refuses_a_taken_port_before_loading_anything(built):
    import socket
    import subprocess
    import sys
    import time

    out, _ = built
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vecdoctor", "serve", str(out), "--port",
                               str(port)], capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - started
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "loaded" not in proc.stderr and seconds < 30  # the index was never opened
    for bad in ("99999", "-1"):
        refused = run("serve", out, "--port", bad)
        assert "--port must be between 1 and 65535" in one_error_line(refused)
