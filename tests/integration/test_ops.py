"""The deploy files' own command lines, run as plain processes (no container engine here).

Each test takes a command exactly as deploy/ writes it (compose, systemd), points the home at
a temp directory and ``dpn`` at this checkout's, sets the environment the file sets, starts
it, and checks health, readiness, metrics and JSON logs with request ids.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = ROOT / ".venv" / "bin"
TOKENS = {"DPN_OPERATOR_TOKEN": "o" * 40, "DPN_AUDITOR_TOKEN": "a" * 40,
          "DPN_METRICS_TOKEN": "m" * 40}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPN_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def compose_env(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """The service's environment with ``${VAR...}`` filled from ``values``."""
    import re

    out = {}
    for key, value in service["environment"].items():
        out[key] = re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: values[m.group(1)], str(value))
    return out


class Service:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{url} not ready: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.handle.close()

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def test_compose_coordinator_commands_serve_on_postgres(
    tmp_path: Path, postgres_url: str, services: list[Service]
) -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))["services"]
    home = tmp_path / "coordinator"
    port = free_port()
    env = {**base_env(), **compose_env(spec["coordinator"], {**TOKENS, "POSTGRES_PASSWORD": "x"})}
    env.update(DPN_COORDINATOR_DATABASE_URL=postgres_url, DPN_COORDINATOR_HOST="127.0.0.1",
               DPN_COORDINATOR_PORT=str(port))
    init = spec["coordinator-init"]
    script = init["command"][0].replace("$$", "$").replace("/var/lib/dpn/coordinator", str(home))
    for _ in range(2):  # the second run finds the home and does nothing
        done = subprocess.run([*init["entrypoint"], script], env=env, capture_output=True,
                              text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    command = [str(BIN / "dpn"), *(a.replace("/var/lib/dpn/coordinator", str(home))
                                   for a in spec["coordinator"]["command"])]
    service = Service(command, env, tmp_path / "coordinator.log")
    services.append(service)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(f"{url}/v1/ready")
    assert httpx.get(f"{url}/metrics").status_code == 401
    metrics = httpx.get(f"{url}/metrics", headers={
        "Authorization": f"Bearer {TOKENS['DPN_METRICS_TOKEN']}", "X-Request-ID": "scrape-1"})
    assert metrics.status_code == 200 and metrics.headers["x-request-id"] == "scrape-1"
    assert "dpn_coordinator_nodes" in metrics.text
    nodes = httpx.get(f"{url}/v1/nodes", headers={
        "Authorization": f"Bearer {TOKENS['DPN_AUDITOR_TOKEN']}"})
    assert nodes.status_code == 200  # the environment's tokens, not the file's
    time.sleep(0.3)
    lines = service.json_lines()
    scrape = [ln for ln in lines
              if ln.get("request_id") == "scrape-1" and ln["logger"] == "dpn.access"]
    assert scrape and scrape[0]["route"] == "/metrics" and scrape[0]["service"] == "coordinator"
    assert TOKENS["DPN_METRICS_TOKEN"] not in service.log.read_text(errors="replace")


@pytest.mark.parametrize("source", ["compose", "systemd"])
def test_node_commands_create_and_serve_a_node(tmp_path: Path, services: list[Service],
                                               source: str) -> None:
    port = free_port()
    env = {**base_env(), "DPN_NODE_PORT": str(port)}
    if source == "compose":
        spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
        node_a = spec["services"]["node-a"]
        home = tmp_path / "node"
        env.update(compose_env(node_a, {}))
        script = node_a["command"][0].replace("/var/lib/dpn/node", str(home))
        command = [*node_a["entrypoint"], script]
    else:
        unit = (DEPLOY / "systemd" / "dpn-node.service").read_text(encoding="utf-8")
        home = tmp_path / "dpn-node"
        subprocess.run([str(BIN / "dpn"), "node", "init", "--id", "acme-mining", "--name",
                        "Acme", "--home", str(home)], env=env, check=True, capture_output=True)
        for line in unit.splitlines():
            if line.startswith("Environment="):
                key, _, value = line.removeprefix("Environment=").partition("=")
                env[key] = value
        exec_start = next(line.removeprefix("ExecStart=") for line in unit.splitlines()
                          if line.startswith("ExecStart="))
        command = exec_start.replace("/opt/dpn/bin/dpn", str(BIN / "dpn")).replace(
            "/var/lib/dpn-node", str(home)).split()
    service = Service(command, env, tmp_path / "node.log")
    services.append(service)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(f"{url}/v1/health")
    ready = httpx.get(f"{url}/v1/ready", headers={"X-Request-ID": "probe-9"})
    assert ready.status_code == 200 and ready.json()["enrolled"] is False
    assert ready.headers["x-request-id"] == "probe-9"
    assert "dpn_node_enrolled 0.0" in httpx.get(f"{url}/metrics").text
    assert (home / "node.toml").is_file()
    time.sleep(0.3)
    probe = [ln for ln in service.json_lines()
             if ln.get("request_id") == "probe-9" and ln["logger"] == "dpn.access"]
    assert probe, service.log.read_text(errors="replace")
    assert probe[0]["route"] == "/v1/ready" and probe[0]["service"] == "node"
