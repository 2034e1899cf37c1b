"""Bounded intake on a real server on loopback: slow headers and slow bodies are cut off and
never hold an in-flight slot, one big embeddings request cannot stall searches, and its size
and token count are bounded and honest."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import retrieval_support as rs

from vecdoctor.serve.app import ServerLimits, create_app
from vecdoctor.serve.runner import server_config

LIMITS = ServerLimits(max_in_flight=2, header_timeout_s=1, body_timeout_s=2,
                      max_embedding_chars=300_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    app = create_app(rs.saved_index_dir(str(tmp_path_factory.mktemp("intake"))), limits=LIMITS)
    port = rs.free_port()
    srv = uvicorn.Server(server_config(app, "127.0.0.1", port, LIMITS, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    rs.wait_until_up(url)
    yield url, port, app
    srv.should_exit = True
    thread.join(timeout=10)


def _search(url: str) -> int:
    return httpx.post(url + "/search", json={"query": "cell biology", "k": 3}, timeout=30).status_code


def _slow_socket(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_slow_headers_are_cut_off(server):
    url, port, _ = server
    socks = [_slow_socket(port, b"POST /search HTTP/1.1\r\nHost: x\r\n") for _ in range(3)]
    start = time.perf_counter()
    assert _search(url) == 200  # meanwhile every other client is served
    for sock in socks:
        closed, _ = _closed_within(sock, 5)
        assert closed
        sock.close()
    assert time.perf_counter() - start < 5


def test_slow_bodies_get_408_and_hold_no_slot(server):
    url, port, _ = server
    head = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n{\"query\": ")
    socks = [_slow_socket(port, head) for _ in range(3)]  # more than max_in_flight=2
    time.sleep(0.3)
    assert [_search(url) for _ in range(3)] == [200, 200, 200]  # no 503: no slot is held
    for sock in socks:
        closed, answer = _closed_within(sock, 6)
        assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout_s=2" in answer
        sock.close()


def test_a_big_embeddings_request_does_not_stall_search(server):
    url, _, _ = server
    # 96 inputs of 2,500 characters (240k in all): longer than the model reads, so truncated
    texts = [((rs.subset()[0][i % 20].content + " ") * 4)[:2500] for i in range(96)]
    body = {"input": texts, "input_type": "document"}
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        big = pool.submit(httpx.post, url + "/v1/embeddings", json=body, timeout=120)
        time.sleep(0.5)  # the batch is being encoded
        t = time.perf_counter()
        assert _search(url) == 200
        search_s = time.perf_counter() - t
        response = big.result()
        bulk_s = time.perf_counter() - start
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["data"]) == 96
    assert bulk_s > 2 * search_s, (bulk_s, search_s)  # the search did not wait for the batch
    usage = response.json()["usage"]["prompt_tokens"]
    max_length = rs.float_index().encoder.max_length
    assert usage <= 96 * max_length  # counted after truncation, as the model read them


def test_embeddings_request_size_is_bounded_in_characters(server):
    url, _, _ = server
    texts = ["word " * 3_000] * 21  # 315,000 characters, each input under max_input_chars
    r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=30)
    assert r.status_code == 422 and "max_embedding_chars=300000" in r.text
