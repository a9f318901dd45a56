"""The HTTP endpoint on `metrics.listen`: /metrics, /healthz and /readyz.

prometheus_client's own server answers every path with the metrics, and http.server's
ThreadingHTTPServer starts a thread per connection with no deadline: 2,000 half-sent requests
held 2,000 threads and, under a process limit, killed the daemon. So this is a small asyncio
server on a thread of its own, with prometheus_client's exposition:

- one thread holds every connection, however many and however slow (an event loop waits on
  sockets for nothing; a thread pool in front of http.server would still spend a thread per
  slow client, and bounding those threads is the same as bounding connections here);
- at most MAX_CONNECTIONS are served at once; a connection beyond them is closed as soon as
  it is accepted (a scraper retries on its next interval; a slowloris gets nothing to hold);
- the request line and headers must arrive whole within REQUEST_TIMEOUT_SECONDS and fit in
  MAX_REQUEST_BYTES, and the answer must be taken within the same time, or the connection is
  closed: a slot is held for at most twice that timeout.

These are fixed rather than configurable: the endpoint serves a Prometheus scraper, an
operator's curl and systemd-style probes on loopback, a handful of clients each asking a few
kilobytes; no deployment needs other values, and fewer keys are fewer ways to misconfigure.
Only the request line is parsed (method and path are all three endpoints look at); the
headers are read to the blank line, within the limits, and ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from http import HTTPStatus
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 8 * 1024
_TEXT = "text/plain; charset=utf-8"

Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, listen: str, registry: CollectorRegistry, healthy: Probe, ready: Probe, *,
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT_SECONDS):
        host, _, port = listen.rpartition(":")
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._max_connections = max_connections
        self._timeout = request_timeout
        self._active: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        # Bound here, on the caller's thread, so a port clash fails at start with an OSError.
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, host.strip("[]"), int(port), limit=MAX_REQUEST_BYTES))
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._thread = threading.Thread(target=self._loop.run_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._port

    @property
    def active_connections(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop listening and drop every connection at once (a slow client must not delay the
        daemon's exit)."""
        if self._thread.is_alive():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                done.result(timeout=5)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        else:
            self._loop.run_until_complete(self._shutdown())
        if not self._loop.is_running():
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in connections:
            task.cancel()    # each one's `finally` aborts its socket
        await asyncio.gather(*connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._active) >= self._max_connections:
            writer.transport.abort()    # no slot: closed at once, nothing read
            return
        self._active.add(writer)
        try:
            await asyncio.wait_for(self._answer(reader, writer), self._timeout)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError,
                ValueError, ConnectionError):
            pass    # too slow, too big, or gone: the connection is dropped, nothing to report
        except asyncio.CancelledError:
            pass    # close(): ended here, so asyncio's streams do not log the cancellation
        finally:
            self._active.discard(writer)
            if not writer.is_closing():
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")   # bounded by the stream limit and the deadline
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, body, content_type = HTTPStatus.BAD_REQUEST, b"bad request\n", _TEXT
        elif parts[0] not in ("GET", "HEAD"):
            status, body, content_type = HTTPStatus.METHOD_NOT_ALLOWED, b"only GET\n", _TEXT
        else:
            status, body, content_type = self._route(parts[1].split("?", 1)[0])
        header = (f"HTTP/1.0 {status.value} {status.phrase}\r\n"
                  f"Content-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n").encode("latin-1")
        writer.write(header if parts and parts[0] == "HEAD" else header + body)
        await writer.drain()   # a client that does not read its answer runs into the deadline
        writer.close()
        await writer.wait_closed()

    def _route(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        if path == "/metrics":
            return HTTPStatus.OK, generate_latest(self._registry), CONTENT_TYPE_LATEST
        if path in ("/healthz", "/readyz"):
            ok, why = (self._healthy if path == "/healthz" else self._ready)()
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), (why + "\n").encode(), _TEXT
        return HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /readyz\n", _TEXT
