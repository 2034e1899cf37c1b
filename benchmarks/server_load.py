"""Question: how does `vecdoctor serve` hold under concurrent load on one machine?

Starts the real CLI server on 127.0.0.1 over a SciFact index, then drives POST /search with
1, 8 and 32 concurrent clients for a fixed time each (real test queries, round robin) and
reports requests/s, p50/p95/p99 latency, errors, /health latency under load and the server's
resident memory before and after. A last phase starts a second server with a small
--queue-limit and overloads it: the excess must get 503 + Retry-After, never a timeout or 5xx
of another kind. Everything stops by itself.

    python benchmarks/server_load.py --seconds 20 --docs 1000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DATA, RESULTS, machine, percentiles, versions, write_result  # noqa: E402

KEY = "load-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_index(docs: int, max_length: int) -> Path:
    from vecdoctor.data import load_corpus
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index import Index

    folder = RESULTS / ".cache" / f"scifact-{docs}-L{max_length}"
    if (folder / "config.json").is_file():
        return folder
    corpus = load_corpus(DATA / "scifact")[:docs]
    Index.build(corpus, Encoder("minilm", max_length=max_length)).save(folder)
    return folder


def start_server(index: Path, queue_limit: int, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("vecdoctor"))
    env = {**os.environ, "VECDOCTOR_API_KEY": KEY, "TOKENIZERS_PARALLELISM": "false"}
    log = open(RESULTS / ".cache" / f"serve-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "serve", str(index), "--port", str(port), "--queue-limit", str(queue_limit), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start; see {log.name}")


def drive(url: str, queries: list[str], concurrency: int, seconds: float) -> dict:
    import httpx

    stop = time.perf_counter() + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    retry_after: set[str] = set()
    lock = threading.Lock()

    def worker(offset: int) -> None:
        i = offset
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as client:
            while time.perf_counter() < stop:
                q = queries[i % len(queries)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = client.post("/search", json={"query": q, "k": 10})
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code = -1
                    with lock:
                        failures.append(type(exc).__name__)
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1
                    if code == 200:
                        latencies.append(dt)
                    elif code == 503:
                        retry_after.add(r.headers.get("retry-after", ""))

    health: list[float] = []

    def prober() -> None:
        import httpx as hx

        with hx.Client(base_url=url, timeout=30) as client:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                client.get("/health")
                health.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.2)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    threads.append(threading.Thread(target=prober))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "requests": sum(statuses.values()),
        "ok": ok,
        "requests_per_s": round(ok / wall, 2),
        **percentiles(lat, suffix="_ms", digits=2),
        "status_codes": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "transport_failures": sorted(set(failures)),
        "retry_after": sorted(retry_after),
        "health_p95_ms": percentiles(health, (95,), digits=2)["p95"] if health else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="per concurrency level")
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents indexed")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--index", type=Path, help="an existing index folder instead")
    args = parser.parse_args()
    if not (DATA / "scifact" / "queries.jsonl").exists() and not (
        DATA / "scifact" / "queries.jsonl.gz"
    ).exists():
        raise SystemExit(f"SciFact not found under {DATA}")
    from vecdoctor.data import load_dataset

    queries = list(load_dataset(DATA / "scifact", split="test").queries.values())
    index = args.index or build_index(args.docs, args.max_length)
    proc, url = start_server(index, queue_limit=64)
    levels = []
    try:
        drive(url, queries, 4, 3)  # warm caches and threads; not reported
        rss_start = rss_mb(proc.pid)
        for c in (1, 8, 32):
            row = drive(url, queries, c, args.seconds)
            row["server_rss_mb"] = round(rss_mb(proc.pid), 1)
            levels.append(row)
            print(f"c={c:<3} {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                  f"p95 {row['p95_ms']:7.1f}  p99 {row['p99_ms']:7.1f}  errors {row['errors']}  "
                  f"health p95 {row['health_p95_ms']} ms  rss {row['server_rss_mb']} MB",
                  flush=True)
        rss_end = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    over_proc, over_url = start_server(index, queue_limit=4)
    try:
        overload = drive(over_url, queries, 32, min(args.seconds, 10))
    finally:
        over_proc.terminate()
        over_proc.wait(timeout=30)
    shed = overload["status_codes"].get("503", 0)
    other = overload["requests"] - overload["ok"] - shed
    print(f"overload (queue-limit 4, c=32): {overload['ok']} ok, {shed} x 503 "
          f"(Retry-After {overload['retry_after']}), {other} other errors", flush=True)
    path = write_result("server_load", {
        "machine": machine(),
        "versions": versions("fastapi", "uvicorn", "starlette", "torch"),
        "index": str(index),
        "documents": args.docs if args.index is None else None,
        "seconds_per_level": args.seconds,
        "levels": levels,
        "rss_mb": {"after_warmup": round(rss_start, 1), "end": round(rss_end, 1),
                   "growth": round(rss_end - rss_start, 1)},
        "total_errors": sum(r["errors"] for r in levels),
        "overload": {**overload, "queue_limit": 4, "shed_503": shed, "other_errors": other},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
