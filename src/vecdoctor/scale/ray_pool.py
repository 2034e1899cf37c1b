"""The driver's side of a Ray encoding run: the rows still to encode, a pool of encoder
actors that replaces a lost one, and a watchdog that fails a stalled stage by name."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from vecdoctor.errors import VecdoctorError
from vecdoctor.index import rows as _rows

logger = logging.getLogger(__name__)

COMMIT_EVERY = 16  # Lance fragments per commit: how much work a crash can lose


def _drop_written(batch: Any, written: np.ndarray) -> Any:
    if len(written) == 0 or batch.num_rows == 0:
        return batch
    keys = _rows.id_keys(batch.column("id").to_pylist())
    import pyarrow as pa

    return batch.filter(pa.array(~np.isin(keys, written)))


class StalledError(VecdoctorError):
    """A Ray run made no progress for longer than its watchdog allows."""


class _Todo:
    """The source's tables less the rows already written; counts every row read."""

    def __init__(self, tables: Iterator[Any], written: np.ndarray) -> None:
        self.tables, self.written, self.total = tables, written, 0

    def __iter__(self) -> Iterator[Any]:
        for table in self.tables:
            self.total += table.num_rows
            left = _drop_written(table, self.written)
            if left.num_rows:
                yield left


class _ActorPool:
    """``workers`` encoder actors spread over the cluster. A batch whose actor died (its node
    was lost) goes to another actor, and the dead one is replaced; a batch that raised
    ``retries`` + 1 times fails the run."""

    def __init__(self, ray: Any, actor_cls: type, encoder: Any, fingerprint: str, transform: Any,
                 workers: int, cpus: float, retries: int, keep_text: bool) -> None:
        self.ray = ray
        self.remote = ray.remote(actor_cls).options(
            num_cpus=cpus, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")
        self.args = ({**encoder.config(), "fingerprint": encoder.fingerprint}, fingerprint,
                     transform, encoder.batch_size, retries, keep_text)
        self.actors = [self.remote.remote(*self.args) for _ in range(workers)]
        self.deaths = 0
        self.most_deaths = max(4, 2 * workers)

    def _replace(self, actor: Any, error: Exception) -> None:
        if actor not in self.actors:
            return  # already replaced: another of its batches failed first
        self.deaths += 1
        if self.deaths > self.most_deaths:
            raise VecdoctorError(
                f"encoder actors died {self.deaths} times; the last error: {error}") from error
        logger.warning("an encoder actor died (%s); its batches go to the others and a new "
                       "actor takes its place", type(error).__name__)
        self.actors[self.actors.index(actor)] = self.remote.remote(*self.args)

    def run(self, batches: Iterator[Any], target: dict[str, Any], stall_seconds: float) -> int:
        """Encode and write every batch; return the documents written."""
        from ray import exceptions as rx

        lost = (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError)
        inflight: dict[Any, tuple[Any, Any]] = {}  # result -> (actor, batch)
        again: list[Any] = []  # batches whose actor died
        progress = _Progress("encoding", stall_seconds)
        pending: list[str] = []
        encoded = 0
        while True:
            for actor in list(self.actors):
                if any(a is actor for a, _ in inflight.values()):
                    continue  # one batch at a time: the last ones go to whoever is free
                batch = again.pop() if again else next(batches, None)
                if batch is None:
                    break
                inflight[actor.write.remote(batch, target)] = (actor, batch)
            if not inflight:
                break
            done, _ = self.ray.wait(list(inflight), num_returns=1, timeout=stall_seconds)
            if not done:
                raise progress.stalled()
            actor, batch = inflight.pop(done[0])
            try:
                parts, rows = self.ray.get(done[0])
            except lost as exc:  # the actor, its process or its node is gone
                again.append(batch)
                self._replace(actor, exc)
                continue
            encoded += rows
            progress.update(rows)
            if target["format"] == "lance":
                pending += parts
                if len(pending) >= COMMIT_EVERY:
                    _rows.commit_fragments(target["uri"], pending)
                    pending = []
        if pending:
            _rows.commit_fragments(target["uri"], pending)
        return encoded

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class _Progress:
    """Rows done and rate, logged every half minute; the watchdog's message."""

    def __init__(self, what: str, stall_seconds: float) -> None:
        self.what, self.stall_seconds = what, stall_seconds
        self.start = self.last = time.monotonic()
        self.batches = self.rows = 0

    def update(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        now = time.monotonic()
        if now - self.last >= 30:
            logger.info("%s: %d batches, %d documents, %.1f documents/s", self.what,
                        self.batches, self.rows, self.rows / max(now - self.start, 1e-9))
            self.last = now

    def stalled(self) -> StalledError:
        stage = ("no batch has come out of the encoder actors yet (reading the corpus or "
                 "starting the actors is stuck)" if self.batches == 0 else
                 f"the encoder actors stopped returning batches after {self.rows} documents")
        return StalledError(
            f"{self.what}: no progress for {self.stall_seconds:.0f} s: {stage}; check that every "
            "node has the model installed and free CPUs, or use fewer --workers")


def _documents(block: Any) -> int:
    """Documents behind a block: a ``rows`` column (the written parts) or its row count."""
    if "rows" in getattr(block, "column_names", ()):
        return int(np.sum(block.column("rows").to_numpy())) if block.num_rows else 0
    return int(block.num_rows)


def watched(blocks: Any, stall_seconds: float, what: str) -> Iterator[Any]:
    """The batches of a Ray Data iterator, consumed in a thread of their own; if none arrives
    for ``stall_seconds``, :class:`StalledError` says which stage is stuck instead of waiting
    forever, and progress (batches, documents, rate) is logged every half minute."""
    import queue

    inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4)
    stop = threading.Event()  # set when the consumer gives up: the pump then asks for no more

    def pump() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    return
                inbox.put(("block", block))
            inbox.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            if not stop.is_set():
                inbox.put(("error", exc))

    threading.Thread(target=pump, name="vecdoctor-ray-iter", daemon=True).start()
    progress = _Progress(what, stall_seconds)
    try:
        while True:
            try:
                kind, item = inbox.get(timeout=stall_seconds)
            except queue.Empty:
                stop.set()
                raise progress.stalled() from None
            if kind == "done":
                return
            if kind == "error":
                raise item
            progress.update(_documents(item))
            yield item
    finally:
        stop.set()  # the consumer stopped early or the iterator ended: ask for no more
