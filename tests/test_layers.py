"""The package's layers (STYLE.md): cli > training > io > core > tasks, checked by import-linter's contracts."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml")], cwd=src, env=env, capture_output=True, text=True)


def test_the_package_keeps_its_layer_contracts():
    out = lint(ROOT / "src")
    assert out.returncode == 0, out.stdout[-3000:]
    assert out.stdout.count("KEPT") == 3


@pytest.mark.parametrize(("module", "wrong", "broken"), [
    ("core/plan.py", "from pipeline.training import stages", "layers"),
    ("core/memory.py", "import torch", "the core and the tasks import no torch"),
    ("tasks/classification.py", "import transformers", "the core and the tasks import no torch"),
    ("tasks/task.py", "from pipeline.core import plan", "layers"),
    ("io/data.py", "from pipeline.cli import app", "layers"),
])
def test_a_wrong_import_breaks_the_build(tmp_path, module, wrong, broken):
    """An import that crosses the wrong way fails the contracts (and so CI)."""
    shutil.copytree(ROOT / "src" / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "pipeline" / module
    path.write_text(path.read_text() + f"\n\ndef _wrong():\n    {wrong}\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout
