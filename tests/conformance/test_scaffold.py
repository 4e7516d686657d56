"""``peft-core new-method``: the generated package installs, is found by entry point, and passes the suite.

This is the issue's acceptance test for third-party methods: a package written outside
this repository, installed with pip, fully tested by ``peft-core conformance NAME`` with no
change to the core. The package is always uninstalled again, even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_core.cli import main
from peft_core.conformance import ConformanceError
from peft_core.conformance.scaffold import write_plugin

BIN = Path(sys.executable).parent


def test_writes_a_complete_package(tmp_path):
    root = write_plugin("my_method", tmp_path)
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert files == {"pyproject.toml", "README.md", "tests/test_conformance.py",
                     *(f"peft_core_my_method/{m}.py" for m in ("__init__", "config", "layer", "plugin", "conformance"))}
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "peft-core-my-method"' in pyproject
    assert 'my_method = "peft_core_my_method.plugin"' in pyproject
    assert 'parametrize_with_checks("MY_METHOD")' in (root / "tests/test_conformance.py").read_text()
    for file in root.rglob("*.py"):
        compile(file.read_text(), str(file), "exec")  # every module is valid Python
    assert "class MyMethodConfig(PeftConfig)" in (root / "peft_core_my_method/config.py").read_text()


def test_refuses_bad_names_and_existing_directories(tmp_path, capsys):
    with pytest.raises(ConformanceError, match="identifier"):
        write_plugin("9lives", tmp_path)
    with pytest.raises(ConformanceError, match="already installed"):
        write_plugin("lora", tmp_path)
    write_plugin("twice", tmp_path)
    assert main(["new-method", "twice", "--dir", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["new-method", "twice", "--dir", str(tmp_path), "--force"]) == 0


@pytest.mark.slow
def test_generated_plugin_installs_and_passes_the_suite(tmp_path):
    name = f"scaffold{os.getpid()}"
    root = write_plugin(name, tmp_path)
    env = {**os.environ, "PEFT_CORE_STRICT_PLUGINS": "1", "HYPOTHESIS_PROFILE": "ci"}
    pip = [str(BIN / "pip"), "-q", "--disable-pip-version-check"]
    try:
        subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(root)],
                       check=True, capture_output=True, text=True, timeout=300)
        listed = subprocess.run([str(BIN / "peft-core"), "methods"], env=env, capture_output=True, text=True,
                                timeout=300)
        assert name.upper() in listed.stdout, listed.stdout + listed.stderr
        run = subprocess.run([str(BIN / "peft-core"), "conformance", name.upper(), "--max-examples", "3"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        lines = [line for line in run.stdout.splitlines() if line.startswith("check_")]
        outcomes = [line.split(maxsplit=1)[1].strip() for line in lines]
        assert outcomes.count("passed") >= 20 and set(outcomes) <= {"passed", "not applicable"}, run.stdout
    finally:
        subprocess.run([*pip, "uninstall", "-y", f"peft-core-{name}"], capture_output=True, timeout=300)
    after = subprocess.run([str(BIN / "pip"), "show", f"peft-core-{name}"], capture_output=True, text=True)
    assert after.returncode != 0  # uninstalled again
