"""Cost curves from ten thousand to a million documents: for every dense store, BM25 and the
default index's whole hybrid query, build time, peak memory, size on disk, query p50/p99 and
recall@10 against exact search, on this machine.

Documents: passages composed from real text available here, never generated words. The
sources are the SciFact abstracts, the Python language reference topics (the built-in sample),
and the STS-Benchmark and SICK sentences; a passage is a run of 2-4 consecutive sentences of
one source document of several sentences (SciFact or Python) followed by a run of 1-2
sentences of any source (about 70 words), drawn with
a fixed seed in blocks of 10,000, so the first N passages are the same whatever the largest N.

Vectors: real encodings, by a static student of minilm distilled on SciFact (``vecdoctor
distill minilm SCIFACT --student static``). Encoding a million passages with minilm itself
would take about four hours on these two cores (64 passages/s measured by --teacher-check); the student encodes
them in minutes. The recall of each approximate store is measured against exact search over
these same vectors, so the substitution changes which vectors are searched, not how the
stores are compared. ``--teacher-check N`` repeats the ANN recall on minilm's own vectors of
the first N passages to show whether the student's vectors are harder or easier to search.

Queries: the 300 SciFact test claims, one at a time, NumPy/faiss on one thread (as a server
answers them); build steps use both cores. Each (size, store) runs in its own process so that
its peak resident memory (``ru_maxrss``) is its own.

    .venv/bin/python benchmarks/scale_curve.py --student /tmp/scale/student \
        [--sizes 10000,100000,1000000] [--work /tmp/vecdoctor-scale] [--teacher-check 10000]

Writes benchmarks/results/scale_curve/<cpu>-default.json and a .png beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, machine, percentiles, result_path, versions, write_result  # noqa: E402

BLOCK = 10_000
SEED = 20261130
STORES = ("exact", "int8", "binary", "binary-x10", "hnsw", "ivf", "lance-ivfpq", "bm25",
          "index-hybrid")
K = 10


# -- the documents ------------------------------------------------------------------------
def source_documents() -> list[list[str]]:
    """Every source document as its list of sentences (at least 4 words each)."""
    import csv
    import gzip

    from vecdoctor.data import load_corpus, sample_corpus, split_sentences

    def sentences(text: str) -> list[str]:
        return [s for s in split_sentences(text) if len(s.split()) >= 4]

    docs = [sentences(d.text) for d in load_corpus(DATA / "scifact")]
    docs += [sentences(d.text) for d in sample_corpus()]
    short: set[str] = set()
    for name in ("sts-train", "sts-dev", "sts-test"):
        with gzip.open(DATA / "stsbenchmark" / f"{name}.csv.gz", "rt", encoding="utf-8") as fh:
            for row in fh:
                cols = row.rstrip("\n").split("\t")
                short.update(c for c in cols[5:7] if len(c.split()) >= 4)
    with gzip.open(DATA / "sick" / "SICK.txt.gz", "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            short.update(row[c] for c in ("sentence_A", "sentence_B"))
    docs = sorted((d for d in docs if d), key=lambda d: len(d) == 1)  # stable: long ones first
    return docs + [[s] for s in sorted(short)]


def _run(doc: list[str], start: float, length: int) -> list[str]:
    first = int(start * len(doc))
    return doc[first : first + length]


def passages(n: int, sources: list[list[str]]) -> list[Any]:
    """The first ``n`` composed passages (the same prefix for any larger ``n``)."""
    from vecdoctor.data import Document

    out = []
    for block in range((n + BLOCK - 1) // BLOCK):
        rng = np.random.default_rng([SEED, block])
        long_docs = sum(len(s) > 1 for s in sources)  # they come first
        pick = np.stack([rng.integers(0, long_docs, BLOCK),
                         rng.integers(0, len(sources), BLOCK)], axis=1)
        start = rng.random((BLOCK, 2))
        length = np.stack([rng.integers(2, 5, BLOCK), rng.integers(1, 3, BLOCK)], axis=1)
        for i in range(min(BLOCK, n - block * BLOCK)):
            text = _run(sources[pick[i, 0]], start[i, 0], length[i, 0])
            text += _run(sources[pick[i, 1]], start[i, 1], length[i, 1])
            out.append(Document(id=f"p{block * BLOCK + i}", title="", text=" ".join(text)))
    return out


def queries() -> list[str]:
    from vecdoctor.data import load_dataset

    ds = load_dataset(DATA / "scifact")
    return [ds.queries[q] for q in sorted(ds.qrels)]


# -- preparing: vectors and exact truth ---------------------------------------------------
def prepare(work: Path, student: Path, sizes: list[int]) -> dict[str, Any]:
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.dense import exact_search

    work.mkdir(parents=True, exist_ok=True)
    top = max(sizes)
    enc = Encoder(str(student))
    meta_path = work / "prepared.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("docs", 0) < top or meta.get("student") != str(student):
        sources = source_documents()
        docs = passages(top, sources)
        start = time.perf_counter()
        vecs = np.lib.format.open_memmap(work / "vectors.npy", "w+", np.float32,
                                         (top, enc.dimension))
        for s in range(0, top, 50_000):
            vecs[s : s + 50_000] = enc.encode_documents([d.content for d in docs[s : s + 50_000]])
        vecs.flush()
        seconds = time.perf_counter() - start
        words = np.array([len(d.text.split()) for d in docs[:BLOCK]])
        meta = {"docs": top, "student": str(student), "sources": len(sources),
                "source_sentences": sum(len(s) for s in sources),
                "encode_seconds": round(seconds, 1), "encode_docs_per_s": round(top / seconds),
                "words_per_passage_mean": round(float(words.mean()), 1),
                "words_per_passage_p95": int(percentiles(words, (95,))["p95"])}
        np.save(work / "queries.npy", enc.encode_queries(queries()))
        meta_path.write_text(json.dumps(meta, indent=2))
    vecs = np.load(work / "vectors.npy", mmap_mode="r")
    q = np.load(work / "queries.npy")
    for n in sizes:
        path = work / f"truth_{n}.npy"
        if not path.is_file():
            rows, _ = exact_search(q, np.asarray(vecs[:n]), K)
            np.save(path, rows)
    return meta


# -- measuring one store at one size, in its own process ----------------------------------
def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM; ``ru_maxrss`` would include the parent's
    memory at the fork that started this process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def saved_mb(thing: Any, folder: Path) -> float:
    """MiB that ``thing.save(folder)`` writes (the folder is removed afterwards)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    thing.save(folder)
    size = folder_mb(folder)
    shutil.rmtree(folder)
    return size


