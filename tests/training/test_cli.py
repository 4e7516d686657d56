"""``peft-core train | inspect | merge | plot`` on the embedded default and on a saved model directory."""

from __future__ import annotations

import json

import pytest
import torch

from peft_core.cli import main
from peft_core.errors import ConfigError
from peft_core.plugins import registry
from peft_core.training.methods import build_config, from_cli, method_fields


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One short run on the embedded corpus with the tiny default Llama; shared by the tests below."""
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--out", str(run), "--steps", "60", "--eval-every", "30", "--quiet",
                 "--target-modules", "all-linear", "--r", "16", "--lora-alpha", "32", "--prompt", "The miller"])
    assert code == 0
    return run


def test_train_default_saves_adapter_log_and_the_loss_falls(default_run, capsys):
    run = default_run
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {p.name for p in (run / "adapter").iterdir()}
    assert (run / "base_model" / "config.json").is_file()
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["target_modules"]) == ("LORA", 16, 32, "all-linear")
    assert config["base_model_name_or_path"] == str((run / "base_model").resolve())
    lines = (run / "loss_log.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr,eval_loss,elapsed_s" and len(lines) == 1 + 61
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last_train_loss"] < summary["first_train_loss"] - 0.8, summary
    assert summary["last_eval_loss"] < summary["first_eval_loss"] - 0.5, summary
    verify = summary["verify"]
    assert verify["reload_max_logit_diff"] == 0.0
    assert verify["merge_max_logit_diff"] < 1e-4
    assert verify["generation"].startswith("The miller") and len(verify["generation"]) > len("The miller") + 5


def test_inspect_reports_method_targets_ranks_and_fit(default_run, capsys):
    assert main(["inspect", str(default_run / "adapter")]) == 0
    text = capsys.readouterr().out
    assert "LORA" in text and "verdict: compatible" in text
    assert "model.layers.1.mlp.down_proj" in text and "all 28 tensors fit" in text
    assert main(["inspect", str(default_run / "adapter"), "--json", "--no-base-check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compatible"] and len(report["targets"]) == 14
    assert {t["rank"] for t in report["targets"]} == {16}
    assert report["parameters"] == sum(t["params"] for t in report["targets"]) == 2 * 16 * (128 + 96 + 96 + 128 + 3 * 192)  # layers x r x sum(in + out)


def test_merge_writes_a_standalone_model(default_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from peft_core import PeftModel

    out = tmp_path / "merged"
    assert main(["merge", str(default_run / "base_model"), str(default_run / "adapter"), str(out),
                 "--prompt", "The baker"]) == 0
    printed = capsys.readouterr().out
    assert "generation: 'The baker" in printed
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in k for k in merged.state_dict())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(default_run / "base_model"),
                                          str(default_run / "adapter"))
    ids = torch.tensor([[5, 9, 40, 7, 100, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, reference(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert (out / "tokenizer.json").is_file()


def test_plot_writes_a_png(default_run, capsys):
    assert main(["plot", str(default_run)]) == 0
    png = default_run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny Llama directory with its own tokenizer, like a downloaded checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from peft_core.training.data import embedded_corpus, train_tokenizer

    path = tmp_path_factory.mktemp("model") / "tiny"
    tok = train_tokenizer([embedded_corpus()], vocab_size=300)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_train_on_a_model_directory_with_jsonl_and_method_options(model_dir, tmp_path, capsys):
    from peft_core.training.data import embedded_corpus

    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": line[:20], "completion": line[20:]})
                              for line in embedded_corpus().splitlines() if line))
    run = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--dataset", str(data), "--out", str(run), "--steps", "40",
                 "--eval-every", "0", "--quiet", "--no-verify", "--set", "r=4", "--target-modules", "q_proj,v_proj",
                 "--lora-dropout", "0.05", "--rank-pattern", '{"v_proj": 2}', "--use-rslora"]) == 0
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["rank_pattern"] == {"v_proj": 2} and config["use_rslora"] is True and config["lora_dropout"] == 0.05
    assert config["base_model_name_or_path"] == str(model_dir.resolve())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == str(data) and summary["last_eval_loss"] < summary["first_eval_loss"]
    capsys.readouterr()
    assert main(["inspect", str(run / "adapter"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compatible"]
    assert {t["module"].rsplit(".", 1)[1]: t["rank"] for t in report["targets"]} == {"q_proj": 4, "v_proj": 2}


def test_inspect_flags_an_adapter_that_does_not_fit_the_base(default_run, model_dir, capsys):
    # the default run's adapter was trained on a 64-wide model; model_dir is 48 wide
    assert main(["inspect", str(default_run / "adapter"), "--base", str(model_dir)]) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "wrong shape" in text and "verdict: NOT compatible" in text


def test_train_on_a_datasets_directory(model_dir, tmp_path):
    import datasets

    from peft_core.training.data import embedded_corpus

    lines = [line for line in embedded_corpus().splitlines() if line]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines[:-8]}),
                          "validation": datasets.Dataset.from_dict({"text": lines[-8:]})}).save_to_disk(tmp_path / "ds")
    run = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--dataset", str(tmp_path / "ds"), "--out", str(run),
                 "--steps", "3", "--quiet", "--no-verify"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "validation" in summary["dataset"] and summary["steps"] == 3
    assert summary["config"]["target_modules"] is not None  # LoRA's default targets for llama were filled in


def test_train_errors_say_what_to_do(tmp_path, capsys):
    assert main(["train", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "local model directory" in capsys.readouterr().err
    assert main(["train", "--r", "0", "--out", str(tmp_path / "r2"), "--quiet"]) == 1
    assert "r must be a positive integer" in capsys.readouterr().err
    assert main(["train", "--method", "nosuchmethod", "--out", str(tmp_path / "r3")]) == 1
    assert "no installed plugin provides method 'NOSUCHMETHOD'" in capsys.readouterr().err


def test_method_options_come_from_the_config_dataclass():
    spec = registry().get("LORA")
    fields = method_fields(spec.config_class)
    assert "r" in fields and "peft_type" not in fields and "base_model_name_or_path" not in fields
    assert from_cli("all-linear", fields["target_modules"]) == "all-linear"
    assert from_cli("q_proj", fields["target_modules"]) == ["q_proj"]
    assert from_cli(".*_proj", fields["target_modules"]) == ".*_proj"
    assert from_cli("gaussian", fields["init_lora_weights"]) == "gaussian"
    assert from_cli("false", fields["init_lora_weights"]) is False
    assert from_cli("0,1", fields["layers_to_transform"]) == [0, 1]
    assert from_cli("32", fields["lora_alpha"]) == 32 and from_cli("0.5", fields["lora_alpha"]) == 0.5
    with pytest.raises(ConfigError, match="not a field of LoraConfig"):
        build_config(spec, {"num_virtual_tokens": "8"})
    with pytest.raises(ConfigError, match="--bias 'sometimes'"):
        build_config(spec, {"bias": "sometimes"})


def test_train_load_in_4bit(model_dir, tmp_path):
    run = tmp_path / "q4"
    assert main(["train", "--model", str(model_dir), "--load-in-4bit", "--out", str(run), "--steps", "4",
                 "--eval-every", "0", "--quiet", "--target-modules", "all-linear", "--prompt", "The"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verify"]["reload_max_logit_diff"] == 0.0  # the adapter reloads onto a fresh 4-bit base
    assert "merge_max_logit_diff" not in summary["verify"]  # no requantizing merge check on a 4-bit base
    assert summary["last_train_loss"] == summary["last_train_loss"]  # finite, not NaN
