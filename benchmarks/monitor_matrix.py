"""Does the live out-of-domain alarm stay quiet on a corpus' own traffic and fire on another's?

For every labelled set in ../shared/data (scifact, cranfield, cisi, medline, lisa) an index of
its corpus (minilm) is served by a real ``vecdoctor serve`` on 127.0.0.1 with windows of
``--window`` queries. Each set's test queries are never used to build the index or its baseline
(held back), so they are its in-domain traffic. Sent through ``/search``:

- 20 windows of the set's own queries (drawn with replacement where it has fewer);
- for every other set, and for STS-B test sentences (another domain, and not questions), one
  window each of 25%, 50% and 100% of the other's queries mixed into the set's own, in random
  order, on a server that has seen nothing else since its last window.

After each window ``/monitor`` tells whether the out-of-distribution alarm fired at that
window's end. The same window's texts also go to the offline report (``drift_report``), whose
share and verdict are written next to the live ones. Targets: in-domain windows alarm in at
most 1 of 20; every window with >= 50% out-of-domain queries alarms.

    .venv/bin/python benchmarks/monitor_matrix.py [--window 50] [--sets scifact,cisi]

Writes benchmarks/results/monitor_matrix.json.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DATA, RESULTS, machine, versions, write_result  # noqa: E402
from server_load import KEY, start_server  # noqa: E402

SETS = ("scifact", "cranfield", "cisi", "medline", "lisa")
MIXES = (0.25, 0.5, 1.0)
CACHE = RESULTS / ".cache" / "monitor_matrix"


def queries_of(name: str) -> list[str]:
    from vecdoctor.data import load_dataset

    if name == "sts-b":
        with gzip.open(DATA / "stsbenchmark" / "sts-test.csv.gz", "rt", encoding="utf-8") as fh:
            return sorted({line.split("\t")[5].strip() for line in fh})  # TAB-split (SOURCE.md)
    ds = load_dataset(DATA / name, "test")
    return [ds.queries[q] for q in sorted(ds.qrels)]


def index_of(name: str) -> Path:
    from vecdoctor.data import load_corpus
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index import Index
    from vecdoctor.persist import INDEX, written_as

    folder = CACHE / f"index-{name}"
    if not written_as(folder, INDEX):
        encoder = Encoder("minilm", cache=VectorCache(CACHE / "vectors"))
        Index.build(load_corpus(DATA / name), encoder).save(folder)
    return folder


def window_texts(own: list[str], other: list[str], share: float, size: int,
                 rng: np.random.Generator) -> list[str]:
    """``size`` queries: ``share`` of them from ``other``, the rest from ``own``, shuffled
    (drawn without replacement where there are enough)."""
    n_other = int(round(share * size))

    def draw(pool: list[str], n: int) -> list[str]:
        idx = rng.choice(len(pool), n, replace=n > len(pool))
        return [pool[int(i)] for i in idx]

    texts = draw(own, size - n_other) + draw(other, n_other)
    return [texts[int(i)] for i in rng.permutation(len(texts))]


def send(url: str, texts: list[str], client: Any) -> dict[str, Any]:
    """One window through /search; /monitor afterwards."""
    auth = {"Authorization": f"Bearer {KEY}"}
    for q in texts:
        r = client.post(url + "/search", json={"query": q, "k": 10}, headers=auth, timeout=60)
        r.raise_for_status()
    return dict(client.get(url + "/monitor", headers=auth, timeout=30).json())


def run_set(name: str, others: dict[str, list[str]], window: int, windows: int) -> dict[str, Any]:
    import httpx

    from vecdoctor.index import Index
    from vecdoctor.monitor.drift import drift_report

    folder = index_of(name)
    offline_index = Index.load(folder)
    own = others[name]
    rng = np.random.default_rng(0)
    proc, url = start_server(folder, 64, "--monitor-window", str(window))
    out: dict[str, Any] = {"own_queries": len(own), "in_domain": [], "mixes": {}}
    seen = 0
    try:
        with httpx.Client() as client:
            for _ in range(windows):
                snap = send(url, window_texts(own, [], 0.0, window, rng), client)
                alarmed = snap["windows_alarmed"].get("out_of_distribution", 0) > seen
                seen = snap["windows_alarmed"].get("out_of_distribution", 0)
                out["in_domain"].append({"ood_share": snap["traffic"]["ood_share"],
                                         "alarm": alarmed})
            for other, texts in others.items():
                if other == name:
                    continue
                rows = {}
                for share in MIXES:
                    batch = window_texts(own, texts, share, window, rng)
                    snap = send(url, batch, client)
                    count = snap["windows_alarmed"].get("out_of_distribution", 0)
                    offline = drift_report(offline_index, batch, "queries", sample=len(batch),
                                           permutations=99)
                    rows[str(share)] = {
                        "live_ood_share": snap["traffic"]["ood_share"], "alarm": count > seen,
                        "alarm_share": snap["traffic"]["ood_alarm_share"],
                        "offline_ood_share": offline.answerability["ood_share"],
                        "offline_verdict": offline.verdict,
                        "offline_words": offline.answerability["verdict"],
                        "first_action": offline.actions[0]}
                    seen = count
                out["mixes"][other] = rows
                print(name, other, {s: (r["live_ood_share"], r["alarm"]) for s, r in rows.items()},
                      flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    alarms = sum(w["alarm"] for w in out["in_domain"])
    out["in_domain_alarms"] = f"{alarms} of {len(out['in_domain'])}"
    out["in_domain_max_share"] = max(w["ood_share"] for w in out["in_domain"])
    print(name, "in domain:", out["in_domain_alarms"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--windows", type=int, default=20, help="in-domain windows per set")
    args = parser.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.time()
    texts = {name: queries_of(name) for name in (*SETS, "sts-b")}
    results = {name: run_set(name, texts, args.window, args.windows) for name in sets}
    missed = [f"{a} <- {b} {s}" for a, r in results.items() for b, rows in r["mixes"].items()
              for s, row in rows.items() if float(s) >= 0.5 and not row["alarm"]]
    path = write_result("monitor_matrix", {
        "question": "live out-of-domain alarms on every set's own queries and on mixes of "
                    "another set's, through a real vecdoctor serve",
        "machine": machine(), "versions": versions("torch", "sentence-transformers"),
        "window": args.window,
        "summary": {"in_domain_alarms": {n: r["in_domain_alarms"] for n, r in results.items()},
                    "windows_of_50_percent_or_more_not_alarmed": missed},
        "results": results, "seconds": round(time.time() - started, 1)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