def _single_thread() -> None:
    import faiss

    from vecdoctor.search.searcher import limit_blas_threads

    limit_blas_threads(1)
    faiss.omp_set_num_threads(1)


def _latency(times: np.ndarray) -> dict[str, float]:
    return percentiles(times, (50, 99), suffix="_ms", digits=3)


def measure_vector_store(store: str, n: int, work: Path) -> dict[str, Any]:
    from vecdoctor.index.ann import AnnConfig, recall_at_k, timed_search
    from vecdoctor.index.vectors import VectorStore

    vecs = np.load(work / "vectors.npy", mmap_mode="r")[:n]
    q, truth = np.load(work / "queries.npy"), np.load(work / f"truth_{n}.npy")
    kind, _, times_k = store.partition("-x")  # binary-x10: fetch 10 x k candidates to rescore
    oversample = float(times_k) if times_k else 4.0
    precision = kind if kind in ("int8", "binary") else "float32"
    ann = {"hnsw": AnnConfig("hnsw"), "ivf": AnnConfig("ivf")}.get(kind)
    start = time.perf_counter()
    built = VectorStore.build(np.asarray(vecs), precision, ann)
    build_s = time.perf_counter() - start
    disk = saved_mb(built, work / f"{store}-{n}")
    _single_thread()

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return built.search(queries, k, oversample=oversample)

    timed_search(search, q[:20], K)  # warm-up
    found, times = timed_search(search, q, K)
    out = {"build_s": round(build_s, 2), "disk_mb": round(disk, 1),
           **_latency(times), "recall_at_10": round(recall_at_k(found, truth, K), 4)}
    if precision != "float32":
        out["oversample"] = oversample
    if ann is not None:
        out["settings"] = ann.to_dict()
    return out


