"""Prompt tuning's own behaviour: TEXT/SAMPLE_VOCAB init, several adapters, what it refuses, input plumbing."""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import VOCAB, tiny_bert, tiny_llama, token_batch
from peft_core.errors import ConfigError, UnsupportedOperation
from peft_core_prompt_tuning import PromptTuningConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real word-level tokenizer over the tiny vocabulary, saved locally (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(path)
    return str(path)


def _text_config(tokenizer_dir: str, n: int) -> PromptTuningConfig:
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, prompt_tuning_init="TEXT",
                              prompt_tuning_init_text="w5 w7 w9", tokenizer_name_or_path=tokenizer_dir)


def test_text_init_repeats_the_text_embeddings(tokenizer_dir):
    base = tiny_llama()
    rows = base.get_input_embeddings().weight.detach()[[5, 7, 9, 5, 7]]
    model = get_peft_model(base, _text_config(tokenizer_dir, 5))
    assert torch.equal(model.get_prompt_embedding_to_save("default"), rows)


def test_text_init_cuts_a_long_text(tokenizer_dir):
    base = tiny_llama()
    rows = base.get_input_embeddings().weight.detach()[[5, 7]]
    assert torch.equal(get_peft_model(base, _text_config(tokenizer_dir, 2)).get_prompt_embedding_to_save("default"), rows)


def test_text_init_needs_a_local_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer_name_or_path"):
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2, prompt_tuning_init="TEXT",
                           prompt_tuning_init_text="hello")
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2, prompt_tuning_init="TEXT",
                                prompt_tuning_init_text="hello", tokenizer_name_or_path=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="local tokenizer"):
        get_peft_model(tiny_llama(), config)


def test_sample_vocab_starts_from_vocabulary_rows():
    base = tiny_llama()
    vocab = base.get_input_embeddings().weight.detach()
    prompt = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                                     prompt_tuning_init="SAMPLE_VOCAB")).get_prompt_embedding_to_save("default")
    assert all(any(torch.equal(row, v) for v in vocab) for row in prompt)


def test_inputs_are_extended_for_the_virtual_tokens():
    """Logits gain n positions; labels are padded with -100 so the loss ignores the virtual tokens."""
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    ids = token_batch()
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert out.logits.shape[1] == ids.shape[1] + 3
    # the last virtual token predicts the first real one; earlier virtual positions carry label -100
    expected = torch.nn.functional.cross_entropy(out.logits[:, 2:-1].reshape(-1, VOCAB), ids.reshape(-1))
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_token_type_ids_are_padded_for_classification():
    torch.manual_seed(0)
    model = get_peft_model(tiny_bert(), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    ids = token_batch()
    zeros = model(input_ids=ids, token_type_ids=torch.zeros_like(ids)).logits
    assert torch.allclose(zeros, model(input_ids=ids).logits)
    assert not torch.allclose(zeros, model(input_ids=ids, token_type_ids=torch.ones_like(ids)).logits)


def test_several_adapters_switch_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    model.add_adapter("other", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    ids = token_batch()
    first = model(input_ids=ids).logits
    model.set_adapter("other")
    second = model(input_ids=ids).logits
    assert first.shape[1] == ids.shape[1] + 2 and second.shape[1] == ids.shape[1] + 4
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["base_model.prompt_encoder.other.embedding.weight"]
    with model.disable_adapter():
        assert torch.allclose(model(input_ids=ids).logits, tiny_llama()(input_ids=ids).logits)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    loaded.load_adapter(tmp_path / "other", "other")
    assert torch.allclose(loaded(input_ids=ids).logits, first)
    loaded.set_adapter("other")
    assert torch.allclose(loaded(input_ids=ids).logits, second)
    loaded.delete_adapter("default")
    assert list(loaded.prompt_encoder) == ["other"]


def test_refusals_say_why():
    model = get_peft_model(tiny_llama(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    for operation in (model.merge_and_unload, model.unload, model.merge_adapter):
        with pytest.raises(UnsupportedOperation, match="PROMPT_TUNING"):
            operation()
    from peft_core_prefix_tuning import PrefixTuningConfig

    with pytest.raises(UnsupportedOperation, match="same method"):
        model.add_adapter("prefix", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    with pytest.raises(ConfigError, match="task_type"):
        get_peft_model(tiny_llama(), PromptTuningConfig(num_virtual_tokens=2))
