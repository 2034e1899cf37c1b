"""HTTP server (FastAPI): search, OpenAI-compatible embeddings, health and statistics.

    app = create_app("my-index")          # or create_app(Searcher(...))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Requests are validated with pydantic; a value over a limit gets a 422 that names the field
and the limit, a body over ``max_body_bytes`` a 413 (whether or not it declares its length).
Errors never carry stack traces. The searcher is shared by the worker threads and is safe to
call concurrently.

Production guards (:class:`_Guard`, one ASGI layer in front of the app):

- ``api_key``: every path except ``/health`` needs ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY`` (compared in constant time); otherwise 401.
- ``max_in_flight``: requests being served at once (``/health`` excluded); one more gets a 503
  with ``Retry-After`` at once instead of waiting in a queue.
- one log line per request (logger ``vecdoctor.serve.app.access``): method, path, status,
  milliseconds, body bytes, client address.
"""

import base64
import hmac
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.errors import InputError, VecdoctorError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(__name__ + ".access")

OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class ServerLimits:
    """Per-request limits; each one is reported by name when a request exceeds it."""

    max_query_chars: int = 10_000
    max_k: int = 1000
    max_batch: int = 256
    max_input_chars: int = 20_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_in_flight: int = 64
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"server limit {name} must be a positive integer, got {value!r}")


@dataclass
class _Stats:
    """Request counts and recent latencies per endpoint (thread-safe)."""

    window: int = 10_000
    started: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, deque[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            self.latencies.setdefault(path, deque(maxlen=self.window)).append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            latency = {}
            for path, values in self.latencies.items():
                arr = np.asarray(values)
                latency[path] = {
                    "count": int(arr.size),
                    **{f"p{p}_ms": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)},
                }
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": dict(self.counts),
                "status_codes": dict(self.statuses),
                "latency": latency,
            }


class _BodyTooLarge(Exception):
    pass


