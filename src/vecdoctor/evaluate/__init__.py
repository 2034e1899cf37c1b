"""Evaluation, always through the :class:`~vecdoctor.search.searcher.Searcher`.

- ``metrics``: trec_eval metrics, paired significance tests, TREC run files;
- ``runs``: a searcher timed on labelled queries, rows of results, baselines;
- ``variants``: pipeline variants built and measured on one dataset;
- ``saved``: an index that is already built;
- ``compare``: models compared by quality, speed and memory, and the recommendation.
"""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Evaluation": "vecdoctor.evaluate.metrics",
        "evaluate_run": "vecdoctor.evaluate.metrics",
        "randomization_test": "vecdoctor.evaluate.metrics",
        "evaluate_variants": "vecdoctor.evaluate.variants",
        "evaluate_index": "vecdoctor.evaluate.saved",
        "compare_models": "vecdoctor.evaluate.compare",
    },
)
