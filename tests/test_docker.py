"""No Docker engine runs here: check what can be checked. The compose file parses and references files that
exist, every COPY source exists, and the commands the images run work outside Docker."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def test_compose_services_and_build_files():
    services = COMPOSE["services"]
    assert {"api", "postgres", "indexer"} <= set(services)
    assert services["indexer"]["profiles"] == ["indexer"]
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        assert "healthcheck" in service or name == "indexer", f"{name} has no health check"
    assert set(COMPOSE["volumes"]) >= {"index", "pgdata"}


def test_compose_environment_names_are_real_settings():
    from service.core.config import Settings

    fields = {f"CLOVER_{name.upper()}" for name in Settings.model_fields}
    env = COMPOSE["services"]["api"]["environment"]
    assert set(env) <= fields, set(env) - fields


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copy_sources_exist(dockerfile):
    text = dockerfile.read_text()
    assert text.startswith("#") and "FROM " in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


def _commands():
    """Every `clover ...` command the images and compose file run."""
    found = []
    for dockerfile in DOCKERFILES:
        for match in re.finditer(r'CMD \[(.*)\]', dockerfile.read_text()):
            found.append([part.strip().strip('"') for part in match.group(1).split(",")])
    for service in COMPOSE["services"].values():
        if isinstance(service.get("command"), list):
            found.append(service["command"])
    return [cmd for cmd in found if cmd and cmd[0] == "clover"]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c[:3]))
def test_commands_parse_outside_docker(command):
    # `--help` after the subcommand path checks that the command and its options exist without running it.
    words = [w for w in command[1:] if not w.startswith("/")]
    subcommand = [w for w in words if not w.startswith("--")][:2]
    proc = subprocess.run([sys.executable, "-m", "service.cli", *subcommand, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in (w for w in command if w.startswith("--")):
        assert option in proc.stdout, f"{' '.join(command)}: {option} not in --help"
