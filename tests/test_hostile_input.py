"""Hostile corpora and damaged indexes: each case fails cleanly or is handled, never silently."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.errors import InputError

runner = CliRunner()
TEXTS = ["Aspirin lowers the risk of heart attack in adults.",
         "Volcanic eruptions in Iceland disrupt flights over Europe.",
         "Insulin regulates the level of sugar in the blood.",
         "Protein folding is studied with cryo electron microscopy."]


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_a_text_folder_reads_no_link_that_leaves_it(tmp_path, caplog):
    from vecdoctor.data import load_corpus

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("A document inside the folder.")
    (folder / "inside.txt").symlink_to(folder / "a.txt")  # a link within: followed
    (folder / "link.txt").symlink_to(secret)  # a link out: skipped, and said
    (folder / "sub").symlink_to(tmp_path, target_is_directory=True)
    with caplog.at_level("WARNING"):
        docs = load_corpus(folder)
    assert {d.id for d in docs} == {"a.txt", "inside.txt"}
    assert not any("root:x" in d.text for d in docs)
    assert "link leads outside the folder" in caplog.text and "link.txt" in caplog.text


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    from vecdoctor.data import Document
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index

    docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)]
    docs.append(Document(id="blank", text="   "))
    folder = tmp_path_factory.mktemp("idx") / "idx"
    Index.build(docs, Encoder("minilm", max_length=32), baseline=False).save(folder)
    return folder


def test_a_blank_document_never_wins_a_query(small_index):
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    index = Index.load(small_index)
    searcher = Searcher(index, cache_size=0)
    for query in ("weather in the mountains", "a", "stock market prices today"):
        hits = searcher.search(query, k=5, mode="dense")
        assert hits[0].id != "blank"
        assert next(h.score for h in hits if h.id == "blank") == 0.0
    assert "blank" in {h.id for h in searcher.search("x", k=5, mode="dense")}  # still indexed


def test_nan_vectors_do_not_load_and_json_output_stays_json(small_index, tmp_path):
    damaged = tmp_path / "nan"
    shutil.copytree(small_index, damaged)
    vectors = np.load(damaged / "vectors.npy")
    vectors[2, 5] = np.nan
    np.save(damaged / "vectors.npy", vectors)
    line = _error(runner.invoke(app, ["search", str(damaged), "aspirin", "--mode", "dense"]))
    assert "row 2 holds a NaN" in line and "rebuild the index" in line
    from vecdoctor.cli._app import _finite

    assert json.loads(json.dumps(_finite({"score": math.nan, "hits": [math.inf, 1.0]}))) == \
        {"score": None, "hits": [None, 1.0]}


def test_duplicate_ids_in_an_index_folder_are_refused(small_index, tmp_path):
    from vecdoctor.index.store import Index

    damaged = tmp_path / "dup"
    shutil.copytree(small_index, damaged)
    lines = (damaged / "docs.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[1] = json.dumps({**json.loads(lines[1]), "id": first["id"]})
    (damaged / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="duplicate document ids 'd0'"):
        Index.load(damaged)


def test_no_traceback_for_an_unusable_cache_or_the_current_folder(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    line = _error(runner.invoke(app, ["index", str(corpus), "--cache", "/proc", "-o",
                                      str(tmp_path / "i")]))
    assert "cannot hold a vector cache" in line
    monkeypatch.chdir(tmp_path)
    line = _error(runner.invoke(app, ["index", str(corpus), "-o", ".", "--force"]))
    assert "is the current folder" in line
    assert corpus.is_file()


def _asgi_calls(guard, requests):  # type: ignore[no-untyped-def]
    import asyncio

    async def run() -> None:
        async def receive():  # type: ignore[no-untyped-def]
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):  # type: ignore[no-untyped-def]
            return None

        for method, path in requests:
            scope = {"type": "http", "method": method, "path": path, "headers": [],
                     "client": ("127.0.0.1", 1)}
            await guard(scope, receive, send)

    asyncio.run(run())


def test_request_statistics_stay_bounded_under_invented_methods_and_paths():
    import logging

    from vecdoctor.serve.guard import Guard, ServerLimits, Stats

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        raise AssertionError("refused requests never reach the app")

    stats = Stats()
    guard = Guard(app, ServerLimits(), "the-key", stats)
    logging.getLogger("vecdoctor.serve.access").disabled = True
    try:
        _asgi_calls(guard, [(f"M{i:05d}XYZ", f"/x/{i}") for i in range(50_000)])
    finally:
        logging.getLogger("vecdoctor.serve.access").disabled = False
    snap = stats.snapshot()
    assert snap["refused_unauthorised"] == 50_000 and snap["status_codes"] == {"401": 50_000}
    assert snap["requests"] == {} and snap["latency"] == {}
    assert len(json.dumps(snap)) < 500
    from vecdoctor.serve.guard import stats_key

    assert stats_key("MXYZ", "unmatched") == "OTHER unmatched"
    for i in range(10_000):  # one key's latencies: a fixed ring
        stats.record(stats_key("POST", "/search"), 200, i / 1e6)
    assert stats.snapshot()["latency"]["POST /search"]["count"] == stats.window


def test_a_scrape_never_holds_up_the_requests_being_recorded(monkeypatch):
    import threading

    from vecdoctor.serve.guard import Stats

    stats = Stats()
    for _ in range(100):
        stats.record("POST /search", 200, 0.01)
    inside, release = threading.Event(), threading.Event()
    real = np.percentile

    def slow_percentile(*args, **kwargs):  # type: ignore[no-untyped-def]
        inside.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "percentile", slow_percentile)
    scrape = threading.Thread(target=stats.snapshot)
    scrape.start()
    assert inside.wait(30)  # the scrape is computing its percentiles now
    recorded = threading.Thread(target=stats.record, args=("POST /search", 200, 0.02))
    recorded.start()
    recorded.join(5)
    assert not recorded.is_alive(), "recording waited for the scrape's percentiles"
    release.set()
    scrape.join(30)
    assert stats.counts["POST /search"] == 101


def test_one_huge_document_costs_the_batch_not_the_machine(tmp_path):
    """A 40 MB document is read up to MAX_TEXT_CHARS, with a warning; the process stays near
    the memory of a small corpus (the whole text once took 150 bytes a character)."""
    import subprocess
    import sys
    from pathlib import Path

    from vecdoctor.config import MAX_TEXT_CHARS

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        fh.write(json.dumps({"_id": "huge", "text": "lorem ipsum dolor sit amet " * 1_500_000})
                 + "\n")
        for i, t in enumerate(TEXTS):
            fh.write(json.dumps({"_id": f"d{i}", "text": t}) + "\n")
    exe = str(Path(sys.executable).with_name("vecdoctor"))
    # a fresh wrapper process whose one child is the indexer: its RUSAGE_CHILDREN peak is the
    # indexer's own, whatever else this test process ran before
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(done.stdout)\nsys.stderr.write(done.stderr)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(done.returncode)\n")
    done = subprocess.run([sys.executable, "-c", wrapper, exe, "index", str(corpus), "-o",
                           str(tmp_path / "idx")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"longer than {MAX_TEXT_CHARS:,} characters were read up to that point" in done.stderr
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1600, f"indexing took {peak_mb:.0f} MB"
    assert json.loads(done.stdout)["documents"] == 5
