"""Distributed encoding on Ray: read a corpus, encode it in a pool of actors, write vectors.

Each actor builds the Encoder (and holds the fitted transform) once, then encodes and writes
the batches the driver hands it. Output is either a folder of Parquet files or a Lance dataset;
both hold one row per document: ``id``, ``vector`` (float32, fixed size) and the pipeline
``fingerprint``. The transform's fitting sample is drawn and encoded with Ray Data.

Resuming and retries: before a run, the ids already in the output are read and dropped from
the input, so a re-run encodes only what is missing. A batch that raises is retried inside its
actor; a batch whose actor dies (its node lost) goes to another actor. A Parquet part is named
after the ids it holds and written to a temporary name first, so a re-run of the same batch
replaces its file instead of adding one; Lance fragments become visible only when the driver
commits them, so the fragments of a failed attempt are never part of the table.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Precision
from vecdoctor.encode.encoder import as_encoder
from vecdoctor.errors import IncompatibleError, InputError, require
from vecdoctor.fix.transform import resolve_transform
from vecdoctor.index import rows as _rows
from vecdoctor.index.ann import AnnConfig
from vecdoctor.scale.ray_pool import StalledError, _ActorPool, _Todo, watched

__all__ = ["EncodeActor", "EncodeResult", "StalledError", "build_lance", "encode_corpus",
           "fit_transform", "index_encoded", "plan_cpus", "ray_session", "read_source",
           "read_vectors"]

logger = logging.getLogger(__name__)

IO_CPUS = 0.25  # reading, filtering and writing hardly use a core; leave the rest to encoders
IO_RESERVE = 2 * IO_CPUS
"""CPUs the encoder actors never take: when the actors reserve every CPU, Ray Data cannot
schedule a single read task (of a Dataset source, or the fitting sample) and the job waits
forever (a read stage "backpressured" with a budget of 0.2 CPU was seen doing exactly that)."""
STALL_SECONDS = 600.0
"""A run whose encoder stage yields no batch for this long fails with a message naming it."""


def plan_cpus(workers: int, requested: float, total: float) -> float:
    """CPUs each encoder actor reserves: what was asked, but never so much that the actors
    leave less than :data:`IO_RESERVE` of the cluster's ``total`` to reading and writing."""
    usable = max(float(total) - IO_RESERVE, 0.05 * workers)
    return max(math.floor(min(float(requested), usable / workers) * 1000) / 1000, 0.001)


@dataclass(frozen=True)
class EncodeResult:
    """What one run did: ``encoded`` new rows, ``skipped`` rows already in the output."""

    output: str
    encoded: int
    skipped: int
    total: int
    dimension: int
    fingerprint: str
    workers: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["docs_per_second"] = round(self.encoded / self.seconds, 1) if self.seconds > 0 else None
        return out


# -- the actor ------------------------------------------------------------------------------
class EncodeActor:
    """One Encoder per actor, applied to every batch it receives: a Ray actor of the encoding
    pool (:meth:`write`) and a Ray Data callable class (:func:`fit_transform`).

    Subclass it to change the per-batch work (the subclass must be importable on workers).
    """

    def __init__(
        self,
        encoder_config: dict[str, Any],
        fingerprint: str,
        transform: Any = None,
        batch_size: int = 32,
        retries: int = 2,
        keep_text: bool = False,
    ) -> None:
        from vecdoctor.encode.encoder import Encoder

        self.encoder = Encoder.from_config(encoder_config, batch_size=batch_size)
        if self.encoder.fingerprint != encoder_config.get("fingerprint", self.encoder.fingerprint):
            raise IncompatibleError(
                f"this worker builds encoder {self.encoder.fingerprint} from the config, but the "
                f"driver's is {encoder_config['fingerprint']}; install the same model and "
                "vecdoctor version on every node"
            )
        self.transform = transform
        self.fingerprint = fingerprint
        self.retries = int(retries)
        self.keep_text = bool(keep_text)

    def encode(self, contents: list[str]) -> np.ndarray:
        vectors = self.encoder.encode_documents(contents)
        if self.transform is not None:
            vectors = self.transform.transform(vectors, fingerprint=self.encoder.fingerprint)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __call__(self, batch: Any) -> Any:
        contents = _rows.contents(batch)
        for attempt in range(self.retries + 1):
            try:
                vectors = self.encode(contents)
                break
            except Exception:
                if attempt == self.retries:
                    raise
                logger.warning(
                    "encoding a batch of %d documents failed (attempt %d of %d); retrying",
                    len(contents), attempt + 1, self.retries + 1, exc_info=True,
                )
        return _rows.output_table(batch, vectors, self.fingerprint, self.keep_text)

    def write(self, batch: Any, target: dict[str, Any]) -> tuple[list[str], int]:
        """Encode ``batch`` and write it to ``target``: the parts written (Lance fragments to
        commit) and the rows in them (the pool's entry point)."""
        written = _write_part(self(batch), target)
        return written.column("part").to_pylist(), int(batch.num_rows)


