"""Parity helpers for prompt-learning plugins against Hugging Face PEFT (both ways, per task).

The three prompt-learning plugins compare themselves with ``peft`` on the same tiny models —
a Llama (causal LM, with ``generate``), a T5 (seq2seq, with ``generate``) and a BERT
(sequence classification) — so the round trip lives here once. Nothing here imports ``peft``
at module level; the caller passes PEFT's config object.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import models
from .parity import config_json, max_diff, perturb_trainable, saved_shapes

def _tiny_bert_for(class_name: str, num_labels: int = 3) -> Callable[[], nn.Module]:
    """A builder of a tiny BERT with another head (token classification, QA, bare encoder)."""
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=models.VOCAB, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                                         num_labels=num_labels)
        return getattr(transformers, class_name)(config).eval()

    return build


#: task → tiny model builder
BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "CAUSAL_LM": models.tiny_llama, "SEQ_2_SEQ_LM": models.tiny_t5, "SEQ_CLS": models.tiny_bert,
    "TOKEN_CLS": _tiny_bert_for("BertForTokenClassification"),
    "QUESTION_ANS": _tiny_bert_for("BertForQuestionAnswering", num_labels=2),
    "FEATURE_EXTRACTION": _tiny_bert_for("BertModel"),
}


def task_inputs(task: str) -> dict[str, torch.Tensor]:
    """A padded batch (the second row is shorter) for ``task``'s tiny model."""
    ids = models.token_batch(batch=2, length=6, seed=3)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in the second row: masks must be extended, not replaced
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = models.token_batch(batch=2, length=3, seed=4)
    return inputs


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The output compared: logits, QA start and end logits, or an encoder's last hidden state."""
    with torch.no_grad():
        out = model(**inputs)
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits])
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


def _generate(model: nn.Module, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=4, do_sample=False)
    return out.tolist()


def round_trip_both_ways(ours_config: Any, peft_config: Any, seed: int = 0) -> dict[str, Any]:
    """Build, perturb and save an adapter in each library and load it in the other.

    Returns the max abs logit differences (``peft_to_ours``, ``ours_to_peft``), whether
    greedy generations agree after each load (``None`` for classification), and the saved
    key shapes and configs of both files.
    """
    import peft

    from ..model import PeftModel, get_peft_model

    task = str(getattr(ours_config.task_type, "value", ours_config.task_type))
    build, inputs = BUILDERS[task], task_inputs(task)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        theirs_dir, ours_dir = Path(tmp) / "peft", Path(tmp) / "ours"
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(build(), peft_config).eval()
        perturb_trainable(theirs, seed + 1)
        theirs.save_pretrained(theirs_dir)
        loaded = PeftModel.from_pretrained(build(), theirs_dir)
        result["peft_to_ours"] = max_diff(_logits(loaded, inputs), _logits(theirs, inputs))

        torch.manual_seed(seed)
        ours = get_peft_model(build(), ours_config).eval()
        perturb_trainable(ours, seed + 1)
        ours.save_pretrained(ours_dir)
        loaded_theirs = peft.PeftModel.from_pretrained(build(), ours_dir)
        result["ours_to_peft"] = max_diff(_logits(loaded_theirs, inputs), _logits(ours, inputs))
        result["generate_same"] = None
        if task in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):
            result["generate_same"] = (_generate(loaded, inputs) == _generate(theirs, inputs)
                                       and _generate(loaded_theirs, inputs) == _generate(ours, inputs))
        result["shapes"] = (saved_shapes(theirs_dir), saved_shapes(ours_dir))
        result["configs"] = (config_json(theirs_dir), config_json(ours_dir))
    return result


def same_config(theirs: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Configs equal apart from ``peft_version`` and repeated ``modules_to_save`` entries (PEFT lists heads twice)."""
    def norm(data: dict[str, Any]) -> dict[str, Any]:
        data = {k: v for k, v in data.items() if k != "peft_version"}
        if isinstance(data.get("modules_to_save"), list):
            data["modules_to_save"] = sorted(set(data["modules_to_save"]))
        return data

    return norm(theirs) == norm(ours)


def training_losses(model: nn.Module, task: str, steps: int = 5, lr: float = 1e-3) -> list[float]:
    """Cross-entropy losses (labels given) over a few Adam steps of the trainable parameters."""
    inputs = dict(task_inputs(task))
    if task == "SEQ_CLS":
        inputs["labels"] = torch.tensor([0, 1])
    elif task == "SEQ_2_SEQ_LM":
        inputs.pop("decoder_input_ids")
        inputs["labels"] = models.token_batch(batch=2, length=3, seed=5)
    else:
        inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
