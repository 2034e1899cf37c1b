"""Question: do the input parsers survive arbitrary bytes? Coverage-guided fuzzing (atheris).

Targets: the BEIR corpus, queries and qrels readers, the index docs.jsonl reader and the
server's request parsing (the real FastAPI app over a small in-memory index, driven in
process). Each target runs in its own child process for a bounded time; any exception that
is not a clear vecdoctor error is a crash: libFuzzer stops and keeps the input in
benchmarks/results/fuzz-crashes/ (turn it into a regression test).

    python benchmarks/fuzz_readers.py --seconds 60          # per target
    python benchmarks/fuzz_readers.py --target qrels --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from harness import RESULTS, machine, versions, write_result  # noqa: E402

TARGETS = ("corpus", "queries", "qrels", "index_docs", "search_request", "embedding_request")


def _seed_corpus(target: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {
        "corpus": [b'{"_id": "d1", "title": "t", "text": "protein folding"}\n',
                   b'{"_id": 7, "text": "x"}\r\n{"_id": "b", "text": ""}\n'],
        "queries": [b'{"_id": "q1", "text": "what is dna"}\n'],
        "qrels": [b"query-id\tcorpus-id\tscore\nq1\td1\t1\r\n", b"q1\t0\td1\t2\n"],
        "index_docs": [b'{"id": "a", "title": "", "text": "b"}\n'],
        "search_request": [b'{"query": "cancer", "k": 5, "mode": "hybrid"}',
                           b'{"query": "x", "rerank": "maxsim"}'],
        "embedding_request": [b'{"input": ["a", "b"], "encoding_format": "base64"}',
                              b'{"input": "q", "dimensions": 16, "model": "hash-encoder"}'],
    }[target]
    for i, blob in enumerate(seeds):
        (folder / f"seed{i}").write_bytes(blob)


def _child(target: str, seconds: int, out: Path) -> None:
    """Runs inside the child process: set up the target and hand it to libFuzzer."""
    import atheris

    with atheris.instrument_imports():
        from vecdoctor import data as vd_data
        from vecdoctor.errors import VecdoctorError
        from vecdoctor.index import docs as vd_docs

    count = {"inputs": 0}
    tmp = Path(tempfile.mkdtemp(prefix="vecdoctor-fuzz-"))
    path = tmp / ("qrels.tsv" if target == "qrels" else "input.jsonl")

    def report() -> None:
        out.write_text(json.dumps({"inputs": count["inputs"]}))

    import atexit

    atexit.register(report)

    if target in {"search_request", "embedding_request"}:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import crash_worker as cw
        from starlette.testclient import TestClient

        from vecdoctor.index import Index
        from vecdoctor.search.searcher import Searcher
        from vecdoctor.serve.app import create_app

        index = Index.build([d for g in range(4) for d in cw.gen_docs(g)], cw.HashEncoder())
        client = TestClient(create_app(Searcher(index), warmup=False), raise_server_exceptions=True)
        url = "/search" if target == "search_request" else "/v1/embeddings"

        def one(blob: bytes) -> None:
            count["inputs"] += 1
            r = client.post(url, content=blob, headers={"Content-Type": "application/json"})
            if r.status_code >= 500:
                raise RuntimeError(f"{url} answered {r.status_code} to {blob[:200]!r}: {r.text}")
    else:
        reader = {
            "corpus": vd_data.read_corpus_jsonl,
            "queries": vd_data.read_queries,
            "qrels": vd_data.read_qrels,
            "index_docs": lambda p: vd_docs.read_docs(p, expected=1),
        }[target]

        def one(blob: bytes) -> None:
            count["inputs"] += 1
            path.write_bytes(blob)
            with contextlib.suppress(VecdoctorError):
                reader(path)

    seeds = tmp / "seeds"
    _seed_corpus(target, seeds)
    crashes = RESULTS / "fuzz-crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={seconds}", f"-artifact_prefix={crashes}/{target}-",
         "-rss_limit_mb=4096", str(seeds)],
        one,
    )
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--target", choices=TARGETS, action="append")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.seconds, args.out)
        return
    rows = []
    for target in args.target or TARGETS:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        start = time.time()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", target, "--seconds", str(args.seconds),
             "--out", str(out)],
            capture_output=True, text=True, timeout=args.seconds + 300,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        done = re.search(r"Done (\d+) runs", proc.stderr)  # libFuzzer's summary line
        try:
            inputs = int(done.group(1)) if done else json.loads(out.read_text())["inputs"]
        except (OSError, ValueError, KeyError):
            inputs = None
        crashed = proc.returncode != 0
        rows.append({
            "target": target,
            "seconds": round(time.time() - start, 1),
            "inputs": inputs,
            "crashes": int(crashed),
            "exit_code": proc.returncode,
            "tail": proc.stderr[-1500:] if crashed else proc.stderr.strip().splitlines()[-1:],
        })
        print(f"{target:18s} {rows[-1]['seconds']:7.1f}s {inputs} inputs, "
              f"{'CRASH' if crashed else 'no crash'}", flush=True)
    path = write_result("fuzz_readers", {
        "machine": machine(),
        "versions": versions("atheris", "numpy", "fastapi", "pydantic"),
        "seconds_per_target": args.seconds,
        "targets": rows,
        "total_inputs": sum(r["inputs"] or 0 for r in rows),
        "total_crashes": sum(r["crashes"] for r in rows),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
