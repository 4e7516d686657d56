"""What a saved adapter is, read from disk without loading its base: ``peft-core inspect``.

The weights file is read for its header only (names, shapes, dtypes), so inspecting an
adapter for a 70B model takes no memory. Whether the adapter *fits* its base model is
checked by building the base on the ``meta`` device (no weights, no memory), injecting
the adapter described by the config, and comparing the tensors the model expects with
the ones in the file — the same comparison ``PeftModel.from_pretrained`` makes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import CONFIG_NAME
from ..errors import LoadError, PeftCoreError
from ..serialization import DISK_PREFIX, weights_file
from ..tables import format_table


@dataclass
class TargetRow:
    module: str
    tensors: list[str]
    shapes: list[tuple[int, ...]]
    params: int
    rank: Any = None


@dataclass
class AdapterReport:
    path: Path
    config: dict[str, Any]
    weights: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    targets: list[TargetRow] = field(default_factory=list)
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (check, ok/warn/FAIL, detail)

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type"))

    @property
    def parameter_count(self) -> int:
        return sum(_numel(s) for s in self.shapes.values())

    @property
    def compatible(self) -> bool:
        return not any(status == "FAIL" for _, status, _ in self.checks)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def read_header(file: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor names, shapes and dtypes of a weights file, without reading the tensors (safetensors)."""
    if file.suffix == ".safetensors":
        with file.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        header.pop("__metadata__", None)
        return ({k: tuple(v["shape"]) for k, v in header.items()}, {k: v["dtype"] for k, v in header.items()})
    state = torch.load(str(file), map_location="meta", weights_only=True)
    return ({k: tuple(v.shape) for k, v in state.items()}, {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()})


def _method_spec(peft_type: str) -> Any:
    from ..plugins import registry

    return registry().get(peft_type) if peft_type in registry() else None


def group_targets(shapes: dict[str, tuple[int, ...]], prefix: str | None, config: dict[str, Any]) -> list[TargetRow]:
    """Group tensor names by the module they adapt: the path before the method's attribute prefix."""
    from ..targeting import pattern_value

    rows: dict[str, TargetRow] = {}
    for key, shape in shapes.items():
        path = key.removeprefix(DISK_PREFIX)
        parts = path.split(".")
        cut = next((i for i, p in enumerate(parts) if prefix and p.startswith(prefix)), None)
        if cut is None:  # a full copy (modules_to_save) or a trained base parameter (bias)
            cut = parts.index("base_layer") if "base_layer" in parts else len(parts) - 1
        module, attr = ".".join(parts[:cut]) or "(model)", ".".join(parts[cut:])
        row = rows.setdefault(module, TargetRow(module, [], [], 0))
        row.tensors.append(attr)
        row.shapes.append(shape)
        row.params += _numel(shape)
    if isinstance(config.get("r"), int):
        for row in rows.values():
            row.rank = pattern_value(config.get("rank_pattern") or {}, row.module, config["r"])
    return list(rows.values())


def inspect_adapter(path: str | Path, base: str | None = None, check_base: bool = True) -> AdapterReport:
    """Read an adapter directory and check it against its method plugin and (if local) its base model."""
    directory = Path(path)
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise LoadError(f"no {CONFIG_NAME} in {str(directory)!r}; pass the directory save_pretrained wrote.")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    file = weights_file(directory)
    shapes, dtypes = read_header(file)
    report = AdapterReport(directory, config, file, shapes, dtypes)
    spec = _method_spec(str(config.get("peft_type")))
    report.targets = group_targets(shapes, spec.prefix if spec else None, config)
    _check_plugin(report, spec)
    _check_layout(report)
    parsed = _check_config(report, spec)
    if check_base:
        _check_base(report, parsed, base or config.get("base_model_name_or_path"))
    return report


def _check_plugin(report: AdapterReport, spec: Any) -> None:
    if spec is not None:
        report.checks.append(("method plugin", "ok", f"{spec.name} from {spec.distribution or spec.plugin_name}"))
        return
    from ..known import distribution_for_peft_type

    dist = distribution_for_peft_type(report.peft_type)
    hint = f"pip install {dist}" if dist else "no known plugin provides it"
    report.checks.append(("method plugin", "FAIL", f"{report.peft_type} is not installed ({hint})"))


