"""Running the app: uvicorn with vecdoctor's access log in place of uvicorn's own."""

import logging
from typing import Any

from vecdoctor.serve.guard import ServerLimits

logger = logging.getLogger(__name__)


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
    ``vecdoctor.serve.access`` (with timing), printed through uvicorn's handler.
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    if host not in {"127.0.0.1", "localhost", "::1"} and not api_key:
        logger.warning("serving on %s without an API key; anyone who can reach it can search", host)
    from vecdoctor.serve.app import create_app

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
