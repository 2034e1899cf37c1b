"""Commands: lance-index, lance-search, ray-fit (and `encode --engine ray`, called from encoding)."""

from __future__ import annotations

from pathlib import Path

import typer

from vecdoctor.cli._app import (
    FIELDS,
    FULL,
    RERANK_BACKEND,
    RERANK_FUSION,
    RERANK_PRECISION,
    command,
    emit,
    make_encoder,
    reranker_option,
    run_searches,
)

_SOURCE = "corpus.jsonl[.gz], a .parquet file, a BEIR or Parquet folder, or an s3:// / gs:// URI"
_ADDRESS = "Ray cluster address (e.g. ray://head:10001); default: a local Ray started for this run"


def encode_with_ray(
    source: str, output: Path, model: str, pooling: str | None, window: str | None,
    max_length: int | None, transform: Path | None, batch_size: int, backend: str | None,
    normalize: bool, address: str | None, workers: int,
) -> None:
    """`vecdoctor encode --engine ray`: a resumable Ray job writing Parquet parts or Lance."""
    from vecdoctor.errors import InputError
    from vecdoctor.scale.ray_encode import encode_corpus

    if source == "-":
        raise InputError("--engine ray reads files, not stdin; save the texts as a corpus first")
    if output.suffix.lower() == ".npy":
        raise InputError(
            f"{output}: --engine ray writes a folder of Parquet parts or a .lance dataset; "
            "give a folder name (e.g. vectors/) or a name ending in .lance"
        )
    enc = make_encoder(model, window, pooling=pooling, max_length=max_length,
                       batch_size=batch_size, backend=backend, normalize=normalize)
    result = encode_corpus(source, str(output), enc, transform=transform, workers=workers,
                           address=address)
    emit({**result.to_dict(), "model": enc.model_id, "engine": "ray"})


@command("lance-index")
def lance_index(
    source: str = typer.Argument(..., help=_SOURCE),
    uri: str = typer.Option(..., "--uri", help="LanceDB database: a folder or s3://bucket/path"),
    table: str = typer.Option("documents", "--table", help="Table name in the database"),
    model: str = typer.Option("minilm", "-m", "--model", help="Registry name or local model folder"),
    pooling: str = typer.Option(None, "--pooling", "-p", help="mean|cls|max|subword|attention"),
    window: str = typer.Option(None, "--window", help="Token windows SIZE:STRIDE[:max|mean]"),
    max_length: int = typer.Option(None, "--max-length", help="Tokens per model input"),
    transform: Path = typer.Option(None, "--transform", help="Folder of a fitted transform"),
    engine: str = typer.Option("local", "--engine", help="local (this process) | ray"),
    address: str = typer.Option(None, "--address", help=_ADDRESS),
    workers: int = typer.Option(1, "--workers", help="Ray encoder actors"),
    batch_size: int = typer.Option(32, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="local engine: replace the table"),
    ivf_pq: bool = typer.Option(False, "--ivf-pq", help="Also build an IVF-PQ vector index"),
    partitions: int = typer.Option(None, "--partitions", help="IVF partitions (default: LanceDB's)"),
    sub_vectors: int = typer.Option(None, "--sub-vectors", help="PQ sub-vectors (must divide dim)"),
    chunks: str = typer.Option(
        None, "--chunks",
        help="max|max+first: every token window of a document its own vector, a document "
        "scored by its best chunk (with --window: the chunk size); --engine local only",
    ),
) -> None:
    """Build a LanceDB table (ids, texts, vectors, pipeline) searchable like an index folder."""
    from vecdoctor.config import Chunking
    from vecdoctor.errors import InputError
    from vecdoctor.index.lance import LanceIndex

    if engine not in {"local", "ray"}:
        raise InputError(f"--engine must be local or ray, got {engine!r}")
    mode = Chunking.parse(chunks) if chunks is not None else None
    if mode is not None and engine == "ray":
        raise InputError("--chunks needs --engine local: the Ray engine writes one vector per "
                         "document (drop --chunks, or build with --engine local)")
    enc = make_encoder(model, window, pooling=pooling, max_length=max_length,
                       batch_size=batch_size)
    if mode is not None:
        enc.chunk_window()  # a window longer than the model reads fails before the corpus loads
    if engine == "ray":
        if overwrite:
            raise InputError("--overwrite is for --engine local; a Ray build resumes the table")
        from vecdoctor.scale.ray_encode import build_lance

        index = build_lance(source, uri, enc, transform, table=table, workers=workers,
                            address=address)
    else:
        from vecdoctor.cli._app import progress_enabled
        from vecdoctor.data import load_corpus

        index = LanceIndex.build(load_corpus(Path(source)), uri, enc, transform, table=table,
                                 overwrite=overwrite, show_progress=progress_enabled(),
                                 chunks=mode)
    if ivf_pq:
        index.create_vector_index(num_partitions=partitions, num_sub_vectors=sub_vectors)
    emit({"uri": uri, "table": table, "documents": len(index), "dimension": index.dim,
          "model": index.model_id, "fingerprint": index.config().get("fingerprint"),
          "vector_index": index.has_vector_index, "engine": engine,
          **({"chunking": str(mode)} if mode is not None else {})})


