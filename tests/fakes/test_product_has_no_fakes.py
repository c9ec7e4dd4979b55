"""The fakes of outside platforms are no part of the product: not in its wheel, never imported by it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.procs import ROOT, build_wheel

pytestmark = pytest.mark.slow  # builds the wheel and runs subprocesses


def test_the_product_wheel_contains_no_fake(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("leadpush/app.py") for n in names), names  # the product is there
    fakes = [n for n in names if "fake" in n.lower()]
    assert fakes == [], fakes
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fake" not in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_leadpush_imports_nothing_from_the_fakes() -> None:
    code = (
        "import sys, leadpush.app, leadpush.cli, leadpush.runtime;"
        "bad = sorted(m for m in sys.modules if m.startswith('leadpush_fakes'));"
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_the_fake_has_its_own_command_and_leadpush_has_none() -> None:
    own = subprocess.run(
        [str(Path(sys.executable).parent / "leadpush-fake-wechat"), "--help"], capture_output=True, text=True
    )
    assert own.returncode == 0 and "--port" in own.stdout, own.stderr
    product = subprocess.run(
        [sys.executable, "-m", "leadpush.cli", "fake-wechat", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert product.returncode != 0
