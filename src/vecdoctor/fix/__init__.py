"""Fixes fitted on the user's corpus: transforms (whitening, all-but-the-top) and quantizers."""

from vecdoctor._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Whitening": "vecdoctor.fix.transform",
        "AllButTheTop": "vecdoctor.fix.transform",
        "TransformKind": "vecdoctor.fix.transform",
        "load_transform": "vecdoctor.fix.transform",
        "ScalarQuantizer": "vecdoctor.fix.quantize",
        "BinaryQuantizer": "vecdoctor.fix.quantize",
        "ProductQuantizer": "vecdoctor.fix.quantize",
        "load_quantizer": "vecdoctor.fix.quantize",
    },
)
