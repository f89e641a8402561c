"""Decoding an HTTP body's Content-Encoding under a byte cap, layer by layer.

httpx decodes a whole network chunk at once and the cap could only be checked afterwards: with
`Content-Encoding: gzip, gzip`, 658 bytes on the wire became 600 MB in memory before the size
check ran. Here every layer inflates at most as many bytes as the cap still allows
(zlib's `max_length`), so memory stays within a few times the cap whatever the input, and the
body is refused as soon as any layer would pass the cap.
"""

from __future__ import annotations

import zlib

# Codings the bot asks for and decodes; anything else in Content-Encoding is refused.
ACCEPT_ENCODING = "gzip, deflate"
# More layers than this is no server's honest answer.
MAX_LAYERS = 2


class BodyTooLarge(ValueError):
    """The decoded body would pass the cap."""


class UnsupportedEncoding(ValueError):
    """Content-Encoding names a coding the bot did not ask for, or too many of them."""


class _Inflater:
    """One gzip or deflate layer; concatenated gzip members are read one after another."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.produced = 0
        self._zlib: zlib._Decompress | None = None
        self._first = True

    def _new(self, data: bytes) -> zlib._Decompress:
        if self.coding == "deflate":
            # "deflate" is meant to be zlib-wrapped; some servers send raw deflate.
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        """Inflate `data`; raise BodyTooLarge once this layer's output would pass `limit`."""
        out: list[bytes] = []
        while data:
            if self._zlib is None:
                self._zlib = self._new(data)
            room = limit - self.produced + 1
            try:
                chunk = self._zlib.decompress(data, room)
            except zlib.error as exc:
                raise UnsupportedEncoding(f"broken {self.coding} data: {exc}") from exc
            self.produced += len(chunk)
            if self.produced > limit:
                raise BodyTooLarge(f"over {limit} bytes once decompressed")
            out.append(chunk)
            if self._zlib.unconsumed_tail:
                data = self._zlib.unconsumed_tail  # only when room ran out, raised above
                continue
            if self._zlib.eof and self.coding != "deflate":
                data = self._zlib.unused_data  # a further gzip member, if any
                self._zlib = None
            else:
                data = b""
        return b"".join(out)


class BoundedDecoder:
    """Decodes a body chunk by chunk; its output (and every layer's) stays within `limit`."""

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > MAX_LAYERS:
            raise UnsupportedEncoding(f"{len(codings)} stacked content encodings")
        for coding in codings:
            if coding not in ("gzip", "x-gzip", "deflate"):
                raise UnsupportedEncoding(f"Content-Encoding {coding!r}")
        # Listed in the order they were applied: undone last first.
        self._layers = [
            _Inflater("deflate" if c == "deflate" else "gzip") for c in reversed(codings)
        ]
        self.limit = limit
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        """Decode one chunk off the wire; raise BodyTooLarge when the body passes the cap."""
        for layer in self._layers:
            if not data:
                return b""
            data = layer.feed(data, self.limit)
        self.size += len(data)
        if self.size > self.limit:
            raise BodyTooLarge(f"over {self.limit} bytes")
        return data
