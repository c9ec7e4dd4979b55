"""The code keeps its shape: the import-linter contracts and mypy, as `make lint` runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.procs import ROOT

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(tool: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool)], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_views_actions_services_and_models_keep_their_layers_and_notify_imports_no_vendor():
    done = run("lint-imports")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_mypy_finds_no_type_errors():
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
