"""Ray encoding that cannot stall: on a cluster of exactly 2 CPUs (this machine's size), 2 and 4
encoder workers still finish with the local encoder's vectors, because the actors never
reserve the CPUs reading and writing need; and a run that stops moving fails with a message
naming the stuck stage instead of waiting forever."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import retrieval_support as rs

pytestmark = [pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning")]

MAX_LENGTH = 32


def test_actors_always_leave_cpus_to_reading_and_writing():
    from vecdoctor.scale.ray_encode import IO_RESERVE, plan_cpus

    for total in (1, 2, 3, 16):
        for workers in (1, 2, 4, 8, 32):
            each = plan_cpus(workers, 1.0, total)
            assert 0 < each <= 1.0
            assert workers * each <= max(total - IO_RESERVE, 0.05 * workers) + 1e-9
    assert plan_cpus(2, 1.0, 16) == 1.0  # room enough: what was asked


def _table(lengths: list[int]):
    import pyarrow as pa

    return pa.table({"id": [f"d{i}" for i in range(len(lengths))],
                     "title": [""] * len(lengths), "text": ["x" * n for n in lengths]})


def test_batches_hold_texts_of_one_length_and_the_last_ones_are_shared_evenly():
    """Every row once; a window's batches sorted by length (longest first); the last window
    cut into equal batches, as many as a multiple of the workers, so that they end together."""
    from vecdoctor.index.rows import length_sorted

    rng = np.random.default_rng(0)

    def lengths(table) -> list[int]:
        return [len(x) for x in table.column("text").to_pylist()]

    for total in (1, 7, 255, 1000):
        for batch, workers in ((64, 1), (64, 2), (100, 3), (256, 2)):
            table = _table(rng.integers(1, 2000, size=total).tolist())
            pieces = [table[s:s + 50] for s in range(0, total, 50)]
            window = -(-total // batch) + 1  # all of it is the last window
            out = list(length_sorted(pieces, batch, window, workers))
            assert sorted(i for t in out for i in t.column("id").to_pylist()) == \
                sorted(table.column("id").to_pylist())
            assert len(out) == min(total, workers * -(-total // (workers * batch)))
            assert all(0 < t.num_rows <= batch for t in out)
            assert max(t.num_rows for t in out) - min(t.num_rows for t in out) <= 1
            flat = [n for t in out for n in lengths(t)]
            assert flat == sorted(flat, reverse=True)
    # a full window: batches of exactly batch_size rows, sorted within the window
    table = _table(rng.integers(1, 2000, size=1000).tolist())
    out = list(length_sorted([table[:500], table[500:]], 100, 5, 2))
    assert [t.num_rows for t in out] == [100] * 10
    first = [n for t in out[:5] for n in lengths(t)]
    assert first == sorted(first, reverse=True)


def test_the_driver_reads_jsonl_gz_and_parquet_and_names_a_bad_line(tmp_path):
    import gzip

    import pyarrow.parquet as pq

    from vecdoctor.errors import InputError
    from vecdoctor.index.rows import read_tables

    rows = [{"_id": 7, "title": None, "text": "seven"}, {"_id": "0008", "text": "eight"},
            {"id": "n9", "title": "T", "text": "nine"}]
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = [t.to_pylist() for t in read_tables(path, 2)]
    assert got == [[{"id": "7", "title": "", "text": "seven"},
                    {"id": "0008", "title": "", "text": "eight"}],
                   [{"id": "n9", "title": "T", "text": "nine"}]]
    folder = tmp_path / "parquet"
    folder.mkdir()
    pq.write_table(_table([3, 1, 2]).rename_columns(["_id", "title", "text"]), folder / "a.parquet")
    assert [r["id"] for t in read_tables(folder, 2) for r in t.to_pylist()] == ["d0", "d1", "d2"]
    # the same rows through pyarrow's stream (the object-storage path), and the same checks as
    # the local reader's: a bad line, a missing field, a number for text, bad UTF-8, a cut .gz
    uri = path.as_uri()
    assert [t.to_pylist() for t in read_tables(uri, 2)] == got
    bad = tmp_path / "bad.jsonl"
    cases = [
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', r"bad.jsonl:2: bad JSON"),
        (b'{"_id": "a", "title": "no text"}\n', r"bad.jsonl:1: missing field 'text'"),
        (b'{"_id": "a", "text": 12}\n', r"bad.jsonl:1: field 'text' must be a string"),
        (b'{"_id": "a", "text": "caf\xe9"}\n', r"bad.jsonl:1: not valid UTF-8"),
    ]
    for content, message in cases:
        bad.write_bytes(content)
        for source in (bad, bad.as_uri()):
            with pytest.raises(InputError, match=message):
                list(read_tables(source, 10))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[:-12])
    for source in (cut, cut.as_uri()):
        with pytest.raises(InputError, match=r"cut.jsonl.gz: cannot be read after line"):
            list(read_tables(source, 10))


def test_a_run_that_stops_moving_fails_naming_the_stage():
    from vecdoctor.scale.ray_pool import StalledError, watched

    def stuck():
        yield _Block(3)
        time.sleep(30)
        yield _Block(3)

    got = []
    with pytest.raises(StalledError, match="stopped returning batches after 3 documents"):
        for block in watched(stuck(), 0.5, "encoding"):
            got.append(block)
    assert len(got) == 1
    with pytest.raises(StalledError, match="no batch has come out"):
        list(watched((time.sleep(30) for _ in range(1)), 0.5, "encoding"))


class _Block:
    def __init__(self, rows: int) -> None:
        self.num_rows = rows


@pytest.fixture(scope="module")
def two_cpus():
    yield from rs.local_ray(2)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_as_many_workers_as_cpus_or_more_finish(two_cpus, real_corpus, tmp_path, workers):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.scale.ray_encode import encode_corpus, read_vectors

    docs = real_corpus[:240]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
                            for d in docs), encoding="utf-8")
    encoder = Encoder("minilm", max_length=MAX_LENGTH)
    result = encode_corpus(path, tmp_path / "out", encoder, workers=workers, batch_size=16,
                           stall_seconds=300)  # a watchdog only: a busy machine starts actors slowly
    assert result.encoded == len(docs)
    ids, vectors, _ = read_vectors(tmp_path / "out")
    assert sorted(ids) == sorted(d.id for d in docs)
    want = dict(zip((d.id for d in docs), encoder.encode_documents([d.content for d in docs]),
                    strict=True))
    assert max(float(np.abs(v - want[i]).max()) for i, v in zip(ids, vectors, strict=True)) < 1e-4


STARVED = """
import json, os, sys
import ray
from vecdoctor.encode.encoder import Encoder
from vecdoctor.scale import ray_encode

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         object_store_memory=200 * 2**20)
encoder = Encoder("minilm", max_length=32)
plan = ray_encode.plan_cpus
ray_encode.STALL_SECONDS = 10
ray_encode.plan_cpus = lambda workers, requested, total: requested  # the plan before the fix
try:
    ray_encode.fit_transform(sys.argv[1], encoder, sample=100, workers=2, batch_size=16)
    print("FIT FINISHED")
