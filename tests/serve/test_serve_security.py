"""TLS, mutual TLS and the per-certificate topic allowlist, with certificates made here."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaConsumer, TopicPartition
from kafka.protocol.metadata.api_versions import ApiVersionsRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from prometheus_client import CollectorRegistry

from tests.serve.conftest import filled_source, read_exactly
from tiering.config import ServeConfig
from tiering.serve import codec
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tiering Test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, _name("test-ca"), ca_key, ca=True)
    files = {"ca": _write(d / "ca.pem", ca)}
    for who, server in (("server", True), ("reader", False), ("stranger", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        files[who] = _write(d / f"{who}.pem", _cert(who, ca_key, ca.subject, key, server=server))
        files[who + "_key"] = _write(d / f"{who}.key", key=key)
    # a client certificate from a CA the endpoint does not trust
    rogue = ec.generate_private_key(ec.SECP256R1())
    files["rogue"] = _write(d / "rogue.pem", _cert("reader", other_key, _name("other-ca"), rogue))
    files["rogue_key"] = _write(d / "rogue.key", key=rogue)
    return files


@pytest.fixture(scope="module")
def mtls_endpoint(pki):
    config = ServeConfig(listen="127.0.0.1:0", tls_cert_file=pki["server"], tls_key_file=pki["server_key"],
                         tls_ca_file=pki["ca"], topic_allowlist={"CN=reader": ("events*",)})
    served = ThreadedEndpoint(ServeEndpoint(config, filled_source(), registry=CollectorRegistry()))
    host, port = served.start()
    served.bootstrap = f"{host}:{port}"
    yield served
    served.stop()


def _tls_api_versions(endpoint, pki, cert: str | None, key: str | None) -> int:
    request = ApiVersionsRequest[3](client_software_name="t", client_software_version="1")
    return _tls_roundtrip(endpoint, pki, cert, key, request, 18, 3).error_code


def _tls_roundtrip(endpoint, pki, cert, key, request, api_key: int, version: int):
    context = ssl.create_default_context(cafile=pki["ca"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    host, port = endpoint.endpoint.address
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(codec.encode_request(request, version, 1))
            size = int.from_bytes(read_exactly(sock, 4), "big")
            return codec.decode_response(api_key, version, read_exactly(sock, size))


def test_client_with_a_certificate_of_the_ca_is_served(mtls_endpoint, pki):
    assert _tls_api_versions(mtls_endpoint, pki, pki["reader"], pki["reader_key"]) == 0


@pytest.mark.parametrize("who", [None, "rogue"], ids=["no-certificate", "certificate-of-another-ca"])
def test_client_without_a_trusted_certificate_is_refused(mtls_endpoint, pki, who):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_api_versions(mtls_endpoint, pki, pki.get(who), pki.get(f"{who}_key"))
    # and the endpoint still serves the others
    assert _tls_api_versions(mtls_endpoint, pki, pki["reader"], pki["reader_key"]) == 0


def _consumer(endpoint, pki, who: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=endpoint.bootstrap, security_protocol="SSL", ssl_cafile=pki["ca"],
                         ssl_certfile=pki[who], ssl_keyfile=pki[f"{who}_key"], ssl_check_hostname=False,
                         enable_auto_commit=False, consumer_timeout_ms=1000)


def test_allowlist_hides_topics_outside_it(mtls_endpoint, pki):
    reader = _consumer(mtls_endpoint, pki, "reader")
    try:
        assert reader.topics() == {"events"}
        assert not reader.partitions_for_topic("secret")
        tp = TopicPartition("events", 0)
        reader.assign([tp])
        reader.seek_to_beginning()
        assert len([m for m in reader]) == 30
    finally:
        reader.close()
    asked = MetadataRequest[12](topics=[MetadataRequest.MetadataRequestTopic(name="secret", topic_id=None)],
                                allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    answer = _tls_roundtrip(mtls_endpoint, pki, pki["reader"], pki["reader_key"], asked, 3, 12)
    assert [(t.name, t.error_code) for t in answer.topics] == [("secret", 3)]   # as if it did not exist
    stranger = _consumer(mtls_endpoint, pki, "stranger")   # trusted CA, not in the allowlist: sees nothing
    try:
        assert stranger.topics() == set()
    finally:
        stranger.close()


def test_plaintext_on_a_public_address_is_refused_at_start(tmp_path):
    config = tmp_path / "tiering.toml"
    config.write_text('[kafka]\nlog_dirs = ["/nonexistent"]\n[store]\nbucket = "b"\nprefix = "p/"\n'
                      '[serve]\nlisten = "0.0.0.0:19093"\n')
    done = subprocess.run([sys.executable, "-m", "tiering", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loopback address and no TLS" in lines[0] and "Traceback" not in done.stderr
