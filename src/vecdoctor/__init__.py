"""vecdoctor: diagnose, fix, evaluate and serve sentence-embedding retrieval pipelines."""

from vecdoctor._lazy import lazy_exports

__version__ = "0.9.0"

# Public names resolve on first use so that `import vecdoctor` never imports torch.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Encoder": "vecdoctor.encode.encoder",
        "Window": "vecdoctor.config",
        "Pooling": "vecdoctor.config",
        "Whitening": "vecdoctor.fix.transform",
        "AllButTheTop": "vecdoctor.fix.transform",
        "Index": "vecdoctor.index.store",
        "Pipeline": "vecdoctor.pipeline",
        "Embedder": "vecdoctor.pipeline",
        "Searcher": "vecdoctor.search.searcher",
        "Hit": "vecdoctor.search.searcher",
        "ScalarQuantizer": "vecdoctor.fix.quantize",
        "BinaryQuantizer": "vecdoctor.fix.quantize",
        "ProductQuantizer": "vecdoctor.fix.quantize",
        "DiagnosisReport": "vecdoctor.diagnose.run",
        "evaluate_run": "vecdoctor.evaluate.metrics",
    },
)
