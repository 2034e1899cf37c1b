"""Index directory: documents, BM25 (bm25s) and dense vectors (exact, int8, binary, faiss)."""

from vecdoctor.index.store import Index

__all__ = ["Index"]
