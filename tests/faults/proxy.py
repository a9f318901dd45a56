"""A fault-injecting HTTP proxy between the code under test and the S3 server.

A small asyncio TCP proxy of the test suite that understands just enough HTTP/1.1 to find
request boundaries on a keep-alive connection (a head, then a Content-Length or chunked
body). For each request it draws, from a seeded generator, whether to pass it on or to:

- answer 503 SlowDown or 500 InternalError (the body is not sent on to the store);
- reset the connection half-way through sending the request body to the store;
- pass the request on and reset the connection half-way through the store's answer (the
  store did the work; the client never learns it);
- stall: hold the request without answering past the client's read timeout, then close.

`outage(seconds)` answers every request with 503 SlowDown for a while (a store's brownout,
longer than botocore's own retries last); `fatal` makes it answer every request with one
refusal (403 AccessDenied, 404 NoSuchBucket) instead. Counts of what it did are kept per kind. Responses are streamed back as raw bytes.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

FAULTS = ("slowdown", "internal_error", "reset_request", "reset_response", "stall")
_REFUSALS = {
    "SlowDown": (503, "Service Unavailable", "Please reduce your request rate."),
    "InternalError": (500, "Internal Server Error", "We encountered an internal error. Please try again."),
    "AccessDenied": (403, "Forbidden", "Access Denied"),
    "NoSuchBucket": (404, "Not Found", "The specified bucket does not exist"),
}


@dataclass
class FaultMix:
    """The share of requests that get each fault (the rest pass)."""
    slowdown: float = 0.0
    internal_error: float = 0.0
    reset_request: float = 0.0
    reset_response: float = 0.0
    stall: float = 0.0
    stall_seconds: float = 2.5

    def draw(self, rng: random.Random) -> str:
        roll = rng.random()
        for kind in FAULTS:
            share = getattr(self, kind)
            if roll < share:
                return kind
            roll -= share
        return "pass"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, mix: FaultMix | None = None, seed: int = 0):
        self.target = (target_host, target_port)
        self.mix = mix or FaultMix()
        self.fatal: str | None = None
        # (method, path) -> a fault kind for this request, or None to draw as usual
        self.rule: Callable[[str, str], str | None] = lambda method, path: None
        self._outage_until = 0.0
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()     # by fault kind, plus "requests"
        self.requests: list[tuple[str, str, str]] = []   # (method, path, what was done)
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._sock = sock
        self._server: asyncio.AbstractServer | None = None
        self._serve_task: asyncio.Task | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    # -- lifecycle ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._serve_task = asyncio.current_task()
        self._server = await asyncio.start_server(self._handle, sock=self._sock)
        self._started.set()
        async with self._server:
            try:
                await self._server.serve_forever()
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        """Stop serving and end every connection; returns when the proxy's thread has ended."""
        async def stop() -> None:
            assert self._server is not None
            serving = self._serve_task
            connections = [t for t in asyncio.all_tasks() if t not in (asyncio.current_task(), serving)]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            self._server.close()
            if serving is not None:
                serving.cancel()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop)
            self._thread.join(10)

    def injected(self) -> int:
        return sum(self.counts[kind] for kind in (*FAULTS, "outage", "refused"))

    def outage(self, seconds: float) -> None:
        self._outage_until = time.monotonic() + seconds

    # -- one client connection ---------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        downstream: asyncio.Task | None = None
        cut_answer = asyncio.Event()     # set: reset the client half-way through the next answer
        try:
            while True:
                head = await client_reader.readuntil(b"\r\n\r\n")
                method, path, headers = _parse_head(head)
                kind = self.rule(method, path) or self._decide()
                self.requests.append((method, path, kind))
                self.counts["requests"] += 1
                if kind in ("refused", "outage", "slowdown", "internal_error"):
                    code = (self.fatal if kind == "refused" else "InternalError" if kind == "internal_error"
                            else "SlowDown")
                    self.counts[kind] += 1
                    # Answer before the body, as a store may (a client sending Expect:
                    # 100-continue then never sends it), and close: the body's bytes, if sent,
                    # must not be taken for the next request.
                    client_writer.write(_error_response(code))
                    await client_writer.drain()
                    return
                if kind == "stall":
                    self.counts[kind] += 1
                    await asyncio.sleep(self.mix.stall_seconds)
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.target)
                    downstream = asyncio.create_task(self._answers(upstream[0], client_writer, cut_answer))
                server_writer = upstream[1]
                server_writer.write(head)
                body = _body_reader(client_reader, headers)
                if kind == "reset_request":
                    self.counts[kind] += 1
                    first = await body.__anext__() if body is not None else b""
                    server_writer.write(first[: max(1, len(first) // 2)])
                    await server_writer.drain()
                    _reset(client_writer)
                    server_writer.transport.abort()
                    return
                if body is not None:
                    async for piece in body:
                        server_writer.write(piece)
                        await server_writer.drain()
                await server_writer.drain()
                if kind == "reset_response":
                    self.counts[kind] += 1
                    cut_answer.set()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, StopAsyncIteration):
            pass
        finally:
            if downstream is not None:
                downstream.cancel()
            if upstream is not None:
                upstream[1].transport.abort()
            client_writer.transport.abort()

    async def _answers(self, server_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                       cut_answer: asyncio.Event) -> None:
        try:
            while data := await server_reader.read(1 << 16):
                if cut_answer.is_set() and not data.startswith(b"HTTP/1.1 100"):
                    client_writer.write(data[: max(1, len(data) // 2)])
                    await client_writer.drain()
                    _reset(client_writer)
                    return
                client_writer.write(data)
                await client_writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            client_writer.transport.abort()

    def _decide(self) -> str:
        if self.fatal is not None:
            return "refused"
        if time.monotonic() < self._outage_until:
            return "outage"
        return self.mix.draw(self.rng)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _body_reader(reader: asyncio.StreamReader, headers: dict[str, str]):
    """The request body as pieces of raw bytes (framing included, to forward as they came), or
    None when there is none."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader)
    length = int(headers.get("content-length", "0") or 0)
    return _sized(reader, length) if length else None


async def _sized(reader: asyncio.StreamReader, length: int):
    left = length
    while left:
        piece = await reader.read(min(left, 1 << 16))
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(piece)
        yield piece


async def _chunked(reader: asyncio.StreamReader):
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            yield size_line
            trailer = await reader.readuntil(b"\r\n")
            while trailer != b"\r\n":
                yield trailer
                trailer = await reader.readuntil(b"\r\n")
            yield trailer
            return
        yield size_line + await reader.readexactly(size + 2)


def _error_response(code: str) -> bytes:
    status, reason, message = _REFUSALS[code]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a broken network or a dying store does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
