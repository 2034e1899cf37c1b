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


def test_blocks_are_batches_shared_evenly_between_the_actors():
    """Ray Data gives an actor whole blocks; with Ray's own block count (7 for SciFact) one of
    two actors encoded the last block alone. The plan: blocks of at most one batch, as many as a
    multiple of the workers."""
    from vecdoctor.scale.ray_encode import plan_blocks

    for total in (0, 1, 255, 256, 257, 5183, 1_000_000):
        for batch in (1, 64, 256, 10_000):
            for workers in (1, 2, 3, 4, 8):
                blocks = plan_blocks(total, batch, workers)
                assert blocks % workers == 0 and blocks >= workers
                assert -(-total // blocks) <= batch  # the largest block fits a batch
                assert blocks < workers + max(-(-total // batch), 1)  # never more than needed
    assert plan_blocks(5183, 256, 2) == 22  # 236 rows each, 11 per actor


def test_a_run_that_stops_moving_fails_naming_the_stage():
    from vecdoctor.scale.ray_encode import StalledError, watched

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
                           stall_seconds=120)
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

ray_encode.plan_cpus = lambda workers, requested, total: requested  # the plan before the fix
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         object_store_memory=200 * 2**20)
try:
    ray_encode.encode_corpus(sys.argv[1], sys.argv[2], Encoder("minilm", max_length=32),
                             workers=2, batch_size=16, stall_seconds=10)
    print("FINISHED")
except ray_encode.StalledError as exc:
    print("STALLED:", exc)
sys.stdout.flush()
os._exit(0)  # the stuck executor thread would outlive a normal exit
"""


@pytest.mark.slow
def test_without_the_plan_the_read_stage_starves_and_the_watchdog_says_so(real_corpus, tmp_path):
    """What happened before the plan: two actors reserving a CPU each on 2 CPUs leave Ray Data
    no budget for the read task ("backpressured: ResourceBudget", 0.2 CPU) and nothing moves.
    The watchdog turns that into an error. Run in a process of its own: the stuck executor
    cannot be stopped from the outside and must not outlive the test in this one."""
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
    assert "STALLED: encoding: no progress for 10 s" in done.stdout, done.stdout + done.stderr
    assert time.monotonic() - start < 240
