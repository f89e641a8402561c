"""The keep-alive client the posts go through (bot/delivery/keepalive.py), against a real
socket server on 127.0.0.1 that answers as scripted: connections reused, answers framed by
length, by chunks or by the connection's end, and nothing ever read from a connection that a
failed or timed-out request left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bot.delivery.keepalive import MAX_ANSWER_BYTES, HttpError, KeepAliveClient

OK = b'{"ok":true,"result":{"message_id":1}}'
Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # False: close after it


def length_answer(body: bytes = OK, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


class Server:
    """Counts connections and requests; answers each request with `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.answer(head + body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[Server]:
    server = Server(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/bot123:ABC/sendMessage"
    async with listener:
        yield server


def client() -> KeepAliveClient:
    return KeepAliveClient(limit=4, user_agent="test")


async def post(c: KeepAliveClient, url: str, **kw: object) -> tuple[int, bytes]:
    timeouts: dict[str, float | None] = {
        "connect_timeout": 2.0, "pool_timeout": 2.0, "total_timeout": 2.0,
    }  # fmt: skip
    return await c.post_json(url, b'{"chat_id":1}', **(timeouts | kw))  # type: ignore[arg-type]


async def test_requests_reuse_one_connection_and_name_the_request_fully() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(length_answer())
        return True

    async with serving(answer) as server:
        c = client()
        for _ in range(3):
            assert await post(c, server.url) == (200, OK)
        await c.close()
    assert server.connections == 1 and len(server.requests) == 3
    head = server.requests[0].decode()
    assert head.startswith("POST /bot123:ABC/sendMessage HTTP/1.1\r\n")
    assert "Content-Type: application/json" in head and head.endswith('\r\n\r\n{"chat_id":1}')


async def test_a_chunked_answer_is_read_whole() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (OK[:10], OK[10:]):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # in separate packets
        writer.write(b"0\r\n\r\n")
        return True

    async with serving(answer) as server:
        c = client()
        assert await post(c, server.url) == (200, OK)
        assert await post(c, server.url) == (200, OK)
        await c.close()
    assert server.connections == 1


async def test_connection_close_and_http_1_0_are_not_reused() -> None:
    answers = iter([length_answer(extra="Connection: close\r\n"), length_answer()])

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(answers))
        return True

    async with serving(answer) as server:
        c = client()
        await post(c, server.url)
        await post(c, server.url)
        await c.close()
    assert server.connections == 2


async def test_an_answer_ended_by_the_connection_is_read() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + OK)
        return False  # and close

    async with serving(answer) as server:
        c = client()
        assert await post(c, server.url) == (200, OK)
        assert await post(c, server.url) == (200, OK)
        await c.close()
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(length_answer())
        await writer.drain()
        return False  # keep-alive announced, but the server closes it after answering

    async with serving(answer) as server:
        c = client()
        await post(c, server.url)
        await asyncio.sleep(0.05)
        assert await post(c, server.url) == (200, OK)
        await c.close()
    assert server.connections == 2


async def test_a_timed_out_request_closes_its_connection() -> None:
    calls = 0

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)  # too late: the client has given up
        writer.write(length_answer(body=f'{{"ok":true,"result":{calls}}}'.encode()))
        return True

    async with serving(answer) as server:
        c = client()
        with pytest.raises(TimeoutError):
            await post(c, server.url, total_timeout=0.1)
        # The next request never reads the late answer of the first: a new connection.
        _, body = await post(c, server.url)
        await c.close()
    assert body == b'{"ok":true,"result":2}'
    assert server.connections == 2


async def test_the_write_is_announced_before_the_bytes_leave() -> None:
    seen: list[int] = []

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(length_answer())
        return True

    async with serving(answer) as server:
        c = client()
        await post(c, server.url, on_write=lambda: seen.append(len(server.requests)))
        await c.close()
    assert seen == [0]  # called before the server had the request


async def test_a_broken_or_huge_answer_is_an_error() -> None:
    answers = iter(
        [
            b"SSH-2.0-OpenSSH\r\n\r\n",
            f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_ANSWER_BYTES + 1}\r\n\r\n".encode()
            + b"x" * (MAX_ANSWER_BYTES + 1),
        ]
    )

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(answers))
        return True

    async with serving(answer) as server:
        c = client()
        with pytest.raises(HttpError, match="not an HTTP answer"):
            await post(c, server.url)
        with pytest.raises(HttpError, match="larger than"):
            await post(c, server.url)
        await c.close()


async def test_a_refused_connection_is_an_os_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    c = client()
    with pytest.raises(OSError):
        await post(c, f"http://127.0.0.1:{port}/bot1:A/sendMessage")
    await c.close()
