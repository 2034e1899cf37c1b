"""Conversion of PyTorch models to ONNX Runtime and OpenVINO graphs: export, check against
PyTorch, cache, re-convert when damaged."""