def _check_layout(report: AdapterReport) -> None:
    odd = [k for k in report.shapes if not k.startswith("base_model.")]
    if odd:
        report.checks.append(("PEFT layout", "FAIL", f"keys outside 'base_model.': {odd[:3]}"))
    else:
        report.checks.append(("PEFT layout", "ok", f"{len(report.shapes)} tensors in {report.weights.name}, "
                                                   f"peft_version {report.config.get('peft_version', '?')}"))


def _check_config(report: AdapterReport, spec: Any) -> Any:
    if spec is None:
        return None
    from ..config import PeftConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = PeftConfig.from_dict(report.config, source=str(report.path / CONFIG_NAME))
        except PeftCoreError as exc:
            report.checks.append(("config", "FAIL", str(exc)))
            return None
    notes = "; ".join(str(w.message) for w in caught)
    report.checks.append(("config", "warn" if notes else "ok", notes or f"valid {type(parsed).__name__}"))
    return parsed


def _check_base(report: AdapterReport, config: Any, base: str | None) -> None:
    if config is None:
        return
    if not base or not (Path(base) / "config.json").is_file():
        report.checks.append(("base model", "warn", f"not checked: {base!r} is not a local model directory "
                                                    "(pass --base DIR)"))
        return
    try:
        expected = expected_shapes(base, config)
    except PeftCoreError as exc:
        report.checks.append(("base model", "FAIL", f"{base}: {exc}"))
        return
    except Exception as exc:  # a base transformers cannot build is a finding, not a crash
        report.checks.append(("base model", "FAIL", f"{base}: cannot build it ({type(exc).__name__}: {exc})"))
        return
    missing = sorted(set(expected) - set(report.shapes))
    extra = sorted(set(report.shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(report.shapes) if expected[k] != report.shapes[k])
    if missing or extra or wrong:
        parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in
                 ((missing, "missing"), (extra, "unexpected"), (wrong, "wrong shape")) if x]
        report.checks.append(("base model", "FAIL", f"{base}: " + ", ".join(parts)))
    else:
        report.checks.append(("base model", "ok", f"{base}: all {len(expected)} tensors fit"))


def expected_shapes(base: str, config: Any) -> dict[str, tuple[int, ...]]:
    """The adapter tensors (disk keys and shapes) a base model expects, built on ``meta``: no memory used."""
    from transformers import AutoConfig

    from ..model import get_peft_model
    from ..plugins import hook, registry
    from ..serialization import get_peft_model_state_dict
    from .models import auto_class_for

    model_config = AutoConfig.from_pretrained(base, local_files_only=True)
    task = getattr(config.task_type, "value", config.task_type)
    with torch.device("meta"):
        model = auto_class_for(task, config.auto_mapping).from_config(model_config)
        peft_model = get_peft_model(model, config.copy(inference_mode=True))
    state = get_peft_model_state_dict(peft_model)
    hook().peft_core_state_dict_post_load(spec=registry().for_config(config), config=config, adapter_name="default",
                                         model=peft_model.get_base_model(), state_dict=state)
    return {k: tuple(v.shape) for k, v in state.items()}


def render(report: AdapterReport) -> str:
    """The report as the command prints it: a summary, the targets table, the checks table."""
    c = report.config
    summary = [
        ("method", report.peft_type),
        ("task type", c.get("task_type") or "-"),
        ("base model", c.get("base_model_name_or_path") or "-"),
        ("targets", f"{len(report.targets)} modules"),
        ("parameters", f"{report.parameter_count:,d} ({', '.join(sorted(set(report.dtypes.values())))})"),
        ("file", f"{report.weights} ({report.weights.stat().st_size:,d} bytes)"),
    ]
    if "r" in c:
        summary.insert(4, ("rank r", f"{c['r']}" + (f" (rank_pattern: {c['rank_pattern']})" if c.get("rank_pattern") else "")))
    for key in ("lora_alpha", "alpha", "target_modules", "modules_to_save"):
        if c.get(key) not in (None, [], {}):
            summary.append((key, c[key]))
    rows = [(t.module, "-" if t.rank is None else t.rank, ", ".join(t.tensors),
             ", ".join("x".join(map(str, s)) for s in t.shapes), f"{t.params:,d}") for t in report.targets]
    verdict = "compatible" if report.compatible else "NOT compatible"
    return "\n\n".join([
        format_table(("adapter", str(report.path)), summary),
        format_table(("target module", "rank", "tensors", "shapes", "params"), rows),
        format_table(("check", "result", "detail"), report.checks) + f"\n\nverdict: {verdict}",
    ])
