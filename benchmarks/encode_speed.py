"""How fast does vecdoctor encode on CPU, per backend and precision, and what does it cost in quality?

Compares, in one run and on the same texts, plain sentence-transformers ``encode`` (PyTorch
fp32, the baseline) with vecdoctor's Encoder on torch fp32 (its overhead), OpenVINO fp32/bf16/int8
and ONNX Runtime fp32/int8 (converted by vecdoctor, int8 calibrated on the corpus itself):

- documents/s on SciFact (title + abstract, max length 256), timed in interleaved chunks so that
  load from other processes hits every variant alike; ratios against the baseline;
- SciFact test nDCG@10 (exact dense search over the full corpus, pytrec_eval) and the cosine of
  each variant's document vectors to the baseline's;
- sentences/s on STS-B test sentences (short texts);
- single short query latency (p50, p95);
- peak resident memory added while encoding (sampled), and the model size on disk.

With ``--peer`` it also times sentence-transformers' own fastest CPU paths, exported as its docs
say (OpenVINO static int8 calibrated on the same corpus texts as vecdoctor's, ONNX dynamic int8 for
the CPU's instruction set), each in a worker process of an isolated environment (peer_env.py: their
extras pin transformers and the hub client below the project's versions). They take their turn in
the same interleaved chunks; their time is the worker's ``encode`` call alone.

    python benchmarks/encode_speed.py                     # full corpus, every variant
    python benchmarks/encode_speed.py --docs 1000 --sts 1000 --chunks 4
    python benchmarks/encode_speed.py --variants st-fp32,openvino-int8,onnx-int8 --peer
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    DATA,
    ROOT,
    Measured,
    interleaved,
    log,
    machine,
    ndcg_of_run,
    paired_ratio,
    percentiles,
    versions,
    write_result,
)

VARIANTS = ["st-fp32", "torch-fp32", "openvino-fp32", "openvino-bf16", "openvino-int8", "onnx-fp32",
            "onnx-int8"]
PEER_VARIANTS = ["st-openvino-int8", "st-onnx-int8"]  # sentence-transformers' own, in peer_env.py's env


class PeakRSS:
    """Samples this process's resident memory every 20 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def load_sts(limit: int) -> list[str]:
    path = DATA / "stsbenchmark" / "sts-test.csv.gz"
    sentences: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                if s not in sentences:
                    sentences.append(s)
    return sentences[:limit]


