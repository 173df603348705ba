"""The layer contracts in pyproject.toml hold, and they do catch an import that points upward."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(layer_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=layer_root, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers() -> None:
    result = lint(REPO / "layers" / "common")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "layers" / "common" / "chatcore", tmp_path / "chatcore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    registry = tmp_path / "chatcore" / "routing" / "registry.py"
    registry.write_text(registry.read_text() + "\nfrom chatcore.api import app as _upward  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "chatcore.routing.registry" in result.stdout
