"""``PromptEncoder``: P-tuning's reparameterization network (PEFT's attribute names)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from peft_core.modules import autocast_enabled
from peft_core.prompt import EMBEDDINGS
from peft_core.prompt import PromptEncoder as BasePromptEncoder

from .config import PromptEncoderConfig, PromptEncoderReparameterizationType

#: the MLP always has three linear layers; PEFT warns that encoder_num_layers is then ignored
MLP_LAYERS = 2


class PromptEncoder(BasePromptEncoder):
    """Embeddings → (bidirectional LSTM →) MLP → prompt of ``token_dim`` per virtual token.

    Loaded for inference, only ``embedding`` exists: it holds the materialized prompt that
    was saved, so the network is not needed (nor rebuilt, as in PEFT).
    """

    injects = EMBEDDINGS

    def __init__(self, config: PromptEncoderConfig) -> None:
        super().__init__()
        dim, hidden = config.token_dim, config.encoder_hidden_size
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(config.num_virtual_tokens * config.num_transformer_submodules, dim)
        if config.inference_mode:
            return
        if self.encoder_type == PromptEncoderReparameterizationType.LSTM:
            self.lstm_head = nn.LSTM(input_size=dim, hidden_size=hidden, num_layers=config.encoder_num_layers,
                                     dropout=config.encoder_dropout, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, dim))
        else:
            if config.encoder_num_layers != MLP_LAYERS:
                warnings.warn(f"encoder_num_layers={config.encoder_num_layers} is ignored for the MLP encoder "
                              "(it always has three linear layers); it shapes the LSTM only.", UserWarning,
                              stacklevel=2)
            self.mlp_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, dim))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        embeds = self.embedding(indices)
        if self.encoder_type == PromptEncoderReparameterizationType.LSTM:
            embeds = self._lstm(embeds)
        return self.mlp_head(embeds)

    def _lstm(self, embeds: torch.Tensor) -> torch.Tensor:
        """The LSTM in its own dtype: CPU autocast to bfloat16 has no oneDNN LSTM kernel and fails.

        Elsewhere (CUDA autocast, no autocast) the LSTM runs as it always does.
        """
        device = embeds.device.type
        if device != "cpu" or not autocast_enabled(device):
            return self.lstm_head(embeds)[0]
        with torch.autocast(device, enabled=False):
            return self.lstm_head(embeds.to(self.lstm_head.weight_ih_l0.dtype))[0]
