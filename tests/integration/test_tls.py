"""The coordinator behind TLS (uvicorn's TLS options), with its certificate pinned at the node."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import node
from coordinator import TokenRequest, init_coordinator
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn._processes import free_port, running, start_service
from protocols import AggregateQuery, CoverageEntry
from tests.unit.node.conftest import insert_records, make_record

pytestmark = pytest.mark.processes


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_a_pinned_node_works_over_tls_and_a_wrongly_pinned_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPN_NODE_POLL_WAIT_SECONDS", "1")
    cert, key = self_signed(tmp_path, "coordinator")
    other_cert, _ = self_signed(tmp_path, "impostor")
    logs = tmp_path / "logs"
    logs.mkdir()
    hub = init_coordinator(home=tmp_path / "coordinator", port=free_port())
    hub.engine.dispose()
    url = f"https://127.0.0.1:{hub.settings.port}"
    coordinator = start_service(
        "coordinator", ["coordinator", "serve", "--home", str(hub.home), "--tls-cert",
                        str(cert), "--tls-key", str(key)],
        port=hub.settings.port, log_dir=logs)
    coordinator.url = url  # health checks go over TLS too
    coverage = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                              countries=["COD"])]
    contexts = []
    for index in range(2):
        context = node.init_node(home=tmp_path / f"n{index}", node_id=f"miner-{index}",
                                 display_name=f"Miner {index}", port=free_port(),
                                 policy=node.Policy(coverage=coverage))
        insert_records(context, [make_record(f"r{index}", unit=f"site:{index}")])
        contexts.append(context)
    for context, pem in zip(contexts, (cert, other_cert), strict=True):
        with (context.home / "node.toml").open("a") as settings:
            settings.write(f'coordinator_ca_file = "{pem}"\n')
    pinned, wrong = (node.open_node(c.home) for c in contexts)

    trust = ssl.create_default_context(cafile=str(cert))
    with running([coordinator], timeout=60, verify=trust), CoordinatorClient(
            url, hub.settings.operator_token.get_secret_value(), verify=trust) as client:
        token = client.enrolment_token(TokenRequest(node_id="miner-1")).token
        with pytest.raises(node.CoordinatorUnreachableError) as refused:
            node.enrol(context=wrong, coordinator_url=url, token=token)
        assert f"cannot reach the coordinator at {url}/v1/enrol" in str(refused.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)

        token = client.enrolment_token(TokenRequest(node_id="miner-0")).token
        node.enrol(context=pinned, coordinator_url=url, token=token,
                   expected_coordinator_key_id=hub.key_id)
        service = start_service("miner-0", ["node", "serve", "--home", str(pinned.home)],
                                port=pinned.settings.port, log_dir=logs)
        with running([service]):
            query = AggregateQuery.model_validate({
                "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
                "flows": ["production"], "periods": ["2024"], "countries": ["COD"],
                "group_by": ["country"], "epsilon": 0.5,
                "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0},
                "purpose": "tls test"})
            result = client.query(query, quorum=1, deadline_seconds=60, wait_seconds=60)
    assert result.status == "completed", result.error
    assert result.answered == ["miner-0"]
    for context in (pinned, wrong, *contexts):
        context.engine.dispose()
