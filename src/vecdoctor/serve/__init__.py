"""The HTTP server (FastAPI): search, OpenAI-compatible embeddings, health and statistics."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "create_app": "vecdoctor.serve.app",
        "serve": "vecdoctor.serve.runner",
        "ServerLimits": "vecdoctor.serve.guard",
    },
)