except ray_encode.StalledError as exc:
    print("FIT STALLED:", exc)
ray_encode.plan_cpus = lambda workers, requested, total: 3.0  # more than any node has
try:
    ray_encode.encode_corpus(sys.argv[1], sys.argv[2], encoder, workers=2, batch_size=16,
                             stall_seconds=10)
    print("ENCODE FINISHED")
except ray_encode.StalledError as exc:
    print("ENCODE STALLED:", exc)
sys.stdout.flush()
os._exit(0)  # the stuck executor thread would outlive a normal exit
"""


@pytest.mark.slow
def test_a_starved_or_unplaceable_stage_fails_naming_it(real_corpus, tmp_path):
    """What happened before the plan: two actors reserving a CPU each on 2 CPUs leave Ray Data
    no budget for the read task ("backpressured: ResourceBudget", 0.2 CPU) and nothing moves
    (the fitting sample still goes through Ray Data); and actors that no node can hold never
    start. The watchdog turns both into an error. Run in a process of its own: the stuck
    executor cannot be stopped from the outside and must not outlive the test in this one."""
    import subprocess
    import sys

    pytest.importorskip("ray")
    docs = real_corpus[:240]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
                            for d in docs), encoding="utf-8")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STARVED, str(path), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert "FIT STALLED: encoding the fitting sample: no progress for 10 s" in done.stdout, \
        done.stdout + done.stderr
    assert ("ENCODE STALLED: encoding: no progress for 10 s: no batch has come out of the "
            "encoder actors yet") in done.stdout, done.stdout + done.stderr
    assert time.monotonic() - start < 240


@pytest.mark.slow
def test_a_ray_dataset_source_is_read_through_ray_data(two_cpus, real_corpus, tmp_path):
    """A ``ray.data.Dataset`` goes through Ray Data's own reading while every CPU it may use is
    held by the two actors' plan: the reserve keeps its read tasks running."""
    import ray.data

    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.scale.ray_encode import encode_corpus, read_vectors

    docs = real_corpus[:60]
    ds = ray.data.from_items([{"_id": d.id, "title": d.title, "text": d.text} for d in docs])
    encoder = Encoder("minilm", max_length=MAX_LENGTH)
    result = encode_corpus(ds, tmp_path / "out", encoder, workers=2, batch_size=16,
                           stall_seconds=300)  # a watchdog only: a busy machine starts actors slowly
    assert (result.encoded, result.total) == (len(docs), len(docs))
    ids, vectors, _ = read_vectors(tmp_path / "out")
    want = dict(zip((d.id for d in docs), encoder.encode_documents([d.content for d in docs]),
                    strict=True))
    assert sorted(ids) == sorted(want)
    assert max(float(np.abs(v - want[i]).max()) for i, v in zip(ids, vectors, strict=True)) < 1e-4
