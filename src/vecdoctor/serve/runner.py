"""Running the app: uvicorn with its own limits set from :class:`ServerLimits`, a deadline for
request headers, and vecdoctor's access log in place of uvicorn's own."""

import logging
from typing import Any

from vecdoctor.serve.guard import ServerLimits

logger = logging.getLogger(__name__)


IDLE_HEADROOM = 8
"""Connections kept free below ``max_connections`` by closing idle ones (see below)."""


def _pending(transport: Any) -> bool:
    """Whether bytes wait unread on ``transport``'s socket (a request that arrived but that the
    event loop has not handed over yet: not an idle connection)."""
    import socket

    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # an error to report: let the connection speak for itself


def shed_idle(new: Any, max_connections: int) -> bool:
    """Close the oldest connections that sent nothing once ``new`` brings the open ones within
    :data:`IDLE_HEADROOM` of ``max_connections``; ``False`` when ``new`` must be refused
    (every other connection is busy)."""
    live = [c for c in new.connections if c.transport is not None and not c.transport.is_closing()]
    excess = len(live) - max(max_connections - IDLE_HEADROOM, 1)
    if excess <= 0:
        return True
    idle = sorted((c for c in live if c is not new and not getattr(c, "_spoke", True)
                   and not _pending(c.transport)), key=lambda c: getattr(c, "_opened", 0.0))
    for conn in idle[:excess]:
        conn.transport.close()
    if idle:
        logger.warning("closed %d idle connection(s) that sent nothing (%d open, limit %d)",
                       min(excess, len(idle)), len(live), max_connections)
    return len(live) - min(excess, len(idle)) <= max_connections


def header_deadline_protocol(seconds: float, max_connections: int | None = None) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than
    ``seconds`` to arrive (slow-header clients; uvicorn has no such timeout of its own), and
    shedding idle connections first when connections run out.

    The clock starts when the connection opens, or when the first byte of a later request on
    a kept-alive connection arrives; it stops once the headers are complete. The body has its
    own deadline in :class:`~vecdoctor.serve.guard.Guard`.

    uvicorn answers 503 to every request once ``max_connections`` connections are open, idle
    ones included, so sockets that send nothing could deny service to everyone. Each new
    connection that brings the count within :data:`IDLE_HEADROOM` of the limit closes the
    oldest connections that have sent no byte yet: a client whose request arrives in full
    always wins over a socket that sent nothing.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: Any = None
        _spoke = False  # a byte of a request has arrived on this connection
        _opened = 0.0

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                logger.warning("closing a connection whose request headers took over %s s", seconds)
                self.transport.close()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if max_connections is not None:
                # uvicorn would answer 503 to every request while idle sockets fill its count;
                # connections are bounded here instead, and requests by the guard's in-flight
                # limit (503 for real overload)
                self.limit_concurrency = None

        def _shed_idle(self) -> bool:
            return True if max_connections is None else shed_idle(self, max_connections)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._opened = self.loop.time()
            if not self._shed_idle():
                logger.warning("refusing a connection: %s connections are open and busy",
                               max_connections)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._spoke = True
            super().data_received(data)
            if self._waiting_for_headers():
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def server_config(app: Any, host: str, port: int, limits: ServerLimits, **options: Any) -> Any:
    """The ``uvicorn.Config`` vecdoctor serves with: header deadline, connection limit, short
    keep-alive, graceful shutdown."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_deadline_protocol(limits.header_timeout_s, limits.max_connections),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        **options,
    )


def bind(host: str, port: int) -> Any:
    """A listening socket on ``host``:``port``, taken before anything slow starts (loading an
    index takes seconds to minutes): a port in use or out of range is a one-line error at once."""
    import socket

    from vecdoctor.errors import InputError

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535 (0: any free port), got {port!r}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"--host {host!r}: not an address this machine can listen on ({exc})") \
            from None
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                         "another port with --port, or stop what holds this one") from None
    sock.set_inheritable(True)
    return sock


def serve(
    index: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limits: ServerLimits | None = None,
    rerankers: dict[str, Any] | None = None,
    api_key: str | None = None,
    monitor_window: int = 200,
    reopen: Any = None,
    sock: Any = None,
    model_names: tuple[str, ...] = (),
) -> None:
    """Run the app with uvicorn until interrupted, on ``sock`` when given (:func:`bind`).

    uvicorn's own access log is replaced by the one line per request of
    ``vecdoctor.serve.access`` (with timing), printed through uvicorn's handler. SIGHUP reloads
    the index (see :class:`~vecdoctor.serve.app.Serving`).
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from vecdoctor.serve.app import create_app

    if host not in {"127.0.0.1", "localhost", "::1"} and not api_key:
        logger.warning("serving on %s without an API key; anyone who can reach it can search", host)
    limits = limits or ServerLimits()
    app = create_app(index, limits=limits, rerankers=rerankers, api_key=api_key,
                     monitor_window=monitor_window, reopen=reopen, model_names=model_names)
    reload_on_hangup(app.state.serving)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["vecdoctor"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    config = server_config(app, host, port, limits, log_level=log_level, log_config=log_config,
                           access_log=False)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def reload_on_hangup(serving: Any) -> None:
    """SIGHUP reloads the index in a thread of its own (the event loop never waits for it);
    a failed reload is logged and the old index keeps serving."""
    import signal
    import threading

    def reload() -> None:
        try:
            serving.reload()
        except Exception as exc:  # noqa: BLE001 - the server must outlive a bad new folder
            logger.error("reload failed, still serving the previous index: %s", exc)

    def on_hangup(signum: int, frame: Any) -> None:
        threading.Thread(target=reload, name="vecdoctor-reload", daemon=True).start()

    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, on_hangup)
