"""A small HTTP/1.1 keep-alive client for the Bot API's JSON calls (the publisher's posts).

aiohttp's general client (cookies, redirects, yarl URLs, multidict headers, trace signals, a
task per body write) cost about 0.4 ms of CPU a request; at 1,000 sends a second that was
most of a core. A Bot API call is one POST of a JSON body to a host the bot always talks to,
answered by a JSON body: this client does exactly that, over pooled keep-alive connections,
for about 0.15 ms. It also knows the moment a request's bytes are written (the `on_write`
callback, just before `transport.write`), which is when the rate limiter stamps a send.

What it handles: `Content-Length` and chunked answers, `Connection: close` and HTTP/1.0,
servers closing idle connections (a connection idle longer than `idle_timeout`, or closed by
the peer, is never reused), TLS for https URLs, and answers bounded in size. A request that
fails or times out closes its connection: an answer arriving later can never be read as the
next request's. Proxies are not: BotApiRequest keeps aiohttp for URLs that go through one.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

# Largest answer read: Bot API answers to sends are a few KB; this bounds a broken peer.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# The header fields whose values this client reads (in a lowered header block).
_FIELD = re.compile(rb"^(content-length|transfer-encoding|connection)[ \t]*:(.*)$", re.MULTILINE)
# The longest header block read before giving up on the peer.
_MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """The peer broke the protocol or the connection (the request may or may not have
    reached it)."""


class _Answer:
    """Reads one answer off the connection's bytes as they arrive."""

    __slots__ = ("body", "chunked", "done", "keep_alive", "length", "status")

    def __init__(self) -> None:
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body = bytearray()
        self.done = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._buffer = bytearray()
        self._answer: _Answer | None = None
        self._head_done = False
        self._waiter: asyncio.Future[_Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is not None and answer.length is None and not answer.chunked and self._head_done:
            answer.done = True  # an answer delimited by the connection's end
            self._finish(answer)
        else:
            self._fail(HttpError(f"the server closed the connection ({exc or 'EOF'})"))

    def request(self, data: bytes) -> asyncio.Future[_Answer]:
        """Write `data` (a whole request) and return the future of its answer."""
        assert self.transport is not None
        assert self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._answer = _Answer()
        self._head_done = False
        self._buffer.clear()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """The request's time is up: its caller gets TimeoutError (and drops the connection)."""
        self._fail(TimeoutError("no answer in time"))

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted
            return
        self._buffer += data
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)
            self.close()

    def _parse(self) -> None:
        answer = self._answer
        assert answer is not None
        buffer = self._buffer
        if not self._head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD_BYTES:
                    raise HttpError("the answer's headers are too long")
                return
            self._read_head(answer, bytes(buffer[:end]))
            del buffer[: end + 4]
            self._head_done = True
        if answer.chunked:
            self._read_chunks(answer)
        elif answer.length is not None:
            if len(buffer) >= answer.length:
                answer.body += buffer[: answer.length]
                del buffer[: answer.length]
                answer.done = True
        else:  # until the connection closes
            answer.body += buffer
            buffer.clear()
            answer.keep_alive = False
        if len(answer.body) > MAX_ANSWER_BYTES:
            raise HttpError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        if answer.done:
            self._finish(answer)

    @staticmethod
    def _read_head(answer: _Answer, head: bytes) -> None:
        status_line, _, fields = head.partition(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        try:
            answer.status = int(rest[:3])
        except ValueError:
            raise HttpError(f"not an HTTP answer: {status_line[:80]!r}") from None
        answer.keep_alive = version == b"HTTP/1.1"
        # Names are case-insensitive: the three that matter are found in the lowered block.
        for name, value in _FIELD.findall(fields.lower()):
            value = value.strip()
            if name == b"content-length":
                try:
                    answer.length = int(value)
                except ValueError:
                    raise HttpError(f"bad Content-Length {value[:40]!r}") from None
            elif name == b"transfer-encoding" and b"chunked" in value:
                answer.chunked = True
            elif name == b"connection":
                answer.keep_alive = value == b"keep-alive" or (
                    answer.keep_alive and value != b"close"
                )
        if answer.status in (204, 304) or 100 <= answer.status < 200:
            answer.length = 0

    def _read_chunks(self, answer: _Answer) -> None:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                trailer = buffer.find(b"\r\n\r\n", end)
                if trailer < 0:
                    return
                del buffer[: trailer + 4]
                answer.done = True
                return
            if len(buffer) < end + 2 + size + 2:
                return
            answer.body += buffer[end + 2 : end + 2 + size]
            del buffer[: end + 2 + size + 2]
            if len(answer.body) > MAX_ANSWER_BYTES:
                raise HttpError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")

    def _finish(self, answer: _Answer) -> None:
        waiter, self._waiter, self._answer = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter, self._answer = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class KeepAliveClient:
    """POSTs over at most `limit` pooled connections per host."""

    def __init__(self, *, limit: int, user_agent: str, idle_timeout: float = 15.0) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}

    async def post_json(
        self,
        url: str,
        body: bytes,
        *,
        connect_timeout: float | None,
        pool_timeout: float | None,
        total_timeout: float | None,
        on_write: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """POST `body` (JSON) to `url`; return the answer's status and body.

        Raises TimeoutError when a timeout passes, HttpError or OSError when the connection
        or the peer fails: the request may or may not have reached the server.
        """
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        key, start = target
        head = b"%sContent-Length: %d\r\nConnection: keep-alive\r\n\r\n" % (start, len(body))
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.limit)
        loop = asyncio.get_running_loop()
        # One timer a request, not asyncio.timeout's machinery twice over: at 1,000 sends a
        # second that was a tenth of the client's CPU. The pool's timeout applies only when
        # the pool is full; the total one runs from here to the answer's last byte.
        if slots.locked():
            async with asyncio.timeout(pool_timeout):
                await slots.acquire()
        else:
            await slots.acquire()
        try:
            deadline = None if total_timeout is None else loop.time() + total_timeout
            connection = self._pooled(key)
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect(key, connect_timeout)
            try:
                if on_write is not None:
                    on_write()
                waiter = connection.request(head + body)
                timer = None if deadline is None else loop.call_at(deadline, connection.expire)
                try:
                    answer = await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
            except BaseException:
                self._drop(connection)  # its answer may still come: never reuse it
                raise
            self._release(key, connection, answer.keep_alive)
            return answer.status, bytes(answer.body)
        finally:
            slots.release()

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """Where `url` goes (the pool's key) and its request head up to Content-Length."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        start = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {self.user_agent}\r\n"
            "Content-Type: application/json\r\n"
        ).encode("latin-1")
        target = ((scheme, host, port), start)
        # A bot posts to a handful of URLs (its base and the send methods): kept, bounded.
        if len(self._targets) >= 64:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _pooled(self, key: tuple[str, str, int]) -> _Connection | None:
        """An idle connection to `key` that is still fit to use, if there is one."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.closed or connection.transport is None:
                self._open.discard(connection)
                continue
            if connection.transport.is_closing() or now - connection.idle_since > self.idle_timeout:
                self._drop(connection)  # the server may be about to close it: a fresh one is safer
                continue
            return connection
        return None

    async def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = key
        context = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(
                _Connection, host, port, ssl=context, server_hostname=host if context else None
            )
        self._open.add(protocol)
        return protocol

    def _release(self, key: tuple[str, str, int], connection: _Connection, keep: bool) -> None:
        if not keep or connection.closed:
            self._drop(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(key, deque()).append(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def close(self) -> None:
        """Close every connection."""
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close
