"""Question: does one `vecdoctor serve` process hold under minutes of mixed, partly hostile
traffic without growing or failing?

Starts the real CLI server on 127.0.0.1 (a SciFact index when ../shared is there, else the
built-in sample) and, for ``--minutes``, runs at once: searchers (real queries, every mode),
an embeddings client (batches of 32 long documents), a client sending malformed and oversized
bodies, and slow clients that trickle headers or bodies. Every ``--every`` seconds it records
the server's resident memory and the requests so far. Reports requests and status codes per
kind, p50/p99 latency of searches and embeddings, memory over time, and the memory growth after
the warm-up minute. Everything stops by itself; traffic goes to loopback only. Also: a client inventing a
new method and path for every request without the key, and 300 idle sockets renewed
continuously.

    python benchmarks/server_soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DATA, machine, percentiles, versions, write_result  # noqa: E402
from server_load import KEY, rss_mb, start_server  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


def build(docs: int) -> tuple[Path, list[str], list[str]]:
    """An index (cached under the results' .cache) and the queries and texts to send."""
    from vecdoctor.data import load_dataset, sample_corpus
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index import Index
    from vecdoctor.persist import INDEX, written_as

    results = Path(__file__).resolve().parent / "results"
    if (DATA / "scifact" / "corpus.jsonl.gz").is_file():
        ds = load_dataset(DATA / "scifact", "test")
        corpus, queries = ds.corpus[:docs], list(ds.queries.values())
    else:
        corpus = sample_corpus()[:docs]
        queries = [d.title or d.text[:60] for d in corpus]
    folder = results / ".cache" / f"soak-{len(corpus)}"
    if not written_as(folder, INDEX):
        Index.build(corpus, Encoder("minilm", max_length=128)).save(folder)
    return folder, queries, [d.content for d in corpus]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, status: int | str, seconds: float | None = None) -> None:
        with self.lock:
            self.status[kind][str(status)] += 1
            if seconds is not None:
                self.latency[kind].append(seconds * 1000)

    def total(self) -> int:
        with self.lock:
            return sum(sum(c.values()) for c in self.status.values())


