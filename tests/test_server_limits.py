"""Server guards on a real uvicorn server on loopback: API key, body-size limit (declared and
chunked), in-flight limit with 503 + Retry-After, /health under a full queue, access log."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import retrieval_support as rs

from vecdoctor.errors import InputError
from vecdoctor.search.searcher import Searcher
from vecdoctor.serve.app import ServerLimits, create_app

KEY = "s3cret-key-for-tests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatedSearcher(Searcher):
    """A real searcher whose searches wait until the test opens the gate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)

    def search(self, *args, **kwargs):
        self.entered.release()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("gate never opened")
        return super().search(*args, **kwargs)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    return GatedSearcher(rs.saved_index_dir(str(tmp_path_factory.mktemp("guarded"))))


@pytest.fixture(scope="module")
def base_url(searcher):
    import uvicorn

    limits = ServerLimits(max_body_bytes=4096, max_in_flight=2, retry_after_s=3)
    app = create_app(searcher, limits=limits, api_key=KEY)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    searcher.gate.set()
    srv.should_exit = True
    thread.join(timeout=10)


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_api_key_required_except_health(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
            r = c.post("/search", json={"query": "cancer"}, headers=headers)
            assert r.status_code == 401, headers
            assert "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/stats").status_code == 401
        assert c.get("/openapi.json").status_code == 401
        assert c.post("/search", json={"query": "cancer"}, headers=AUTH).status_code == 200
        r = c.post("/search", json={"query": "cancer"}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["hits"]


def test_empty_api_key_is_refused(searcher):
    with pytest.raises(InputError, match="api_key is empty"):
        create_app(searcher, api_key="  ", warmup=False)


def test_declared_body_over_limit_is_413(base_url):
    body = b'{"query": "' + b"a" * 5000 + b'"}'
    with httpx.Client(base_url=base_url, timeout=30) as c:
        r = c.post(
            "/search", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
    assert r.status_code == 413
    assert "max_body_bytes=4096" in r.json()["detail"]


def test_chunked_body_over_limit_is_413(base_url):
    """No Content-Length: the limit is enforced on the bytes actually received."""

    def chunks():
        yield b'{"query": "'
        for _ in range(10):
            yield b"b" * 1000
        yield b'"}'

    with httpx.Client(base_url=base_url, timeout=30) as c:
        r = c.post(
            "/search", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
        )
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert r.status_code == 413
        small = c.post(
            "/search",
            content=iter([b'{"query": ', b'"heart disease"}']),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert small.status_code == 200, small.text


def test_requests_beyond_the_queue_limit_get_503_and_health_stays_fast(base_url, searcher):
    searcher.entered = threading.Semaphore(0)  # forget searches made by earlier tests
    searcher.gate.clear()
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        with httpx.Client(base_url=base_url, timeout=30) as c:

            def held() -> int:
                return c.post("/search", json={"query": "vitamin d"}, headers=AUTH).status_code

            futures = [pool.submit(held) for _ in range(2)]
            for _ in range(2):  # both requests are inside the app, waiting at the gate
                assert searcher.entered.acquire(timeout=30)
            r = c.post("/search", json={"query": "one too many"}, headers=AUTH)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "3"
            assert "max_in_flight=2" in r.json()["detail"]
            start = time.perf_counter()
            h = c.get("/health")
            assert h.status_code == 200
            assert time.perf_counter() - start < 1.0
            searcher.gate.set()
            assert [f.result(timeout=30) for f in futures] == [200, 200]
            # the slots are free again
            assert c.post("/search", json={"query": "vitamin d"}, headers=AUTH).status_code == 200
            stats = c.get("/stats", headers=AUTH).json()
            assert stats["status_codes"].get("503", 0) >= 1
    finally:
        searcher.gate.set()
        pool.shutdown(wait=True)


def test_one_access_log_line_per_request(base_url, caplog):
    with caplog.at_level(logging.INFO, logger="vecdoctor.serve.access"):
        with httpx.Client(base_url=base_url, timeout=30) as c:
            c.post("/search", json={"query": "insulin"}, headers=AUTH)
            c.get("/health")
            c.post("/search", json={"query": "x"})  # no key
        deadline = time.time() + 5
        while len(caplog.records) < 3 and time.time() < deadline:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "vecdoctor.serve.access"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("POST /search 200 ") and "ms" in lines[0]
    assert lines[1].startswith("GET /health 200 ")
    assert lines[2].startswith("POST /search 401 ")
    assert KEY not in " ".join(lines)


def test_serve_cli_reads_the_key_from_the_environment(tmp_path):
    """`vecdoctor serve` as a real process: the key comes from VECDOCTOR_API_KEY."""
    import os
    import subprocess
    import sys

    index = rs.saved_index_dir(str(tmp_path))
    port = free_port()
    env = {**os.environ, "VECDOCTOR_API_KEY": KEY}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("vecdoctor")), "serve", str(index), "--port", str(port),
         "--queue-limit", "4", "--max-body-bytes", "2048"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("serve did not start: " + proc.stdout.read().decode()[-2000:])
            time.sleep(0.25)
        assert httpx.post(url + "/search", json={"query": "cancer"}).status_code == 401
        ok = httpx.post(url + "/search", json={"query": "cancer"}, headers=AUTH, timeout=30)
        assert ok.status_code == 200
        big = httpx.post(url + "/search", content=b"x" * 3000, headers=AUTH, timeout=30)
        assert big.status_code == 413
        limits = httpx.get(url + "/stats", headers=AUTH).json()["limits"]
        assert limits["max_in_flight"] == 4 and limits["max_body_bytes"] == 2048
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "POST /search 200" in out  # the access line reaches the console


def test_a_newline_in_the_path_cannot_forge_a_log_line(base_url, caplog):
    forged = "/search%0AGET%20/admin%20200"
    with caplog.at_level(logging.INFO, logger="vecdoctor.serve.access"):
        with httpx.Client(base_url=base_url, timeout=30) as c:
            c.get(forged, headers=AUTH)
        deadline = time.time() + 5
        while not caplog.records and time.time() < deadline:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "vecdoctor.serve.access"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("GET /search\\nGET /admin 200 ")  # escaped, on one line


def test_health_says_only_that_the_server_is_up(base_url):
    r = httpx.get(base_url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", '{"input": ["fine", "bad \\ud800 text"]}'),
        ("/search", '{"query": "bad \\udfff"}'),
    ],
)
def test_a_lone_surrogate_is_a_422_not_a_500(base_url, path, body):
    r = httpx.post(base_url + path, content=body.encode(), timeout=30,
                   headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "surrogate" in r.text or "unicode" in r.text  # said by vecdoctor or by pydantic


def test_searcher_refuses_a_nan_rrf_k(searcher):
    with pytest.raises(InputError, match="finite number"):
        Searcher(searcher.index, rrf_k=float("nan"))


def test_sockets_that_send_nothing_cannot_deny_service(tmp_path):
    """A client keeps 2x --max-connections idle sockets open, renewing them (200 a second, 8x
    the rate that kept the server down before); searches from another client are all answered,
    because idle sockets are shed first. The server is a real `vecdoctor serve` process."""
    import os
    import subprocess
    import sys

    folder = rs.saved_index_dir(str(tmp_path))
    port = free_port()
    env = {**os.environ, "VECDOCTOR_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "vecdoctor", "-q", "serve", str(folder),
                             "--port", str(port), "--max-connections", "24",
                             "--header-timeout", "30"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    opened = [0]

    def flood() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                opened[0] += 1
            except OSError:
                pass
            if len(held) > 48:
                held.pop(0).close()
            time.sleep(0.005)
        for s in held:
            s.close()

    attacker = threading.Thread(target=flood, daemon=True)
    try:
        rs.wait_until_up(url, proc)
        attacker.start()
        while opened[0] < 100:
            time.sleep(0.05)
        codes = [httpx.post(url + "/search", json={"query": f"cells {i}", "k": 3}, headers=AUTH,
                            timeout=30).status_code for i in range(20)]
        assert codes == [200] * 20
        assert opened[0] > 150  # the flood went on all along
    finally:
        stop.set()
        attacker.join(10)
        proc.terminate()
        proc.wait(timeout=30)
