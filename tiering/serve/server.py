"""The endpoint: an asyncio server, one event loop, one request at a time per connection.

Kafka's broker mutes a connection until its response is sent; so do we, which keeps
responses in request order (relayed group answers keep their correlation ids) and bounds
what one connection holds to one request and one response. Blocking source calls run in a
thread executor. A malformed or hostile frame closes that connection alone, with one log line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tiering.config import ServeConfig
from tiering.serve import apis, codec, tls
from tiering.serve.topology import StaticTopology, TopologySource, single

FETCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
HANDSHAKE_TIMEOUT_S = 10.0     # a client that never finishes its TLS handshake is dropped
READ_APIS = {18: "ApiVersions", 3: "Metadata", 1: "Fetch", 2: "ListOffsets", 10: "FindCoordinator"}


@dataclass(frozen=True)
class ServeMetrics:
    connections: Gauge
    connections_total: Counter
    requests: Counter
    bytes_served: Counter
    fetch_latency: Histogram

    @classmethod
    def on(cls, registry: CollectorRegistry) -> "ServeMetrics":
        return cls(
            Gauge("tiering_serve_open_connections", "Open connections to the Kafka-protocol endpoint",
                  registry=registry),
            Counter("tiering_serve_connections_total", "Connections accepted or refused", ["result"],
                    registry=registry),
            Counter("tiering_serve_requests_total", "Requests by API and top error", ["api", "error"],
                    registry=registry),
            Counter("tiering_serve_bytes_total", "Record bytes served by tier", ["tier"], registry=registry),
            Histogram("tiering_serve_fetch_seconds", "Fetch latency (long-poll waits included)",
                      buckets=FETCH_BUCKETS, registry=registry),
        )


def api_name(api_key: int) -> str:
    cls = codec.REQUESTS.get(api_key)
    return cls.name.removesuffix("Request") if cls is not None else "unknown"


class _Close(Exception):
    """End this connection (the reason is logged once)."""


class ServeEndpoint:
    def __init__(self, config: ServeConfig, source: Any, topology: TopologySource | None = None,
                 groups: Any | None = None, registry: CollectorRegistry | None = None, clock: Any = None, *,
                 log: Any = None, executor_threads: int = 8, poll_s: float = 0.05):
        self.config = config
        self.source = source
        self.groups = groups
        self.clock = clock
        self.log = log if log is not None else structlog.get_logger("tiering.serve")
        self.metrics = ServeMetrics.on(registry if registry is not None else CollectorRegistry())
        host, port = config.host_port
        self._topology = topology
        self._host, self._port = host, port
        self.versions = apis.supported_versions(groups)
        self._executor = concurrent.futures.ThreadPoolExecutor(executor_threads, thread_name_prefix="serve")
        self._ssl = tls.server_context(config)
        self._server: asyncio.base_events.Server | None = None
        self._ids = itertools.count(1)
        self._open: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task] = set()
        self.handlers: apis.Handlers | None = None
        self.poll_s = poll_s
        self.address: tuple[str, int] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.groups is not None and hasattr(self.groups, "start"):
            await self.groups.start()       # the relay learns the cluster's group API versions
            self.versions = apis.supported_versions(self.groups)
        # TLS in start_server, not StreamWriter.start_tls in _connection: the stream reader would
        # already have buffered the ClientHello. The cost: a refused handshake (no client
        # certificate, another CA) never reaches _connection, so it has no log event of ours
        # (asyncio drops it silently outside debug mode); the client sees the TLS alert.
        self._server = await asyncio.start_server(self._connection, self._host, self._port, ssl=self._ssl,
                                                  ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self._ssl else None,
                                                  reuse_address=True, limit=64 * 1024)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        if self._topology is None:
            advertised = self.config.advertised_host or (
                socket.getfqdn() if self._host in ("", "0.0.0.0", "::") else self._host)
            self._topology = StaticTopology(single(advertised, self.address[1]))
        self.handlers = apis.Handlers(self.source, self._topology.current, self._blocking, self.versions,
                                      max_inflight_bytes=self.config.max_inflight_bytes, poll_s=self.poll_s,
                                      log=self.log)
        self.log.info("kafka-protocol endpoint listening", listen=f"{self.address[0]}:{self.address[1]}",
                      tls=self._ssl is not None, mutual_tls=self.config.tls_ca_file is not None)

    def set_topology(self, topology: TopologySource) -> None:
        """Replace the topology (tests that need the bound port in it)."""
        self._topology = topology
        if self.handlers is not None:
            self.handlers.topology = topology.current

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self.groups is not None:
            await self.groups.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- one connection -------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self._open) >= self.config.max_connections:
            self.metrics.connections_total.labels("refused").inc()
            self.log.warning("connection refused: serve.max_connections reached", peer=peer,
                             max_connections=self.config.max_connections)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        subject = tls.peer_subject(writer.get_extra_info("peercert"))
        access = apis.Access(tls.allowed_topics(self.config, subject))
        self._open[conn_id] = writer
        self.metrics.connections.inc()
        self.metrics.connections_total.labels("accepted").inc()
        started = time.monotonic()
        requests = 0
        client_id = None
        reason = "closed by client"
        try:
            while True:
                frame = await self._read_frame(reader)
                if frame is None:
                    break
                requests += 1
                response, client_id = await self._answer(conn_id, frame, access, client_id)
                writer.write(response)
                await writer.drain()
        except _Close as exc:
            reason = str(exc)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            reason = f"connection lost: {type(exc).__name__}"
        except asyncio.CancelledError:
            reason = "endpoint stopping"
        except Exception as exc:   # a bug of ours must close one connection, never the endpoint
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.log.exception("kafka-protocol request failed", conn_id=conn_id)
        finally:
            self._open.pop(conn_id, None)
            self.metrics.connections.dec()
            if self.groups is not None:
                try:
                    await self.groups.close_connection(conn_id)
                except Exception:  # noqa: BLE001 - the relay's own problem; the connection is gone
                    pass
            writer.close()
            # one event per connection: who, for how long, how much, why it ended
            self.log.info("kafka-protocol connection", conn_id=conn_id, peer=peer, subject=subject,
                          client_id=client_id, requests=requests, seconds=round(time.monotonic() - started, 3),
                          end=reason)

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise _Close(f"truncated frame: {len(exc.partial)} of 4 size bytes") from None
            return None
        (size,) = codec.SIZE.unpack(head)
        if size < codec.HEAD.size or size > self.config.max_request_bytes:
            # closed before reading it: a huge declared size must not make us buffer it
            raise _Close(f"request size {size} outside {codec.HEAD.size}..{self.config.max_request_bytes} "
                         "(serve.max_request_bytes)")
        try:
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise _Close(f"truncated frame: {len(exc.partial)} of {size} bytes") from None

    async def _answer(self, conn_id: int, frame: bytes, access: apis.Access,
                      client_id: str | None) -> tuple[bytes, str | None]:
        try:
            req = codec.decode_request(frame, self.versions)
        except codec.UnsupportedRequest as exc:
            if exc.api_key == codec.API_VERSIONS_KEY:
                # as Kafka does: an ApiVersions it cannot read is answered in v0 with the table
                self.metrics.requests.labels("ApiVersions", str(apis.UNSUPPORTED_VERSION)).inc()
                body = self.handlers.api_versions(0, apis.UNSUPPORTED_VERSION)
                return codec.encode_response(codec.API_VERSIONS_KEY, 0, exc.correlation_id, body), client_id
            self.metrics.requests.labels(api_name(exc.api_key), "unsupported").inc()
            raise _Close(f"unsupported request: {exc}") from None
        except codec.MalformedRequest as exc:
            self.metrics.requests.labels("malformed", "malformed").inc()
            raise _Close(f"malformed request: {exc}") from None
        client_id = req.client_id
        key, version, body = req.api_key, req.api_version, req.body
        h = self.handlers
        assert h is not None
        if key in (8, 9, 11, 12, 13, 14, 15):
            relayed = await self.groups.forward(conn_id, frame) if self.groups is not None else None
            if relayed is not None:
                self.metrics.requests.labels(api_name(key), "relayed").inc()
                return codec.SIZE.pack(len(relayed)) + relayed, client_id
            values = apis.no_coordinator(key, body, version)
        elif key == 18:
            values = h.api_versions(version)
        elif key == 3:
            values = await h.metadata(body, version, access)
        elif key == 2:
            values = await h.list_offsets(body, version, access)
        elif key == 1:
            started = time.monotonic()
            outcome = apis.FetchOutcome({})
            values = await h.fetch(body, version, access, outcome)
            self.metrics.fetch_latency.observe(time.monotonic() - started)
            for tier, n in outcome.bytes_by_tier.items():
                self.metrics.bytes_served.labels(tier or "unknown").inc(n)
        elif key == 10:
            values = h.find_coordinator(body, version, self.groups is not None)
        else:
            values = apis.refused(key, body, version)
        self.metrics.requests.labels(api_name(key), str(_top_error(values))).inc()
        return codec.encode_response(key, version, req.correlation_id, values), client_id


def _top_error(values: dict) -> int:
    """The first error in an answer (top level, else the first per-item one), for metrics."""
    if values.get("error_code"):
        return values["error_code"]
    for key in ("responses", "topics", "coordinators", "groups"):
        for item in values.get(key) or ():
            if item.get("error_code"):
                return item["error_code"]
            for sub in item.get("partitions") or item.get("partition_responses") or ():
                if sub.get("error_code"):
                    return sub["error_code"]
    return 0


class ThreadedEndpoint:
    """Runs a ServeEndpoint on its own event loop in a thread (tests, and `tiering run`, whose
    main loop is synchronous). `start()` returns once it listens (or raises its bind error)."""

    def __init__(self, endpoint: ServeEndpoint):
        self.endpoint = endpoint
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="serve-loop", daemon=True)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.endpoint.start(), self._loop).result(timeout=30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            raise
        assert self.endpoint.address is not None
        return self.endpoint.address

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.endpoint.stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
