"""Tiny models built from configs — never downloaded — for tests and the conformance suite.

Each builder seeds torch so the same call gives the same weights, and returns the model in
eval mode. Sizes are the smallest that still exercise the real architecture (attention
with grouped KV heads, GPT-2's Conv1D, T5's relative attention).
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 97


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


class MLP(nn.Module):
    """Embedding → Linear → LayerNorm → Conv1d → Linear head: one of each plain layer kind."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, hidden: int = 24, n_out: int = 5) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lin0 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.conv1d = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.lin1 = nn.Linear(hidden, n_out)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.relu(self.lin0(self.emb(input_ids))))
        h = self.conv1d(h.transpose(1, 2)).transpose(1, 2)
        return self.lin1(torch.relu(h))


class ConvNet(nn.Module):
    """Conv2d → Conv2d → Linear over an image-like input, plus an Embedding for a class token."""

    def __init__(self, channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, 8, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, kernel_size=1)
        self.emb = nn.Embedding(n_classes, 8)
        self.head = nn.Linear(8, n_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(torch.relu(self.conv0(pixel_values))))
        h = h.mean(dim=(2, 3)) + self.emb(labels)
        return self.head(h)


def mlp(seed: int = 0) -> MLP:
    _seeded(seed)
    return MLP().eval()


def convnet(seed: int = 0) -> ConvNet:
    _seeded(seed)
    return ConvNet().eval()


def tiny_llama(seed: int = 0, **overrides) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    _seeded(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **overrides)
    return LlamaForCausalLM(config).eval()


def tiny_llama_seq_cls(seed: int = 0, num_labels: int = 3) -> nn.Module:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    _seeded(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         num_labels=num_labels, pad_token_id=0)
    return LlamaForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    _seeded(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_bert(seed: int = 0, num_labels: int = 2) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    _seeded(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


def tiny_t5(seed: int = 0) -> nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    _seeded(seed)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(config).eval()


def token_batch(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=gen)
