"""The bounded HTTP endpoint on loopback: answers, size limits and the connection cap."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from tiering.observability.http import MAX_REQUEST_BYTES, HealthServer


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Counter("tiering_example_total", "an example", registry=registry).inc()
    http = HealthServer("127.0.0.1:0", registry, lambda: (True, "ok"), lambda: (False, "not ready: testing"),
                        max_connections=2, request_timeout=30)
    http.start()
    yield http
    http.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_paths_answer(server):
    assert get(server.port, "/healthz") == (200, "ok\n")
    assert get(server.port, "/readyz") == (503, "not ready: testing\n")
    status, body = get(server.port, "/metrics?x=1")
    assert status == 200 and "tiering_example_total 1.0" in body
    assert get(server.port, "/other")[0] == 404


def test_an_oversized_request_is_dropped_unanswered(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (2 * MAX_REQUEST_BYTES) + b"\r\n\r\n")
        assert answer(sock) == b""
    assert get(server.port, "/healthz")[0] == 200     # and its slot is free again


def test_a_connection_beyond_the_cap_is_closed_at_once(server):
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")          # half-sent: each holds a slot
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert answer(extra) == b""                         # no slot: closed, unanswered
        held[0].sendall(b"\r\n")                                # the first one completes
        assert answer(held[0]).startswith(b"HTTP/1.0 200 OK\r\n")
    finally:
        for sock in held:
            sock.close()


def test_close_drops_held_connections_and_ends_the_thread():
    http = HealthServer("127.0.0.1:0", CollectorRegistry(), lambda: (True, "ok"), lambda: (True, "ready"),
                        request_timeout=3600)
    http.start()
    held = socket.create_connection(("127.0.0.1", http.port))
    try:
        held.sendall(b"GET /healthz HTTP/1.1\r\n")          # would hold its slot for an hour
        assert get(http.port, "/healthz")[0] == 200
        http.close()
        assert not http._thread.is_alive()
        assert answer(held) == b""                           # dropped, unanswered
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", http.port), timeout=2).close()
    finally:
        held.close()
