"""Storage: the index folder (documents, BM25, dense vectors, ANN), the LanceDB store beside it
(``vecdoctor[scale]``), and their shared parts."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"Index": "vecdoctor.index.store",
                                                         "LanceIndex": "vecdoctor.index.lance"})
