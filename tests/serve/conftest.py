from __future__ import annotations

import socket
import struct

import pytest
from prometheus_client import CollectorRegistry

from tests.serve.memsource import MemorySource
from tiering.config import ServeConfig
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint

RECORDS_PER_BATCH = 5
BATCHES = 12


def filled_source() -> MemorySource:
    source = MemorySource()
    source.add_topic("events", 2)
    source.add_topic("secret", 1)
    for i in range(BATCHES):
        source.append("events", i % 2, [b"e%d-%d" % (i, j) for j in range(RECORDS_PER_BATCH)],
                      timestamp=1_700_000_000_000 + 1000 * i)
    source.append("secret", 0, [b"hidden"])
    return source


def expected_events() -> list[bytes]:
    return sorted(b"e%d-%d" % (i, j) for i in range(BATCHES) for j in range(RECORDS_PER_BATCH))


@pytest.fixture(scope="module")
def endpoint():
    """One plaintext endpoint on loopback over the in-memory source, per test module."""
    source = filled_source()
    registry = CollectorRegistry()
    served = ThreadedEndpoint(ServeEndpoint(ServeConfig(listen="127.0.0.1:0", max_request_bytes=64 * 1024),
                                            source, registry=registry, poll_s=0.02))
    host, port = served.start()
    served.source, served.registry, served.bootstrap = source, registry, f"{host}:{port}"
    yield served
    served.stop()


def raw_connection(endpoint) -> socket.socket:
    host, port = endpoint.endpoint.address
    return socket.create_connection((host, port), timeout=10)


def roundtrip(sock: socket.socket, framed_request: bytes) -> bytes:
    """Send one framed request, read one response (without its size)."""
    sock.sendall(framed_request)
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    return read_exactly(sock, size)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the endpoint closed this connection (EOF or reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
