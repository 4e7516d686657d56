"""``PrefixEncoder``: the prefix of every layer's keys and values, optionally through a projection MLP."""

from __future__ import annotations

import torch
from torch import nn

from peft_core.prompt import PAST_KEY_VALUES, PromptEncoder

from .config import PrefixTuningConfig


class PrefixEncoder(PromptEncoder):
    """Output ``(batch, num_virtual_tokens, num_layers · 2 · token_dim)``: a key and a value per layer."""

    injects = PAST_KEY_VALUES

    def __init__(self, config: PrefixTuningConfig) -> None:
        super().__init__()
        width = config.num_layers * 2 * config.token_dim
        # loaded for inference, the saved (already projected) prefix is all there is
        self.prefix_projection = config.prefix_projection and not config.inference_mode
        if self.prefix_projection:
            self.embedding = nn.Embedding(config.num_virtual_tokens, config.token_dim)
            self.transform = nn.Sequential(
                nn.Linear(config.token_dim, config.encoder_hidden_size),
                nn.Tanh(),
                nn.Linear(config.encoder_hidden_size, width),
            )
            last = self.transform[-1]
        else:
            self.embedding = nn.Embedding(config.num_virtual_tokens, width)
            last = self.embedding
        if config.init_weights == "zero":  # a zero prefix: keys and values that start as no-ops
            with torch.no_grad():
                for param in last.parameters():
                    param.zero_()

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        prefix = self.embedding(indices)
        return self.transform(prefix) if self.prefix_projection else prefix
