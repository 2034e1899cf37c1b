"""Question: does embedding-health monitoring stay quiet on the traffic an index was built for,
flag traffic from another domain at once, cost little, and tell safe pipeline switches from
harmful ones?

On SciFact (../shared/data), with MiniLM (fp32, PyTorch):

1. **Live alarms on a real server.** `vecdoctor serve` on loopback with windows of
   ``--window`` queries receives (a) the SciFact test and train queries (in distribution), (b)
   STS-B test sentences and (c) SICK sentences (other domains), each on a fresh server; the
   windows that raised the out-of-distribution alarm are read from ``/monitor`` and ``/metrics``.
2. **Offline drift** (`vecdoctor monitor`'s library call) on an index of 80% of the corpus:
   the held-back 20% of documents, the SciFact test queries, STS-B and SICK sentences.
3. **Overhead**: hybrid query latency (encode, BM25, dense, fusion) in one process with the
   live health attached and detached, alternating per query on the same queries (p50 ratio).
4. **Migration guard** on the 300 labelled test queries over the full corpus: fp32 against
   itself, against OpenVINO int8, against a whitened pipeline and against another model.

    python benchmarks/monitor_scifact.py
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DATA, RESULTS, machine, percentiles, versions, write_result  # noqa: E402
from server_load import KEY, start_server  # noqa: E402

CACHE = RESULTS / ".cache"


def other_domains(n: int) -> dict[str, list[str]]:
    """A seeded sample of ``n`` distinct first sentences of STS-B test and of SICK."""
    with gzip.open(DATA / "stsbenchmark" / "sts-test.csv.gz", "rt", encoding="utf-8") as fh:
        sts = sorted({line.split("\t")[5].strip() for line in fh})  # split on TAB (SOURCE.md)
    with gzip.open(DATA / "sick" / "SICK.txt.gz", "rt", encoding="utf-8") as fh:
        sick = sorted({line.split("\t")[1].strip() for line in list(fh)[1:]})
    rng = np.random.default_rng(0)
    return {name: [texts[i] for i in rng.permutation(len(texts))[:n]]
            for name, texts in (("sts-b", sts), ("sick", sick))}


def indexes(encoder, corpus) -> tuple[Path, Path, list]:  # type: ignore[no-untyped-def]
    """The full index, the 80% index and the held-back documents (cached under .cache)."""
    from vecdoctor.index import Index
    from vecdoctor.persist import INDEX, written_as

    full, part = CACHE / "monitor-full", CACHE / "monitor-80"
    order = np.random.default_rng(1).permutation(len(corpus))
    held = [corpus[i] for i in sorted(order[: len(corpus) // 5])]
    if not written_as(full, INDEX):
        Index.build(corpus, encoder).save(full)
    if not written_as(part, INDEX):
        Index.build([corpus[i] for i in sorted(order[len(corpus) // 5 :])], encoder).save(part)
    return full, part, held


def live(full: Path, traffic: dict[str, list[str]], window: int) -> dict[str, dict]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    auth = {"Authorization": f"Bearer {KEY}"}
    for name, queries in traffic.items():
        proc, url = start_server(full, 64, "--monitor-window", str(window))
        try:
            for q in queries:
                httpx.post(url + "/search", json={"query": q, "k": 10}, headers=auth, timeout=60)
            snap = httpx.get(url + "/monitor", headers=auth, timeout=30).json()
            text = httpx.get(url + "/metrics", headers=auth, timeout=30).text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        metrics = {f.name: f for f in text_string_to_metric_families(text)}
        alarmed = {s.labels["alarm"]: s.value for s in metrics["vecdoctor_health_alarm_windows"].samples}
        out[name] = {
            "queries": len(queries), "windows": snap["windows"],
            "windows_with_ood_alarm": snap["windows_alarmed"].get("out_of_distribution", 0),
            "share_of_windows_alarmed": snap["windows_alarmed"].get("out_of_distribution", 0)
            / max(snap["windows"], 1),
            "first_window_alarmed": snap["windows"] > 0 and alarmed.get("out_of_distribution", 0) > 0
            and snap["windows_alarmed"].get("out_of_distribution", 0) == snap["windows"],
            "last_window": snap["traffic"],
            "metrics_families": len(metrics),
        }
        print(name, {k: v for k, v in out[name].items() if k != "last_window"}, flush=True)
    return out


def drift(part: Path, held: list, queries: list[str], others: dict[str, list[str]],
          encoder) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    from vecdoctor.index import Index
    from vecdoctor.monitor.drift import drift_report

    index = Index.load(part)
    index.use_encoder(encoder)
    cases = {"held-back documents": ([d.content for d in held], "documents"),
             "scifact test queries": (queries, "queries"),
             **{f"{k} sentences (queries)": (v, "queries") for k, v in others.items()},
             "sick sentences (documents)": (others["sick"], "documents")}
    out = {}
    for name, (texts, kind) in cases.items():
        start = time.perf_counter()
        r = drift_report(index, texts, kind)
        out[name] = {"verdict": r.verdict, "kind": kind, "texts": len(texts),
                     "mmd_p_value": r.tests["embeddings_mmd"]["p_value"],
                     "answerability_p_value": r.tests["answerability_mannwhitney"]["p_value"],
                     "ood_share": r.answerability["ood_share"],
                     "centroid_shift": r.geometry["centroid"], "actions": r.actions,
                     "seconds": round(time.perf_counter() - start, 2)}
        print(name, out[name]["verdict"], out[name]["mmd_p_value"], flush=True)
    return out


def overhead(full: Path, queries: list[str]) -> dict:
    """Hybrid queries with and without the live health, alternating on the same queries: end
    to end (each query encoded by MiniLM on PyTorch, no cache) and with the query vectors
    already known (search and monitoring alone, the worst case for the ratio)."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index import Index
    from vecdoctor.monitor.live import LiveHealth
    from vecdoctor.search.searcher import Searcher

    index = Index.load(full)
    searcher = Searcher(index, cache_size=0)
    searcher.index.use_encoder(Encoder("minilm"))
    health = LiveHealth(index, 200)
    known = searcher.embed(queries)
    out = {}
    for case, vectors in (("end_to_end", None), ("vectors_given", known)):
        times: dict[bool, list[float]] = {True: [], False: []}
        for i, q in enumerate(queries[:50]):
            searcher.search(q, k=10, query_vector=None if vectors is None else vectors[i])
        for i, q in enumerate(queries):
            on = i % 2 == 0
            searcher.observer = health if on else None
            start = time.perf_counter()
            searcher.search(q, k=10, mode="hybrid",
                            query_vector=None if vectors is None else vectors[i])
            times[on].append((time.perf_counter() - start) * 1000)
        spread = {k: percentiles(v, (50, 99), digits=6) for k, v in times.items()}
        p50 = {k: v["p50"] for k, v in spread.items()}
        out[case] = {"queries_each": len(times[True]), "p50_ms_with_monitoring": p50[True],
                     "p50_ms_without": p50[False], "ratio": p50[True] / p50[False],
                     "added_us_p50": (p50[True] - p50[False]) * 1000,
                     "p99_ms_with_monitoring": spread[True]["p99"],
                     "p99_ms_without": spread[False]["p99"]}
    return out


