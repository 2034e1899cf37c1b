"""Embedding health in production on real text: the baseline stored with an index, live health
and its alarms, the drift report, the migration guard, /metrics from a real `vecdoctor serve`
and reload under load.

In-domain text is the built-in sample (the Python language reference); text from another
domain is the licence files shipped with numpy and scipy (legal prose), read at run time."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.data import Document, sample_corpus, split_sentences
from vecdoctor.errors import IncompatibleError, InputError

runner = CliRunner()
MAX_LENGTH = 128


def licence_sentences() -> list[str]:
    """Sentences of the licence texts of installed packages: real prose from another domain."""
    out: list[str] = []
    for package in ("numpy", "scipy"):
        for f in importlib.metadata.distribution(package).files or []:
            if "LICENSE" in f.name.upper() and f.name.endswith(".txt"):
                text = " ".join(f.locate().read_text(encoding="utf-8", errors="replace").split())
                out.extend(s for s in split_sentences(text) if 6 <= len(s.split()) <= 60)
    return sorted(set(out))


@pytest.fixture(scope="module")
def split_sample() -> tuple[list[Document], list[Document]]:
    """The built-in sample, 80% to index and 20% held back (seeded)."""
    docs = sample_corpus()
    order = np.random.default_rng(3).permutation(len(docs))
    cut = int(0.8 * len(docs))
    return [docs[i] for i in sorted(order[:cut])], [docs[i] for i in sorted(order[cut:])]


@pytest.fixture(scope="module")
def index_dir(split_sample, tmp_path_factory) -> Path:
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index

    folder = tmp_path_factory.mktemp("monitor") / "idx"
    Index.build(split_sample[0], Encoder("minilm", max_length=MAX_LENGTH)).save(folder)
    return folder


@pytest.fixture(scope="module")
def index(index_dir):
    from vecdoctor.index.store import Index

    return Index.load(index_dir)


def held_queries(held: list[Document]) -> list[str]:
    return [s for d in held for s in split_sentences(d.text)[1:] if len(s.split()) >= 6]


# -- the baseline --------------------------------------------------------------------------------
def test_an_index_carries_its_baseline_through_save_and_load(index, split_sample):
    base = index.baseline
    assert base is not None and base.documents == len(split_sample[0])
    assert base.fingerprint == index.fingerprint
    q = base.query_scores
    assert 0 < q["p5"] < q["p50"] < q["p95"] <= 1
    assert base.ood_threshold == q["p10"]
    assert base.queries >= 50 and base.query_sample.shape == (base.queries, index.dim)
    assert 0 < base.isotropy <= 1 and -1 < base.mean_cosine < 1
    assert base.truncation_rate is not None and base.max_length == MAX_LENGTH
    assert base.doc_sample.shape[1] == index.dim and len(base.doc_best) > 10


def test_an_index_without_a_baseline_says_how_to_add_one(index_dir, tmp_path):
    from vecdoctor.index.store import Index
    from vecdoctor.monitor.drift import drift_report

    folder = tmp_path / "old"
    shutil.copytree(index_dir, folder)
    shutil.rmtree(folder / "baseline")
    old = Index.load(folder)
    assert old.baseline is None
    with pytest.raises(InputError, match="vecdoctor baseline"):
        drift_report(old, ["some text"] * 20)
    result = runner.invoke(app, ["baseline", str(folder), "--queries", "40"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["baseline"]["queries"] >= 20
    assert Index.load(folder).baseline is not None


def test_a_baseline_of_other_vectors_is_refused(index_dir, tmp_path):
    from vecdoctor.index.store import Index

    folder = tmp_path / "other"
    shutil.copytree(index_dir, folder)
    meta = json.loads((folder / "baseline" / "baseline.json").read_text())
    meta["fingerprint"] = "0123456789abcdef"
    (folder / "baseline" / "baseline.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleError, match="vecdoctor baseline"):
        Index.load(folder)
    assert Index.load(folder, baseline=False).baseline is None


# -- live health ---------------------------------------------------------------------------------
def _windows(index, queries, window=40):
    from vecdoctor.monitor.live import LiveHealth
    from vecdoctor.search.searcher import Searcher

    searcher = Searcher(index, cache_size=0)
    health = LiveHealth(index, window)
    searcher.observer = health
    for start in range(0, len(queries), 32):
        searcher.search_batch(queries[start : start + 32], k=10)
    return health


def test_in_domain_traffic_raises_no_alarm_and_another_domain_does_at_once(index, split_sample,
                                                                           caplog):
    # many users' questions interleave: the held-back sentences in a seeded random order
    held = held_queries(split_sample[1])
    queries = [held[i] for i in np.random.default_rng(0).permutation(len(held))[:240]]
    health = _windows(index, queries)
    assert health.windows == len(queries) // 40
    assert health.windows_alarmed.get("out_of_distribution", 0) <= 0.05 * health.windows
    traffic = health.snapshot()["traffic"]
    assert traffic["ood_share"] < traffic["ood_alarm_share"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vecdoctor.monitor.live"):
        other = _windows(index, licence_sentences()[:80])
    assert other.windows == 2 and other.windows_alarmed["out_of_distribution"] == 2
    lines = [r for r in caplog.records if "out_of_distribution" in r.getMessage()]
    assert len(lines) == 2  # once per window, not per query
    assert "add documents" in lines[0].getMessage()


def test_live_and_offline_score_the_same_queries_the_same_way(index, split_sample):
    """One answerability function: the live observer and the offline report give the same best
    score to every query (1e-6), hence the same out-of-domain share and median."""
    from vecdoctor.monitor.drift import drift_report

    queries = held_queries(split_sample[1])[:30] + licence_sentences()[:30]
    live = _windows(index, queries, window=len(queries)).snapshot()["traffic"]
    offline = drift_report(index, queries, "queries", sample=len(queries), permutations=99)
    health = _windows(index, queries, window=len(queries))
    vectors = health._vectors[: health._filled]
    mine = health._best_scores(vectors, health.observed)
    np.testing.assert_allclose(mine, offline.figures["best"], atol=1e-6)
    assert live["ood_share"] == pytest.approx(offline.answerability["ood_share"], abs=1e-9)
    assert live["best_score_p50"] == pytest.approx(offline.answerability["best_score"]["p50"],
                                                   abs=1e-6)
    # half of the queries are legal prose: a share, not a yes or no
    assert offline.verdict == "partial drift" and 0.3 < live["ood_share"] < 0.8
    assert f"{offline.answerability['ood_share']:.0%} of 60 queries are out of domain" in \
        offline.answerability["verdict"]
    # off-topic traffic gets the off-topic advice, not a transform or pooling fix
    said = " ".join(offline.actions)
    assert "outside your corpus" in said and "transform" not in said and "pooling" not in said
    mmd = offline.tests["embeddings_mmd"]
    assert "does not decide a query log's verdict" in mmd["meaning"]


def test_documents_added_since_the_baseline_are_counted_with_their_geometry(index_dir,
                                                                          split_sample):
    from vecdoctor.index.store import Index
    from vecdoctor.monitor.live import LiveHealth

    grown = Index.load(index_dir)
    grown.add(split_sample[1][:6])
    snap = LiveHealth(grown, 20).snapshot()
    assert snap["documents_since_baseline"] == 6
    added = snap["added_documents"]
    assert added["documents"] == 6 and -1 < added["mean_cosine"] < 1
    assert 0 <= added["centroid_shift"] < 1


def test_a_monitor_window_must_be_an_integer_of_twenty_or_more(index):
    from vecdoctor.monitor.live import LiveHealth

    for bad in (0, 5, True, 2.5):
        with pytest.raises(InputError, match="window"):
            LiveHealth(index, bad)


# -- the drift report ----------------------------------------------------------------------------
def test_held_back_documents_show_no_drift_and_another_domain_is_flagged(index, split_sample):
    from vecdoctor.monitor.drift import drift_report

    same = drift_report(index, [d.content for d in split_sample[1]], "documents", permutations=199)
    assert same.verdict == "no drift", same.actions
    assert same.tests["embeddings_mmd"]["p_value"] >= 0.01
    other = drift_report(index, licence_sentences(), "documents", permutations=199)
    assert other.verdict == "out of domain"
    assert other.tests["embeddings_mmd"]["p_value"] < 0.01
    assert other.answerability["ood_share"] > 0.5
    terms = {v["term"] for v in other.vocabulary}
    assert terms & {"copyright", "warranty", "redistribution", "liability", "license"}


def test_monitor_command_counts_damaged_lines_and_writes_the_report(index_dir, tmp_path):
    log = tmp_path / "queries.log"
    lines = [s.encode() for s in licence_sentences()[:60]]
    junk = [b"", b"   ", b"\xff\xfe\x00 not text", b'{"query": "\\ud800 lone"}', b"{broken json",
            b"\x01\x02\x03 binary", b'{"other": 1}']
    log.write_bytes(b"\n".join(lines + junk) + b"\n")
    out = tmp_path / "report"
    result = runner.invoke(app, ["monitor", str(index_dir), str(log), "-o", str(out),
                                 "--permutations", "199"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "queries" and summary["verdict"] == "out of domain"
    assert summary["skipped"] == {"empty": 2, "not_utf8": 1, "unencodable": 1, "bad_json": 1,
                                  "binary": 1, "no_text_field": 1}
    saved = json.loads((out / "report.json").read_text())
    assert saved["class"] == "DriftReport" and saved["texts"] == 60
    html = (out / "report.html").read_text()
    assert "OUT OF DOMAIN" in html and html.count("data:image/png;base64,") >= 4
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    refused = runner.invoke(app, ["monitor", str(index_dir), str(log), "-o", str(notes)])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert (notes / "mine.txt").read_text() == "keep me"


# -- the migration guard -------------------------------------------------------------------------
def test_the_migration_guard_calls_the_same_pipeline_equivalent_and_sees_a_whitening(
        index_dir, split_sample, tmp_path):
    from vecdoctor.data import Dataset
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.evaluate.metrics import sample_dataset, self_supervised
    from vecdoctor.monitor.migrate import compare_pipelines
    from vecdoctor.pipeline import Pipeline

    cache = VectorCache()  # the four builds encode each text once
    data = sample_dataset(self_supervised(split_sample[0], n_queries=60), 60, 300)
    same = compare_pipelines(index_dir, index_dir, data, encoder_options={"cache": cache})
    assert same.verdict == "equivalent"
    assert same.overlap_at_10 == 1.0 and same.top1_changed == 0.0 and same.p_value == 1.0
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.fix.transform import Whitening

    enc = Encoder("minilm", max_length=MAX_LENGTH, cache=cache)
    whitening = Whitening(n_components=16).fit(enc.encode_documents([d.content for d in data.corpus]))
    whitening.fingerprint_ = enc.fingerprint
    whitening.save(tmp_path / "p" / "transform")
    Pipeline(model="minilm", max_length=MAX_LENGTH, mode="dense", transform="whitening",
             transform_dir=tmp_path / "p" / "transform").save(tmp_path / "p" / "pipeline.json")
    other = compare_pipelines(index_dir, tmp_path / "p" / "pipeline.json",
                              Dataset(data.corpus, data.queries, data.qrels),
                              encoder_options={"cache": cache})
    assert other.verdict in {"regression", "safe"}
    assert other.overlap_at_10 < 0.8
    assert other.ndcg_new < other.ndcg_old


# -- a real server -------------------------------------------------------------------------------
@contextlib.contextmanager
def served(index_dir: Path, key: str | None, *options: str):
    port = rs.free_port()
    env = {**os.environ, "VECDOCTOR_API_KEY": key} if key else dict(os.environ)
    env.pop("VECDOCTOR_API_KEY", None) if key is None else None
    proc = subprocess.Popen([sys.executable, "-m", "vecdoctor", "-q", "serve", str(index_dir),
                             "--port", str(port), "--monitor-window", "20", *options], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        rs.wait_until_up(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_metrics_of_a_real_server_under_load_parse_and_leak_nothing(index_dir, split_sample):
    from prometheus_client.parser import text_string_to_metric_families

    key = "s3cret-key"
    queries = held_queries(split_sample[1])[:60]
    with served(index_dir, key) as (url, _):
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(url + "/metrics", timeout=10).status_code == 401
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda q: httpx.post(url + "/search", json={"query": q, "k": 5},
                                                       headers=headers, timeout=60).status_code,
                                  queries))
            scrapes = list(pool.map(lambda _: httpx.get(url + "/metrics", headers=headers,
                                                        timeout=30), range(8)))
        assert codes == [200] * len(queries)
        text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
        monitor = httpx.get(url + "/monitor", headers=headers, timeout=30).json()
    assert all(s.status_code == 200 for s in scrapes)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("vecdoctor_requests", "vecdoctor_query_ood_share", "vecdoctor_query_mean_cosine",
                 "vecdoctor_health_alarm", "vecdoctor_baseline_ood_threshold",
                 "vecdoctor_request_latency_milliseconds", "vecdoctor_queries_observed"):
        assert name in families, name
    searches = [s.value for s in families["vecdoctor_requests"].samples
                if s.labels.get("route") == "/search" and s.name.endswith("_total")]
    assert searches == [len(queries)]
    assert families["vecdoctor_queries_observed"].samples[0].value == len(queries)
    assert monitor["observed"] == len(queries) and monitor["windows"] == len(queries) // 20
    assert str(index_dir) not in text and "/tmp" not in text
    assert not any(q[:30] in text for q in queries)


@pytest.mark.slow
def test_reload_under_load_fails_no_request(index_dir, split_sample, tmp_path):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index

    folder = tmp_path / "served"
    shutil.copytree(index_dir, folder)
    bigger = Index.build(split_sample[0] + split_sample[1][:20],
                         Encoder("minilm", max_length=MAX_LENGTH), baseline=False)
    key = "reload-key"
    headers = {"X-API-Key": key}
    queries = held_queries(split_sample[1])[:40] * 3
    with served(folder, key) as (url, proc):
        def search(q: str) -> int:
            return httpx.post(url + "/search", json={"query": q, "k": 3}, headers=headers,
                              timeout=60).status_code

        with ThreadPoolExecutor(6) as pool:
            first = pool.map(search, queries[:60])
            bigger.save(folder)  # replaced atomically while it is being served
            answer = httpx.post(url + "/admin/reload", headers=headers, timeout=120)
            second = pool.map(search, queries[60:])
            codes = list(first) + list(second)
        assert answer.status_code == 200, answer.text
        assert answer.json()["documents"] == len(split_sample[0]) + 20
        assert codes == [200] * len(queries)
        stats = httpx.get(url + "/stats", headers=headers, timeout=10).json()
        assert stats["index"]["documents"] == len(split_sample[0]) + 20
        # SIGHUP reloads too (the same folder again)
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60
        while httpx.get(url + "/stats", headers=headers, timeout=10).json()["reloads"] < 2:
            assert time.time() < deadline
            time.sleep(0.2)


def test_reload_over_http_needs_an_api_key(index_dir):
    from fastapi.testclient import TestClient

    from vecdoctor.serve.app import create_app

    client = TestClient(create_app(index_dir))
    answer = client.post("/admin/reload")
    assert answer.status_code == 403 and "SIGHUP" in answer.json()["detail"]
