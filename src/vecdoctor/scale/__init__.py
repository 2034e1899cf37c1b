"""Scale-out: distributed encoding on Ray (``pip install 'vecdoctor[scale]'``); the LanceDB store
(:mod:`vecdoctor.index.lance`) is named here too."""

from vecdoctor._lazy import lazy_exports

# Nothing here imports ray or lancedb until a name is used.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "EncodeActor": "vecdoctor.scale.ray_encode",
        "EncodeResult": "vecdoctor.scale.ray_encode",
        "encode_corpus": "vecdoctor.scale.ray_encode",
        "fit_transform": "vecdoctor.scale.ray_encode",
        "read_vectors": "vecdoctor.scale.ray_encode",
        "index_encoded": "vecdoctor.scale.ray_encode",
        "build_lance": "vecdoctor.scale.ray_encode",
        "LanceIndex": "vecdoctor.index.lance",  # the store lives beside the folder store
    },
)