def measure_lance(n: int, work: Path) -> dict[str, Any]:
    """LanceDB IVF-PQ as ``LanceIndex.create_vector_index`` builds it by default (partitions
    and sub-vectors chosen by LanceDB), searched with 20 and 100 probes, unrefined and with the
    PQ candidates re-ranked by their stored vectors (refine factor 10 and 50)."""
    import lancedb
    import pyarrow as pa

    from vecdoctor.index.ann import recall_at_k

    vecs = np.load(work / "vectors.npy", mmap_mode="r")[:n]
    q, truth = np.load(work / "queries.npy"), np.load(work / f"truth_{n}.npy")
    folder = work / f"lance-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    db = lancedb.connect(str(folder))
    start = time.perf_counter()
    dim = vecs.shape[1]
    table = None
    for s in range(0, n, 100_000):
        part = np.ascontiguousarray(vecs[s : s + 100_000], dtype=np.float32)
        batch = pa.table({"row": pa.array(np.arange(s, s + len(part))),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), dim)})
        if table is None:
            table = db.create_table("vectors", batch)
        else:
            table.add(batch)
    write_s = time.perf_counter() - start
    table.create_index(metric="dot", index_type="IVF_PQ", vector_column_name="vector",
                       replace=True)
    build_s = time.perf_counter() - start
    disk = folder_mb(folder)
    _single_thread()
    out: dict[str, Any] = {"build_s": round(build_s, 2), "write_s": round(write_s, 2),
                           "disk_mb": round(disk, 1)}
    for probes, refine in ((20, None), (20, 10), (100, 10), (20, 50), (100, 50)):
        rows, times = [], []
        for i, vector in enumerate(np.concatenate([q[:20], q])):
            t0 = time.perf_counter()
            query = (table.search(vector).distance_type("dot").limit(K).nprobes(probes)
                     .select(["row"]))
            if refine:
                query = query.refine_factor(refine)
            found = query.to_arrow().column("row").to_numpy()
            if i >= 20:  # the first twenty warm up
                times.append((time.perf_counter() - t0) * 1000)
                rows.append(np.pad(found, (0, K - len(found)), constant_values=-1))
        key = f"nprobes_{probes}" + (f"_refine_{refine}" if refine else "")
        out[key] = {**_latency(np.asarray(times)),
                    "recall_at_10": round(recall_at_k(np.stack(rows), truth, K), 4)}
    out.update(out["nprobes_20_refine_50"])  # what LanceIndex searches with by default
    shutil.rmtree(folder)
    return out


def measure_bm25(n: int, work: Path) -> dict[str, Any]:
    from vecdoctor.index.bm25 import BM25Index

    docs = passages(n, source_documents())
    texts = [d.content for d in docs]
    del docs
    start = time.perf_counter()
    bm25 = BM25Index().build(texts)
    build_s = time.perf_counter() - start
    disk = saved_mb(bm25, work / f"bm25-{n}")
    times = []
    for query in queries():
        t0 = time.perf_counter()
        bm25.search(query, 100)
        times.append((time.perf_counter() - t0) * 1000)
    return {"build_s": round(build_s, 2), "disk_mb": round(disk, 1), "depth": 100,
            **_latency(np.asarray(times))}


def measure_index(n: int, work: Path, student: Path) -> dict[str, Any]:
    """The folder index as ``vecdoctor index`` makes it by default (float32, ``--ann auto``),
    over the student's vectors; the whole hybrid query through the Searcher (encode, BM25 top
    100, dense top 100, RRF), and its top 10 against the same hybrid with exact dense search."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.ann import recall_at_k
    from vecdoctor.index.store import Index
    from vecdoctor.index.vectors import VectorStore
    from vecdoctor.search.searcher import Searcher

    docs = passages(n, source_documents())
    vecs = np.load(work / "vectors.npy", mmap_mode="r")[:n]
    enc = Encoder(str(student))
    start = time.perf_counter()
    index = Index.from_vectors(docs, np.asarray(vecs), enc, ann="auto")
    build_s = time.perf_counter() - start
    del docs
    folder = work / f"index-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    index.save(folder)
    save_s = time.perf_counter() - t0
    disk = folder_mb(folder)
    del index
    t0 = time.perf_counter()
    loaded = Index.load(folder)
    load_s = time.perf_counter() - t0
    _single_thread()
    searcher = Searcher(loaded)
    texts = queries()
    for query in texts[:20]:
        searcher.search(query, K, mode="hybrid")
    found, times = [], []
    for query in texts:
        t0 = time.perf_counter()
        hits = searcher.search(query, K, mode="hybrid")
        times.append((time.perf_counter() - t0) * 1000)
        found.append([loaded.row(h.id) for h in hits])
    dense = loaded.vectors
    loaded.vectors = VectorStore(dense.vectors)  # the same hybrid query with exact dense search
    truth = [[loaded.row(h.id) for h in searcher.search(query, K, mode="hybrid")] for query in texts]
    shutil.rmtree(folder)
    return {"build_s": round(build_s, 2), "save_s": round(save_s, 2), "load_s": round(load_s, 2),
            "disk_mb": round(disk, 1), "ann_choice": loaded.ann_choice, **_latency(np.asarray(times)),
            "recall_at_10": round(recall_at_k(np.asarray(found), np.asarray(truth), K), 4)}


def measure(store: str, n: int, work: Path, student: Path) -> dict[str, Any]:
    base = peak_mb()
    if store == "lance-ivfpq":
        out = measure_lance(n, work)
    elif store == "bm25":
        out = measure_bm25(n, work)
    elif store == "index-hybrid":
        out = measure_index(n, work, student)
    else:
        out = measure_vector_store(store, n, work)
    return {**out, "peak_rss_mb": round(peak_mb(), 1), "rss_before_mb": round(base, 1)}


def teacher_check(n: int, work: Path) -> dict[str, Any]:
    """HNSW and IVF recall@10 on minilm's own vectors of the first ``n`` passages."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.ann import AnnConfig, recall_at_k, timed_search
    from vecdoctor.index.dense import exact_search
    from vecdoctor.index.vectors import VectorStore

    enc = Encoder("minilm")
    docs = passages(n, source_documents())
    start = time.perf_counter()
    vecs = enc.encode_documents([d.content for d in docs])
    encode_s = time.perf_counter() - start
    q = enc.encode_queries(queries())
    truth, _ = exact_search(q, vecs, K)
    student = np.load(work / "vectors.npy", mmap_mode="r")[:n]
    sq, struth = np.load(work / "queries.npy"), None
    struth, _ = exact_search(sq, np.asarray(student), K)
    out: dict[str, Any] = {"docs": n, "minilm_encode_docs_per_s": round(n / encode_s, 1)}
    _single_thread()
    for kind in ("hnsw", "ivf"):
        for name, x, qq, tt in (("minilm", vecs, q, truth), ("student", student, sq, struth)):
            built = VectorStore.build(np.asarray(x), "float32", AnnConfig(kind))
            found, times = timed_search(built.search, qq, K)
            out[f"{kind}_{name}"] = {"recall_at_10": round(recall_at_k(found, tt, K), 4),
                                     **_latency(times)}
    return out


