"""A TCP proxy of the test suite that flips one bit in the body of the Nth matching request:
a body corrupted in flight, after the client computed its checksum and before the store sees it.

It understands just enough HTTP/1.1 to find a request's body (a head, then Content-Length
bytes; a chunked body is refused loudly, since the test would not be testing what it says).
Each request is sent on to the store over a connection of its own with `Connection: close`,
and the store's whole answer (read to its end) is relayed; every answer's status line is
recorded, so a test can show what the store said to the corrupted body. `Expect:
100-continue` is answered here (the body must be read before it can be corrupted) and not
sent on: botocore does not sign that header.

Threads from socketserver rather than asyncio: one request at a time per connection and a
handful of connections per test; the plain blocking code is easier to check.
"""

from __future__ import annotations

import re
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Passed:
    method: str
    target: str
    status: int          # the store's answer
    error_code: str      # the <Code> of its error document, "" for none
    flipped_at: int      # byte of the body whose lowest bit was flipped, -1 for none


class BitFlipProxy:
    """`match(method, target)` picks the requests counted; the `nth` of them (1-based) has the
    lowest bit of its body's middle byte flipped. Everything else passes unchanged."""

    def __init__(self, target_host: str, target_port: int, match: Callable[[str, str], bool], nth: int = 1,
                 tls: tuple[Path, Path] | None = None):
        """`tls`: (certificate, key): HTTPS on both sides (the proxy serves that certificate and
        trusts it from the store), as a corrupting middlebox that terminates TLS would."""
        self.target = (target_host, target_port)
        self._server_tls = self._client_tls = None
        if tls is not None:
            self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._server_tls.load_cert_chain(*tls)
            self._client_tls = ssl.create_default_context(cafile=str(tls[0]))
        self.match = match
        self.nth = nth
        self.passed: list[Passed] = []
        self._matched = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def flipped(self) -> list[Passed]:
        return [p for p in self.passed if p.flipped_at >= 0]

    def _serve(self, client: socket.socket) -> None:
        """One request per connection: the answer says `Connection: close` and the connection
        is closed after it, so the client opens a new one for its next request."""
        if self._server_tls is not None:
            try:
                client = self._server_tls.wrap_socket(client, server_side=True)
            except OSError:
                return
        reader = client.makefile("rb")
        try:
            head = _read_head(reader)
            if head is None:
                return
            request_line, headers = head
            method, target, _ = request_line.split(" ", 2)
            if "chunked" in headers.get("transfer-encoding", ""):
                raise AssertionError(f"{method} {target}: a chunked body; this proxy reads Content-Length bodies")
            if headers.pop("expect", "").lower() == "100-continue":
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = bytearray(reader.read(int(headers.get("content-length", "0"))))
            flipped_at = -1
            with self._lock:
                if self.match(method, target):
                    self._matched += 1
                    if self._matched == self.nth and body:
                        flipped_at = len(body) // 2
                        body[flipped_at] ^= 0x01
            headers["connection"] = "close"
            answer = self._forward(request_line, headers, bytes(body))
            status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
            code = re.search(rb"<Code>([^<]*)</Code>", answer)
            with self._lock:
                self.passed.append(Passed(method, target, status, code.group(1).decode() if code else "", flipped_at))
            answer_head, separator, answer_body = answer.partition(b"\r\n\r\n")
            if b"\r\nconnection: close" not in answer_head.lower():
                answer_head += b"\r\nConnection: close"
            client.sendall(answer_head + separator + answer_body)
        except OSError:
            return
        finally:
            reader.close()
            client.close()

    def _forward(self, request_line: str, headers: dict[str, str], body: bytes) -> bytes:
        head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with socket.create_connection(self.target, timeout=30) as plain:
            upstream = (self._client_tls.wrap_socket(plain, server_hostname=self.target[0])
                        if self._client_tls is not None else plain)
            upstream.sendall(head.encode("latin-1") + body)
            chunks = []
            while True:
                try:
                    chunk = upstream.recv(1 << 16)
                except ssl.SSLEOFError:
                    break       # closed without TLS's close_notify: the answer ended all the same
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def _read_head(reader) -> tuple[str, dict[str, str]] | None:
    """The request line and the headers (names lower-cased), or None at the end of the stream."""
    line = reader.readline(65536)
    if not line:
        return None
    request_line = line.decode("latin-1").rstrip("\r\n")
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            return request_line, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
