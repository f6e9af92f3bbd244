"""deploy/ parses, is hardened, and names only commands, settings and routes that exist.

External validators must be installed (a missing one fails the test, saying how to get it):
``docker-compose`` (Debian package) or ``docker compose`` (compose config), ``hadolint``
(Dockerfiles) and ``kubernetes-validate`` (manifests against the Kubernetes schemas), both in
the dev extras, and ``systemd-analyze``. ``DPN_OPS_TOOLS`` may name an extra directory to look
for them in; the virtual environment's ``bin`` is searched too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator._settings import CoordinatorSettings
from node._settings import NodeSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTINGS = {"DPN_NODE_": set(NodeSettings.model_fields),
            "DPN_COORDINATOR_": set(CoordinatorSettings.model_fields)}
ROUTES = {"/v1/health", "/v1/ready", "/metrics"}
COMPOSE_ENV = {"POSTGRES_PASSWORD": "p" * 40, "DPN_OPERATOR_TOKEN": "o" * 40,
               "DPN_AUDITOR_TOKEN": "a" * 40, "DPN_METRICS_TOKEN": "m" * 40}


def tool(name: str) -> str | None:
    extra = os.environ.get("DPN_OPS_TOOLS")
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in (extra, venv, os.environ.get("PATH", "")) if p)
    return shutil.which(name, path=path)


def dpn_env_names(text: str) -> set[str]:
    return set(re.findall(r"\b(DPN_(?:NODE|COORDINATOR)_[A-Z_]+)\b", text))


def assert_known_settings(names: set[str]) -> None:
    for name in names:
        if name in ("DPN_NODE_HOME",):  # the CLI's --home, not a setting
            continue
        prefix = next(p for p in SETTINGS if name.startswith(p))
        assert name.removeprefix(prefix).lower() in SETTINGS[prefix], name


def assert_known_commands(command: str) -> None:
    """Every ``dpn ...`` invocation in a shell command is an existing CLI command."""
    from typer.testing import CliRunner

    from crimmis_dpn.cli import app

    for match in re.finditer(r"\bdpn ((?:node|coordinator) [a-z-]+)", command):
        words = match.group(1).split()
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def command_line(service: dict[str, Any]) -> str:
    entry = service.get("entrypoint") or ["dpn"]
    cmd = service.get("command") or []
    if entry[:2] == ["sh", "-c"]:
        return str(cmd[0])
    return shlex.join([*entry, *cmd])


# --- compose ------------------------------------------------------------------------------

def test_compose_runs_a_coordinator_postgres_and_three_pull_nodes() -> None:
    services = compose()["services"]
    assert {"postgres", "coordinator", "coordinator-init"} <= set(services)
    nodes = [n for n in services if n.startswith("node-")]
    assert len(nodes) == 3
    assert services["coordinator"]["command"][:2] == ["coordinator", "serve"]
    assert "entrypoint" not in services["coordinator"]  # the image's: dpn
    for name in nodes:
        line = command_line(services[name])
        assert "dpn node serve --home /var/lib/dpn/node" in line
        assert "ports" not in services[name], "pull nodes accept no connection"
        assert_known_commands(line)
    assert_known_commands(command_line(services["coordinator-init"]))
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert_known_settings(dpn_env_names(text))
    # Secrets come from the environment file, never from the compose file itself.
    for variable in COMPOSE_ENV:
        assert f"${{{variable}:?" in text
    for route in re.findall(r"127\.0\.0\.1:\d+(/[a-z0-9/]+)", text):
        assert route in ROUTES


def test_compose_env_example_holds_only_placeholders_that_are_refused() -> None:
    from protocols import check_secret_strength

    lines = (DEPLOY / "compose.env.example").read_text(encoding="utf-8").splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(values) == set(COMPOSE_ENV)
    for value in values.values():
        with pytest.raises(ValueError):
            check_secret_strength(value, name="x")


def test_docker_compose_config_accepts_the_file() -> None:
    docker = tool("docker")
    legacy = tool("docker-compose")
    env = {**os.environ, **COMPOSE_ENV}
    commands = []
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        commands.append([docker, "compose"])
    if legacy:
        commands.append([legacy])
    if not commands:
        pytest.fail("neither `docker compose` nor docker-compose is installed: "
                    "apt-get install docker-compose")
    for command in commands:
        done = subprocess.run([*command, "-f", str(DEPLOY / "compose.yaml"), "config"],
                              capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
        refused = subprocess.run([*command, "-f", str(DEPLOY / "compose.yaml"), "config"],
                                 capture_output=True, text=True, env=missing, check=False)
        assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


# --- Dockerfiles --------------------------------------------------------------------------

def dockerfile(side: str) -> list[tuple[str, str]]:
    text = (DEPLOY / "docker" / f"Dockerfile.{side}").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("side", ["node", "coordinator"])
def test_dockerfile_is_pinned_non_root_with_a_healthcheck(side: str) -> None:
    instructions = dockerfile(side)
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?",
                        args["PYTHON_IMAGE"])
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert runs.index("torch==2.13.0") < runs.index("pip install /src")
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    health = next(rest for word, rest in instructions if word == "HEALTHCHECK")
    assert "/v1/health" in health
    entry = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in instructions if word == "CMD"))
    assert [*entry, *cmd][:3] == ["dpn", side, "serve"]
    assert_known_commands(shlex.join([*entry, *cmd]))
    envs = " ".join(rest for word, rest in instructions if word == "ENV")
    assert_known_settings(dpn_env_names(envs))
    for source in re.findall(r"^COPY (?!--from)(\S+)", "\n".join(
            f"COPY {rest}" for word, rest in instructions if word == "COPY"), re.M):
        assert (ROOT / source).exists(), source


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: it comes with the dev extras (make install)")
    done = subprocess.run([hadolint, str(DEPLOY / "docker" / "Dockerfile.node"),
                           str(DEPLOY / "docker" / "Dockerfile.coordinator")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Kubernetes ---------------------------------------------------------------------------

def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path, document))
    return found


def test_manifests_are_hardened_and_name_real_settings_and_routes() -> None:
    kinds = {(p.stem, d["kind"]) for p, d in manifests()}
    assert {("coordinator", "StatefulSet"), ("coordinator", "Service"),
            ("node", "StatefulSet"), ("node", "NetworkPolicy")} <= kinds
    for path, document in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(document), path
        if document["kind"] != "StatefulSet":
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert_known_settings({e["name"] for e in container.get("env", [])
                                   if e["name"].startswith("DPN_")})
            line = " ".join([*container.get("command", []), *container.get("args", [])])
            assert_known_commands(line if "dpn " in line else "dpn " + line)
        text = path.read_text(encoding="utf-8")
        assert set(re.findall(r"(/v1/[a-z]+|/metrics)\b", text)) <= ROUTES


def test_kubernetes_validate_accepts_the_manifests_and_refuses_a_broken_one(
    tmp_path: Path,
) -> None:
    validate = tool("kubernetes-validate")
    if validate is None:
        pytest.fail("kubernetes-validate is not installed: it comes with the dev extras "
                    "(make install)")
    files = [str(p) for p in sorted((DEPLOY / "kubernetes").glob("*.yaml"))]
    done = subprocess.run([validate, "-k", "1.32.0", "--strict", *files],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text((DEPLOY / "kubernetes" / "node.yaml").read_text(encoding="utf-8")
                      .replace("replicas: 1", "replicas: one"), encoding="utf-8")
    refused = subprocess.run([validate, "-k", "1.32.0", "--strict", str(broken)],
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0


# --- systemd ------------------------------------------------------------------------------

def unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "dpn-node.service").read_text(
            encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_unit_is_hardened_and_runs_node_serve() -> None:
    values = unit()
    assert values["User"] == ["dpn"]
    for key, expected in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                          "ReadWritePaths": "/var/lib/dpn-node", "PrivateTmp": "yes",
                          "ProtectHome": "yes", "CapabilityBoundingSet": ""}.items():
        assert values[key] == [expected], key
    exec_start = values["ExecStart"][0]
    assert exec_start == "/opt/dpn/bin/dpn node serve --home /var/lib/dpn-node"
    assert_known_commands(exec_start.replace("/opt/dpn/bin/dpn", "dpn"))
    assert_known_settings({e.split("=")[0] for e in values["Environment"]})


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd")
    dpn = Path(sys.executable).parent / "dpn"
    assert dpn.exists(), "the dpn console script stands in for /opt/dpn/bin/dpn"
    copy = tmp_path / "dpn-node.service"
    copy.write_text((DEPLOY / "systemd" / "dpn-node.service").read_text(encoding="utf-8")
                    .replace("/opt/dpn/bin/dpn", str(dpn)), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          check=False)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if "dpn-node.service" in line]
    assert problems == [], problems


# --- example settings ---------------------------------------------------------------------

@pytest.mark.parametrize(("example", "prefix"), [("node.toml", "DPN_NODE_"),
                                                  ("coordinator.toml", "DPN_COORDINATOR_")])
def test_example_settings_document_every_setting(example: str, prefix: str) -> None:
    text = (DEPLOY / "examples" / example).read_text(encoding="utf-8")
    keys = set(tomllib.loads(text))
    commented = set(re.findall(r"^#\s*([a-z_]+)\s*=", text, re.M))
    assert keys <= SETTINGS[prefix]
    assert SETTINGS[prefix] <= keys | commented, SETTINGS[prefix] - keys - commented
