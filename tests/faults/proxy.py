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

`latency` (seconds, 0 by default) holds every request that is passed on for that long before
sending it to the store, as a distant store would: once per request, so each round trip of a
keep-alive connection pays it and the bandwidth is untouched. `in_flight` counts the requests
passed on whose answer has not begun yet (held or at the store), `peak_in_flight` the most at
once: how many GETs a client keeps going in parallel.

`rule` may also pick one of the malformed answers (ANSWERS) for a request, each an answer
some S3 implementation gives at its edges: the proxy then fetches the store's whole answer
on a connection of its own (or makes one up), doctors it, and closes the connection after it.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

FAULTS = ("slowdown", "internal_error", "reset_request", "reset_response", "stall")
ANSWERS = {
    "checksum_error": "an error status carrying checksum headers (x-amz-checksum-crc32)",
    "gone": "a listed key that is gone on GET (404 NoSuchKey)",
    "short_body": "a body shorter than its Content-Length",
    "malformed_xml": "malformed XML (a listing cut in half)",
    "error_in_200": "a 200 with an error document inside (CompleteMultipartUpload)",
    "no_size": "a listing entry without Size",
    "no_last_modified": "a listing entry without LastModified, or a HEAD without Last-Modified",
    "garbage_date": "a garbage date (LastModified, Last-Modified)",
}
_REFUSALS = {
    "SlowDown": (503, "Service Unavailable", "Please reduce your request rate."),
    "InternalError": (500, "Internal Server Error", "We encountered an internal error. Please try again."),
    "AccessDenied": (403, "Forbidden", "Access Denied"),
    "NoSuchBucket": (404, "Not Found", "The specified bucket does not exist"),
    "NoSuchKey": (404, "Not Found", "The specified key does not exist."),
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
        self.latency = 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
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
        waiting: list[bool] = []         # one per request passed on whose answer has not begun
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
                if kind in ANSWERS:
                    self.counts[kind] += 1
                    client_writer.write(await self._malformed(kind, head, headers, client_reader, client_writer))
                    await client_writer.drain()
                    return
                if kind == "stall":
                    self.counts[kind] += 1
                    await asyncio.sleep(self.mix.stall_seconds)
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.target)
                    downstream = asyncio.create_task(self._answers(upstream[0], client_writer, cut_answer,
                                                                   waiting))
                waiting.append(True)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                if self.latency:
                    await asyncio.sleep(self.latency)
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
            self.in_flight -= len(waiting)
            waiting.clear()
            if downstream is not None:
                downstream.cancel()
            if upstream is not None:
                upstream[1].transport.abort()
            client_writer.transport.abort()

    async def _answers(self, server_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                       cut_answer: asyncio.Event, waiting: list[bool]) -> None:
        try:
            while data := await server_reader.read(1 << 16):
                if waiting and not data.startswith(b"HTTP/1.1 100"):
                    # An answer begins (clients here do not pipeline: one request at a time on a
                    # connection, so the data that follows a request is its answer).
                    waiting.pop()
                    self.in_flight -= 1
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

    async def _malformed(self, kind: str, head: bytes, headers: dict[str, str], client_reader: asyncio.StreamReader,
                         client_writer: asyncio.StreamWriter) -> bytes:
        """The doctored answer to one request (the connection is closed after it)."""
        if "100-continue" in headers.get("expect", "").lower():
            client_writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await client_writer.drain()
        body = b""
        reader = _body_reader(client_reader, headers)
        if reader is not None:
            body = b"".join([piece async for piece in reader])
        if kind == "gone":
            return _error_response("NoSuchKey")
        if kind == "checksum_error":
            # What rclone's server sent for a key deleted under it: an error with the checksum
            # headers of a body, which botocore's response-checksum wrapper trips over.
            return _error_response("NoSuchKey", extra="x-amz-checksum-crc32: AAAAAA==\r\n"
                                                      "x-amz-checksum-type: FULL_OBJECT\r\n")
        if kind == "error_in_200":
            return _error_response("InternalError", status=(200, "OK"))
        status_line, answer_headers, answer_body = await self._whole_answer(head, body)
        length = len(answer_body)
        if kind == "short_body":
            answer_body = answer_body[: length // 2]
        elif kind == "malformed_xml":
            answer_body = answer_body[: length // 2]
            length = len(answer_body)
        elif kind == "no_size":
            answer_body = re.sub(rb"<Size>[^<]*</Size>", b"", answer_body)
            length = len(answer_body)
        elif kind == "no_last_modified":
            answer_body = re.sub(rb"<LastModified>[^<]*</LastModified>", b"", answer_body)
            length = len(answer_body)
            answer_headers = [(n, v) for n, v in answer_headers if n.lower() != "last-modified"]
        elif kind == "garbage_date":
            answer_body = re.sub(rb"<LastModified>[^<]*</LastModified>", b"<LastModified>the 32nd of Smarch"
                                                                          b"</LastModified>", answer_body)
            length = len(answer_body)
            answer_headers = [(n, "the 32nd of Smarch" if n.lower() == "last-modified" else v)
                              for n, v in answer_headers]
        kept = [(n, v) for n, v in answer_headers
                if n.lower() not in ("content-length", "transfer-encoding", "connection")]
        if head.startswith(b"HEAD "):
            length = next((int(v) for n, v in answer_headers if n.lower() == "content-length"), 0)
        lines = [status_line, *(f"{n}: {v}" for n, v in kept), f"Content-Length: {length}", "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + answer_body

    async def _whole_answer(self, head: bytes, body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        """Send one request to the store on a new connection; its whole answer (final status
        line, headers, de-chunked body)."""
        lines = head.decode("latin-1").split("\r\n")
        lines = [lines[0], *(l for l in lines[1:] if l and not l.lower().startswith(("connection:", "expect:"))),
                 "Connection: close"]
        reader, writer = await asyncio.open_connection(*self.target)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read(-1)
        finally:
            writer.transport.abort()
        while raw.startswith(b"HTTP/1.1 100"):
            raw = raw[raw.index(b"\r\n\r\n") + 4:]
        answer_head, _, answer_body = raw.partition(b"\r\n\r\n")
        head_lines = answer_head.decode("latin-1").split("\r\n")
        headers = [(n.strip(), v.strip()) for n, v in (l.split(":", 1) for l in head_lines[1:] if ":" in l)]
        if any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in headers):
            answer_body = _dechunk(answer_body)
        return head_lines[0], headers, answer_body

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


def _error_response(code: str, *, extra: str = "", status: tuple[int, str] | None = None) -> bytes:
    code_status, reason, message = _REFUSALS[code]
    if status is not None:
        code_status, reason = status
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>").encode()
    return (f"HTTP/1.1 {code_status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode() + body


def _dechunk(data: bytes) -> bytes:
    out, position = [], 0
    while True:
        end = data.index(b"\r\n", position)
        size = int(data[position:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        position = end + 2 + size + 2


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a broken network or a dying store does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
