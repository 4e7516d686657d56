"""Text for fine-tuning: local files or ``datasets`` directories in, token windows out.

Everything is local. A dataset is a JSONL/JSON file of records, a plain text file, a CSV or
Parquet file (read with ``datasets``), or a directory written by ``Dataset.save_to_disk``;
with nothing given, the short corpus shipped in ``peft_core.data`` is used. Records are
tokenized and packed into one token stream (documents separated by the EOS token), and
training batches are random windows of that stream: no padding, so every token of every
batch counts, which is what makes a tiny run show a clean loss curve.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, LoadError

#: record fields tried, in order, when ``text_field`` is not given
TEXT_FIELDS = ("text", "content")
PAIR_FIELDS = (("prompt", "completion"), ("instruction", "output"), ("question", "answer"))


def embedded_corpus() -> str:
    """The small text shipped with peft-core, so the default run needs no data at all."""
    return resources.files("peft_core.data").joinpath("tiny_corpus.txt").read_text(encoding="utf-8")


def record_text(record: dict[str, Any], text_field: str | None, where: str) -> str:
    """The training text of one record: ``text_field``, else ``text``, else ``prompt + completion`` …"""
    if text_field is not None:
        if text_field not in record:
            raise ConfigError(f"{where}: a record has no field {text_field!r} (fields: {sorted(record)}); fix --text-field.")
        return str(record[text_field])
    for name in TEXT_FIELDS:
        if name in record:
            return str(record[name])
    for first, second in PAIR_FIELDS:
        if first in record and second in record:
            return f"{record[first]}{record[second]}"
    raise ConfigError(
        f"{where}: cannot tell which field holds the text (fields: {sorted(record)}); pass --text-field NAME, "
        f"or use one of {list(TEXT_FIELDS)} or a pair {[f'{a}+{b}' for a, b in PAIR_FIELDS]}."
    )


@dataclass
class TextSplits:
    """Training texts and, when the dataset has its own, evaluation texts."""

    train: list[str]
    eval: list[str] | None
    source: str


def load_texts(path: str | None, text_field: str | None = None) -> TextSplits:
    """Read the texts of a local dataset (see the module docstring for the accepted forms)."""
    if path is None:
        return TextSplits([embedded_corpus()], None, "embedded corpus (peft_core/data/tiny_corpus.txt)")
    p = Path(path)
    if not p.exists():
        raise LoadError(f"dataset {path!r} does not exist; pass a local .jsonl/.json/.txt/.csv/.parquet file or a "
                        "directory written by datasets' save_to_disk (peft-core never downloads data).")
    if p.is_dir():
        return _from_datasets_dir(p, text_field)
    suffix = p.suffix.lower()
    if suffix in (".txt", ".md", ".text"):
        return TextSplits([p.read_text(encoding="utf-8")], None, str(p))
    if suffix in (".jsonl", ".json"):
        return TextSplits([record_text(r, text_field, str(p)) for r in _json_records(p)], None, str(p))
    if suffix in (".csv", ".parquet"):
        import datasets

        with tempfile.TemporaryDirectory(prefix="peft-core-ds-") as cache:
            reader = datasets.Dataset.from_csv if suffix == ".csv" else datasets.Dataset.from_parquet
            ds = reader(str(p), cache_dir=cache, keep_in_memory=True)
            return TextSplits(_dataset_texts(ds, text_field, str(p)), None, str(p))
    raise ConfigError(f"dataset {path!r}: unknown file type {suffix!r}; use .jsonl, .json, .txt, .csv or .parquet.")


def _json_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path}: not valid JSON Lines ({exc}); each line must be one JSON object.") from None
    if not records or not all(isinstance(r, dict) for r in records):
        raise LoadError(f"{path}: expected one JSON object per line (e.g. {{\"text\": \"...\"}}).")
    return records


def _dataset_texts(ds: Any, text_field: str | None, where: str) -> list[str]:
    if text_field is None:
        names = set(ds.column_names)
        text_field = next((n for n in TEXT_FIELDS if n in names), None)
    if text_field is not None and text_field in ds.column_names:
        return [str(t) for t in ds[text_field]]
    return [record_text(r, text_field, where) for r in ds]


def _from_datasets_dir(path: Path, text_field: str | None) -> TextSplits:
    if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise LoadError(f"{path} is a directory but not one written by datasets' save_to_disk; pass a data file instead.")
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        train_name = "train" if "train" in loaded else next(iter(loaded))
        eval_name = next((n for n in ("validation", "eval", "test") if n in loaded and n != train_name), None)
        train = _dataset_texts(loaded[train_name], text_field, f"{path}[{train_name}]")
        held = _dataset_texts(loaded[eval_name], text_field, f"{path}[{eval_name}]") if eval_name else None
        return TextSplits(train, held, f"{path} (splits: {train_name}" + (f", {eval_name})" if eval_name else ")"))
    return TextSplits(_dataset_texts(loaded, text_field, str(path)), None, str(path))


# -- tokenizers --------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int = 512) -> Any:
    """A small byte-level BPE tokenizer trained on ``texts`` (no download; seconds at most).

    Byte-level, so any text can be encoded later; wrapped in ``PreTrainedTokenizerFast`` so
    ``save_pretrained``/``AutoTokenizer`` work on it like on any Hub tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def token_stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """All texts tokenized and concatenated, separated by the EOS token when there is one."""
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None and len(texts) > 1:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


@dataclass
class TokenData:
    """Token streams to draw training windows from and to evaluate on."""

    train: torch.Tensor
    eval: torch.Tensor
    seq_len: int

    @classmethod
    def build(cls, tokenizer: Any, splits: TextSplits, seq_len: int, eval_fraction: float) -> TokenData:
        """Tokenize; without an eval split, hold out the last ``eval_fraction`` of the stream."""
        train = token_stream(tokenizer, splits.train)
        if splits.eval is not None:
            held = token_stream(tokenizer, splits.eval)
        else:
            if not 0.0 < eval_fraction < 1.0:
                raise ConfigError(f"--eval-fraction must be in (0, 1), got {eval_fraction}.")
            cut = int(len(train) * (1.0 - eval_fraction))
            train, held = train[:cut], train[cut:]
        seq_len = min(seq_len, len(train) - 1)
        if seq_len < 2:
            raise ConfigError(f"the training data has only {len(train)} tokens; use more text.")
        if len(held) < 2:
            raise ConfigError("the evaluation split has fewer than 2 tokens; raise --eval-fraction or add an eval split.")
        return cls(train, held, seq_len)

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` random windows of ``seq_len`` tokens (inputs double as labels)."""
        starts = torch.randint(0, len(self.train) - self.seq_len + 1, (batch_size,), generator=generator)
        return torch.stack([self.train[s : s + self.seq_len] for s in starts.tolist()])

    def eval_batches(self, batch_size: int, max_windows: int = 64) -> list[torch.Tensor]:
        """Fixed, non-overlapping windows of the eval stream, so eval losses are comparable over time."""
        length = min(self.seq_len, len(self.eval))
        windows = [self.eval[s : s + length] for s in range(0, len(self.eval) - length + 1, length)][:max_windows]
        return [torch.stack(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
