"""A fault-injecting TCP/HTTP proxy for tests, placed between the daemon and a real server.

HTTP mode parses each request (answering ``Expect: 100-continue`` itself), forwards it on a
fresh upstream connection with ``Connection: close`` (so every request is a new decision), and may instead answer 500/503,
429 with ``Retry-After``, 409 (commit conflict, for catalog commits), stall (timeout), drop
the connection, or delay the response. TCP mode (Kafka) may drop or delay connections, and may
hold Kafka requests of given API keys (``FaultPlan.hold_api_keys``, e.g. 11 = JoinGroup): such a
request and everything after it on that connection is never forwarded, so its reply never comes.
Faults are drawn per request with a seeded RNG; ``counts`` records what was injected.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

HTTP_FAULTS = ("http_500", "http_503", "http_429", "timeout", "drop", "slow")
TCP_FAULTS = ("drop", "slow")
COMMIT_PATH = re.compile(rb"^POST /v1/(?:[^ ]*/)?namespaces/[^/ ]+/tables/[^/ ]+ ")


@dataclass
class FaultPlan:
    """Which faults, how often; ``conflict_rate`` answers 409 to table commits (REST catalog)."""

    faults: tuple[str, ...] = ()
    rate: float = 0.0
    conflict_rate: float = 0.0
    chunk_rate: float = 0.0
    """TCP mode: chance that a forwarded chunk of an open connection gets the fault."""
    hold_api_keys: frozenset[int] = frozenset()
    """TCP mode: Kafka requests with these API keys are held (never forwarded, never answered)."""
    slow_s: float = 1.5
    timeout_s: float = 30.0
    seed: int = 1
    enabled: bool = True
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, is_commit: bool = False) -> str | None:
        if not self.enabled:
            return None
        if is_commit and self.rng.random() < self.conflict_rate:
            return "http_409"
        if self.faults and self.rng.random() < self.rate:
            return self.rng.choice(self.faults)
        return None


def _response(status: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    return head.encode() + body


_CANNED = {
    "http_500": _response("500 Internal Server Error", b'{"error":{"message":"injected","type":"ServerError","code":500}}'),
    "http_503": _response("503 Service Unavailable"),
    "http_429": _response("429 Too Many Requests", extra="Retry-After: 1\r\n"),
    "http_409": _response("409 Conflict", b'{"error":{"message":"injected conflict","type":"CommitFailedException","code":409}}'),
}


class FaultProxy:
    """Runs an asyncio proxy in a background thread: ``FaultProxy(upstream_port, plan).start()``."""

    def __init__(self, upstream_port: int, plan: FaultPlan, *, http: bool = True, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = (host, upstream_port)
        self.plan = plan
        self.http = http
        self.counts: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listener, cancel the connections in flight (a stalled one too), stop."""

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        handler = self._serve_http if self.http else self._serve_tcp
        self._server = self._loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fault = self.plan.draw()
        self.counts[fault or "pass"] += 1
        if fault == "drop":
            writer.close()
            return
        if fault == "slow":
            await asyncio.sleep(self.plan.slow_s)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.plan.enabled and self.plan.faults and self.plan.rng.random() < self.plan.chunk_rate:
                        chunk_fault = self.plan.rng.choice(self.plan.faults)
                        self.counts[chunk_fault] += 1
                        if chunk_fault == "drop":
                            writer.close()
                            up_w.close()
                            return
                        await asyncio.sleep(self.plan.slow_s)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        upstream = self._pipe_kafka_requests(reader, up_w) if self.plan.hold_api_keys else pipe(reader, up_w)
        await asyncio.gather(upstream, pipe(up_r, writer))

    async def _pipe_kafka_requests(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Forward whole Kafka request frames (size, then api key first in the header) until one
        has a held API key; then forward nothing more and keep the connection open."""
        try:
            while True:
                size = await src.readexactly(4)
                frame = await src.readexactly(int.from_bytes(size, "big"))
                api_key = int.from_bytes(frame[:2], "big", signed=True)
                if self.plan.enabled and api_key in self.plan.hold_api_keys:
                    self.counts[f"held_api_{api_key}"] += 1
                    await src.read(-1)  # until the client gives up and closes
                    return
                dst.write(size + frame)
                await dst.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"\r\nexpect: 100-continue" in head.lower():  # S3 PUTs wait for it before the body
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await self._read_body(reader, head)
                self.requests[head.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
                fault = self.plan.draw(is_commit=bool(COMMIT_PATH.match(head)))
                self.counts[fault or "pass"] += 1
                if fault in _CANNED:
                    writer.write(_CANNED[fault])
                    await writer.drain()
                    break
                if fault == "drop":
                    break
                if fault == "timeout":
                    await asyncio.sleep(self.plan.timeout_s)
                    break
                if fault == "slow":
                    await asyncio.sleep(self.plan.slow_s)
                response = await self._forward(head, body)
                writer.write(response)
                await writer.drain()
                if b"\r\nconnection: close" in response.split(b"\r\n\r\n", 1)[0].lower():
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
        lower = head.lower()
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
        if m:
            return await reader.readexactly(int(m.group(1)))
        if b"\r\ntransfer-encoding: chunked" in lower:
            chunks = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                chunks += size_line + chunk
                if size == 0:
                    return chunks
        return b""

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = [ln for ln in head.split(b"\r\n") if ln and not ln.lower().startswith((b"connection:", b"expect:"))]
        request = b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        up_w.write(request)
        await up_w.drain()
        response = await up_r.read(-1)
        up_w.close()
        return response