# -- the run ------------------------------------------------------------------------------
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(n) for n in results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, store in enumerate(STORES):
        have = [n for n in sizes if store in results[str(n)] and "error" not in results[str(n)][store]]
        if not have:
            continue
        row = [results[str(n)][store] for n in have]
        style = {"marker": "o", "label": store, "color": f"C{i}"}  # one colour per store
        axes[0].plot(have, [r["p50_ms"] for r in row], **style)
        axes[1].plot(have, [r["peak_rss_mb"] / 1024 for r in row], **style)
        if all("recall_at_10" in r for r in row):
            axes[2].plot(have, [r["recall_at_10"] for r in row], **style)
    titles = ("query p50 (ms, one thread)", "peak memory (GiB)", "recall@10 vs exact")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("documents")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].axhline(20, color="grey", linestyle="--", linewidth=1)
    axes[2].axhline(0.95, color="grey", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


RESULT = result_path("scale_curve")


def save(prepared: dict[str, Any], results: dict[str, Any], extra: dict[str, Any]) -> None:
    write_result("scale_curve", {
        "question": "how build time, memory, disk, query latency and recall grow from 10k to "
                    "1M documents, per store",
        "machine": machine(), "versions": versions("numpy", "faiss-cpu", "lancedb", "bm25s",
                                                   "pylance"),
        "prepared": prepared, "results": results, **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vecdoctor-scale"))
    parser.add_argument("--teacher-check", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.plot_only:
        plot(json.loads(RESULT.read_text())["results"], RESULT.with_suffix(".png"))
        return
    if args.one:  # a child process: one store at one size
        print(json.dumps(measure(args.one, sizes[0], args.work, args.student)))
        return
    prepared = prepare(args.work, args.student, sizes)
    print("prepared:", prepared, flush=True)
    before = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    results: dict[str, Any] = before.get("results", {})  # a rerun of some stores keeps the rest
    extra: dict[str, Any] = {k: before[k] for k in ("teacher_check",) if k in before}
    # the runs that measured the stores this run did not
    earlier = before.get("earlier_commands", []) + ([before["command"]] if "command" in before else [])
    if earlier:
        extra["earlier_commands"] = earlier
    for n in sizes:
        for store in args.stores.split(","):
            cmd = [sys.executable, __file__, "--one", store, "--sizes", str(n),
                   "--work", str(args.work), "--student", str(args.student)]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                row = {"error": done.stderr.strip().splitlines()[-1:]}
            row["wall_s"] = round(time.perf_counter() - start, 1)
            results.setdefault(str(n), {})[store] = row
            print(n, store, row, flush=True)
            save(prepared, results, extra)
    if args.teacher_check:
        extra["teacher_check"] = teacher_check(args.teacher_check, args.work)
        print("teacher check:", extra["teacher_check"], flush=True)
    save(prepared, results, extra)
    plot(results, RESULT.with_suffix(".png"))


if __name__ == "__main__":
    main()
