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
on every redirect and every HLS segment they follow. ``allow_addresses`` lifts the rule for named
networks only (``10.0.0.0/8``, ``192.168.1.20``, ``127.0.0.1:8000`` with a port).

:meth:`NetworkPolicy.connect` is the one way the stages open a connection: it resolves the name
once, checks every address, connects to a checked address and checks the connected socket's peer
address again, so a name that answers differently a moment later (DNS rebinding) cannot move the
connection somewhere else. :mod:`curation.fetch` builds the HTTP client and the loopback proxy
(for yt-dlp and ffmpeg) on it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


Resolver = Callable[[str, "int | None"], list[str]]


def parse_allowed(entry: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]:
    """An ``allow_addresses`` entry: a network or address, optionally with a port.

    Forms: ``10.0.0.0/8``, ``192.168.1.20``, ``127.0.0.1:8000``, ``[::1]:8000``, ``fd00::/8``.

    Raises:
        UrlRefused: ``bad_allow_address`` for anything else.
    """
    text = entry.strip() if isinstance(entry, str) else ""
    port: int | None = None
    net_text = text
    if text.startswith("["):
        net_text, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                net_text = ""
            else:
                port = int(rest[1:])
    elif text.count(":") == 1:
        net_text, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isdigit() else -1
    try:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is outside 1..65535")
        return ipaddress.ip_network(net_text, strict=False), port
    except ValueError as exc:
        raise UrlRefused("bad_allow_address", f"allowed address {entry!r} must be a network or "
                         "address, optionally with a port (10.0.0.0/8, 192.168.1.20, "
                         f"127.0.0.1:8000, [::1]:8000): {exc}") from None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The rule a stage applies to every URL it fetches.

    Attributes:
        allow_private_network: fetch from loopback/private/link-local addresses too.
        allow_file: accept ``file:`` URLs (regular files only).
        schemes: network schemes accepted (``file`` is governed by ``allow_file``).
        allow_addresses: non-public networks allowed anyway (see :func:`parse_allowed`).
        resolver: name -> addresses (default: the system's ``getaddrinfo``); not part of the
            policy's identity.
    """

    allow_private_network: bool = False
    allow_file: bool = False
    schemes: tuple[str, ...] = WEB_SCHEMES
    allow_addresses: tuple[str, ...] = ()
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.allow_addresses:
            parse_allowed(entry)  # fail at construction, not at the first fetch

    def allowed_schemes(self) -> tuple[str, ...]:
        """The accepted schemes, ``file`` included when allowed."""
        return (*self.schemes, "file") if self.allow_file else self.schemes

    def version_params(self) -> dict[str, object]:
        """What goes into a stage version: the policy changes which items can succeed."""
        params: dict[str, object] = {"schemes": sorted(self.allowed_schemes()),
                                     "private_network": self.allow_private_network}
        if self.allow_addresses:  # only when set, so versions without it stay as they were
            params["allow_addresses"] = sorted(self.allow_addresses)
        return params

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
            port = _port(parts) or default_port(scheme)
            self.check_addresses(host, self.resolve(host, port), url, port)

    def resolve(self, host: str, port: int | None = None) -> list[str]:
        """The addresses of ``host`` (through :attr:`resolver` when one is set)."""
        if self.resolver is not None:
            try:
                ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
                return [host.strip("[]")]  # an IP literal needs no resolver
            except ValueError:
                return list(self.resolver(host, port))
        return resolve(host, port)

    def address_allowed(self, address: str, port: int | None = None) -> bool:
        """Whether a connection to ``address`` (and ``port``) is allowed."""
        if self.allow_private_network or address_is_public(address):
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for entry in self.allow_addresses:
            net, entry_port = parse_allowed(entry)
            if ip.version == net.version and ip in net and entry_port in (None, port):
                return True
        return False

    def check_addresses(self, host: str, addresses: Iterable[str], url: str = "",
                        port: int | None = None) -> list[str]:
        """Refuse when any of ``addresses`` (of ``host``) is not allowed; else return them.

        Every address must pass, not only one: a name that also resolves to an internal address
        is refused, whichever address a client would pick.
        """
        addresses = list(addresses)
        if not addresses:
            raise UrlRefused("unresolvable_host", f"host {host!r} resolves to no address")
        bad = [a for a in addresses if not self.address_allowed(a, port)]
        if bad:
            raise UrlRefused("private_address", f"host {host!r} of {url or host!r} resolves to "
                             f"non-public address {bad[0]}; pass --allow-private-network to "
                             "fetch from loopback or private networks")
        return addresses

    def connect(self, host: str, port: int, timeout: float | None,
                url: str = "") -> socket.socket:
        """A TCP connection to ``host:port`` at an address this policy allows.

        The name is resolved once, every address is checked, the connection goes to a checked
        address, and the connected peer is checked again.

        Raises:
            UrlRefused: the host is not allowed (see :meth:`check_addresses`).
            OSError: no checked address accepted the connection.
        """
        addresses = self.check_addresses(host, self.resolve(host, port), url, port)
        error: OSError | None = None
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect((address, port))
                peer = sock.getpeername()[0]
                if not self.address_allowed(peer, port):
                    raise UrlRefused("private_address", f"connected peer {peer} of {host!r} is "
                                     "not a public address")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except UrlRefused:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"could not connect to {host}:{port}")


def default_port(scheme: str) -> int | None:
    """The port a URL of ``scheme`` uses when it names none."""
    return {"http": 80, "https": 443, "rtmp": 1935, "rtsp": 554}.get(scheme.lower())


def split_url(url: str) -> urllib.parse.SplitResult:
    """``urlsplit`` of a URL that is a non-empty string without control characters and with a
    valid port.

    Raises:
        UrlRefused: ``bad_url``.
    """
    return _split(url)


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