class _Guard:
    """ASGI layer: API key, body-size limit, in-flight limit, access log and statistics.

    The body is read here (up to ``max_body_bytes``) and replayed to the app, so a chunked
    request without ``Content-Length`` is held to the same limit as one that declares it.
    """

    def __init__(
        self, app: Any, limits: ServerLimits, api_key: str | None, stats: "_Stats"
    ) -> None:
        self.app = app
        self.limits = limits
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.stats = stats
        self.in_flight = 0  # only touched from the event loop thread

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        body_bytes = [0]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        path = scope.get("path", "")
        try:
            await self._dispatch(scope, receive, send_status, path, body_bytes)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.stats.record(f"{scope.get('method', '?')} {route}", status[0], seconds)
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                "%s %s %d %.1fms %dB %s",
                scope.get("method", "?"),
                path,
                status[0],
                seconds * 1000,
                body_bytes[0],
                client[0],
            )

    async def _dispatch(
        self, scope: Any, receive: Any, send: Any, path: str, body_bytes: list[int]
    ) -> None:
        from starlette.responses import JSONResponse

        headers = dict(scope.get("headers") or [])
        if path not in OPEN_PATHS and not self._authorised(headers):
            response = JSONResponse(
                status_code=401,
                content={
                    "detail": "missing or wrong API key; send the header "
                    "'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                },
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        too_large = JSONResponse(
            status_code=413,
            content={
                "detail": "request body exceeds "
                f"max_body_bytes={self.limits.max_body_bytes}; send a smaller request"
            },
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            await too_large(scope, receive, send)
            return
        if path not in OPEN_PATHS and self.in_flight >= self.limits.max_in_flight:
            busy = JSONResponse(
                status_code=503,
                content={
                    "detail": f"server busy: {self.in_flight} requests in flight "
                    f"(max_in_flight={self.limits.max_in_flight}); retry after "
                    f"{self.limits.retry_after_s} s"
                },
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            try:
                body = await self._read_body(receive)
            except _BodyTooLarge:
                await too_large(scope, receive, send)
                return
            body_bytes[0] = len(body)
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.in_flight -= 1


def _folder_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def create_app(
    index: Any,
    limits: ServerLimits | None = None,
    rerankers: dict[str, Any] | None = None,
    warmup: bool = True,
    api_key: str | None = None,
) -> Any:
    """Build the FastAPI app over an index folder, an Index, or a Searcher.

    Args:
        limits: request limits (:class:`ServerLimits`).
        api_key: when set, every path but ``/health`` needs it (see the module docstring).
        rerankers: names clients may ask for in ``rerank`` mapped to a reranker object or a
            cross-encoder folder; ``maxsim`` is always available. Clients never pass paths.
        warmup: load the encoder and encode one query before serving.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    from vecdoctor import __version__
    from vecdoctor.config import SearchMode
    from vecdoctor.search.searcher import Searcher

    active: ServerLimits = limits or ServerLimits()
    searcher = index if isinstance(index, Searcher) else Searcher(index)
    searcher.max_query_chars = max(searcher.max_query_chars, active.max_query_chars)
    allowed = {"maxsim": "maxsim", **(rerankers or {})}
    stats = _Stats()
    size_bytes = _folder_bytes(searcher.index.path)
    if warmup:
        searcher.warmup()

    def not_blank(value: str) -> str:
        if not value.strip():
            raise ValueError("must contain at least one non-space character")
        return value

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str = Field(
            strict=True,
            min_length=1,
            max_length=active.max_query_chars,
            description=f"at most {active.max_query_chars} characters",
        )
        k: int = Field(10, strict=True, ge=1, le=active.max_k, description=f"1..{active.max_k}")
        mode: SearchMode | None = Field(None, description="default: the index's mode")
        rerank: str | None = Field(None, description=f"one of: {', '.join(sorted(allowed))}")

        _query = field_validator("query")(not_blank)

        @field_validator("rerank")
        @classmethod
        def known_reranker(cls, value: str | None) -> str | None:
            if value is not None and value not in allowed:
                raise ValueError(
                    f"unknown reranker {value!r}; available: {', '.join(sorted(allowed))}"
                )
            return value

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        input: str | list[str] = Field(
            description=f"a string or at most {active.max_batch} strings"
        )
        model: str | None = None
        encoding_format: str = Field("float", pattern="^(float|base64)$")
        dimensions: int | None = Field(None, strict=True, ge=1)
        input_type: str = Field("query", pattern="^(query|document)$")

        @field_validator("input")
        @classmethod
        def check_input(cls, value: str | list[str]) -> str | list[str]:
            texts = [value] if isinstance(value, str) else value
            if not texts:
                raise ValueError("must hold at least one string")
            if len(texts) > active.max_batch:
                raise ValueError(
                    f"holds {len(texts)} strings, more than max_batch={active.max_batch}"
                )
            for i, text in enumerate(texts):
                if not text.strip():
                    raise ValueError(f"item {i} is empty")
                if len(text) > active.max_input_chars:
                    raise ValueError(
                        f"item {i} has {len(text)} characters, "
                        f"more than max_input_chars={active.max_input_chars}"
                    )
            return value

    app = FastAPI(
        title="vecdoctor",
        version=__version__,
        description="Hybrid BM25 + dense search over a vecdoctor index.",
    )

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

    @app.post("/search")
    def search(body: SearchRequest) -> dict[str, Any]:
        start = time.perf_counter()
        rerank = allowed[body.rerank] if body.rerank else None
        hits = searcher.search(body.query, k=body.k, mode=body.mode, rerank=rerank)
        return {
            "query": body.query,
            "mode": str(body.mode or searcher.mode),
            "k": body.k,
            "took_ms": round((time.perf_counter() - start) * 1000, 3),
            "hits": [h.to_dict() for h in hits],
        }

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest) -> Any:
        served = {searcher.index.model_id, Path(searcher.index.model_id).name}
        if body.model is not None and body.model not in served:
            return JSONResponse(
                status_code=404,
                content={
                    "detail": f"model {body.model!r} is not served; "
                    f"this server serves {searcher.index.model_id!r}"
                },
            )
        if body.dimensions is not None and body.dimensions != searcher.index.dim:
            return JSONResponse(
                status_code=422,
                content={
                    "detail": [
                        {
                            "field": "dimensions",
                            "type": "value_error",
                            "message": f"this model returns {searcher.index.dim} dimensions; "
                            "omit the field or pass that number",
                        }
                    ]
                },
            )
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if body.input_type == "query":
            vectors = searcher.embed(texts)
        else:
            vectors = searcher.index.embed_documents(texts)
        tokens = int(np.sum(searcher.index.encoder.token_lengths(texts)))
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
            "model": searcher.index.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "documents": len(searcher.index), "model": searcher.index.model_id}

    @app.get("/stats")
    def get_stats() -> dict[str, Any]:
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
            "limits": asdict(active),
            **stats.snapshot(),
        }

    if api_key is not None and not api_key.strip():
        raise InputError("api_key is empty; pass a non-empty key or None for no key")
    app.add_middleware(_Guard, limits=active, api_key=api_key, stats=stats)
    app.state.searcher = searcher
    app.state.limits = active
    return app


def serve(
    index: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limits: ServerLimits | None = None,
    rerankers: dict[str, Any] | None = None,
    api_key: str | None = None,
) -> None:
    """Run the app with uvicorn until interrupted.

    uvicorn's own access log is replaced by the one line per request of
    ``vecdoctor.serve.app.access`` (with timing), printed through uvicorn's handler.
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    if host not in {"127.0.0.1", "localhost", "::1"} and not api_key:
        logger.warning("serving on %s without an API key; anyone who can reach it can search", host)
    app = create_app(index, limits=limits, rerankers=rerankers, api_key=api_key)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["vecdoctor"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
