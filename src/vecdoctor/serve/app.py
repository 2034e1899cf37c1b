"""HTTP server (FastAPI): search, OpenAI-compatible embeddings, health, statistics, embedding
health (``/monitor``) and Prometheus metrics (``/metrics``).

    app = create_app("my-index")          # or create_app(Searcher(...))
    uvicorn.run(app, host="127.0.0.1", port=8000)   # or vecdoctor.serve.runner.serve(...)

Requests are validated with pydantic (:mod:`vecdoctor.serve.schemas`); a value over a limit
gets a 422 that names the field and the limit, a body over ``max_body_bytes`` a 413 (whether
or not it declares its length). Errors never carry stack traces. The searcher is shared by the
worker threads and is safe to call concurrently. The production guards (API key, in-flight
limit, access log) are one ASGI layer in front of the app: :class:`~vecdoctor.serve.guard.Guard`.
"""

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import Role
from vecdoctor.errors import InputError, VecdoctorError
from vecdoctor.monitor.live import LiveHealth
from vecdoctor.serve.guard import Guard, ServerLimits, Stats

__all__ = ["ServerLimits", "create_app"]

logger = logging.getLogger(__name__)


def _folder_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@dataclass(frozen=True)
class Served:
    """One index being served: its searcher, the live health of its traffic, its size."""

    searcher: Any
    live: LiveHealth
    size_bytes: int | None


class Serving:
    """What the routes serve, swapped whole on reload.

    Each request reads :attr:`current` once and keeps that :class:`Served` to the end, so a
    reload lets requests in flight finish on the old index while new ones get the new one: no
    request fails and none sees half of each. The new index is opened, checked and warmed up
    before the swap; if it cannot be, the old one keeps serving and the error is returned.
    """

    def __init__(self, searcher: Any, limits: ServerLimits, window: int, warmup: bool,
                 reopen: Callable[[], Any] | None) -> None:
        self.limits, self.window, self.reopen = limits, window, reopen
        self._lock = threading.Lock()
        self.reloads = 0
        self.current = self._prepare(searcher, warmup)

    def _prepare(self, searcher: Any, warmup: bool) -> Served:
        searcher.max_query_chars = max(searcher.max_query_chars, self.limits.max_query_chars)
        if warmup:
            searcher.warmup()
        live = LiveHealth(searcher.index, self.window)
        searcher.observer = live
        return Served(searcher, live, _folder_bytes(searcher.index.path))

    def reload(self) -> dict[str, Any]:
        """Open the index folder again (replaced by a new build) and serve it from now on."""
        if self.reopen is None:
            raise InputError("this server was given an index object, not a folder: there is "
                             "nothing to reload from")
        with self._lock:  # one reload at a time; searches never wait for it
            start = time.perf_counter()
            new = self._prepare(self.reopen(), warmup=True)
            old, self.current = self.current, new
            self.reloads += 1
        seconds = round(time.perf_counter() - start, 3)
        logger.info("reloaded the index: %d documents (was %d) in %.2f s",
                    len(new.searcher.index), len(old.searcher.index), seconds)
        return {"status": "reloaded", "documents": len(new.searcher.index),
                "previous_documents": len(old.searcher.index), "seconds": seconds,
                "reloads": self.reloads}


def create_app(
    index: Any,
    limits: ServerLimits | None = None,
    rerankers: dict[str, Any] | None = None,
    warmup: bool = True,
    api_key: str | None = None,
    monitor_window: int = 200,
    reopen: Callable[[], Any] | None = None,
    model_names: Sequence[str] = (),
) -> Any:
    """Build the FastAPI app over an index folder, an Index, or a Searcher.

    Args:
        limits: request limits (:class:`ServerLimits`).
        api_key: when set, every path but ``/health`` needs it (see :mod:`vecdoctor.serve.guard`).
        rerankers: names clients may ask for in ``rerank`` mapped to a reranker object or a
            cross-encoder folder; ``maxsim`` is always available. Clients never pass paths.
        warmup: load the encoder and encode one query before serving.
        monitor_window: queries per window of the live embedding health (``/monitor``,
            ``/metrics``; :mod:`vecdoctor.monitor.live`).
        reopen: makes the searcher of the index anew, for ``POST /admin/reload`` and SIGHUP;
            by default, when ``index`` is a folder, that folder is opened again.
        model_names: more names ``/v1/embeddings`` answers to besides the index's model id
            (an OpenAI client sends its own model name, e.g. ``text-embedding-3-small``).
    """
    from fastapi import FastAPI

    from vecdoctor import __version__
    from vecdoctor.search.searcher import Searcher
    from vecdoctor.serve.schemas import request_models

    if api_key is not None and not api_key.strip():
        raise InputError("api_key is empty; pass a non-empty key or None for no key")
    active: ServerLimits = limits or ServerLimits()
    if reopen is None and isinstance(index, (str, Path)):
        folder = Path(index)
        reopen = lambda: Searcher(folder)  # noqa: E731
    state = Serving(index if isinstance(index, Searcher) else Searcher(index), active,
                    monitor_window, warmup, reopen)
    allowed = {"maxsim": "maxsim", **(rerankers or {})}
    stats = Stats()
    SearchRequest, EmbeddingRequest = request_models(active, allowed)
    app = FastAPI(
        title="vecdoctor",
        version=__version__,
        description="Hybrid BM25 + dense search over a vecdoctor index.",
    )
    _error_handlers(app)

    @app.post("/search")
    def search(body: SearchRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        return _search(state.current.searcher, allowed, body)

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest) -> Any:  # type: ignore[valid-type]
        served = state.current
        return _embeddings(served.searcher, body, served.live, model_names)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Only that the server is up: no key is needed here, so it tells nothing else."""
        return {"status": "ok"}

    @app.get("/stats")
    def get_stats() -> dict[str, Any]:
        served = state.current
        return {**_index_stats(served.searcher, served.size_bytes), "limits": asdict(active),
                "reloads": state.reloads, **stats.snapshot()}

    _health_routes(app, state, stats, api_key)

    app.add_middleware(Guard, limits=active, api_key=api_key, stats=stats)
    app.state.serving = state
    app.state.searcher = state.current.searcher
    app.state.limits = active
    return app


def _health_routes(app: Any, state: Serving, stats: Stats, api_key: str | None) -> None:
    """/monitor, /metrics and /admin/reload."""
    from fastapi.responses import JSONResponse, Response

    @app.get("/monitor")
    def monitor() -> dict[str, Any]:
        """The live embedding health (rolling window, baseline, alarms) as JSON."""
        return state.current.live.snapshot()

    @app.get("/metrics")
    def metrics() -> Any:
        """Operational statistics and embedding health in the Prometheus text format."""
        from vecdoctor.serve.metrics import CONTENT_TYPE, render

        served = state.current
        return Response(render(stats, served.live, served.searcher.index), media_type=CONTENT_TYPE)

    @app.post("/admin/reload")
    def reload() -> Any:
        """Serve the index folder anew (after `vecdoctor index -o` replaced it): requests in
        flight finish on the old one. Needs the server's API key; without one, send SIGHUP."""
        if api_key is None:
            return JSONResponse(status_code=403, content={
                "detail": "reloading over HTTP needs an API key (--api-key); without one, send "
                          "SIGHUP to the server process"})
        return state.reload()


