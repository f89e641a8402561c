"""Which addresses the bot may fetch from, and requests pinned to the address that was checked.

Feeds and article pages are both fetched through `pinned_request`: the host is resolved here,
the addresses are judged, and the request goes to the judged address (the name stays in the
Host header and in TLS SNI), so a second DNS answer (DNS rebinding) cannot swap in another.
Redirects are followed by the callers, hop by hop, each hop judged again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# Resolves (host, port) to IP address strings; loop.getaddrinfo in production.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve `host` with the event loop's getaddrinfo (in a worker thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_of(url: str) -> str:
    """The lower-case host name (IDNA) of `url`, without port or brackets; "" if none."""
    try:
        host = urlsplit(url).hostname or ""
        return host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return ""


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (not private, loopback, link-local…).

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64, IPv4-compatible)
    is judged by the IPv4 address inside: 2002:7f00:1::1 reaches 127.0.0.1.
    """
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False  # local-use NAT64: a private translator
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address (the one a request would reach)
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))  # IPv4-compatible ::a.b.c.d (deprecated)
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A request pinned to one checked address, and what the check saw."""

    request: httpx.Request
    address: str
    public: bool


class Refused(Exception):
    """The URL may not be fetched (its scheme, host or address); never sent."""


async def pinned_request(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    resolver: Resolver,
    *,
    require_public: bool,
) -> Target:
    """Resolve `url`'s host and build a GET pinned to its first address.

    With `require_public`, every address of the host must be public (a name that also
    resolves to a private address is refused, whichever address would be used).
    Raises Refused, or OSError when the name cannot be resolved.
    """
    parts = urlsplit(url)
    host = host_of(url)
    if parts.scheme not in ("http", "https") or not host:
        raise Refused("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolver(host, port)
    if not addresses:
        raise OSError(f"{host} has no address")
    public = all(is_public_address(a) for a in addresses)
    if require_public and not public:
        blocked = next(a for a in addresses if not is_public_address(a))
        raise Refused(f"{host} resolves to non-public {blocked}")
    address = addresses[0].split("%", 1)[0]
    pinned = httpx.URL(url).copy_with(host=address)
    # The name goes in the Host header and, for TLS, in SNI and the certificate check.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    request = client.build_request(
        "GET", pinned, headers={**headers, "Host": authority(host, parts.port)},
        extensions=extensions,
    )  # fmt: skip
    return Target(request, address, public)


def authority(host: str, port: int | None) -> str:
    """`host[:port]` as it goes in a Host header (IPv6 literals in brackets)."""
    name = f"[{host}]" if ":" in host else host
    return f"{name}:{port}" if port else name
