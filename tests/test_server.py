"""HTTP server: a real uvicorn server on a free loopback port, real requests with httpx."""

from __future__ import annotations

import base64
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import retrieval_support as rs

from vecdoctor.search.searcher import Searcher
from vecdoctor.serve.app import ServerLimits, create_app

LIMITS = ServerLimits(
    max_query_chars=2000, max_k=50, max_batch=4, max_input_chars=3000, max_body_bytes=200_000
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    return Searcher(rs.saved_index_dir(str(tmp_path_factory.mktemp("served"))))


@pytest.fixture(scope="module")
def server(searcher):
    import uvicorn

    app = create_app(searcher, limits=LIMITS)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def fields(response) -> list[str]:
    return [e["field"] for e in response.json()["detail"]]


def test_health_and_openapi(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}  # no key needed here, so nothing about the index
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/v1/embeddings", "/health", "/stats"} <= set(paths)


def test_search_returns_the_library_results(client, searcher):
    query = next(iter(rs.subset()[1].values()))
    r = client.post("/search", json={"query": query, "k": 5, "mode": "hybrid"})
    assert r.status_code == 200
    body = r.json()
    hits = searcher.search(query, k=5)
    assert body["hits"] == [h.view(query) for h in hits]  # the library's hits, with snippets
    assert body["k"] == 5 and body["mode"] == "hybrid" and body["took_ms"] > 0
    full = client.post("/search", json={"query": query, "k": 5, "fields": ["id", "text"]}).json()
    assert full["hits"] == [{"id": h.id, "text": h.text} for h in hits]
    bad = client.post("/search", json={"query": query, "fields": ["id", "body"]})
    assert bad.status_code == 422 and "fields" in bad.text


def test_malformed_json_is_a_422(client):
    r = client.post(
        "/search", content=b'{"query": "cells", "k": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "body,field,text",
    [
        ({"query": "cells", "k": "ten"}, "k", "integer"),
        ({"query": "cells", "k": 0}, "k", "greater than or equal to 1"),
        ({"query": "cells", "k": 51}, "k", "less than or equal to 50"),
        ({"query": 42}, "query", "string"),
        ({"query": ""}, "query", "at least 1 character"),
        ({"query": "   "}, "query", "non-space"),
        ({"query": "a" * 100_000}, "query", "at most 2000 characters"),
        ({"query": "cells", "mode": "semantic"}, "mode", "'bm25', 'dense' or 'hybrid'"),
        ({"query": "cells", "rerank": "/etc/passwd"}, "rerank", "available: maxsim"),
        ({"query": "cells", "colour": "red"}, "colour", "Extra inputs"),
        ({"k": 3}, "query", "Field required"),
    ],
)
def test_bad_search_requests_name_the_field_and_limit(client, body, field, text):
    r = client.post("/search", json=body)
    assert r.status_code == 422, r.text
    assert field in fields(r)
    assert text in r.text
    assert "Traceback" not in r.text and len(r.text) < 2000


def test_body_over_the_limit_is_a_413(client):
    r = client.post("/search", json={"query": "x " * 150_000})
    assert r.status_code == 413
    assert "max_body_bytes=200000" in r.json()["detail"]


def test_embeddings_openai_shape(client, searcher):
    texts = ["vitamin d and bone density", "aspirin and heart attacks"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": "minilm"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4
    want = searcher.embed(texts)
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), want, atol=1e-6)
    single = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    raw = np.frombuffer(base64.b64decode(single.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(raw, want[0], atol=1e-6)


@pytest.mark.parametrize(
    "body,status,text",
    [
        ({"input": ["a"] * 5}, 422, "max_batch=4"),
        ({"input": []}, 422, "at least one string"),
        ({"input": ["ok", " "]}, 422, "item 1 is empty"),
        ({"input": "b" * 3001}, 422, "max_input_chars=3000"),
        ({"input": [1, 2]}, 422, "input"),
        ({"input": "hi", "model": "text-embedding-3-small"}, 404, "this server serves 'minilm'"),
        ({"input": "hi", "dimensions": 128}, 422, "384 dimensions"),
        ({"input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
    ],
)
def test_bad_embedding_requests(client, body, status, text):
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert text in r.text


def test_concurrent_requests_are_answered_correctly(client, searcher):
    queries = list(rs.subset()[1].values())[:6]
    expected = {q: [h.id for h in searcher.search(q, k=5)] for q in queries}

    def ask(q):
        r = client.post("/search", json={"query": q, "k": 5})
        return q, r.status_code, [h["id"] for h in r.json()["hits"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, queries * 3))
    for q, status, ids in answers:
        assert status == 200 and ids == expected[q]


def test_stats_count_requests_latency_and_cache(client):
    for _ in range(3):
        client.post("/search", json={"query": "repeated query for the cache", "k": 3})
    client.post("/search", json={"query": "cells", "k": 0})
    stats = client.get("/stats").json()
    assert stats["index"]["documents"] == len(rs.float_index())
    assert stats["index"]["size_bytes"] > 0 and stats["index"]["precision"] == "float32"
    assert stats["model"]["id"] == "minilm"
    assert stats["requests"]["POST /search"] >= 4
    assert stats["status_codes"]["422"] >= 1
    latency = stats["latency"]["POST /search"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert stats["cache"]["hits"] >= 2 and 0 < stats["cache"]["hit_rate"] < 1
    assert stats["limits"]["max_k"] == 50


def test_internal_errors_carry_no_stack_trace(server, searcher, monkeypatch):
    url, app = server

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.state.searcher, "search", broken)
    r = httpx.post(f"{url}/search", json={"query": "cells"}, timeout=30)
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert "secret" not in r.text
