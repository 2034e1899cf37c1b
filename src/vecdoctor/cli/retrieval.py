"""Commands: index, search, serve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from vecdoctor.cli._app import (
    FIELDS,
    FORCE,
    FULL,
    RERANK_BACKEND,
    RERANK_FUSION,
    RERANK_PRECISION,
    command,
    emit,
    progress_enabled,
    reranker_option,
    run_searches,
)

_VECTORS_HELP = ("Vectors already encoded by `vecdoctor encode --engine ray` (a Parquet folder "
                 "or .lance): indexed without encoding again; the encoder comes from their "
                 "description")
_CHUNKS = typer.Option(
    None, "--chunks",
    help="max|max+first: every token window of a document its own vector, a document "
    "scored by its best chunk (with --window: the chunk size; default: the model's input "
    "length, half shared); off: one vector per document",
)
_MODEL_PRECISION = typer.Option(
    None, "--model-precision",
    help="fp32|bf16|int8 of the model (int8 is calibrated on this corpus) (default: fp32)",
)
_ANN = typer.Option(
    None, "--ann",
    help="auto|exact|hnsw|ivf (default auto: exact search while it takes at most "
    "--latency-budget ms a query here, else HNSW with its recall@10 measured; float32 only)",
)
_LATENCY_BUDGET = typer.Option(
    10.0, "--latency-budget", min=0.0,
    help="--ann auto: milliseconds of dense search a query may take before HNSW is built",
)
_QUEUE_LIMIT = typer.Option(
    64,
    "--queue-limit",
    help="Requests served at once; one more gets 503 with Retry-After (/health excluded)",
)
_API_KEY = typer.Option(
    None,
    "--api-key",
    envvar="VECDOCTOR_API_KEY",
    help="Require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every path but "
    "/health (prefer the VECDOCTOR_API_KEY variable: arguments show in `ps`)",
    show_envvar=True,
)
_MONITOR_WINDOW = typer.Option(
    200, "--monitor-window", help="Queries per window of the live embedding health "
    "(/monitor, /metrics); alarms are judged and logged once per window"
)
_QUERY_BACKEND = typer.Option(
    None,
    "--query-backend",
    help="Encode queries on onnx|openvino|torch (fp32 indexes only: same vectors, "
    "several times faster per query than PyTorch; converted once, then cached)",
)
_MODEL_NAME = typer.Option(
    None, "--model-name", help="Another name /v1/embeddings answers to (repeatable): the "
    "model an OpenAI client sends, e.g. text-embedding-3-small",
)
_FIXED_BY_VECTORS = ("-m", "--pooling", "--window", "--chunks", "--max-length", "--backend",
                     "--model-precision", "--pipeline", "--cache", "--store lancedb")


@command("index")
def index_command(
    corpus: Path = typer.Argument(..., help="corpus.jsonl[.gz], a BEIR folder, .txt file or text folder"),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Index folder to write (an existing one is replaced atomically)"
    ),
    model: str = typer.Option(
        None, "-m", "--model", help="Registry name or local model folder (default: minilm)"
    ),
    pooling: str = typer.Option(
        None, "--pooling", "-p", help="mean|cls|max|subword|attention (default: the model's)"
    ),
    window: str = typer.Option(
        None, "--window", help="Token windows SIZE:STRIDE[:max|mean], e.g. 256:128:max"
    ),
    chunks: str = _CHUNKS,
    max_length: int = typer.Option(
        None, "--max-length", help="Tokens per model input (default: the model's)"
    ),
    backend: str = typer.Option(
        None, "--backend", help="torch|openvino|onnx to encode with (default: the model's)"
    ),
    model_precision: str = _MODEL_PRECISION,
    transform: Path = typer.Option(
        None, "--transform", help="Folder of a fitted whitening / all-but-the-top"
    ),
    precision: str = typer.Option(
        None, "--precision", help="float32|int8|binary (default: float32)"
    ),
    ann: str = _ANN,
    latency_budget: float = _LATENCY_BUDGET,
    pipeline: Path = typer.Option(
        None, "--pipeline", help="pipeline.json (from checkup); options given here override it"
    ),
    cache: Path = typer.Option(
        None, "--cache", help="Folder for an on-disk vector cache (resumes after interruption)"
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    store: str = typer.Option(
        "dir", "--store", help="dir (an index folder) | lancedb (-o is then a LanceDB URI)"
    ),
    table: str = typer.Option("documents", "--table", help="--store lancedb: table name"),
    vectors: Path = typer.Option(None, "--vectors", help=_VECTORS_HELP),
    force: bool = FORCE,
) -> None:
    """Build an index folder: documents, BM25, dense vectors and the pipeline config."""
    from vecdoctor.config import Precision
    from vecdoctor.data import load_corpus
    from vecdoctor.index.store import Index

    auto = ann is None or ann.strip().lower() == "auto"
    exact = not auto and ann.strip().lower() == "exact"  # parses to no ANN in the pipeline
    _check_index_options(output, store, precision, None if auto or exact else ann, backend, force,
                         reads=(corpus, transform, pipeline, vectors))
    if vectors is not None:  # encoded already: the vectors' description fixes the encoder
        fixed = (model, pooling, window, chunks, max_length, backend, model_precision, pipeline,
                 cache, None if store == "dir" else store)
        return _index_encoded(corpus, vectors, output, fixed, transform, precision,
                              "auto" if auto else None if exact else ann, latency_budget, force)
    # the pipeline is checked whole before the corpus and the model are loaded
    chosen = _pipeline_of_options(pipeline, window, model=model, pooling=pooling,
                                  max_length=max_length, backend=backend,
                                  model_precision=model_precision, storage=precision,
                                  ann=None if auto else ann, transform_dir=transform, chunks=chunks)
    start = time.perf_counter()
    docs = load_corpus(corpus)
    options = {"cache": cache, "batch_size": batch_size}
    if store == "lancedb":
        _index_lance(docs, output, chosen, table, options, start)
        return
    index = Index.from_pipeline(docs, chosen, encoder_options=options,
                                show_progress=progress_enabled(),
                                auto_ann=auto and chosen.storage is Precision.FLOAT32,
                                ann_budget_ms=latency_budget)
    index.save(output, force)
    emit(_index_summary(index, output, start))


def _index_encoded(corpus: Path, vectors: Path, output: Path, fixed: tuple[Any, ...],
                   transform: Path | None, precision: str | None, ann: str | None,
                   latency_budget: float, force: bool) -> None:
    """`vecdoctor index CORPUS --vectors OUTPUT`: an index folder over vectors encoded on Ray;
    ``fixed``: the values given for :data:`_FIXED_BY_VECTORS`, which must all be unset."""
    from vecdoctor.config import Precision
    from vecdoctor.data import load_corpus
    from vecdoctor.errors import InputError
    from vecdoctor.scale.ray_encode import index_encoded

    conflicting = [name for name, value in zip(_FIXED_BY_VECTORS, fixed, strict=True)
                   if value is not None]
    if conflicting:
        raise InputError(
            f"--vectors takes the encoder from the vectors' description; drop "
            f"{', '.join(conflicting)} (encode again with those settings to change them)")
    start = time.perf_counter()
    storage = Precision.parse(precision or Precision.FLOAT32)
    index = index_encoded(load_corpus(corpus), vectors, transform=transform, precision=storage,
                          ann=ann, ann_budget_ms=latency_budget)
    index.save(output, force)
    emit({**_index_summary(index, output, start), "vectors": str(vectors)})


def _index_lance(docs: Any, output: Path, chosen: Any, table: str, options: dict[str, Any],
                 start: float) -> None:
    from vecdoctor.index.lance import LanceIndex

    lance = LanceIndex.from_pipeline(docs, str(output), chosen, table=table,
                                     encoder_options=options, show_progress=progress_enabled())
    emit({"index": str(output), "store": "lancedb", "table": table, "documents": len(lance),
          "model": lance.model_id, "dim": lance.dim,
          **({"chunking": str(chosen.chunks)} if chosen.chunks else {}),
          "seconds": round(time.perf_counter() - start, 2)})


def _index_summary(index: Any, output: Path, start: float) -> dict[str, Any]:
    """What `vecdoctor index` prints about the folder it wrote."""
    return {
        "index": str(output),
        "documents": len(index),
        "model": index.model_id,
        "dim": index.dim,
        "precision": str(index.precision),
        **({"chunks": index.vectors.n_chunks, "chunking": str(index.pipeline.chunks)}
           if index.pipeline.chunks else {}),
        "transform": type(index.transform).__name__ if index.transform is not None else None,
        "baseline": _baseline_line(index),
        "dense_search": index.ann_choice or {
            "chosen": str(index.pipeline.ann.kind) if index.pipeline.ann else "exact",
            "reason": "given with --ann or the pipeline"},
        "seconds": round(time.perf_counter() - start, 2),
    }


def _baseline_line(index: object) -> dict[str, object] | None:
    """What the monitor will compare traffic with (None for a LanceDB table)."""
    base = getattr(index, "baseline", None)
    if base is None:
        return None
    return {"queries": base.queries, "ood_threshold": round(base.ood_threshold, 4),
            "mean_cosine": round(base.mean_cosine, 4), "truncation_rate": base.truncation_rate}


def open_index(location: Path, table: str = "documents") -> object:
    """An index folder, or a LanceDB database holding ``table`` (``<location>/<table>.lance``)."""
    from vecdoctor.index.store import Index

    if (Path(location) / f"{table}.lance").is_dir():
        from vecdoctor.index.lance import LanceIndex

        return LanceIndex.load(str(location), table)
    return Index.load(location)


def check_model(index: object, model: str | None) -> None:
    if model is None:
        return
    from vecdoctor.errors import IncompatibleError
    from vecdoctor.models import resolve

    asked = resolve(model)
    built = index.encoder_config.get("model_fingerprint")  # type: ignore[attr-defined]
    if built and asked.fingerprint != built:
        raise IncompatibleError(
            f"the index was built with model {index.model_id!r} but -m asks for {model!r}; "  # type: ignore[attr-defined]
            "drop -m (queries always use the index's model) or rebuild the index with that model"
        )


@command("search")
def search_command(
    index: Path = typer.Argument(..., help="Index folder written by `vecdoctor index`"),
    query: str = typer.Argument(..., help="The query, or - to read one query a line from stdin"),
    k: int = typer.Option(10, "-k", help="Results per query (clamped to the corpus size)"),
    mode: str = typer.Option(
        None, "--mode", help="bm25|dense|hybrid (default: the index's, else hybrid)"
    ),
    rerank: str = typer.Option(None, "--rerank", help="maxsim, or a local cross-encoder folder"),
    fusion: str = typer.Option(
        None, "--fusion", help="rrf|weighted (default: the index's, else rrf)"
    ),
    rerank_fusion: str = RERANK_FUSION,
    rerank_backend: str = RERANK_BACKEND,
    rerank_precision: str = RERANK_PRECISION,
    no_rescore: bool = typer.Option(
        False, "--no-rescore", help="int8/binary: skip float rescoring"
    ),
    model: str = typer.Option(
        None, "-m", "--model", help="Fail unless the index was built with this model"
    ),
    plain: bool = typer.Option(False, "--plain", help="Human-readable lines instead of JSON"),
    fields: str = FIELDS,
    full: bool = FULL,
    query_backend: str = _QUERY_BACKEND,
) -> None:
    """Search an index (JSON by default)."""
    from vecdoctor.search.searcher import Searcher, limit_blas_threads

    limit_blas_threads()  # one query at a time: BLAS threads would only compete with the model
    idx = open_index(index)
    check_model(idx, model)
    searcher = Searcher(
        idx, fusion=fusion, rescore=not no_rescore, cache_size=0, query_backend=query_backend,
        rerank_fusion=rerank_fusion,
    )
    run_searches(
        searcher, query, k, mode, reranker_option(rerank, rerank_backend, rerank_precision), plain,
        fields, full,
    )


@command("serve")
def serve_command(
    index: Path = typer.Argument(..., help="Index folder written by `vecdoctor index`"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    reranker: list[str] = typer.Option(
        None, "--reranker", help="NAME=FOLDER cross-encoder clients may ask for (repeatable)"
    ),
    rerank_fusion: str = RERANK_FUSION,
    rerank_backend: str = RERANK_BACKEND,
    rerank_precision: str = RERANK_PRECISION,
    max_k: int = typer.Option(1000, "--max-k"),
    max_query_chars: int = typer.Option(10_000, "--max-query-chars"),
    max_batch: int = typer.Option(
        256, "--max-batch", help="Most inputs per /v1/embeddings request"
    ),
    max_body_bytes: int = typer.Option(
        4 * 1024 * 1024, "--max-body-bytes", help="Larger request bodies get 413"
    ),
    queue_limit: int = _QUEUE_LIMIT,
    max_embedding_chars: int = typer.Option(
        400_000, "--max-embedding-chars", help="Characters of one embeddings request, all inputs"
    ),
    header_timeout: int = typer.Option(
        10, "--header-timeout", help="Seconds to send request headers; slower connections close"
    ),
    body_timeout: int = typer.Option(
        30, "--body-timeout", help="Seconds to send a request body; slower ones get 408"
    ),
    max_connections: int = typer.Option(
        256, "--max-connections", help="Open connections; more get 503 from uvicorn"
    ),
    api_key: str = _API_KEY,
    monitor_window: int = _MONITOR_WINDOW,
    query_backend: str = typer.Option(
        None,
        "--query-backend",
        help="Encode queries on onnx|openvino|torch (fp32 indexes only: same vectors, "
        "several times faster per query than PyTorch; converted once, then cached)",
    ),
    model_name: list[str] = _MODEL_NAME,
) -> None:
    """Serve an index over HTTP: /search, /v1/embeddings, /health, /stats, /monitor, /metrics,
    /docs; SIGHUP or POST /admin/reload serve the index folder anew."""
    from vecdoctor.errors import InputError, require
    from vecdoctor.serve.guard import ServerLimits
    from vecdoctor.serve.runner import bind, serve

    require("fastapi", "server")
    require("uvicorn", "server")
    sock = bind(host, port)  # before the index loads: a taken port fails at once
    named = _named_rerankers(reranker or [], rerank_backend, rerank_precision)
    limits = ServerLimits(max_k=max_k, max_query_chars=max_query_chars, max_batch=max_batch,
                          max_body_bytes=max_body_bytes, max_in_flight=queue_limit,
                          max_embedding_chars=max_embedding_chars, header_timeout_s=header_timeout,
                          body_timeout_s=body_timeout, max_connections=max_connections)
    if api_key is not None and not api_key.strip():
        raise InputError("--api-key / VECDOCTOR_API_KEY is empty; set a key or unset it")
    from vecdoctor.search.searcher import Searcher, limit_blas_threads

    limit_blas_threads()  # each request runs one search: BLAS threads would compete with the model

    def reopen() -> Searcher:  # at start, and again on SIGHUP or POST /admin/reload
        return Searcher(open_index(index), query_backend=query_backend, rerank_fusion=rerank_fusion)

    serve(reopen(), host=host, port=port, limits=limits, rerankers=named, api_key=api_key,
          monitor_window=monitor_window, reopen=reopen, sock=sock,
          model_names=tuple(model_name or ()))


def _named_rerankers(items: list[str], backend: str, precision: str) -> dict[str, object]:
    """``NAME=FOLDER`` options as the cross-encoders clients may ask for by name."""
    from vecdoctor.errors import InputError

    named: dict[str, object] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise InputError(
                f"--reranker {item!r}: expected NAME=FOLDER, e.g. ce=./my-cross-encoder"
            )
        from vecdoctor.rerank.rerankers import CrossEncoderReranker

        named[name] = CrossEncoderReranker(folder, backend=backend, precision=precision)
    return named


def _check_index_options(
    output: Path, store: str, precision: str | None, ann: str | None, backend: str | None,
    force: bool, reads: tuple[Path | None, ...] = (),
) -> None:
    from vecdoctor.errors import InputError
    from vecdoctor.persist import INDEX, check_output

    if store not in {"dir", "lancedb"}:
        raise InputError(f"--store must be dir or lancedb, got {store!r}")
    if store == "lancedb" and ((precision or "float32") != "float32" or ann is not None):
        raise InputError(
            "--store lancedb keeps float32 vectors and builds its own IVF-PQ index "
            "(vecdoctor lance-index --ivf-pq); drop --precision/--ann"
        )
    if store == "dir":
        check_output(output, INDEX, force, reads=reads)
    if backend is not None:
        from vecdoctor.encode.backends import BACKENDS

        if backend not in BACKENDS:
            raise InputError(f"unknown --backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def _pipeline_of_options(path: Path | None, window: str | None, **options: Any) -> Any:
    """The pipeline of ``--pipeline`` (or the defaults) with the options given on the command
    line in place of its settings; ``--window off`` turns its windows off, ``--chunks off``
    its chunks."""
    import dataclasses

    from vecdoctor.config import Window
    from vecdoctor.pipeline import Pipeline

    chosen = Pipeline.load(path) if path is not None else Pipeline(model=options["model"] or "minilm")
    chunks = options.pop("chunks", None)
    chosen = chosen.replace(**options)
    if chunks is not None:
        off = chunks.strip().lower() in {"off", "none", ""}
        chosen = dataclasses.replace(chosen, chunks=None if off else chunks)
    if window is not None:
        chosen = dataclasses.replace(chosen, window=Window.parse(window))
    return chosen
