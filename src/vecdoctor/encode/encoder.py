"""The Encoder: texts -> vectors with any pooling, token windows, a cache and a backend."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vecdoctor.config import ModelPrecision, Pooling, Reduce, Role, Window
from vecdoctor.encode.backends import ForwardOutput, load_backend
from vecdoctor.encode.cache import CacheStats, VectorCache, cache_key
from vecdoctor.encode.identity import config_fingerprint
from vecdoctor.encode.pooling import pool
from vecdoctor.encode.tokens import Batch, TextTokenizer, TokenSeq, plan_batches
from vecdoctor.errors import InputError
from vecdoctor.models import ResolvedModel, resolve

logger = logging.getLogger(__name__)


def _check_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


class Encoder:
    """Encode texts with a sentence-embedding model.

    Args:
        model: a registry name (``vecdoctor models``) or a local sentence-transformers folder.
        pooling: ``mean``, ``cls``, ``max``, ``subword``, ``attention`` (or ``native`` for models
            that only output pooled vectors); defaults to the model's own pooling.
        max_length: tokens per model input including special tokens; defaults to the model's.
        window: split texts longer than ``max_length`` into token windows (see :class:`Window`).
        normalize: L2-normalise the output vectors.
        cache: a :class:`VectorCache`, a folder for an on-disk cache, or ``None``.
        batch_size: sequences per forward pass (also bounded by ``max_tokens``).
        max_tokens: padded tokens per forward pass; defaults to ``batch_size * max_length``,
            capped by the backend's own best size where it has one (OpenVINO: 4,096).
        backend: ``torch`` (default for PyTorch models), ``openvino`` or ``onnx`` (ONNX Runtime).
            A PyTorch model on ``openvino``/``onnx`` is converted once and kept in the models cache.
        precision: ``fp32`` (default), ``bf16`` (openvino) or ``int8`` (openvino, onnx).
        calibration_texts: int8 only: texts from your corpus to calibrate the quantization
            (a seeded sample of 300 is used); defaults to the built-in sample corpus.
    """

    def __init__(
        self,
        model: str = "minilm",
        pooling: Pooling | str | None = None,
        max_length: int | None = None,
        window: Window | str | None = None,
        normalize: bool = True,
        cache: VectorCache | str | Path | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        backend: str | None = None,
        max_tokens: int | None = None,
        precision: ModelPrecision | str | None = None,
        calibration_texts: Sequence[str] | None = None,
    ) -> None:
        self.resolved: ResolvedModel = resolve(model)
        self.model_id = self.resolved.id
        self.backend_name = backend or self.resolved.backend
        self.pooling: Pooling = Pooling.parse(pooling or self.resolved.default_pooling)
        self.window = Window.parse(window) if isinstance(window, str) else window
        self.normalize = bool(normalize)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.device = device
        limit = self.resolved.max_length
        if max_length is not None and (not isinstance(max_length, int) or max_length < 4):
            raise InputError(f"max_length must be an integer >= 4, got {max_length!r}")
        self.max_length = int(max_length or limit)
        self.max_tokens = max_tokens
        if calibration_texts is not None:
            calibration_texts = _check_texts(calibration_texts)
        self.backend: Any = load_backend(
            self.resolved, self.backend_name, device=device, precision=precision,
            calibration_texts=calibration_texts, max_length=self.max_length,
        )
        self.precision: ModelPrecision = getattr(self.backend, "precision", None) or ModelPrecision.parse(
            precision or self.resolved.precision or ModelPrecision.FP32
        )
        self.calibration: str | None = getattr(self.backend, "calibration", None)
        self._native = bool(getattr(self.backend, "native", False))
        if self._native:
            if self.pooling is not Pooling.NATIVE:
                raise InputError(
                    f"model {self.model_id!r} outputs pooled vectors only; pooling {self.pooling} "
                    "needs token states. Use pooling='native' or a PyTorch/ONNX model."
                )
            if self.window is not None:
                raise InputError(f"model {self.model_id!r} does not support token windows")
            self.tokenizer = None
        else:
            if self.pooling is Pooling.NATIVE:
                raise InputError(
                    f"pooling 'native' is only for models without token states; for {self.model_id!r} "
                    "choose mean, cls, max, subword or attention"
                )
            if self.pooling is Pooling.ATTENTION and not self.backend.supports_attention:
                raise InputError(
                    f"attention pooling needs attention weights, which this {self.backend_name} "
                    "graph does not return; use backend='torch', or a graph vecdoctor converted "
                    "(backend='openvino' or 'onnx' on a PyTorch model)"
                )
            if self.max_length > getattr(self.backend, "max_positions", 10**9):
                raise InputError(
                    f"max_length {self.max_length} exceeds the model's {self.backend.max_positions} positions"
                )
            self._tok = TextTokenizer(self.resolved.tokenizer_path, self.max_length)  # type: ignore[arg-type]
            self.tokenizer = self._tok.tokenizer
        self.dimension = int(self.backend.hidden_size)
        if isinstance(cache, (str, Path)):
            cache = VectorCache(folder=cache)
        self.cache: VectorCache | None = cache
        self.truncated_count = 0
        self.model_fingerprint = self.resolved.fingerprint
        self.fingerprint = self._config_fingerprint()

    # -- identity -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild an equivalent encoder with :meth:`from_config`."""
        return {
            "model": self.model_id,
            "model_fingerprint": self.model_fingerprint,
            "backend": self.backend_name,
            "precision": str(self.precision),
            "calibration": self.calibration,
            "pooling": str(self.pooling),
            "max_length": self.max_length,
            "window": self.window.to_dict() if self.window else None,
            "normalize": self.normalize,
            "dimension": self.dimension,
            "query_prefix": self.resolved.query_prefix,
            "document_prefix": self.resolved.document_prefix,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> Encoder:
        window = config.get("window")
        kwargs = {
            "model": config["model"],
            "pooling": config.get("pooling"),
            "max_length": config.get("max_length"),
            "window": Window(**window) if isinstance(window, dict) else window,
            "normalize": config.get("normalize", True),
            "backend": config.get("backend"),
            "precision": config.get("precision"),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def _config_fingerprint(self, leave_out: tuple[str, ...] = ()) -> str:
        return config_fingerprint(self.config(), leave_out)

    @property
    def cache_fingerprint(self) -> str:
        """What cache keys hash: the pipeline without normalisation (the cache holds vectors
        before L2 normalisation, so normalised and raw encoders of a model share entries)."""
        return self._config_fingerprint(leave_out=("normalize",))

    @property
    def _head_fingerprint(self) -> str:
        # A text's first token window is exactly its input without windows: same cache entry.
        return self._config_fingerprint(leave_out=("normalize", "window"))

    @property
    def cache_stats(self) -> CacheStats:
        return self.cache.stats if self.cache is not None else CacheStats()

    def __repr__(self) -> str:
        return (
            f"Encoder(model={self.model_id!r}, pooling={str(self.pooling)!r}, "
            f"max_length={self.max_length}, window={self.window}, backend={self.backend_name!r}, "
            f"precision={str(self.precision)!r})"
        )

    # -- public encoding ----------------------------------------------------------------------
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Vectors for ``texts`` as a (n, d) float32 array, in input order, no prefix added."""
        return self._encode(_check_texts(texts), role=None, show_progress=show_progress)

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Like :meth:`encode`, with the model's query prefix (e.g. E5's ``query: ``)."""
        return self._encode(_check_texts(texts), role=Role.QUERY, show_progress=show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Like :meth:`encode`, with the model's document prefix (e.g. E5's ``passage: ``)."""
        return self._encode(_check_texts(texts), role=Role.DOCUMENT, show_progress=show_progress)

    def chunk_window(self) -> Window:
        """The token windows :meth:`encode_chunks` cuts: the encoder's own window, or windows as
        long as the model input with half of each shared with the next."""
        self._require_tokens("chunk-level retrieval")
        budget = self.max_length - self._tok.n_lead - self._tok.n_trail
        if self.window is None:
            return Window(size=budget, stride=max(budget // 2, 1), reduce=Reduce.MAX)
        if self.window.size > budget:
            raise InputError(
                f"chunk window of {self.window.size} tokens is longer than model "
                f"{self.model_id!r} reads ({budget} content tokens at max_length "
                f"{self.max_length}); use a window of at most {budget}, e.g. "
                f"{budget}:{budget // 2}"
            )
        return self.window

    def encode_chunks(
        self, texts: Sequence[str], show_progress: bool = False, block: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every token window of every document as its own vector (with the document prefix).

        Returns ``(vectors, owners)``: one row per chunk, in document order and, within a
        document, in text order; ``owners[i]`` is the position of chunk ``i``'s text. A text
        that fits the model input is one chunk. With a cache, a text's head chunk (what the
        plain encoder reads) comes from the cache when the plain pipeline encoded it already.
        """
        texts = _check_texts(texts)
        window = self.chunk_window()
        prefix = self._prefix(Role.DOCUMENT)
        parts: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        bar = _progress(len(texts), show_progress)
        for start in range(0, len(texts), block):
            part = [prefix + t for t in texts[start : start + block]]
            seqs, _ = self._tok.sequences(part, window)
            parts.append(self._pool_with_heads(seqs, part, window))
            owners.append(np.array([start + s.owner for s in seqs], dtype=np.int64))
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
        if not parts:
            return np.zeros((0, self.dimension), np.float32), np.zeros(0, np.int64)
        vectors = np.concatenate(parts)
        return (_l2(vectors) if self.normalize else vectors), np.concatenate(owners)

    def _prefix(self, role: Role | None) -> str:
        if role is Role.QUERY:
            return self.resolved.query_prefix
        if role is Role.DOCUMENT:
            return self.resolved.document_prefix
        return ""

    def _encode(self, texts: list[str], role: Role | None, show_progress: bool) -> np.ndarray:
        n = len(texts)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        prefix = self._prefix(role)
        keyed = [prefix + t for t in texts]
        todo = list(range(n))
        keys: list[str] = []
        if self.cache is not None:
            fingerprint = self.cache_fingerprint
            keys = [cache_key(fingerprint, t) for t in keyed]
            cached = self.cache.get_many(keys)
            todo = []
            for i, vec in enumerate(cached):
                if vec is None:
                    todo.append(i)
                else:
                    out[i] = vec
        if todo:
            # batches are cut from length-sorted chunks (less padding); with a bar, smaller
            # chunks so that it moves every few batches
            chunk = max(self.batch_size * 8, 256) if show_progress else max(self.batch_size * 32, 1024)
            bar = _progress(len(todo), show_progress)
            for start in range(0, len(todo), chunk):
                idx = todo[start : start + chunk]
                if self._native:
                    vecs = self.backend.encode([texts[i] for i in idx], is_query=role is Role.QUERY)
                else:
                    vecs = self._encode_token_texts([keyed[i] for i in idx])
                out[idx] = vecs
                if self.cache is not None:
                    self.cache.put_many([keys[i] for i in idx], vecs)
                if bar is not None:
                    bar.update(len(idx))
            if bar is not None:
                bar.close()
        return _l2(out) if self.normalize else out

    def _encode_token_texts(self, texts: list[str]) -> np.ndarray:
        """Pooled (not normalised) vectors, one per text, windows reduced."""
        seqs, truncated = self._tok.sequences(texts, self.window)
        if truncated.any():
            # INFO for a batch of several texts; one query at a time logs at DEBUG, else a
            # latency loop repeats the same line for every long query
            level = logging.INFO if len(texts) > 1 else logging.DEBUG
            self.truncated_count += int(truncated.sum())
            logger.log(
                level,
                "%d of %d texts were longer than %d tokens and were truncated "
                "(use a window to keep the rest)",
                int(truncated.sum()), len(texts), self.max_length,
            )
        pooled = self._pool_with_heads(seqs, texts)
        if len(seqs) == len(texts):
            return pooled
        return self._reduce(seqs, pooled, len(texts))

    def _pool_with_heads(
        self, seqs: list[TokenSeq], texts: list[str], window: Window | None = None
    ) -> np.ndarray:
        """Pool ``seqs`` cut with ``window`` (default: the encoder's); with a cache, every window
        is looked up first and the new ones are kept.

        The head is the one input the same encoder without windows would see (a text that fits,
        or the first window when windows are as long as the model input), so the windowed (or
        chunked) and the plain pipeline share its vector instead of encoding it twice. Every
        other window is kept under the text, the window's size and stride and its position, so
        a chunk index built again over the same texts (the checkup builds one per step) encodes
        nothing twice.
        """
        window = window or self.window
        if window is None or self.cache is None:
            return self._pool_sequences(seqs)
        budget = self.max_length - self._tok.n_lead - self._tok.n_trail
        full_windows = window.size >= budget
        counts = np.bincount([s.owner for s in seqs], minlength=len(texts))
        head_fp = self._head_fingerprint
        tail_fp = f"{self.cache_fingerprint}|windows {window.size}:{window.stride}"
        position: dict[int, int] = {}
        keys = []
        for s in seqs:
            k = position.get(s.owner, 0)
            position[s.owner] = k + 1
            head = k == 0 and (full_windows or counts[s.owner] == 1)
            keys.append(cache_key(head_fp, texts[s.owner]) if head
                        else cache_key(f"{tail_fp}|{k}", texts[s.owner]))
        found = self.cache.get_many(keys)
        pooled = np.zeros((len(seqs), self.dimension), dtype=np.float32)
        rest = [j for j, vec in enumerate(found) if vec is None]
        for j, vec in enumerate(found):
            if vec is not None:
                pooled[j] = vec
        if rest:
            pooled[rest] = self._pool_sequences([seqs[j] for j in rest])
            self.cache.put_many([keys[j] for j in rest], pooled[rest])
        return pooled

    def _pool_sequences(self, seqs: list[TokenSeq]) -> np.ndarray:
        lengths = np.array([len(s) for s in seqs])
        budget = self.max_tokens or min(self.batch_size * self.max_length,
                                        getattr(self.backend, "tokens_per_pass", None) or 1 << 62)
        pooled = np.zeros((len(seqs), self.dimension), dtype=np.float32)
        want_attention = self.pooling is Pooling.ATTENTION
        plan = plan_batches(lengths, self.batch_size, budget)
        batches = [self._tok.pad([seqs[i] for i in batch_idx]) for batch_idx in plan]
        outputs = self._forwards(batches, want_attention)
        for batch_idx, batch, out in zip(plan, batches, outputs, strict=True):
            pooled[batch_idx] = pool(
                self.pooling,
                out.states,
                batch.attention_mask,
                word_ids=batch.word_ids,
                special=batch.special,
                first_attention=out.first_attention,
            )
        return pooled

    def _forwards(self, batches: list[Batch], attention: bool) -> Iterator[ForwardOutput]:
        """The backend's output for each batch, in order; several passes at a time where the
        backend can run them side by side (OpenVINO's throughput streams)."""
        many = getattr(self.backend, "forward_many", None)
        if many is None or attention or len(batches) < 2:
            return (self.backend.forward(b.input_ids, b.attention_mask, attention=attention)
                    for b in batches)
        return iter(many((b.input_ids, b.attention_mask) for b in batches))

    def _reduce(self, seqs: list[TokenSeq], pooled: np.ndarray, n: int) -> np.ndarray:
        """Combine window vectors per text: max, or mean weighted by window token count."""
        owners = np.array([s.owner for s in seqs])
        weights = np.array([len(s) for s in seqs], dtype=np.float32)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        reduce = self.window.reduce if self.window else Reduce.MEAN
        if reduce is Reduce.MAX:
            out.fill(-np.inf)
            np.maximum.at(out, owners, pooled)
        else:
            np.add.at(out, owners, pooled * weights[:, None])
            out /= np.bincount(owners, weights=weights, minlength=n)[:, None]
        return out

    # -- inspection helpers used by diagnostics and rerankers ---------------------------------
    def _require_tokens(self, what: str) -> None:
        if self._native:
            raise InputError(f"{what} needs token states, which model {self.model_id!r} does not expose")

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts including special tokens, before any truncation."""
        texts = _check_texts(texts)
        if self._native:
            return np.array([self.backend.token_count(t) for t in texts], dtype=np.int64)
        return self._tok.lengths(texts)

    def _forward_texts(self, texts: list[str], **flags: bool) -> list[tuple[Batch, ForwardOutput, int]]:
        seqs, _ = self._tok.sequences(texts, None)
        results = []
        for batch_idx in plan_batches(np.array([len(s) for s in seqs]), self.batch_size, None):
            batch = self._tok.pad([seqs[i] for i in batch_idx])
            out = self.backend.forward(batch.input_ids, batch.attention_mask, **flags)
            for row, i in enumerate(batch_idx):
                results.append((i, out, row, batch))
        results.sort(key=lambda r: r[0])
        return [(r[3], r[1], r[2]) for r in results]

    def token_embeddings(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, its last-layer token states (L_i, d) without padding (truncated texts)."""
        self._require_tokens("token_embeddings")
        out = []
        for batch, fwd, row in self._forward_texts(_check_texts(texts)):
            n = int(batch.lengths[row])
            out.append(fwd.states[row, :n].copy())
        return out

    def first_token_attention(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, last-layer attention from the first token over its positions (mean of heads)."""
        self._require_tokens("first_token_attention")
        if not self.backend.supports_attention:
            raise InputError(f"the {self.backend_name} backend does not return attention weights")
        out = []
        for batch, fwd, row in self._forward_texts(_check_texts(texts), attention=True):
            n = int(batch.lengths[row])
            a = fwd.first_attention[row, :n]  # type: ignore[index]
            out.append((a / a.sum()).astype(np.float32))
        return out

    def layer_embeddings(self, texts: Sequence[str], pooling: Pooling | str = "mean") -> np.ndarray:
        """(n_layers + 1, n, d) pooled, unnormalised vectors of every hidden layer."""
        self._require_tokens("layer_embeddings")
        if not self.backend.supports_layers:
            raise InputError(f"the {self.backend_name} backend does not return hidden layers")
        mode = Pooling.parse(pooling)
        if mode is Pooling.ATTENTION:
            raise InputError("layer_embeddings supports mean, cls, max and subword pooling")
        texts = _check_texts(texts)
        result: np.ndarray | None = None
        for i, (batch, fwd, row) in enumerate(self._forward_texts(texts, layers=True)):
            layers = fwd.layers or []
            if result is None:
                result = np.zeros((len(layers), len(texts), self.dimension), dtype=np.float32)
            sl = slice(row, row + 1)
            for li, h in enumerate(layers):
                result[li, i] = pool(mode, h[sl], batch.attention_mask[sl], word_ids=batch.word_ids[sl])[0]
        assert result is not None
        return result


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="encoding", leave=False)


def as_encoder(encoder: Any) -> Any:
    """An :class:`Encoder` from what a store or a job accepts: a registry name or model path, an
    encoder config (:meth:`Encoder.config`, as saved with an index), or an encoder itself."""
    if isinstance(encoder, str):
        return Encoder(encoder)
    if isinstance(encoder, dict):
        return Encoder.from_config(encoder)
    return encoder
