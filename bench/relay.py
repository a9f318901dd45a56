"""A byte-counting TCP relay: what the uploader really put on the wire, per instant,
measured outside the process being measured."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


class CountingRelay:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.samples: list[tuple[float, int]] = []     # (monotonic time, bytes client -> server)
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
