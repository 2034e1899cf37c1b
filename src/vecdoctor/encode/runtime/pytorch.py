"""PyTorch runtime: transformers' AutoModel (SDPA attention; eager when attentions are needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vecdoctor.encode.runtime.base import ForwardOutput
from vecdoctor.folders import library_errors
from vecdoctor.models import ResolvedModel, check_model_config


class TorchBackend:
    """transformers AutoModel in PyTorch (SDPA attention; eager when attentions are needed)."""

    name = "torch"
    supports_attention = True
    supports_layers = True

    def __init__(self, model: ResolvedModel, device: str = "cpu") -> None:
        import torch  # noqa: F401
        from transformers import AutoModel

        self._path = model.path
        self._device = device
        with library_errors(
            model.path,
            "a model (its weights)",
            "give a complete sentence-transformers folder (config.json and model.safetensors)",
        ):
            # no weights, weights of another shape, a pickled checkpoint torch refuses to unpickle
            # as weights (weights_only): never a traceback, never code run from the folder
            check_model_config(model.path)
            self.model = AutoModel.from_pretrained(str(model.path)).to(device).eval()
        self._eager = None
        self.hidden_size = int(self.model.config.hidden_size)
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 512))
        self._type_vocab = int(getattr(self.model.config, "type_vocab_size", 0) or 0)

    def _eager_model(self) -> Any:
        if self._eager is None:
            from transformers import AutoModel

            self._eager = (
                AutoModel.from_pretrained(str(self._path), attn_implementation="eager")
                .to(self._device)
                .eval()
            )
        return self._eager

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        attention: bool = False,
        layers: bool = False,
    ) -> ForwardOutput:
        import torch

        model = self._eager_model() if attention else self.model
        kwargs = {
            "input_ids": torch.from_numpy(input_ids).to(self._device),
            "attention_mask": torch.from_numpy(attention_mask).to(self._device),
        }
        if self._type_vocab:
            kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
        with torch.inference_mode():
            out = model(**kwargs, output_attentions=attention, output_hidden_states=layers)
        states = out.last_hidden_state.float().cpu().numpy()
        first = None
        if attention:
            first = out.attentions[-1][:, :, 0, :].mean(dim=1).float().cpu().numpy()
        hidden = [h.float().cpu().numpy() for h in out.hidden_states] if layers else None
        return ForwardOutput(states, first, hidden)
