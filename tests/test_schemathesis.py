"""Schemathesis against the server's own OpenAPI schema, on a real loopback server with an
API key: no generated request gets a 5xx, and every response matches the schema's status."""

from __future__ import annotations

import socket
import threading
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

KEY = "schema-test-key"
CASES = {"n": 0}  # how many generated requests ran (read by the evidence table)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The real SciFact subset index with the real MiniLM encoder."""
    import retrieval_support as rs
    import uvicorn

    from vecdoctor.search.searcher import Searcher
    from vecdoctor.serve.app import ServerLimits, create_app

    index = rs.saved_index_dir(str(tmp_path_factory.mktemp("schema")))
    limits = ServerLimits(max_k=50, max_batch=8, max_input_chars=2000, max_query_chars=2000)
    app = create_app(Searcher(index), limits=limits, api_key=KEY, warmup=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def api_schema(base_url):
    return schemathesis.openapi.from_url(
        f"{base_url}/openapi.json", headers={"X-API-Key": KEY}
    )


def operations(api_schema) -> list:
    ops = [result.ok() for result in api_schema.get_all_operations()]
    return sorted(ops, key=lambda op: (op.path, op.method))


@pytest.mark.slow
def test_no_server_errors_for_generated_requests(api_schema):
    from hypothesis import given

    ops = operations(api_schema)
    assert {op.path for op in ops} >= {"/search", "/v1/embeddings", "/health", "/stats"}
    seen: dict[str, int] = {}
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        def run(case) -> None:
            response = case.call(headers={"X-API-Key": KEY}, timeout=30)
            seen[case.path] = seen.get(case.path, 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            if case.path in {"/search", "/v1/embeddings"}:
                assert response.status_code in {200, 400, 404, 413, 422}, response.text

        run()
    CASES["n"] = sum(seen.values())
    print(f"schemathesis cases per path: {seen}")
    assert seen.get("/search", 0) >= 20 and seen.get("/v1/embeddings", 0) >= 20, seen
