"""The main job: LoRA fine-tune a tiny Llama (built from a config, no downloads) on embedded text.

Trains with a tqdm bar showing the falling loss, saves the adapter, reloads it into a fresh
base model, checks the reload gives the same logits, merges it, and prints a generation.
"""

from __future__ import annotations

import argparse
import tempfile
from importlib import resources

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from peft_core import LoraConfig, PeftModel, get_peft_model


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=None, help="where to save the adapter (default: a temp dir)")
    args = parser.parse_args()

    text = resources.files("peft_core.data").joinpath("tiny_corpus.txt").read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text])
    model = get_peft_model(tiny_llama(len(chars)), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                             task_type="CAUSAL_LM"))
    model.print_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    bar = tqdm(range(args.steps), desc="fine-tuning")
    first = None
    for _ in bar:
        starts = torch.randint(0, len(data) - 65, (8,), generator=gen)
        batch = torch.stack([data[s : s + 64] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = first if first is not None else loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    print(f"loss: {first:.3f} -> {loss.item():.3f}")

    out = args.out or tempfile.mkdtemp(prefix="peft-core-demo-")
    model.save_pretrained(out)
    print(f"adapter saved to {out}")
    model.eval()
    reloaded = PeftModel.from_pretrained(tiny_llama(len(chars)), out)
    probe = data[:32].unsqueeze(0)
    with torch.no_grad():
        diff = (model(input_ids=probe).logits - reloaded(input_ids=probe).logits).abs().max().item()
    print(f"reloaded adapter: max |logit difference| = {diff:.2e}")
    merged = reloaded.merge_and_unload()
    prompt = torch.tensor([[stoi[c] for c in "The miller "]])
    with torch.no_grad():
        tokens = merged.generate(prompt, max_new_tokens=60, do_sample=False, pad_token_id=0)
    print("generation:", "".join(chars[i] for i in tokens[0].tolist()))


if __name__ == "__main__":
    main()
