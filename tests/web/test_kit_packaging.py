"""The JS client kit ships inside the Python package: an installed leadpush (a wheel, the Docker image)
serves the same kit as the repository's clients/js/src, with no checkout next to it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import httpx
import pytest
from support.procs import ROOT, LeadpushProcess, build_wheel

KIT_SOURCE = ROOT / "clients" / "js" / "src" / "leadpush-client.mjs"
PACKAGED_KIT = ROOT / "src" / "leadpush" / "web" / "static" / "leadpush-client.mjs"
KIT_IN_WHEEL = "leadpush/web/static/leadpush-client.mjs"


def test_the_packaged_kit_is_the_kit_source():
    assert PACKAGED_KIT.is_file(), "run `cd clients/js && node build.mjs`"
    assert PACKAGED_KIT.read_bytes() == KIT_SOURCE.read_bytes(), "stale copy: run `cd clients/js && node build.mjs`"


@pytest.mark.slow  # builds a wheel and starts `leadpush serve` from it
def test_a_normal_install_from_the_wheel_serves_the_kit(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        assert KIT_IN_WHEEL in archive.namelist()
        assert archive.read(KIT_IN_WHEEL) == KIT_SOURCE.read_bytes()
        # The installed package, unpacked where no repository is around it.
        site = tmp_path / "site-packages"
        archive.extractall(site)
    env = {"PYTHONPATH": str(site), "LEADPUSH_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}

    where = subprocess.run(
        [sys.executable, "-c", "import leadpush; print(leadpush.__file__)"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout  # not the repository's src/

    proc = LeadpushProcess(env, roles=("api",), log_dir=tmp_path).start()
    try:
        r = httpx.get(proc.url + "/console/static/leadpush-client.mjs", timeout=30)
    finally:
        proc.stop()
    assert r.status_code == 200, proc.log()
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == KIT_SOURCE.read_bytes()


def test_the_image_is_a_normal_install_without_the_repository_s_clients_folder():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all(" -e " not in line and "--editable" not in line for line in installs), installs
    copied = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert not any("clients" in line for line in copied), copied