class PeerRun:
    """A sentence-transformers variant encoding in the peer environment's process (peer_worker.py).

    Called like the in-process variants; ``last_seconds`` is the time of the worker's ``encode``
    call alone, so moving texts and vectors between the processes is never counted against it.
    """

    def __init__(self, python: Path, name: str, model: str, calibration: list[str], max_length: int,
                 work: Path) -> None:
        import subprocess

        self.work = work
        self.proc = subprocess.Popen([str(python), str(ROOT / "benchmarks" / "peer_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._ask({"variant": name, "model": model, "work": str(work), "max_length": max_length,
                           "batch_size": 32, "calibration": calibration})
        self.facts = ready["facts"]
        self.versions = self.facts.pop("versions")
        self.last_seconds = 0.0

    def _ask(self, message: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the peer worker stopped (exit {self.proc.wait()}); its error is above")
        return json.loads(line)

    def __call__(self, texts: list[str], role: str) -> np.ndarray:
        out = self.work / "vectors.npy"
        self.last_seconds = self._ask({"texts": texts, "out": str(out)})["seconds"]
        return np.load(out)


def build(name: str, model: str, calibration: list[str], max_length: int):  # noqa: ANN201
    """A callable (texts, role) -> normalised vectors, and facts about the variant."""
    if name == "st-fp32":
        from sentence_transformers import SentenceTransformer

        from vecdoctor.models import resolve

        st = SentenceTransformer(str(resolve(model).path), device="cpu")
        st.max_seq_length = max_length
        return (lambda texts, role: st.encode(texts, batch_size=32, normalize_embeddings=True)), {}
    from vecdoctor.encode.encoder import Encoder

    backend, precision = name.split("-")
    started = time.perf_counter()
    enc = Encoder(model, backend=backend, precision=precision, max_length=max_length, batch_size=32,
                  calibration_texts=calibration if precision == "int8" else None)
    facts = {"load_or_convert_seconds": round(time.perf_counter() - started, 1)}
    if backend != "torch":
        from vecdoctor.encode.convert.export import variant_dir

        folder = variant_dir(enc.resolved, backend, precision)
        facts["disk_mb"] = round(sum(p.stat().st_size for p in folder.glob("model.*")) / 2**20, 1)
        facts["check"] = json.loads((folder / "vecdoctor_export.json").read_text())["check"]

    def run(texts: list[str], role: str) -> np.ndarray:
        return enc.encode_queries(texts) if role == "query" else enc.encode_documents(texts)

    return run, facts


def encode_interleaved(runs: dict, texts: list[str], chunks: int) -> tuple[dict, dict, dict, dict]:
    """Encode ``texts`` in chunks, every variant per chunk in rotating order (the harness'
    ``interleaved``): total seconds, vectors, peak memory added and seconds per chunk."""
    parts = np.array_split(np.arange(len(texts)), chunks)

    def call(run):  # noqa: ANN001, ANN202
        def one(c: int) -> Measured:
            with PeakRSS() as mem:
                started = time.perf_counter()
                vectors = run([texts[i] for i in parts[c]], "document")
                took = getattr(run, "last_seconds", time.perf_counter() - started)
            return Measured((vectors, mem.peak - mem.start), took)
        return one

    per_chunk, values = interleaved({k: call(run) for k, run in runs.items()}, chunks, warmup=False)
    seconds = {k: sum(v) for k, v in per_chunk.items()}
    vectors = {k: np.vstack([v for v, _ in rows]) for k, rows in values.items()}
    peak = {k: max(m for _, m in rows) for k, rows in values.items()}
    return seconds, vectors, peak, per_chunk


def versus_peer(names: list[str], runs: dict, doc_seconds: dict, per_chunk: dict) -> dict:
    """Each vecdoctor variant against the fastest peer variant on documents: the ratio of
    documents/s over the whole run, and the spread of the ratio chunk by chunk (each chunk is
    the same texts, encoded by both within seconds of each other, so the machine's drift
    cancels out of it)."""
    peers = [n for n in names if isinstance(runs[n], PeerRun)]
    if not peers:
        return {}
    best = min(peers, key=lambda n: doc_seconds[n])
    out: dict = {"best_peer": best}
    for name in names:
        if name in peers or name.startswith("st-"):
            continue
        paired = paired_ratio(per_chunk[best], per_chunk[name])
        out[name] = {"docs_ratio": round(doc_seconds[best] / doc_seconds[name], 3),
                     "chunk_ratio_median": paired["round_ratio_median"],
                     "chunk_ratio_q25": paired["round_ratio_q25"],
                     "chunk_ratio_q75": paired["round_ratio_q75"],
                     "chunks": paired["rounds"]}
    return out


def ndcg_exact(queries: dict[str, str], qrels: dict, doc_ids: list[str], docs: np.ndarray,
               run) -> float:  # noqa: ANN001
    """nDCG@10 of exact dense search with one variant's query and document vectors."""
    qids = list(queries)
    q = run([queries[i] for i in qids], "query")
    scores = q @ docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    return ndcg_of_run({qid: {doc_ids[j]: float(scores[r, j]) for j in top[r]}
                        for r, qid in enumerate(qids)}, qrels)


def latency(run, queries: list[str], repeats: int) -> dict[str, float]:  # noqa: ANN001
    times = []
    for q in queries[:repeats]:
        started = time.perf_counter()
        run([q], "query")
        times.append(getattr(run, "last_seconds", time.perf_counter() - started))
    return percentiles(times, (50, 95), scale=1000, suffix="_ms", digits=2)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--docs", type=int, default=0, help="documents timed (0: the full corpus)")
    ap.add_argument("--sts", type=int, default=0, help="STS-B sentences timed (0: all)")
    ap.add_argument("--chunks", type=int, default=6, help="interleaving chunks per text set")
    ap.add_argument("--queries", type=int, default=50, help="single-query latency samples")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--peer", action="store_true",
                    help="also time sentence-transformers' own OpenVINO static int8 and ONNX dynamic "
                         "int8 (exported as its docs say, in an isolated environment: peer_env.py)")
    ap.add_argument("--peer-env", default=None, help="where the peer environment lives "
                                                     "(default ~/.cache/vecdoctor/peer-env)")
    ap.add_argument("--no-quality", action="store_true", help="skip nDCG@10")
    ap.add_argument("--quality-variants", default="st-fp32,openvino-bf16,openvino-int8,onnx-int8",
                    help="variants whose nDCG@10 is computed ('all' for every one)")
    ap.add_argument("--quality-docs", type=int, default=0,
                    help="search a corpus of N docs: every judged doc plus seeded random others "
                         "(0: the full corpus)")
    ap.add_argument("--variant", default="default",
                    help="result file: benchmarks/results/encode_speed/<cpu>-<variant>.json")
    return ap.parse_args()


def load_runs(names: list[str], args: argparse.Namespace, texts: list[str]) -> tuple[dict, dict]:
    """Every variant's encode callable, warmed up, and facts about it (load time, size)."""
    peer_python, work = None, None
    if args.peer:
        import tempfile

        import peer_env

        peer_python = peer_env.ensure(Path(args.peer_env) if args.peer_env else peer_env.DEFAULT)
        names += [n for n in PEER_VARIANTS if n not in names]
        work = Path(tempfile.mkdtemp(prefix="vecdoctor-peer-"))
    runs, facts = {}, {}
    for name in names:
        log(f"loading {name}")
        if name in PEER_VARIANTS or name == "st-torch-fp32":
            from vecdoctor.encode.convert.export import _calibration_sample
            from vecdoctor.models import resolve

            if peer_python is None or work is None:
                sys.exit(f"{name} runs in the peer environment: add --peer")
            peer = PeerRun(peer_python, name, str(resolve(args.model).path),
                           _calibration_sample(texts), args.max_length, work)
            runs[name], facts[name] = peer, peer.facts
            continue
        runs[name], facts[name] = build(name, args.model, texts, args.max_length)
    for run in runs.values():  # warm-up: first-call allocations and compilation
        run(texts[:8], "document")
        run(["a short warm-up query"], "query")
    return runs, facts


def quality_of(args: argparse.Namespace, names: list[str], runs: dict, corpus: list,
               texts: list[str], doc_vectors: dict, timed: int) -> tuple[dict, int]:
    """nDCG@10 on SciFact test and the cosine of each variant's vectors to the baseline's."""
    from vecdoctor.data import load_dataset

    data = load_dataset(DATA / "scifact", "test")
    chosen = names if args.quality_variants == "all" else [
        n for n in args.quality_variants.split(",") if n in runs]
    if "st-fp32" not in chosen:  # the reference every variant's cosines are taken against
        chosen.insert(0, "st-fp32")
    keep = np.arange(len(corpus))
    if args.quality_docs and args.quality_docs < len(corpus):
        judged = {d for rel in data.qrels.values() for d in rel}
        is_judged = np.array([d.id in judged for d in corpus])
        others = np.flatnonzero(~is_judged)
        extra = np.random.default_rng(0).choice(others, max(0, args.quality_docs - is_judged.sum()),
                                                replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(is_judged), extra]))
    ids = [corpus[i].id for i in keep]
    searched = [texts[i] for i in keep]
    full = {}
    for n in chosen:
        log(f"quality: encoding {len(searched)} documents with {n}")
        full[n] = doc_vectors[n] if timed == len(texts) else runs[n](searched, "document")
    ref = full["st-fp32"]
    quality: dict[str, dict[str, float]] = {}
    for name in chosen:
        cos = (full[name] * ref).sum(axis=1)
        quality[name] = {"ndcg@10": ndcg_exact(data.queries, data.qrels, ids, full[name], runs[name]),
                         "cosine_to_st_min": round(float(cos.min()), 6),
                         "cosine_to_st_mean": round(float(cos.mean()), 6)}
    base = quality["st-fp32"]["ndcg@10"]
    for q in quality.values():
        q["ndcg_vs_st"] = round(q["ndcg@10"] / base, 4)
    return quality, len(keep)