def _error_handlers(app: Any) -> None:
    """422 with one entry per bad field, 400 for user errors, 500 without a stack trace."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            errors.append(
                {
                    "field": ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body",
                    "message": err.get("msg", "invalid"),
                    "type": err.get("type", "invalid"),
                }
            )
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(VecdoctorError)
    async def user_error(request: Request, exc: VecdoctorError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error while serving %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal server error"})


def _search(searcher: Any, allowed: dict[str, Any], body: Any) -> dict[str, Any]:
    from vecdoctor.search.searcher import parse_fields

    start = time.perf_counter()
    rerank = allowed[body.rerank] if body.rerank else None
    hits = searcher.search(body.query, k=body.k, mode=body.mode, rerank=rerank)
    return {
        "query": body.query,
        "mode": str(body.mode or searcher.mode),
        "k": body.k,
        "took_ms": round((time.perf_counter() - start) * 1000, 3),
        "hits": [h.view(body.query, parse_fields(body.fields)) for h in hits],
    }


def _embeddings(searcher: Any, body: Any, live: Any, aliases: Sequence[str] = ()) -> Any:
    """The OpenAI-compatible embeddings response (or a 404/422 for a wrong model/width)."""
    from fastapi.responses import JSONResponse

    index = searcher.index
    names = {index.model_id, Path(index.model_id).name, *aliases}
    if body.model is not None and body.model not in names:
        also = f" (also answers to: {', '.join(sorted(aliases))})" if aliases else ""
        message = (f"model {body.model!r} is not served; this server serves {index.model_id!r}"
                   f"{also}; start it with --model-name {body.model} to accept that name")
        return JSONResponse(status_code=404, content={  # ours, and the shape OpenAI clients read
            "detail": message,
            "error": {"message": message, "type": "invalid_request_error",
                      "code": "model_not_found"}})
    if body.dimensions is not None and body.dimensions != index.dim:
        message = f"this model returns {index.dim} dimensions; omit the field or pass that number"
        return JSONResponse(
            status_code=422,
            content={"detail": [{"field": "dimensions", "type": "value_error", "message": message}]},
        )
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    searcher.ensure_encoder()  # the searcher's encoder (cache, query backend), loaded once
    role = Role.QUERY if body.input_type == "query" else Role.DOCUMENT
    vectors = index.embedder.embed_bulk(texts, role)
    lengths = np.asarray(index.encoder.token_lengths(texts), dtype=np.int64)
    tokens = _tokens_used(index.encoder, lengths)
    live.observe_inputs(lengths)
    data = []
    for i, vec in enumerate(vectors):
        value: Any = (
            base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else vec.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": index.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _tokens_used(encoder: Any, lengths: np.ndarray) -> int:
    """Tokens the model read: each input's, cut at the model's max length unless it has
    windows (which read every token)."""
    if getattr(encoder, "window", None) is None and getattr(encoder, "max_length", None):
        lengths = np.minimum(lengths, int(encoder.max_length))
    return int(lengths.sum())


def _index_stats(searcher: Any, size_bytes: int | None) -> dict[str, Any]:
    idx = searcher.index
    return {
        "index": {
            "documents": len(idx),
            "dim": idx.dim,
            "precision": str(idx.precision),
            "path": str(idx.path) if idx.path else None,
            "size_bytes": size_bytes,
        },
        "model": {
            "id": idx.model_id,
            "fingerprint": idx.fingerprint,
            "pooling": idx.encoder_config.get("pooling"),
        },
        "cache": searcher.cache_stats(),
        "searches_by_mode": dict(searcher.counts),
    }