@command("lance-search")
def lance_search(
    uri: str = typer.Argument(..., help="LanceDB database written by `vecdoctor lance-index`"),
    query: str = typer.Argument(..., help="The query, or - to read one query a line from stdin"),
    table: str = typer.Option("documents", "--table"),
    k: int = typer.Option(10, "-k", help="Results per query"),
    mode: str = typer.Option(None, "--mode", help="bm25|dense|hybrid (default: hybrid)"),
    fusion: str = typer.Option(None, "--fusion", help="rrf|weighted (default: rrf)"),
    rerank: str = typer.Option(None, "--rerank", help="maxsim, or a local cross-encoder folder"),
    rerank_fusion: str = RERANK_FUSION,
    rerank_backend: str = RERANK_BACKEND,
    rerank_precision: str = RERANK_PRECISION,
    nprobes: int = typer.Option(20, "--nprobes", help="IVF partitions searched (with --ivf-pq)"),
    refine_factor: int = typer.Option(
        50, "--refine-factor", help="Re-rank k*N IVF-PQ candidates with the stored vectors (0: off)"
    ),
    exact: bool = typer.Option(False, "--exact", help="Ignore any vector index: exact search"),
    plain: bool = typer.Option(False, "--plain", help="Human-readable lines instead of JSON"),
    fields: str = FIELDS,
    full: bool = FULL,
) -> None:
    """Search a LanceDB table with the same Searcher (BM25/full-text, dense, hybrid, rerank)."""
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.search.searcher import Searcher

    index = LanceIndex.load(uri, table, nprobes=nprobes, refine_factor=refine_factor or None,
                            exact=exact)
    searcher = Searcher(index, fusion=fusion, cache_size=0, rerank_fusion=rerank_fusion)
    run_searches(
        searcher, query, k, mode, reranker_option(rerank, rerank_backend, rerank_precision), plain,
        fields, full,
    )


@command("ray-fit")
def ray_fit(
    kind: str = typer.Argument(..., help="whitening | abtt (all-but-the-top)"),
    source: str = typer.Argument(..., help=_SOURCE),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the fitted transform"),
    model: str = typer.Option("minilm", "-m", "--model"),
    pooling: str = typer.Option(None, "--pooling", "-p"),
    window: str = typer.Option(None, "--window"),
    max_length: int = typer.Option(None, "--max-length"),
    n_components: int = typer.Option(None, "--n-components", "-k", help="Keep k dimensions"),
    sample: int = typer.Option(10_000, "--sample", "-n", help="Documents drawn by Ray to fit on"),
    seed: int = typer.Option(0, "--seed"),
    address: str = typer.Option(None, "--address", help=_ADDRESS),
    workers: int = typer.Option(1, "--workers"),
    batch_size: int = typer.Option(32, "--batch-size"),
) -> None:
    """Fit whitening / all-but-the-top on a Ray-drawn sample (apply with --transform)."""
    from vecdoctor.scale.ray_encode import fit_transform

    enc = make_encoder(model, window, pooling=pooling, max_length=max_length,
                       batch_size=batch_size)
    fitted = fit_transform(source, enc, kind, sample=sample, seed=seed, workers=workers,
                           address=address, n_components=n_components)
    fitted.save(output)
    emit({"output": str(output), "kind": kind, "fitted_on": fitted.n_samples_,
          "dimension": fitted.dim_, "output_dim": fitted.output_dim, "model": enc.model_id})