COLUMNS = ["variant", "docs_per_s", "docs_ratio", "sts_ratio", "p50_ms", "ndcg@10", "ndcg_vs_st",
           "cosine_to_st_mean", "peak_rss_added_mb"]


def main() -> None:
    args = parse_args()
    from vecdoctor.data import load_corpus

    if not (DATA / "scifact" / "corpus.jsonl.gz").exists():
        sys.exit(f"SciFact not found at {DATA / 'scifact'}")
    corpus = load_corpus(DATA / "scifact")
    texts = [d.content for d in corpus]
    timed = texts[: args.docs] if args.docs else texts
    sts = load_sts(args.sts or 10**9)
    names = args.variants.split(",")
    if names[0] != "st-fp32":
        sys.exit("the first variant must be st-fp32 (the baseline)")
    started = time.time()
    runs, facts = load_runs(names, args, texts)
    log(f"timing {len(timed)} documents")
    doc_seconds, doc_vectors, doc_peak, doc_chunks = encode_interleaved(runs, timed, args.chunks)
    log(f"timing {len(sts)} STS-B sentences")
    sts_seconds, _, _, _ = encode_interleaved(runs, sts, max(2, args.chunks // 2))
    log("single-query latency")
    lat = {name: latency(runs[name], sts[::7], args.queries) for name in names}
    quality, quality_docs = ({}, 0) if args.no_quality else quality_of(
        args, names, runs, corpus, texts, doc_vectors, len(timed))
    rows = [{"variant": name,
             "docs_per_s": round(len(timed) / doc_seconds[name], 1),
             "docs_ratio": round(doc_seconds["st-fp32"] / doc_seconds[name], 2),
             "sts_per_s": round(len(sts) / sts_seconds[name], 1),
             "sts_ratio": round(sts_seconds["st-fp32"] / sts_seconds[name], 2),
             **lat[name],
             # A peer encodes in its own process, whose memory this one does not see.
             "peak_rss_added_mb": None if isinstance(runs[name], PeerRun)
             else round(doc_peak[name] / 2**20, 1),
             **quality.get(name, {}), **facts[name]} for name in names]
    result = {
        "question": "documents/s, quality and memory of vecdoctor's CPU backends vs sentence-transformers fp32",
        "machine": machine(),
        "versions": versions("torch", "transformers", "sentence-transformers", "openvino", "nncf",
                             "onnxruntime", "onnx", "tokenizers"),
        "peer_environment": next((r.versions for r in runs.values() if isinstance(r, PeerRun)), None),
        "settings": {"model": args.model, "max_length": args.max_length, "batch_size": 32,
                     "docs_timed": len(timed), "corpus": len(texts), "sts_sentences": len(sts),
                     "chunks": args.chunks, "latency_queries": args.queries,
                     "quality_corpus_docs": None if args.no_quality else quality_docs},
        "seconds": round(time.time() - started, 1),
        "rows": rows,
        "versus_best_peer": versus_peer(names, runs, doc_seconds, doc_chunks),
    }
    path = write_result("encode_speed", result, args.variant)
    print(" | ".join(COLUMNS))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in COLUMNS))
    if result["versus_best_peer"]:
        print("versus the fastest peer on documents:", json.dumps(result["versus_best_peer"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