# -- batches: the driver drops ids already written, the actors write parts ----------------
def _write_part(batch: Any, target: dict[str, Any]) -> Any:
    import pyarrow as pa

    if batch.num_rows == 0:
        return pa.table({"part": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    if target["format"] == "lance":
        from lance.fragment import write_fragments

        schema = target["schema"]
        fragments = write_fragments(batch.cast(schema), target["uri"], schema=schema)
        parts = [json.dumps(f.to_json()) for f in fragments]
    else:
        parts = [_rows.write_parquet_part(batch, target["uri"])]
    return pa.table({"part": parts, "rows": [batch.num_rows] + [0] * (len(parts) - 1)})


# -- the driver -----------------------------------------------------------------------------
@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the Ray connection this process has, else start one (local without ``address``).

    A connection started here is shut down on exit; one that existed before is left alone.
    """
    ray = require("ray", "scale")
    if ray.is_initialized():  # type: ignore[attr-defined]
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    else:
        kwargs["address"] = address
    ray.init(**kwargs)  # type: ignore[attr-defined]
    try:
        yield ray
    finally:
        ray.shutdown()  # type: ignore[attr-defined]


def read_source(source: Any) -> Any:
    """A Ray Dataset of ``id``, ``title``, ``text`` from a BEIR corpus (JSONL/Parquet) or a Dataset.

    ``source``: a ``corpus.jsonl[.gz]`` file, a ``.parquet`` file, a folder holding either
    (a BEIR folder with ``corpus.jsonl[.gz]``, or Parquet files), a list of such paths, an
    object-storage URI (``s3://...``), or a ``ray.data.Dataset`` (used as it is).
    """
    import ray.data

    if isinstance(source, ray.data.Dataset):
        ds = source
    else:
        paths, kind = _rows.resolve_source(source)
        if kind == "parquet":
            ds = ray.data.read_parquet(paths, num_cpus=IO_CPUS)
        else:
            ds = ray.data.read_json(paths, lines=True, num_cpus=IO_CPUS)
    return ds.map_batches(_rows.normalise, batch_format="pyarrow", num_cpus=IO_CPUS)


def _planned_cpus(ray: Any, workers: int, cpus_per_worker: float) -> float:
    """The CPUs each encoder actor reserves on this cluster (see :func:`plan_cpus`), said in
    the log when it is less than asked for."""
    total = float(ray.cluster_resources().get("CPU", 1.0))
    planned = plan_cpus(workers, cpus_per_worker, total)
    if planned < cpus_per_worker:
        logger.info("%d encoder workers on %.0f CPUs: each reserves %.2f CPU, so that reading "
                    "and writing keep %.2f", workers, total, planned, IO_RESERVE)
    return planned


def _actor_stage(
    ds: Any, encoder: Any, fingerprint: str, transform: Any, workers: int, batch_size: int | None,
    cpus_per_worker: float, retries: int, keep_text: bool, actor_cls: type,
) -> Any:
    import ray
    import ray.data

    cpus_per_worker = _planned_cpus(ray, workers, cpus_per_worker)
    config = {**encoder.config(), "fingerprint": encoder.fingerprint}
    return ds.map_batches(
        actor_cls,
        fn_constructor_kwargs={
            "encoder_config": config,
            "fingerprint": fingerprint,
            "transform": transform,
            "batch_size": encoder.batch_size,
            "retries": retries,
            "keep_text": keep_text,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,  # Ray Data restarts dead actors and re-runs their batches
    )


def _check_run(workers: int, batch_size: int, retries: int) -> None:
    for name, value, low in (("workers", workers, 1), ("batch_size", batch_size, 1),
                             ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def encode_corpus(
    source: Any,
    output: str | Path,
    encoder: Any = "minilm",
    transform: Any = None,
    workers: int = 1,
    batch_size: int = 256,
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    retries: int = 2,
    keep_text: bool = False,
    actor_cls: type = EncodeActor,
    stall_seconds: float = STALL_SECONDS,
) -> EncodeResult:
    """Encode ``source`` on Ray into ``output`` and return what was done.

    Args:
        source: see :func:`read_source`.
        output: a folder of Parquet parts, or a Lance dataset when it ends in ``.lance``
            (local path or object-storage URI). An existing output is resumed: its ids are
            skipped; it must have been written by the same pipeline (same fingerprint).
        encoder: an Encoder, a model name or an ``Encoder.config()`` dict; each actor
            rebuilds it from its config.
        transform: a fitted Whitening/AllButTheTop (or its folder), applied in the actors.
        workers: encoder actors; ``batch_size``: documents per actor call (and per output part).
        address: a Ray cluster address; ``None`` uses this process's Ray connection, or
            starts a local one for the duration of the call.
        retries: times a failing batch is re-encoded before the job fails.
        keep_text: also write ``title`` and ``text`` (what a LanceDB table needs).
        stall_seconds: fail with :class:`StalledError` naming the stuck stage when no batch
            comes out for this long (instead of waiting forever).

    Files are read here, in the driver, a batch at a time, and handed to a pool of Ray actors
    (not a Ray Data pipeline): each actor encodes a batch and writes it itself, and gets the
    next one when it is done. On two cores Ray Data's executor, its helper actors and
    read/write tasks took about a tenth of the CPU the two actors needed (see
    ``benchmarks/scale_encode.py``). A ``ray.data.Dataset`` source is read through Ray Data.
    """
    _check_run(workers, batch_size, retries)
    enc = as_encoder(encoder)
    fitted = resolve_transform(transform, enc)
    fingerprint = _rows.vectors_fingerprint(enc, fitted)
    dim = int(fitted.output_dim if fitted is not None else enc.dimension)
    target = _rows.prepare_output(str(output), enc, fitted, fingerprint, dim, keep_text)
    start = time.perf_counter()
    with ray_session(address) as ray:
        keys = np.unique(_rows.id_keys(_rows.written_ids(target)))
        todo = _Todo(_source_tables(source, batch_size), keys)
        actors = _ActorPool(ray, actor_cls, enc, fingerprint, fitted, workers,
                            _planned_cpus(ray, workers, cpus_per_worker), retries, keep_text)
        try:
            encoded = actors.run(_rows.length_sorted(todo, batch_size, SORT_WINDOW, workers), target,
                                 stall_seconds)
        finally:
            actors.close()
    seconds = time.perf_counter() - start
    logger.info("encoded %d documents (%d already written) into %s in %.1f s",
                encoded, todo.total - encoded, output, seconds)
    return EncodeResult(str(output), encoded, todo.total - encoded, todo.total, dim, fingerprint,
                        workers, seconds)


SORT_WINDOW = 8
"""Batches read ahead and sorted by length together (see :func:`_rows.length_sorted`)."""


def _source_tables(source: Any, batch_size: int) -> Iterator[Any]:
    import ray.data

    if isinstance(source, ray.data.Dataset):
        return read_source(source).iter_batches(batch_size=batch_size, batch_format="pyarrow")
    return _rows.read_tables(source, batch_size)


def fit_transform(
    source: Any,
    encoder: Any = "minilm",
    kind: str = "whitening",
    sample: int = 10_000,
    seed: int = 0,
    workers: int = 1,
    batch_size: int = 256,
    address: str | None = None,
    **params: Any,
) -> Any:
    """Fit whitening or all-but-the-top on a random sample of ``source`` drawn and encoded by Ray.

    ``sample`` documents (about; Ray samples each row with the same probability, seeded) are
    encoded by the actor pool and the transform is fitted on the driver; pass the result to
    :func:`encode_corpus` to apply it in the actors. ``params`` go to the transform.
    """
    from vecdoctor.config import TransformKind
    from vecdoctor.fix.transform import make_transform

    kind = TransformKind.parse(kind)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise InputError(f"sample must be an integer >= 2, got {sample!r}")
    _check_run(workers, batch_size, 0)
    enc = as_encoder(encoder)
    with ray_session(address):
        ds = read_source(source)
        total = ds.count()
        if total > sample:
            ds = ds.random_sample(min(1.0, 1.2 * sample / total), seed=seed).limit(sample)
        out = _actor_stage(ds, enc, enc.fingerprint, None, workers, batch_size, 1.0, 2, False,
                           EncodeActor)
        blocks = out.iter_batches(batch_size=None, batch_format="pyarrow")
        vectors = np.concatenate(
            [_rows.vector_matrix(b.column("vector"))
             for b in watched(blocks, STALL_SECONDS, "encoding the fitting sample")]
        )
    logger.info("fitting %s on %d sampled documents of %d", kind, len(vectors), total)
    return make_transform(kind, **params).fit(vectors, fingerprint=enc.fingerprint, model_id=enc.model_id)


def read_vectors(output: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Ids, vectors and the pipeline description of an output written by :func:`encode_corpus`."""
    return _rows.read_output(str(output))


def index_encoded(
    corpus: Iterable[Any],
    encoded: str | Path,
    transform: Any = None,
    precision: Precision | str = Precision.FLOAT32,
    ann: AnnConfig | str | None = "auto",
    ann_budget_ms: float | None = None,
    baseline: bool = True,
) -> Any:
    """An :class:`~vecdoctor.index.store.Index` over vectors :func:`encode_corpus` wrote
    (``vecdoctor encode --engine ray``: a folder of Parquet parts or a ``.lance`` dataset),
    without encoding them again (``vecdoctor index CORPUS --vectors OUTPUT``):
    the encoder comes from the output's description, every document of ``corpus`` must have
    exactly one vector there and every vector a document, and a transform the vectors were
    made with must be given again (``transform``: the fitted object or its folder; its
    fingerprint is checked against the output's). ``precision``, ``ann``, ``ann_budget_ms``
    and ``baseline`` as in :meth:`~vecdoctor.index.store.Index.build`."""
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.baseline import compute_baseline
    from vecdoctor.index.docs import as_documents
    from vecdoctor.index.store import Index

    docs = as_documents(corpus)
    ids, vectors, meta = _rows.read_output(str(encoded))
    if not isinstance(meta.get("encoder"), dict):
        raise InputError(f"{encoded}: its description names no encoder; the output is "
                         "damaged, encode again into a new output")
    encoder = Encoder.from_config(meta["encoder"])
    if encoder.fingerprint != meta["encoder"].get("fingerprint"):
        raise IncompatibleError(
            f"{encoded}: made by encoder {meta['encoder'].get('fingerprint')}, but this "
            f"installation builds {encoder.fingerprint} from its description; install the "
            "same model and vecdoctor version that encoded it")
    if isinstance(transform, (str, Path)):
        from vecdoctor.fix.transform import load_transform

        transform = load_transform(transform, fingerprint=encoder.fingerprint,
                                   dim=encoder.dimension)
    if bool(meta.get("transform")) != (transform is not None):
        made = "with a transform" if meta.get("transform") else "without a transform"
        raise InputError(f"{encoded}: its vectors were made {made}; "
                         + ("pass that transform's folder (--transform)"
                            if meta.get("transform") else "drop --transform"))
    if _rows.vectors_fingerprint(encoder, transform) != meta.get("fingerprint"):
        raise IncompatibleError(
            f"{encoded}: made by pipeline {meta.get('fingerprint')}, not by this encoder and "
            "transform; pass the transform the vectors were made with")
    rows = _match_rows(docs, ids, str(encoded))
    index = Index.from_vectors(docs, vectors[rows], encoder, precision, ann, ann_budget_ms,
                               transform)
    if baseline:
        index.baseline = compute_baseline(index)
    return index


def _match_rows(docs: Sequence[Any], ids: Sequence[str], where: str) -> np.ndarray:
    """For each document, the row of its vector among ``ids``; every document needs exactly
    one vector and every vector a document."""
    from vecdoctor.index.docs import preview

    rows: dict[str, int] = {}
    repeated = [i for r, i in enumerate(ids) if rows.setdefault(i, r) != r]
    if repeated:
        raise InputError(f"{where}: ids written more than once: {preview(repeated)}; the output "
                         "is damaged, encode again into a new output")
    missing = [d.id for d in docs if d.id not in rows]
    wanted = {d.id for d in docs}
    extra = [i for i in ids if i not in wanted]
    if missing or extra:
        parts = ([f"{len(missing)} documents have no vector: {preview(missing)} (resume the "
                  "encoding with the same command)"] if missing else [])
        parts += ([f"{len(extra)} vectors belong to no document of the corpus: {preview(extra)} "
                   "(give the corpus that was encoded)"] if extra else [])
        raise InputError(f"{where}: " + "; ".join(parts))
    return np.fromiter((rows[d.id] for d in docs), dtype=np.int64, count=len(docs))


def build_lance(source: Any, uri: str | Path, encoder: Any = "minilm", transform: Any = None,
                table: str | None = None, storage_options: dict[str, str] | None = None,
                **ray_options: Any) -> Any:
    """Encode ``source`` on Ray straight into a LanceDB table and open it as a
    :class:`~vecdoctor.index.lance.LanceIndex` (resumable: see :func:`encode_corpus`), with its
    full-text index and health baseline. ``ray_options``: ``workers``, ``batch_size``,
    ``address``, ``retries``, ..."""
    from vecdoctor.index.baseline import compute_baseline
    from vecdoctor.index.lance import DEFAULT_TABLE, LanceIndex, connect, save_baseline, table_uri
    from vecdoctor.index.lance_tables import save_transform

    table = table or DEFAULT_TABLE
    enc = as_encoder(encoder)
    fitted = resolve_transform(transform, enc)
    if fitted is not None:
        save_transform(connect(uri, storage_options), table, fitted)
    encode_corpus(source, table_uri(uri, table), enc, fitted, keep_text=True, **ray_options)
    index = LanceIndex.load(uri, table, storage_options, baseline=False)
    index.use_encoder(enc)
    index.create_text_index()
    save_baseline(index, compute_baseline(index))
    return index
