"""Search: rank fusion and the :class:`Searcher`, the one retrieval path of vecdoctor."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Searcher": "vecdoctor.search.searcher",
        "Hit": "vecdoctor.search.searcher",
        "limit_blas_threads": "vecdoctor.search.searcher",
        "rrf": "vecdoctor.search.fusion",
        "weighted": "vecdoctor.search.fusion",
        "min_max": "vecdoctor.search.fusion",
        "fuse_with_first_stage": "vecdoctor.search.fusion",
    },
)
