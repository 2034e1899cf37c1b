"""The benchmark harness: what every script in benchmarks/ shares.

- ``machine()``: the CPU (model name, family, model, a short name such as ``zen3``, the vector
  instructions that matter here), cores and load at the start;
- ``versions()``: vecdoctor's version and those of the packages a benchmark names;
- ``interleaved()``: time several variants round by round, the order rotated each round, so a
  slow spell of a busy machine falls on every variant alike; ``paired_ratio()`` compares two of
  them round by round;
- ``percentiles()``: p50/p95/p99 of a list of timings;
- ``ndcg_at_10()``: a labelled set searched through the real ``Searcher``;
- ``write_result()``: ``results/<benchmark>/<cpu>-<variant>.json`` with the command, the
  machine and the versions, which the docs site renders (``read_results()``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""Vector instructions that change how fast an encoder runs here (int8 and bf16 paths)."""

_AMD_ZEN4_MODELS = (range(0x10, 0x20), range(0x60, 0x80), range(0xA0, 0xB0))
_INTEL = {143: "sapphire-rapids", 207: "emerald-rapids", 173: "granite-rapids",
          174: "granite-rapids", 106: "ice-lake", 108: "ice-lake", 85: "cascade-lake"}


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(facts: Mapping[str, Any]) -> str:
    """A short, file-name-safe name of the CPU a result came from: ``zen3``, ``zen4``, ``zen5``,
    ``sapphire-rapids``..., else the model name slugged (``amd-epyc``), with ``-avx512`` when
    only the instruction set tells it apart; ``unknown`` when nothing was recorded."""
    cpu = str(facts.get("cpu") or "")
    family, model = facts.get("cpu_family"), facts.get("cpu_model")
    if family not in (None, "") and model not in (None, ""):
        family, model = int(family), int(model)
        if "AMD" in cpu.upper():
            if family == 26:
                return "zen5"
            if family == 25:
                return "zen4" if any(model in r for r in _AMD_ZEN4_MODELS) else "zen3"
            if family == 23:
                return "zen2" if model >= 0x30 else "zen1"
        if "INTEL" in cpu.upper() and family == 6:
            return _INTEL.get(model, f"intel-m{model}")
    cleaned = re.sub(r"\(r\)|\(tm\)|processor|cpu @.*", " ", cpu.lower())
    slug = "-".join(w for w in re.split(r"[^a-z0-9]+", cleaned) if w)[:40].strip("-")
    if "avx512f" in (facts.get("isa") or []):
        slug += "-avx512"
    return slug or "unknown"


def machine() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": info.get("model name", platform.processor()),
        "cpu_family": info.get("cpu family"),
        "cpu_model": info.get("model"),
        "isa": [f for f in ISA if f in flags],
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    facts["cpu_name"] = cpu_name(facts)
    return facts


def versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in ("vecdoctor", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99), scale: float = 1.0,
                suffix: str = "", digits: int = 3) -> dict[str, float]:
    """``{"p50<suffix>": ..., ...}`` of ``values`` times ``scale`` (1000 turns seconds into ms)."""
    if len(values) == 0:
        raise ValueError("percentiles of no values")
    array = np.asarray(values, dtype=np.float64) * scale
    return {f"p{p}{suffix}": round(float(np.percentile(array, p)), digits) for p in points}


@dataclass
class Measured:
    """What a variant that times itself returns to ``interleaved`` (a worker in another process
    reports the seconds of its own call, without the transfer of texts and vectors)."""

    value: Any
    seconds: float


def interleaved(variants: Mapping[str, Callable[[int], Any]], rounds: int, pause: float = 0.0,
                warmup: bool = True) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Call every variant once per round (``fn(round)``), the order rotated each round, and
    return each one's seconds and return values per round.

    Timing variants one after another lets a slow minute of the machine land on one of them;
    interleaving puts the same minutes under all of them, and ``paired_ratio`` then compares
    them round by round. ``warmup`` makes one untimed call of each first (lazy loading, caches);
    ``pause`` seconds between calls let a thermally or otherwise throttled machine settle. A
    variant returning ``Measured`` reports its own seconds.
    """
    if rounds < 1:
        raise ValueError("rounds must be 1 or more")
    names = list(variants)
    if warmup:
        for name in names:
            variants[name](0)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    values: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            value = variants[name](r)
            took = time.perf_counter() - started
            if isinstance(value, Measured):
                value, took = value.value, value.seconds
            seconds[name].append(took)
            values[name].append(value)
            if pause:
                time.sleep(pause)
    return seconds, values


def paired_ratio(slow: Sequence[float], fast: Sequence[float], digits: int = 3) -> dict[str, float]:
    """How many times ``fast`` is faster than ``slow`` (total seconds), with the median and
    quartiles of the per-round ratios (rounds timed within seconds of each other)."""
    a, b = np.asarray(slow, dtype=np.float64), np.asarray(fast, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_ratio needs two equal, non-empty lists of rounds")
    paired = a / b
    return {"ratio": round(float(a.sum() / b.sum()), digits),
            "round_ratio_median": round(float(np.median(paired)), digits),
            "round_ratio_q25": round(float(np.percentile(paired, 25)), digits),
            "round_ratio_q75": round(float(np.percentile(paired, 75)), digits),
            "rounds": int(a.size)}


def ndcg_of_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """nDCG@10 of a run (query id -> document id -> score), as vecdoctor's evaluation counts it."""
    from vecdoctor.evaluate.metrics import evaluate_run

    judged = {q: dict(docs) for q, docs in run.items() if q in qrels}
    return round(float(evaluate_run(dict(qrels), judged, ("ndcg@10",)).metrics["ndcg@10"]), 4)


def ndcg_at_10(searcher: Any, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
               mode: str | None = None, depth: int = 100) -> float:
    """nDCG@10 of ``queries`` searched through a ``Searcher`` (its own mode unless ``mode``)."""
    qids = [q for q in queries if q in qrels]
    hits = searcher.search_batch([queries[q] for q in qids], k=depth, mode=mode)
    return ndcg_of_run({q: {h.id: float(h.score) for h in row}
                        for q, row in zip(qids, hits, strict=True)}, qrels)


def result_path(benchmark: str, variant: str = "default", cpu: str | None = None) -> Path:
    cpu = cpu or machine()["cpu_name"]
    for part in (benchmark, variant, cpu):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.+-]*", part):
            raise ValueError(f"{part!r}: use lower-case letters, digits, '_', '.', '+' and '-'")
    return RESULTS / benchmark / f"{cpu}-{variant}.json"


def write_result(benchmark: str, payload: Mapping[str, Any], variant: str = "default") -> Path:
    """Write ``results/<benchmark>/<cpu>-<variant>.json``: the command that ran, the machine,
    the versions (unless the payload has its own) and the payload."""
    facts = payload.get("machine") or machine()
    path = result_path(benchmark, variant, cpu_name(facts))
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "benchmark": benchmark,
            "variant": variant, "machine": facts, "versions": versions(), **payload}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def read_results(folder: Path = RESULTS) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(benchmark, file stem, result)`` for every result, in name order."""
    for path in sorted(folder.glob("*/*.json")):
        try:
            yield path.parent.name, path.stem, json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
