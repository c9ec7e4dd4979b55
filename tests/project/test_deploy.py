"""The distributed deployment example is a valid compose file with every role it promises."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import IN_CI

from leadpush.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    message = "neither `docker compose` nor `docker-compose` is installed"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.slow  # runs `docker compose config`
def test_compose_file_is_accepted_and_has_every_role():
    result = subprocess.run(
        [*compose_command(), "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "redis", "api1", "api2", "worker1", "worker2", "scheduler", "proxy", "migrate"} <= set(services)
    roles = {
        name: svc["command"][svc["command"].index("--role") + 1]
        for name, svc in services.items()
        if "--role" in (svc.get("command") or [])
    }
    assert roles == {"api1": "api", "api2": "api", "worker1": "worker", "worker2": "worker", "scheduler": "scheduler"}
    for name in roles:
        env = services[name]["environment"]
        assert env["LEADPUSH_DATABASE_URL"].startswith("postgresql://")
        assert env["LEADPUSH_REDIS_URL"].startswith("redis://")
    # Failed sign-ins are counted per real client: the API trusts X-Forwarded-For from nginx, and only nginx.
    proxy_ip = services["proxy"]["networks"]["default"]["ipv4_address"]
    for name in ("api1", "api2"):
        trusted = services[name]["environment"]["LEADPUSH_TRUSTED_PROXIES"]
        assert trusted == proxy_ip
        assert Settings(trusted_proxies=trusted).trusted_proxy_hosts == [proxy_ip]
    subnet = config["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_ip) in ipaddress.ip_network(subnet)


def test_proxy_passes_websockets():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in conf
    assert "proxy_set_header Connection $connection_upgrade" in conf
    assert "server api1:8000" in conf and "server api2:8000" in conf
    assert conf.count("proxy_pass ") == conf.count("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")


def test_the_deploy_env_file_with_its_secrets_is_never_committed():
    git = shutil.which("git")
    if git is None or not (DEPLOY.parent / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run([git, "check-ignore", "-q", "deploy/.env"], cwd=DEPLOY.parent)
    assert done.returncode == 0, "deploy/.env must be git-ignored (deploy/env.example says never to commit it)"


def make_plan(target: str) -> str:
    """The commands `make <target>` would run from nothing (-B: as if nothing were built yet)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run([make, "-n", "-B", target], cwd=DEPLOY.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_what_running_needs_and_make_test_the_test_tools():
    run = make_plan("run")
    assert "pip install -q -e ." in run and "[test]" not in run, run
    assert ".[test]" in make_plan("test")