def migration(full: Path, dataset, cache) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index import Index
    from vecdoctor.monitor.migrate import compare_pipelines

    folder = CACHE / "monitor-pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    enc = Encoder("minilm", cache=cache)
    vectors = enc.encode_documents([d.content for d in dataset.corpus])
    whitening = Whitening(n_components=128).fit(vectors)
    whitening.fingerprint_ = enc.fingerprint
    whitening.save(folder / "whitening-128" / "transform", force=True)
    base = Index.load(full, baseline=False).pipeline
    files = {
        "openvino-int8": base.replace(backend="openvino", model_precision="int8"),
        "whitening-128": base.replace(transform="whitening",
                                      transform_dir=folder / "whitening-128" / "transform"),
        "minilm-l3-onnx": base.replace(model="minilm-l3-onnx", backend="onnx"),
    }
    out = {}
    for name, pipeline in {"same (fp32 vs fp32)": None, **files}.items():
        target = full
        if pipeline is not None:
            target = pipeline.save(folder / name.split()[0] / "pipeline.json")
        start = time.perf_counter()
        r = compare_pipelines(full, target, dataset, encoder_options={"cache": cache})
        out[name] = {k: v for k, v in r.to_dict().items() if k not in {"class", "format_version"}}
        out[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, r.verdict, r.message, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--others", type=int, default=400, help="sentences of each other domain")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: "
                        "live,drift,overhead,migration")
    args = parser.parse_args()
    from vecdoctor.data import load_dataset
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder

    if not (DATA / "scifact" / "corpus.jsonl.gz").is_file():
        raise SystemExit(f"SciFact not found under {DATA}; this benchmark needs ../shared/data")
    skip = set(args.skip.split(","))
    cache = VectorCache(CACHE / "monitor-vectors")
    encoder = Encoder("minilm", cache=cache)
    test = load_dataset(DATA / "scifact", "test")
    train = load_dataset(DATA / "scifact", "train")
    full, part, held = indexes(encoder, test.corpus)
    others = other_domains(args.others)
    in_domain = list(test.queries.values()) + list(train.queries.values())
    result: dict = {"machine": machine(), "versions": versions("torch", "sentence-transformers",
                                                               "prometheus-client", "openvino"),
                    "window": args.window, "documents": len(test.corpus)}
    if "live" not in skip:
        result["live"] = live(full, {"scifact test+train queries": in_domain, **others},
                              args.window)
    if "drift" not in skip:
        result["drift"] = drift(part, held, list(test.queries.values()), others, encoder)
    if "overhead" not in skip:
        result["overhead"] = overhead(full, in_domain)
        print("overhead", result["overhead"], flush=True)
    if "migration" not in skip:
        result["migration"] = migration(full, test, cache)
    parts = [p for p in ("live", "drift", "overhead", "migration") if p not in skip]
    variant = "default" if len(parts) == 4 else "-".join(parts)
    print(write_result("monitor_scifact", result, variant))


if __name__ == "__main__":
    main()
