"""Item 7: random and mutated configs and safetensors files never crash the loaders.

Every example must end in success or a :class:`PeftCoreError` — no other exception, no
crash, no hang (a per-example alarm fails the test). Reading a safetensors file must never
ask for more bytes than the file holds (the header's claimed sizes are validated first), and
safetensors' own loader only ever sees files that passed the header validator.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import struct
import tempfile
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peft_core import PeftConfig, PeftModel
from peft_core import serialization
from peft_core.conformance.models import mlp
from peft_core.errors import LoadError, PeftCoreError
from peft_core.serialization import load_peft_weights, validate_safetensors_header
from reliability_support import IDS, lora_model

FUZZ = settings(
    max_examples=max(30, settings().max_examples if settings().max_examples > 8 else 30),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ALARM_S = 20


@contextlib.contextmanager
def _no_hang():
    def fire(signum, frame):
        raise AssertionError(f"a loader ran for more than {ALARM_S} s (hang?)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(ALARM_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _guarded_reads(monkeypatch_target=serialization):
    """Fail if the loader reads more than the file size in one call, or calls safetensors unvalidated."""
    real_open, real_load = open, safetensors.torch.load_file

    class Reader:
        def __init__(self, fh, size):
            self._fh, self._size = fh, size

        def read(self, n=-1):
            assert n is None or n <= self._size + 8, f"asked to read {n} bytes of a {self._size}-byte file"
            return self._fh.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

    def spy_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Reader(fh, Path(file).stat().st_size) if "b" in mode and "r" in mode else fh

    def checked_load(filename, *args, **kwargs):
        try:
            validate_safetensors_header(filename)
        except LoadError as exc:
            raise AssertionError(f"safetensors' loader was reached with an invalid file: {exc}") from None
        return real_load(filename, *args, **kwargs)

    monkeypatch_target.open = spy_open
    safetensors.torch.load_file = checked_load
    try:
        yield
    finally:
        del monkeypatch_target.open
        safetensors.torch.load_file = real_load


def _outcome(fn):
    """Run ``fn``; return "ok" or "error" (a PeftCoreError); anything else fails the test."""
    with _no_hang(), _guarded_reads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except PeftCoreError:
            return "error"
    return "ok"


# -- a valid adapter to mutate -------------------------------------------------------------

_TEMPLATE = Path(tempfile.mkdtemp(prefix="peft_core_fuzz_template_"))
lora_model().save_pretrained(_TEMPLATE)
CONFIG = json.loads((_TEMPLATE / "adapter_config.json").read_text())
WEIGHTS = (_TEMPLATE / "adapter_model.safetensors").read_bytes()
HEADER_LEN = struct.unpack("<Q", WEIGHTS[:8])[0]
HEADER = json.loads(WEIGHTS[8 : 8 + HEADER_LEN])
DATA = WEIGHTS[8 + HEADER_LEN :]


def _adapter_dir(root: Path, config: bytes | None = None, weights: bytes | None = None) -> Path:
    (root / "adapter_config.json").write_bytes(config if config is not None else json.dumps(CONFIG).encode())
    (root / "adapter_model.safetensors").write_bytes(weights if weights is not None else WEIGHTS)
    return root


def _pack(header: object, data: bytes = DATA, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


# -- strategies ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["LORA", "lora", "CAUSAL_LM", "lin0", "(", "[a-", ".*", "all-linear", "default", "gaussian"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def mutated_configs(draw) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even an object, usually
    config = dict(CONFIG)
    for key in draw(st.lists(st.sampled_from(sorted(CONFIG)), max_size=4, unique=True)):
        if draw(st.booleans()):
            config[key] = draw(json_values)
        else:
            config.pop(key)
    for key in draw(st.lists(st.text(max_size=10), max_size=2)):
        config[key] = draw(json_values)
    return config


# -- configs -------------------------------------------------------------------------------


@FUZZ
@given(config=mutated_configs())
def test_mutated_configs_load_or_raise_peft_core_error(config):
    with tempfile.TemporaryDirectory() as tmp:
        root = _adapter_dir(Path(tmp), config=json.dumps(config, allow_nan=True).encode())
        _outcome(lambda: PeftConfig.from_pretrained(root))
        _outcome(lambda: PeftModel.from_pretrained(mlp(), root))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=80).map(str.encode),
                     st.integers(0, len(json.dumps(CONFIG))).map(lambda n: json.dumps(CONFIG).encode()[:n])))
def test_garbage_and_truncated_config_files(raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = _adapter_dir(Path(tmp), config=raw)
        assert _outcome(lambda: PeftConfig.from_pretrained(root)) in {"ok", "error"}
        _outcome(lambda: PeftModel.from_pretrained(mlp(), root))


# -- safetensors files ---------------------------------------------------------------------

DTYPES = sorted(serialization.SAFETENSORS_DTYPE_SIZES) + ["F4", "Q8", "", "f32", "C64"]
huge = st.integers(min_value=0, max_value=2**64 + 5)


@st.composite
def mutated_headers(draw) -> bytes:
    header = json.loads(json.dumps(HEADER))
    keys = [k for k in header if k != "__metadata__"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        entry = header[key]
        what = draw(st.sampled_from(["dtype", "shape", "offsets", "entry", "drop", "huge_shape"]))
        if what == "dtype":
            entry["dtype"] = draw(st.one_of(st.sampled_from(DTYPES), json_values))
        elif what == "shape":
            entry["shape"] = draw(st.one_of(st.lists(st.integers(-3, 2**40), max_size=4), json_values))
        elif what == "huge_shape":
            entry["shape"] = [2**31, 2**31, 2**20]
            entry["data_offsets"] = [0, 2**82]
        elif what == "offsets":
            entry["data_offsets"] = draw(st.one_of(st.lists(huge, min_size=2, max_size=2), json_values))
        elif what == "entry":
            header[key] = draw(json_values)
        else:
            del header[key]
    if draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    length = draw(st.one_of(st.none(), huge, st.just(2**63 - 1)))
    return _pack(header, length=length)


@st.composite
def corrupted_files(draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "length", "header", "garbage"]))
    data = bytearray(WEIGHTS)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, min(len(data) - 1, 8 + HEADER_LEN + 16)))
            data[pos] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "length":
        return struct.pack("<Q", draw(huge.filter(lambda n: n < 2**64))) + bytes(data[8:])
    if kind == "header":
        return draw(mutated_headers())
    return draw(st.binary(max_size=300))


@FUZZ
@given(blob=corrupted_files())
def test_corrupted_safetensors_load_or_raise_peft_core_error(blob):
    with tempfile.TemporaryDirectory() as tmp:
        root = _adapter_dir(Path(tmp), weights=blob)
        _outcome(lambda: load_peft_weights(root))
        _outcome(lambda: PeftModel.from_pretrained(mlp(), root))


@FUZZ
@given(dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
                              torch.int64, torch.uint8, torch.bool]),
       fill=st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e30]),
       reshape=st.booleans())
def test_valid_files_with_odd_dtypes_and_values(dtype, fill, reshape):
    state = safetensors.torch.load_file(str(_TEMPLATE / "adapter_model.safetensors"))
    odd = {}
    for key, value in state.items():
        value = torch.full_like(value, fill) if dtype.is_floating_point else torch.zeros_like(value)
        value = value.to(dtype)
        odd[key] = value.reshape(-1) if reshape else value
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        safetensors.torch.save_file(odd, str(root / "adapter_model.safetensors"), metadata={"format": "pt"})
        (root / "adapter_config.json").write_text(json.dumps(CONFIG))
        assert _outcome(lambda: load_peft_weights(root)) == "ok"  # well-formed files always read
        outcome = _outcome(lambda: PeftModel.from_pretrained(mlp(), root))
        assert outcome == ("error" if reshape else "ok")


# -- the header validator, case by case ----------------------------------------------------

BAD_HEADERS = {
    "length beyond file": _pack(HEADER, length=10**12),
    "length 2**64-1": _pack(HEADER, length=2**64 - 1),
    "short file": b"\x05\x00\x00",
    "header not an object": _pack([1, 2]),
    "header not json": struct.pack("<Q", 4) + b"{{{{" + DATA,
    "unknown dtype": _pack({k: {**v, "dtype": "F7"} if k != "__metadata__" else v for k, v in HEADER.items()}),
    "huge shape, tiny span": _pack({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}},
                                  data=b"\0" * 16),
    "offsets past the end": _pack({"x": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}},
                                 data=b"\0" * 16),
    "negative dim": _pack({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, data=b"\0" * 16),
    "overlapping tensors": _pack({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                  "y": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, data=b"\0" * 16),
    "gap at the end": _pack({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, data=b"\0" * 16),
    "bool dims": _pack({"x": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}, data=b"\0" * 16),
    "metadata not strings": _pack({"__metadata__": {"format": 1}, **{k: v for k, v in HEADER.items()
                                                                     if k != "__metadata__"}}),
}


@pytest.mark.parametrize("blob", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_header_validator_rejects_before_safetensors_sees_the_file(tmp_path, monkeypatch, blob):
    def never(*args, **kwargs):
        raise AssertionError("safetensors' loader was called on an unvalidated file")

    monkeypatch.setattr(safetensors.torch, "load_file", never)
    root = _adapter_dir(tmp_path, weights=blob)
    with pytest.raises(LoadError, match="not a valid safetensors file") as info:
        load_peft_weights(root)
    assert str(root / "adapter_model.safetensors") in str(info.value)


def test_header_validator_accepts_what_safetensors_writes(tmp_path):
    header = validate_safetensors_header(_TEMPLATE / "adapter_model.safetensors")
    assert header == HEADER
    empty = tmp_path / "empty.safetensors"
    safetensors.torch.save_file({"z": torch.zeros(0, 3), "a": torch.ones(2, dtype=torch.bfloat16)}, str(empty))
    assert set(validate_safetensors_header(empty)) >= {"z", "a"}
    loaded = PeftModel.from_pretrained(mlp(), _TEMPLATE)
    assert loaded(IDS).isfinite().all()
