"""The Typer app object and the helpers every command module shares."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from vecdoctor.errors import VecdoctorError

app = typer.Typer(
    name="vecdoctor",
    help="Diagnose, fix, evaluate and serve sentence-embedding retrieval pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help screens: no boxes that cut long choices at the terminal's width, no <bool> on
    # flags, text that greps and pastes as it reads
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

_STATE = {"quiet": False}


def _version(shown: bool) -> None:
    if shown:
        from vecdoctor import __version__

        typer.echo(f"vecdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug log lines, and what "
                                 "other libraries say."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """vecdoctor: find out what is wrong with your embeddings, fix it, and ship the pipeline."""
    _STATE["quiet"] = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    # The level goes on the handler too: some libraries set their own logger's level
    # (bm25s sets DEBUG), and records propagating from them skip the root logger's level.
    # on a terminal, log lines go through tqdm so that they print above a progress bar
    handler = logging.StreamHandler(_BarSafe() if sys.stderr.isatty() else sys.stderr)
    handler.setLevel(level)
    if not verbose:
        handler.addFilter(_quiet_libraries)
        _ONCE.seen.clear()  # one command, one count (tests run several in one process)
        handler.addFilter(_ONCE)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler], force=True
    )
    # Models load from local folders only; nothing may hang on a hub call.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:  # transformers' "Loading weights" bar and the hub's: -v shows them
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _BarSafe:
    """A stderr for log lines that clears and redraws any progress bar around each line."""

    def write(self, text: str) -> None:
        from tqdm import tqdm

        if text.strip():
            tqdm.write(text.rstrip("\n"), file=sys.stderr)

    def flush(self) -> None:
        sys.stderr.flush()


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Without -v, other libraries speak only to warn (faiss announces which build it loads,
    with a ModuleNotFoundError for the one it skips, at every start) and faiss' loader not
    at all."""
    if record.name == "vecdoctor" or record.name.startswith("vecdoctor."):
        return True
    if record.name.startswith("faiss"):
        return record.levelno >= logging.ERROR
    return record.levelno >= logging.WARNING


class _Once(logging.Filter):
    """Without -v, a line said again (the same message before its numbers are filled in) is
    shown once; how many more times it came is said when the command ends."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, int, str], list[Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        if key not in self.seen:
            self.seen[key] = [record, 0]
            return True
        self.seen[key][1] += 1
        return False

    def report(self) -> None:
        for record, more in self.seen.values():
            if more:
                typer.echo(f"{record.levelname} {record.name}: {more} more line"
                           f"{'s' if more > 1 else ''} like: {record.getMessage()}", err=True)
        self.seen.clear()


_ONCE = _Once()
atexit.register(_ONCE.report)


def progress_enabled() -> bool:
    """Progress bars only on a terminal and when not --quiet."""
    return not _STATE["quiet"] and sys.stderr.isatty()


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose user errors print one line and exit 1 (no traceback)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except VecdoctorError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            except OSError as exc:
                if exc.errno == 28:  # ENOSPC
                    typer.echo(f"error: no space left on device ({exc}); nothing was replaced", err=True)
                    raise typer.Exit(1) from None
                # busy, read-only, too long...: the system's words and the path, one line
                where = f" ({exc.filename})" if exc.filename else ""
                typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("interrupted", err=True)
                raise typer.Exit(130) from None

        app.command(*args, **kwargs)(wrapper)
        return fn

    return decorate


def emit(obj: Any) -> None:
    """Write a JSON result to stdout: always valid JSON (a NaN or infinite number, which JSON
    cannot hold, is written as null)."""
    try:
        text = json.dumps(obj, indent=2, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(json.loads(json.dumps(obj, default=str))), indent=2)
    typer.echo(text)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# What a search prints of each hit (search, lance-search).
FIELDS = typer.Option(
    None, "--fields", help="Comma-separated: id,score,title,snippet,text,ranks_by_stage "
    "(default: all but text)")
FULL = typer.Option(False, "--full", help="The whole text of each hit instead of its snippet")

# Every command that writes a folder takes --force (vecdoctor.persist.check_output).
FORCE = typer.Option(
    False,
    "--force",
    help="Replace the output folder even when vecdoctor did not write it as this kind of output",
)

# The reranker options of every command that takes --rerank (search, lance-search, serve).
RERANK_FUSION = typer.Option(
    None,
    "--rerank-fusion",
    help="rrf|weighted|none: fuse the reranker's order with the first stage's (none: the "
    "reranker's order alone; default: the index pipeline's, else rrf)",
)
RERANK_BACKEND = typer.Option(
    "torch",
    "--rerank-backend",
    help="torch|onnx|openvino to run the cross-encoder on (converted once, then cached)",
)
RERANK_PRECISION = typer.Option(
    "fp32", "--rerank-precision", help="fp32|int8 of the cross-encoder (int8: onnx, openvino)"
)


def make_encoder(model: str, window: str | None = None, **options: Any) -> Any:
    """The Encoder a command's options describe: ``--window`` parsed here, the rest (pooling,
    max length, batch size, backend, ...) passed as given."""
    from vecdoctor.config import Window
    from vecdoctor.encode.encoder import Encoder

    return Encoder(model, window=Window.parse(window), **options)


def reranker_option(rerank: str | None, backend: str, precision: str) -> Any:
    """``--rerank`` as given, or a cross-encoder loaded on ``--rerank-backend`` in
    ``--rerank-precision`` (converted on first use, then cached)."""
    from vecdoctor.rerank.backends import check_rerank_backend

    check_rerank_backend(backend, precision)
    if rerank is None or rerank.lower() == "maxsim" or (backend, precision) == ("torch", "fp32"):
        return rerank
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    return CrossEncoderReranker(rerank, backend=backend, precision=precision)


def run_searches(searcher: Any, query: str, k: int, mode: Any, rerank: Any, plain: bool,
                 fields: str | None = None, full: bool = False) -> None:
    """Search one query (or one per stdin line for ``-``) and print JSON or plain lines. Each
    hit carries a snippet (the passage that best matches the query) unless ``full`` asks for
    the whole text or ``fields`` names what to show."""
    import textwrap

    from vecdoctor.search.searcher import parse_fields
    from vecdoctor.search.snippets import mark

    shown = parse_fields(fields, full)
    queries = [q.rstrip("\r\n") for q in sys.stdin if q.strip()] if query == "-" else [query]
    results = searcher.search_batch(queries, k=k, mode=mode, rerank=rerank)
    if plain:
        for q, hits in zip(queries, results, strict=True):
            if len(queries) > 1:
                typer.echo(f"# {q}")
            for rank, hit in enumerate(hits, start=1):
                view = hit.view(q, shown)
                title = view.get("title") or hit.title or hit.id
                typer.echo(f"{rank:>3}. {hit.score:10.4f}  {hit.id}  {title}")
                body = view.get("text") or view.get("snippet")
                if body:
                    for line in textwrap.wrap(mark(" ".join(body.split()), q), 92):
                        typer.echo(f"       {line}")
        return
    payload = [{"query": q, "hits": [h.view(q, shown) for h in hits]}
               for q, hits in zip(queries, results, strict=True)]
    emit(payload[0] if query != "-" else payload)
