"""A fault-injecting HTTP proxy in front of an S3 endpoint, for the fault suite.

The workers are given the proxy's address as their S3 endpoint; the tests and their checks
talk to the real endpoint directly. The proxy runs an asyncio loop in a daemon thread of
the test process and listens on the loopback interface only. Each client connection
carries exactly one request: the proxy forwards it upstream with ``Connection: close`` and
tells the client the same, so that it can decide per request without parsing responses.

Modes, switched from any thread:

- pass: every request goes through unchanged (the default, and :meth:`FaultProxy.heal`);
- refuse: the listening socket is closed and every open connection aborted, so that new
  connections are refused, for ``seconds`` (:meth:`FaultProxy.refuse`);
- error: requests are answered with an S3 error (``503 SlowDown``, ``500 InternalError``)
  without reaching the endpoint, for the next ``count`` requests or ``seconds``
  (:meth:`FaultProxy.fail`);
- stall: GETs of one key get no answer for ``seconds``, then go through
  (:meth:`FaultProxy.stall`), as if the object's disk hung.

Everything is bounded: request heads are at most 64 KiB, every read has a timeout, and a
stall or outage ends on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

#: Longest request or response head accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a connection may stay silent before the proxy drops it.
IDLE_TIMEOUT_S = 120.0
#: Seconds a call from another thread waits for the proxy's loop.
CONTROL_TIMEOUT_S = 10.0
#: Bytes read at once when piping.
CHUNK_BYTES = 64 * 1024
#: Reason phrases of the error answers.
_REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}

_T = TypeVar("_T")


@dataclass
class _ErrorRule:
    """Answer requests with an S3 error while ``count`` lasts or until ``until``."""

    status: int
    code: str
    count: int | None
    until: float | None

    def take(self, now: float) -> bool:
        """Whether this request gets the error (and use one of ``count``)."""
        if self.until is not None and now >= self.until:
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True


@dataclass
class ProxyStats:
    """What the proxy has seen, for the tests' reports.

    Attributes:
        requests: Requests forwarded or answered.
        errors: Requests answered with an injected error.
        refused_s: Seconds the listening socket was closed, in total.
        stalled: Requests held by a stall.
    """

    requests: int = 0
    errors: int = 0
    refused_s: float = 0.0
    stalled: int = 0


class FaultProxy:
    """A loopback proxy to ``upstream`` that injects S3 faults on command.

    Args:
        upstream_host: Host of the real S3 endpoint.
        upstream_port: Its port.
        port: Port to listen on; 0 picks a free one (kept across outages).
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="s3-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._error: _ErrorRule | None = None
        self._stalls: dict[str, float] = {}
        self._reopen: asyncio.TimerHandle | None = None
        self._closed_at: float | None = None
        self._listen_lock = asyncio.Lock()

    # ------------------------------------------------------------------ life

    @property
    def url(self) -> str:
        """The endpoint URL to give the workers."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Start the loop's thread and listen.

        Returns:
            This proxy.
        """
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening, drop every connection and end the loop's thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ faults

    def heal(self) -> None:
        """End every fault now: listen again, stop errors and stalls."""
        self._call(self._heal())

    def refuse(self, seconds: float) -> None:
        """Refuse connections for ``seconds``: close the listening socket, abort open ones.

        Args:
            seconds: How long until the proxy listens again on the same port.
        """
        self._call(self._refuse(seconds))

    def fail(
        self,
        status: int = 503,
        code: str = "SlowDown",
        *,
        count: int | None = None,
        seconds: float | None = None,
    ) -> None:
        """Answer the next requests with an S3 error instead of forwarding them.

        Args:
            status: HTTP status (503 for ``SlowDown``, 500 for ``InternalError``).
            code: S3 error code in the XML body.
            count: How many requests get it; None for no limit but ``seconds``.
            seconds: For how long; None for no limit but ``count``.

        Raises:
            ValueError: If neither limit is given (the fault must end on its own).
        """
        if count is None and seconds is None:
            raise ValueError("an injected error needs a count or a duration")
        until = None if seconds is None else time.monotonic() + seconds
        self._error = _ErrorRule(status, code, count, until)

    def stall(self, key: str, seconds: float) -> None:
        """Hold every GET of ``key`` (``bucket/key``) for ``seconds`` before forwarding it.

        Args:
            key: Bucket and key, as in ``archive/scans/p001.png``.
            seconds: How long each such GET waits for its answer.
        """
        self._stalls["/" + key.lstrip("/")] = seconds

    @property
    def refusing(self) -> bool:
        """Whether the listening socket is closed now."""
        return self._closed_at is not None

    # ------------------------------------------------------------------ loop side

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(CONTROL_TIMEOUT_S)

    async def _listen(self) -> None:
        # One at a time, and only while closed: the reopen timer and heal() may race.
        async with self._listen_lock:
            if self._server is not None:
                return
            server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self._server = server
            self.port = int(server.sockets[0].getsockname()[1])
            if self._closed_at is not None:
                self.stats.refused_s += time.monotonic() - self._closed_at
                self._closed_at = None

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _shut(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        await self._stop_listening()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _heal(self) -> None:
        self._error = None
        self._stalls.clear()
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        await self._listen()

    async def _refuse(self, seconds: float) -> None:
        if self._server is None:
            return
        await self._stop_listening()
        self._closed_at = time.monotonic()

        def reopen() -> None:
            self._reopen = None
            self._loop.create_task(self._listen())

        self._reopen = self._loop.call_later(seconds, reopen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            head = await _read_head(reader)
            if head is None:
                return
            await self._answer(head, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only ``close()`` cancels; ending normally keeps asyncio's stream callback quiet.
            pass
        finally:
            self._connections.discard(writer)
            writer.transport.abort()

    async def _answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.stats.requests += 1
        method, path = _request_line(head)
        rule = self._error
        if rule is not None and rule.take(time.monotonic()):
            self.stats.errors += 1
            await _drain_body(head, reader)
            writer.write(_error_response(rule.status, rule.code, path))
            await writer.drain()
            return
        stall = self._stalls.get(path) if method == "GET" else None
        if stall is not None:
            self.stats.stalled += 1
            await asyncio.sleep(stall)
        await self._forward(head, reader, writer)

    async def _forward(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*self.upstream), IDLE_TIMEOUT_S
        )
        self._connections.add(up_writer)
        try:
            up_writer.write(_with_close(head))
            await up_writer.drain()
            upload = asyncio.create_task(_pipe(reader, up_writer))
            try:
                await _relay_response(up_reader, writer)
            finally:
                upload.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await upload
        finally:
            self._connections.discard(up_writer)
            up_writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Read one HTTP head (up to the blank line); None if the peer closed first."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    if len(head) > MAX_HEAD_BYTES:
        raise asyncio.LimitOverrunError("head too long", len(head))
    return head


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and URL-decoded path (without the query) of a request head."""
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = first.partition(" ")
    target = rest.rsplit(" ", 1)[0]
    return method, unquote(urlsplit(target).path)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    found = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


def _with_close(head: bytes) -> bytes:
    """The head with its ``Connection`` header replaced by ``Connection: close``."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


async def _drain_body(head: bytes, reader: asyncio.StreamReader) -> None:
    """Read (and drop) a request body the client sends without waiting for a go-ahead."""
    headers = _headers(head)
    if headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for our answer before sending its body
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await asyncio.wait_for(reader.readexactly(length), IDLE_TIMEOUT_S)


def _error_response(status: int, code: str, path: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by the fault proxy</Message>"
        f"<Resource>{path}</Resource><RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes from ``reader`` to ``writer`` until the reader ends."""
    while chunk := await asyncio.wait_for(reader.read(CHUNK_BYTES), IDLE_TIMEOUT_S):
        writer.write(chunk)
        await writer.drain()


async def _relay_response(up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy the upstream answer to the client, each head saying ``Connection: close``.

    Interim ``1xx`` answers (``100 Continue``) are relayed as they are and followed by
    the final one.
    """
    while True:
        head = await _read_head(up_reader)
        if head is None:
            return
        if head.startswith(b"HTTP/1.1 1") or head.startswith(b"HTTP/1.0 1"):
            writer.write(head)
            await writer.drain()
            continue
        writer.write(_with_close(head))
        await writer.drain()
        break
    await _pipe(up_reader, writer)
