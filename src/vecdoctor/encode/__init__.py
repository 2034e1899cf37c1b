"""Encoding: tokenization and token windows, backends, pooling, cache, and the Encoder."""
