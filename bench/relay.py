"""TCP relays on loopback for the benchmarks: one counts what the uploader really put on the
wire, per instant, measured outside the process being measured; one adds a store's latency."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


class _Relay:
    """A TCP relay on a free loopback port, served by an asyncio loop in a thread of its own;
    subclasses say what happens to the bytes (`_handle`)."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, sock=self._sock)
        async with server:
            await server.serve_forever()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class CountingRelay(_Relay):
    def __init__(self, target_host: str, target_port: int):
        self.samples: list[tuple[float, int]] = []     # (monotonic time, bytes client -> server)
        super().__init__(target_host, target_port)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)

        async def pipe(reader, writer, count: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if count:
                        self.samples.append((time.monotonic(), len(data)))
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False))


class LatencyRelay(_Relay):
    """A TCP relay that holds each HTTP request for `delay` seconds before passing it on, as a
    distant object store would: the wait is per request (a new request is data from the client
    after the server has answered), not per byte, so a keep-alive connection pays it for every
    GET, and bandwidth is untouched."""

    def __init__(self, target_host: str, target_port: int, delay: float):
        self.delay = delay
        self.requests = 0
        super().__init__(target_host, target_port)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        answered = [True]   # a list: shared by the two directions of this connection

        async def upstream() -> None:
            try:
                while data := await client_reader.read(1 << 20):
                    if answered[0]:
                        answered[0] = False
                        self.requests += 1
                        if self.delay:
                            await asyncio.sleep(self.delay)
                    server_writer.write(data)
                    await server_writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                server_writer.close()

        async def downstream() -> None:
            try:
                while data := await server_reader.read(1 << 20):
                    answered[0] = True
                    client_writer.write(data)
                    await client_writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                client_writer.close()

        await asyncio.gather(upstream(), downstream())
