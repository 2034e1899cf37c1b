"""Running the app: uvicorn with its own limits set from :class:`ServerLimits`, a deadline for
request headers, and vecdoctor's access log in place of uvicorn's own."""

import logging
from typing import Any

from vecdoctor.serve.guard import ServerLimits

logger = logging.getLogger(__name__)


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than
    ``seconds`` to arrive (slow-header clients; uvicorn has no such timeout of its own).

    The clock starts when the connection opens, or when the first byte of a later request on
    a kept-alive connection arrives; it stops once the headers are complete. The body has its
    own deadline in :class:`~vecdoctor.serve.guard.Guard`.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: Any = None

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

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
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
        http=header_deadline_protocol(limits.header_timeout_s),
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