def _call(tally: Tally, kind: str, method, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    import httpx

    start = time.perf_counter()
    try:
        status = method(*args, **kwargs).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    tally.add(kind, status, time.perf_counter() - start)


def searcher(url: str, queries: list[str], stop: threading.Event, tally: Tally, seed: int) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as c:
        while not stop.is_set():
            q = queries[int(rng.integers(len(queries)))]
            mode = ["hybrid", "dense", "bm25"][int(rng.integers(3))]
            _call(tally, "search", c.post, "/search", json={"query": q, "k": 10, "mode": mode})


def embedder(url: str, texts: list[str], stop: threading.Event, tally: Tally) -> None:
    import httpx

    rng = np.random.default_rng(7)
    with httpx.Client(base_url=url, timeout=120, headers=AUTH) as c:
        while not stop.is_set():
            batch = [texts[int(i)] for i in rng.integers(len(texts), size=32)]
            body = {"input": batch, "input_type": "document"}
            _call(tally, "embeddings", c.post, "/v1/embeddings", json=body)
            stop.wait(1.0)


BAD_BODIES = [
    b"{not json",
    b'{"query": ""}',
    b'{"query": "x", "k": 100000}',
    b'{"query": "bad \\ud800"}',
    json.dumps({"query": "x" * 50_000}).encode(),
    b"[" * 10_000 + b"]" * 10_000,
]


def hostile(url: str, stop: threading.Event, tally: Tally) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:
        i = 0
        while not stop.is_set():
            body = BAD_BODIES[i % len(BAD_BODIES)]
            headers = {**AUTH, "content-type": "application/json"} if i % 7 else {}
            _call(tally, "bad", c.post, "/search", content=body, headers=headers)
            _call(tally, "bad", c.post, "/v1/embeddings", content=b"x" * 5_000_000, headers=AUTH)
            i += 1
            stop.wait(0.2)


def inventor(url: str, stop: threading.Event, tally: Tally) -> None:
    """Requests without the key, each with a method and a path never seen before: they must
    not grow the server's statistics (/stats stays small) nor its memory."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while not stop.is_set():
            i += 1
            _call(tally, "invented", c.request, f"M{i:07d}X", f"/x/{i}")


def idle_flood(port: int, stop: threading.Event, tally: Tally, hold: int = 300) -> None:
    """Keep ``hold`` sockets open that send nothing, renewing them continuously."""
    held: list[socket.socket] = []
    while not stop.is_set():
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            tally.add("idle-socket", "opened")
        except OSError as exc:
            tally.add("idle-socket", type(exc).__name__)
        if len(held) > hold:
            held.pop(0).close()
        stop.wait(0.01)
    for sock in held:
        sock.close()


def slow(port: int, stop: threading.Event, tally: Tally) -> None:
    """Trickle a byte a second: headers, or a body after complete headers."""
    n = 0
    while not stop.is_set():
        n += 1
        head = b"POST /search HTTP/1.1\r\nHost: x\r\n"
        if n % 2 == 0:
            head += (b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"Content-Length: 100\r\nContent-Type: application/json\r\n\r\n{")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head)
                start = time.perf_counter()
                answer = b""
                while time.perf_counter() - start < 60 and not stop.is_set():
                    try:
                        sock.sendall(b" ")
                        sock.settimeout(1.0)
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                status = answer[9:12].decode() if answer.startswith(b"HTTP/1.1") else "closed"
                tally.add("slow-body" if n % 2 == 0 else "slow-headers", status,
                          time.perf_counter() - start)
        except OSError as exc:
            tally.add("slow", type(exc).__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--searchers", type=int, default=4)
    parser.add_argument("--slow-clients", type=int, default=3)
    args = parser.parse_args()

    index, queries, texts = build(args.docs)
    proc, url = start_server(index, queue_limit=16)
    port = int(url.rsplit(":", 1)[1])
    stop, tally = threading.Event(), Tally()
    threads = [threading.Thread(target=searcher, args=(url, queries, stop, tally, i))
               for i in range(args.searchers)]
    threads += [threading.Thread(target=embedder, args=(url, texts, stop, tally)),
                threading.Thread(target=hostile, args=(url, stop, tally))]
    threads += [threading.Thread(target=slow, args=(port, stop, tally))
                for _ in range(args.slow_clients)]
    threads += [threading.Thread(target=inventor, args=(url, stop, tally)),
                threading.Thread(target=idle_flood, args=(port, stop, tally))]
    samples = []
    start = time.time()
    try:
        for t in threads:
            t.start()
        while time.time() - start < args.minutes * 60 and proc.poll() is None:
            samples.append({"t_s": round(time.time() - start, 1), "rss_mb": round(rss_mb(proc.pid), 1),
                            "requests": tally.total()})
            print(samples[-1], flush=True)
            time.sleep(args.every)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
        alive = proc.poll() is None
        final_rss = rss_mb(proc.pid) if alive else float("nan")
        stats_bytes = None
        if alive:
            import httpx

            stats_bytes = len(httpx.get(url + "/stats", headers=AUTH, timeout=30).content)
        proc.terminate()
        proc.wait(timeout=30)
    warm = [s["rss_mb"] for s in samples if s["t_s"] >= 60] or [s["rss_mb"] for s in samples]
    growth = (max(warm) - warm[0]) / warm[0] if warm else float("nan")
    latency = {k: {"count": len(v), **percentiles(v, (50, 99), suffix="_ms", digits=1)}
               for k, v in tally.latency.items() if v and k in {"search", "embeddings"}}
    statuses = {k: dict(v) for k, v in tally.status.items()}
    server_errors = sum(n for c in statuses.values() for s, n in c.items() if s.startswith("5")
                        and s != "503")
    result = {
        "machine": machine(),
        "versions": versions("uvicorn", "fastapi", "torch"),
        "index": str(index.name),
        "minutes": args.minutes,
        "clients": {"searchers": args.searchers, "embeddings": 1, "hostile": 1,
                    "slow": args.slow_clients, "invented methods without the key": 1,
                    "idle sockets held": 300},
        "stats_bytes_at_end": stats_bytes,
        "server_alive_at_end": alive,
        "requests": tally.total(),
        "status_codes": statuses,
        "latency": latency,
        "memory_mb": samples + [{"t_s": round(time.time() - start, 1), "rss_mb": round(final_rss, 1)}],
        "memory_growth_after_warmup": round(growth, 4),
        "targets": {
            "memory growth after warm-up < 5%": growth < 0.05,
            "no 5xx but 503": server_errors == 0,
            "server alive": alive,
            "searches answered despite the idle sockets (200, or 503 when the queue is full)":
                statuses.get("search", {}).get("200", 0) > 0
                and sum(n for s, n in statuses.get("search", {}).items()
                        if s not in {"200", "503"}) == 0,
            "/stats stays under 10 KB": stats_bytes is not None and stats_bytes < 10_000,
        },
    }
    print(json.dumps(result["targets"]), flush=True)
    path = write_result("server_soak", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
