"""The ASGI layer in front of the app: API key, body-size limit, in-flight limit, one access
log line per request, and request statistics.

- ``api_key``: every path except ``/health`` needs ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY`` (compared in constant time); otherwise 401.
- ``max_in_flight``: requests being served at once (``/health`` excluded); one more gets a 503
  with ``Retry-After`` at once instead of waiting in a queue.
- one log line per request (logger ``vecdoctor.serve.access``): method, path, status,
  milliseconds, body bytes, client address.
"""

import hmac
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vecdoctor.errors import InputError

access_logger = logging.getLogger("vecdoctor.serve.access")

OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class ServerLimits:
    """Per-request limits; each one is reported by name when a request exceeds it."""

    max_query_chars: int = 10_000
    max_k: int = 1000
    max_batch: int = 256
    max_input_chars: int = 20_000
    max_embedding_chars: int = 400_000
    """Characters of all inputs of one embeddings request together."""
    max_body_bytes: int = 4 * 1024 * 1024
    max_in_flight: int = 64
    retry_after_s: int = 1
    header_timeout_s: int = 10
    """Seconds a connection may take to send a request's headers (slow clients are cut off)."""
    body_timeout_s: int = 30
    """Seconds a request may take to send its body; then 408, and no in-flight slot was held."""
    max_connections: int = 256
    """Open connections uvicorn accepts before it answers 503 (its ``limit_concurrency``)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"server limit {name} must be a positive integer, got {value!r}")


METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
"""HTTP methods counted by name; any other method a client invents counts as ``OTHER``."""
LATENCY_SAMPLES = 2048
"""Recent latencies kept per key, in a ring of fixed size."""


def stats_key(method: str, route: str) -> str:
    """The statistics key of a request: a closed set of methods (others fold into ``OTHER``)
    and the app's own route paths (an unmatched path is ``unmatched``), so that no client can
    add a key by sending a new method or path."""
    return f"{method if method in METHODS else 'OTHER'} {route}"


@dataclass
class Stats:
    """Request counts and recent latencies per endpoint (thread-safe), in bounded space.

    Keys come from :func:`stats_key` (a closed set); a request refused for want of the API key
    is counted in ``refused`` only, never as a route. Latencies are a fixed ring per key. A
    snapshot copies under the lock and computes percentiles outside it, so a scrape never
    holds up the requests being recorded.
    """

    window: int = LATENCY_SAMPLES
    started: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, deque[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refused: int = 0

    def record(self, path: str, status: int, seconds: float) -> None:
        code = str(status) if 100 <= int(status) <= 599 else "other"
        with self.lock:
            self.statuses[code] = self.statuses.get(code, 0) + 1
            if status == 401:
                self.refused += 1
                return
            self.counts[path] = self.counts.get(path, 0) + 1
            self.latencies.setdefault(path, deque(maxlen=self.window)).append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:  # copies only: the percentiles are computed after the lock is let go
            recent = {path: np.fromiter(values, dtype=np.float64, count=len(values))
                      for path, values in self.latencies.items()}
            counts, statuses, refused = dict(self.counts), dict(self.statuses), self.refused
        latency = {}
        for path, arr in recent.items():
            if arr.size:
                p50, p95, p99 = np.percentile(arr, (50, 95, 99))
                latency[path] = {"count": int(arr.size), "p50_ms": round(float(p50), 3),
                                 "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": counts,
            "refused_unauthorised": refused,
            "status_codes": statuses,
            "latency": latency,
        }


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class Guard:
    """ASGI layer: API key, body-size limit, in-flight limit, access log and statistics.

    The body is read here (up to ``max_body_bytes``, within ``body_timeout_s``) and replayed to
    the app, so a chunked request without ``Content-Length`` is held to the same limits as one
    that declares it. The in-flight slot is taken only once the whole body is in: a client that
    sends its body slowly holds a connection, never a slot.
    """

    def __init__(
        self, app: Any, limits: ServerLimits, api_key: str | None, stats: Stats
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
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _BodyTooSlow from None
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
            self.stats.record(stats_key(str(scope.get("method", "")), route), status[0], seconds)
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                "%s %s %d %.1fms %dB %s",
                _printable(scope.get("method", "?")),
                _printable(path),
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
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge:
            await too_large(scope, receive, send)
            return
        except _BodyTooSlow:
            slow = JSONResponse(
                status_code=408,
                content={"detail": "request body not received within "
                         f"body_timeout_s={self.limits.body_timeout_s} s; send it at once"},
                headers={"Connection": "close"},
            )
            await slow(scope, receive, send)
            return
        body_bytes[0] = len(body)
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


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
