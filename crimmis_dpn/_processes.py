"""Starting the services as separate processes on loopback (used by the demo and the tests)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from protocols import API_VERSION

__all__ = [
    "ServiceError",
    "ServiceProcess",
    "free_port",
    "running",
    "start_service",
    "stop_services",
    "wait_healthy",
]


class ServiceError(Exception):
    """A service process did not start (the message quotes its log)."""


@dataclass
class ServiceProcess:
    """A ``dpn ... serve`` process and where its log goes."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the service's log."""
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(name: str, args: Sequence[str], *, port: int, log_dir: Path,
                  host: str = "127.0.0.1", prefix: Sequence[str] = ()) -> ServiceProcess:
    """Start ``dpn ARGS --port PORT`` as a child process logging to ``log_dir/NAME.log``.

    ``host``: the address the service listens on (pass ``--host`` in ``args`` too), for its
    URL; ``prefix``: a command that runs the service, e.g. ``ip netns exec NAME`` (it must
    exec the service, so that stopping the process stops the service).
    """
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [*prefix, sys.executable, "-m", "crimmis_dpn", *args, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    return ServiceProcess(name, f"http://{host}:{port}", process, log_path, log)


def wait_healthy(services: Sequence[ServiceProcess], *, timeout: float = 90.0,
                 verify: ssl.SSLContext | bool = True) -> None:
    """Wait until every service answers ``/v1/health``; raise :class:`ServiceError` if not.

    ``verify``: TLS verification for HTTPS services (an SSL context trusting the service's
    certificate, or a bool).
    """
    deadline = time.monotonic() + timeout
    pending = list(services)
    with httpx.Client(timeout=2.0, verify=verify) as client:
        while pending:
            for service in list(pending):
                if service.process.poll() is not None:
                    raise ServiceError(
                        f"{service.name} exited with code {service.process.returncode}; "
                        f"log {service.log_path}:\n{service.log_tail()}")
                try:
                    if client.get(f"{service.url}/{API_VERSION}/health").status_code == 200:
                        pending.remove(service)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise ServiceError(f"{names} did not start within {timeout:.0f} s; "
                                   f"see the logs in {pending[0].log_path.parent}")
            if pending:
                time.sleep(0.2)


def stop_services(services: Sequence[ServiceProcess]) -> None:
    """Terminate every service (kill after 10 s) and close the logs."""
    for service in services:
        if service.process.poll() is None:
            service.process.terminate()
    for service in services:
        try:
            service.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=10)
        service.log.close()


@contextmanager
def running(services: Sequence[ServiceProcess], *, timeout: float = 90.0,
            verify: ssl.SSLContext | bool = True) -> Iterator[Sequence[ServiceProcess]]:
    """Wait for ``services`` to be healthy; stop them all on exit, whatever happened."""
    try:
        wait_healthy(services, timeout=timeout, verify=verify)
        yield services
    finally:
        stop_services(services)
