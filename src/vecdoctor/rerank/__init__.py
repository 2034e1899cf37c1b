"""Rerankers for the last search stage: a cross-encoder (PyTorch, ONNX Runtime, OpenVINO) and
training-free late interaction (MaxSim)."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Reranker": "vecdoctor.rerank.rerankers",
        "CrossEncoderReranker": "vecdoctor.rerank.rerankers",
        "MaxSimReranker": "vecdoctor.rerank.rerankers",
        "load_reranker": "vecdoctor.rerank.rerankers",
        "ensure_cross_encoder": "vecdoctor.rerank.backends",
        "export_cross_encoder": "vecdoctor.rerank.backends",
    },
)
