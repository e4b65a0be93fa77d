"""Which URLs the curation stages may fetch (docs/DECISIONS.md, D4).

URLs reach the stages from untrusted files: corpora, URL lists, search results, playlists and the
redirects servers answer with. By default a URL is fetched only when

- its scheme is allowed (``http``/``https``; ``file`` only with ``allow_file`` and only for a
  regular file; a stage may allow other schemes, such as ``record``'s stream schemes), and
- every address its host name resolves to is a global one: loopback, private, link-local,
  shared (CGNAT), multicast, reserved and unspecified addresses are refused, IPv4-mapped IPv6
  addresses included.

``allow_private_network=True`` (``--allow-private-network``) lifts the address rule, for servers a
user runs on their own network (the demo and the tests serve on 127.0.0.1). The check resolves the
name itself, so a public name that resolves to a private address is refused too; callers repeat it
on every redirect and every HLS segment they follow.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from prevad.errors import PrevadError

#: Schemes fetched over the network by default.
WEB_SCHEMES: tuple[str, ...] = ("http", "https")


class UrlRefused(PrevadError, ValueError):
    """A URL breaks the network policy. ``reason`` is a short token counted in stage stats."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def address_is_public(address: str) -> bool:
    """Whether an IP address (text) is a global unicast address.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are judged by the IPv4 address they carry.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_unspecified or ip.is_reserved)


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself).

    Raises:
        UrlRefused: ``unresolvable_host`` when the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise UrlRefused("unresolvable_host", f"host {host!r} does not resolve: {exc}") from exc
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The rule a stage applies to every URL it fetches.

    Attributes:
        allow_private_network: fetch from loopback/private/link-local addresses too.
        allow_file: accept ``file:`` URLs (regular files only).
        schemes: network schemes accepted (``file`` is governed by ``allow_file``).
    """

    allow_private_network: bool = False
    allow_file: bool = False
    schemes: tuple[str, ...] = WEB_SCHEMES

    def allowed_schemes(self) -> tuple[str, ...]:
        """The accepted schemes, ``file`` included when allowed."""
        return (*self.schemes, "file") if self.allow_file else self.schemes

    def version_params(self) -> dict[str, object]:
        """What goes into a stage version: the policy changes which items can succeed."""
        return {"schemes": sorted(self.allowed_schemes()),
                "private_network": self.allow_private_network}

    def check(self, url: str) -> None:
        """Refuse ``url`` unless the policy allows fetching it.

        Raises:
            UrlRefused: with reason ``bad_url``, ``scheme_not_allowed``, ``file_not_regular``,
                ``unresolvable_host`` or ``private_address``.
        """
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in self.allowed_schemes():
            raise UrlRefused("scheme_not_allowed", f"URL scheme {scheme!r} of {url!r} is not "
                             f"allowed (allowed: {', '.join(self.allowed_schemes())})")
        if scheme == "file":
            _check_regular_file(url, parts)
            return
        host = parts.hostname
        if not host:
            raise UrlRefused("bad_url", f"URL {url!r} has no host")
        if not self.allow_private_network:
            self.check_addresses(host, resolve(host, _port(parts)), url)

    def check_addresses(self, host: str, addresses: Iterable[str], url: str = "") -> None:
        """Refuse when any of ``addresses`` (of ``host``) is not public, unless allowed."""
        if self.allow_private_network:
            return
        bad = [a for a in addresses if not address_is_public(a)]
        if bad:
            raise UrlRefused("private_address", f"host {host!r} of {url or host!r} resolves to "
                             f"non-public address {bad[0]}; pass --allow-private-network to "
                             "fetch from loopback or private networks")


def _split(url: str) -> urllib.parse.SplitResult:
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("bad_url", f"URL must be a non-empty string, got {url!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in url):
        raise UrlRefused("bad_url", f"URL {url!r} contains control characters")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        _port(parts)
    except ValueError as exc:
        raise UrlRefused("bad_url", f"URL {url!r} is malformed: {exc}") from exc
    return parts


def _port(parts: urllib.parse.SplitResult) -> int | None:
    return parts.port  # raises ValueError for a port outside 0..65535


def _check_regular_file(url: str, parts: urllib.parse.SplitResult) -> None:
    if parts.netloc not in ("", "localhost"):
        raise UrlRefused("bad_url", f"file URL {url!r} names a remote host")
    path = urllib.parse.unquote(parts.path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UrlRefused("file_not_regular", f"file URL {url!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise UrlRefused("file_not_regular", f"file URL {url!r} is not a regular file "
                         "(devices, FIFOs and folders are never read)")
