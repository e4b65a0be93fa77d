"""Bounded fetching under the network policy: the HTTP client and the loopback proxy.

Every byte ``acquire`` and ``record`` take from the network passes through this module, so the
rules of docs/DECISIONS.md (D4) and the per-item bounds hold whichever program does the fetching:

- :class:`HttpClient` — our own HTTP/1.1 client (``http.client`` on sockets opened by
  :meth:`NetworkPolicy.connect`): every redirect hop is checked, cookies, user agent and an
  upstream ``--proxy`` are applied, and bodies are read under a :class:`Budget`.
- :class:`PolicyProxy` — a forward proxy on 127.0.0.1 for the programs we do not write: yt-dlp
  (``proxy=``) and ffmpeg (``http_proxy``). Each request (plain HTTP) or tunnel (``CONNECT`` for
  HTTPS) it relays is checked and pinned like the client's own, so redirects, playlists and every
  HLS segment are checked on the connection that really fetches them.
- :class:`Budget` — one item's bounds: bytes (``--max-bytes``) and a wall-clock deadline
  (``--timeout``). When either runs out the budget is *aborted*: its sockets are closed and its
  processes killed, so nothing (an endless body, an endless live playlist) outlives its bound.
- :class:`HostLimiter` — a per-host pace (seconds between request starts) and bandwidth
  (bytes/s) shared by every concurrent download of a run.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import selectors
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from curation.common import CurationError
from curation.netpolicy import NetworkPolicy, UrlRefused, default_port, split_url

#: Redirect hops followed before giving up (browsers use 20, curl 50; a video link needs few).
MAX_REDIRECTS = 10
#: Size of one read from the network.
CHUNK = 256 * 1024
_HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
))


class FetchError(CurationError):
    """A fetch ended without the file. ``reason`` is the stats token, ``transient`` whether a
    retry may succeed."""

    reason = "download_error"
    transient = False

    def __init__(self, message: str, reason: str | None = None,
                 transient: bool | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if transient is not None:
            self.transient = transient


class TooLarge(FetchError):
    """More bytes than ``--max-bytes``."""

    reason = "too_large"


class DeadlineExceeded(FetchError):
    """The item's wall-clock ``--timeout`` ran out (not retried within the run)."""

    reason = "timeout"


class HttpStatusError(FetchError):
    """The server answered an error status (5xx, 408 and 429 are transient)."""

    def __init__(self, status: int, url: str, body: str = "") -> None:
        transient = status >= 500 or status in (408, 429)
        super().__init__(f"HTTP Error {status} for {url}" + (f": {body}" if body else ""),
                         f"http_{status}", transient)
        self.status = status


# ---------------------------------------------------------------------------------------- budget
@dataclass(eq=False)
class Budget:
    """One item's bounds, shared by everything that fetches for it (client, proxy, ffmpeg).

    Attributes:
        max_bytes: most bytes the item may download (response bodies, all requests together).
        timeout_s: wall-clock seconds for the whole item (retries included).
        socket_timeout_s: longest silence of one connection.
    """

    max_bytes: int
    timeout_s: float
    socket_timeout_s: float
    used: int = 0
    aborted: FetchError | None = None
    refusals: list[UrlRefused] = field(default_factory=list)
    deadline: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sockets: set[socket.socket] = field(default_factory=set, repr=False)
    _procs: set[subprocess.Popen[Any]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def __enter__(self) -> Budget:
        _WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _WATCHDOG.forget(self)
        self._close_all()

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        return self.deadline - time.monotonic()

    def io_timeout(self) -> float:
        """Timeout for the next socket operation: the socket timeout, cut at the deadline.

        Raises:
            FetchError: the budget was aborted (the reason it was aborted for).
        """
        self.check()
        return max(0.01, min(self.socket_timeout_s, self.remaining()))

    def check(self) -> None:
        """Raise the abort reason if the budget ran out (bytes or deadline)."""
        if self.aborted is None and self.remaining() <= 0:
            self._expire()
        if self.aborted is not None:
            raise self.aborted

    def count(self, n: int) -> None:
        """Count ``n`` downloaded bytes.

        Raises:
            TooLarge: the item went over ``max_bytes`` (the budget is aborted).
        """
        with self._lock:
            self.used += n
            over = self.used > self.max_bytes
        if over:
            self.abort(TooLarge(f"download exceeded --max-bytes {self.max_bytes} "
                                f"({self.used} bytes read)"))
        self.check()

    def abort(self, error: FetchError) -> None:
        """End the item: remember why, close its connections, kill its processes."""
        with self._lock:
            if self.aborted is None:
                self.aborted = error
        self._close_all()

    def refuse(self, error: UrlRefused) -> None:
        """Remember a policy refusal and end the item: it is rejected with the refusal's reason,
        so nothing it still does (ffmpeg retrying a playlist, ...) can change that."""
        with self._lock:
            self.refusals.append(error)
        self.abort(FetchError(str(error), error.reason))

    def _expire(self) -> None:
        self.abort(DeadlineExceeded(f"item did not finish within --timeout {self.timeout_s:g} s"))

    def track(self, thing: socket.socket | subprocess.Popen[Any]) -> None:
        """Close/kill ``thing`` when the budget is aborted or finished."""
        with self._lock:
            (self._procs if isinstance(thing, subprocess.Popen) else self._sockets).add(thing)
            dead = self.aborted is not None
        if dead:
            self._close_all()

    def untrack(self, thing: socket.socket | subprocess.Popen[Any]) -> None:
        """Stop tracking ``thing`` (it was closed normally)."""
        with self._lock:
            self._sockets.discard(thing)  # type: ignore[arg-type]
            self._procs.discard(thing)  # type: ignore[arg-type]

    def _close_all(self) -> None:
        with self._lock:
            socks, procs = list(self._sockets), list(self._procs)
            self._sockets.clear()
            self._procs.clear()
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class _Watchdog:
    """One thread that aborts budgets at their deadline (a blocked read, a silent ffmpeg, a
    proxy tunnel: whatever the item is waiting on is closed or killed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._budgets: dict[int, Budget] = {}
        self._thread: threading.Thread | None = None

    def watch(self, budget: Budget) -> None:
        with self._cond:
            self._budgets[id(budget)] = budget
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="budget-watchdog")
                self._thread.start()
            self._cond.notify()

    def forget(self, budget: Budget) -> None:
        with self._cond:
            self._budgets.pop(id(budget), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [b for b in self._budgets.values() if b.deadline <= now]
                for b in due:
                    del self._budgets[id(b)]
                wait = min((b.deadline - now for b in self._budgets.values()), default=3600.0)
                if not due:
                    self._cond.wait(min(3600.0, max(0.01, wait)))
            for b in due:
                b._expire()


_WATCHDOG = _Watchdog()


# ----------------------------------------------------------------------------------- host pacing
class HostLimiter:
    """Per-host pacing shared by concurrent downloads: request starts at least ``min_interval_s``
    apart, and at most ``rate`` bytes/s per host (all connections to it together)."""

    def __init__(self, rate: float | None = None, min_interval_s: float = 0.0) -> None:
        self.rate = rate
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._next_start: dict[str, float] = {}
        self._next_byte: dict[str, float] = {}

    def before_request(self, host: str, budget: Budget | None = None) -> None:
        """Wait for ``host``'s next request slot (never past the budget's deadline)."""
        if self.min_interval_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_start.get(host, 0.0))
            self._next_start[host] = slot + self.min_interval_s
        self._sleep_until(slot, budget)

    def consume(self, host: str, n: int, budget: Budget | None = None) -> None:
        """Account ``n`` bytes from ``host``; sleep when the host is over its rate."""
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # one second of burst: a download that was idle may catch up that much
            start = max(now - 1.0, self._next_byte.get(host, 0.0))
            self._next_byte[host] = start + n / self.rate
            due = self._next_byte[host]
        if due - now > 0.02:
            self._sleep_until(due, budget)

    @staticmethod
    def _sleep_until(t: float, budget: Budget | None) -> None:
        while True:
            wait = t - time.monotonic()
            if budget is not None:
                budget.check()
                wait = min(wait, budget.remaining())
            if wait <= 0:
                return
            time.sleep(min(wait, 0.25))


# ------------------------------------------------------------------------------------ the client
def load_cookies(path: str) -> http.cookiejar.MozillaCookieJar:
    """A Netscape/Mozilla cookies file (the format browsers' exporters and yt-dlp write).

    Raises:
        CurationError: unreadable or not in that format.
    """
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(path, ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError, UnicodeDecodeError) as exc:
        raise CurationError(f"--cookies {path!r} is not a readable Netscape cookies file "
                            f"(the format yt-dlp and browser exporters write): {exc}") from None
    for cookie in jar:
        if cookie.expires == 0:  # the format's session cookie, not one that expired in 1970
            cookie.expires, cookie.discard = None, True
    return jar


def cookie_header(jar: http.cookiejar.CookieJar | None, url: str) -> str | None:
    """The ``Cookie`` header the jar sends to ``url`` (domain, path and secure rules applied)."""
    if jar is None:
        return None
    req = urllib.request.Request(url)
    jar.add_cookie_header(req)
    return req.get_header("Cookie")


def parse_proxy(proxy: str) -> tuple[str, int, str | None]:
    """(host, port, Proxy-Authorization value) of an ``http://[user:pass@]host:port`` proxy.

    Raises:
        CurationError: not an http:// proxy URL.
    """
    parts = urllib.parse.urlsplit(proxy.strip()) if isinstance(proxy, str) else None
    try:
        port = parts.port if parts else None
    except ValueError:
        port = None
    if not parts or parts.scheme.lower() != "http" or not parts.hostname or \
            parts.path not in ("", "/"):
        raise CurationError(f"--proxy must be an http://[user:pass@]host:port URL, got {proxy!r}")
    auth = None
    if parts.username is not None:
        import base64

        raw = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(raw.encode()).decode()
    return parts.hostname, port or 8080, auth


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTPConnection over a socket we opened (policy-checked, maybe tunnelled)."""

    def __init__(self, host: str, port: int, sock: socket.socket) -> None:
        super().__init__(host, port)
        self.sock = sock

    def connect(self) -> None:  # the socket is already connected
        pass


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, sock: socket.socket,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, context=context)
        self.sock = context.wrap_socket(sock, server_hostname=host)

    def connect(self) -> None:
        pass


_SSL: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for the process (building one costs milliseconds)."""
    global _SSL
    with _SSL_LOCK:
        if _SSL is None:
            try:
                import certifi

                _SSL = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi comes with requests
                _SSL = ssl.create_default_context()
        return _SSL


class Response:
    """An open response: status, headers, final URL; :meth:`read` counts against the budget."""

    def __init__(self, url: str, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, budget: Budget, host: str,
                 limiter: HostLimiter, sock: socket.socket, io_sock: socket.socket) -> None:
        self.url = url
        self.status = resp.status
        self.headers = resp.headers
        self._conn, self._resp, self._budget = conn, resp, budget
        self._host, self._limiter, self._sock, self._io = host, limiter, sock, io_sock

    @property
    def length(self) -> int | None:
        """Content-Length, when the server sent one."""
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return n if n >= 0 else None

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` body bytes (b"" at the end), under the budget and the host's rate."""
        self._io.settimeout(self._budget.io_timeout())
        try:
            data = self._resp.read1(n) if n else b""
        except TimeoutError as exc:
            self._budget.check()  # the deadline, if that is what ran out
            raise FetchError(f"read timed out from {self._host} (no data for "
                             f"{self._budget.socket_timeout_s:g} s)", "timeout", True) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._budget.check()
            raise FetchError(f"connection to {self._host} broke: {exc}", "connection",
                             True) from exc
        if data:
            self._budget.count(len(data))
            self._limiter.consume(self._host, len(data), self._budget)
        else:
            self._budget.check()  # an "end" caused by the budget closing the socket is no end
        return data

    def iter_body(self) -> Iterator[bytes]:
        """The body in chunks; raises when it ends short of its Content-Length."""
        while True:
            data = self.read()
            if not data:
                return
            yield data

    def close(self) -> None:
        """Close the connection."""
        self._budget.untrack(self._sock)
        self._budget.untrack(self._io)
        with contextlib.suppress(Exception):
            self._resp.close()
        with contextlib.suppress(Exception):
            self._conn.close()
        with contextlib.suppress(Exception):
            self._io.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class HttpClient:
    """HTTP(S) under a :class:`NetworkPolicy`, one connection per request.

    Attributes:
        policy: which hosts may be reached (checked on every hop, connection pinned).
        limiter: the run's per-host pacing.
        user_agent: ``User-Agent`` sent (None: Python's default is replaced by a browser-like one).
        cookies: a cookie jar (``--cookies``), applied per URL.
        proxy: an upstream ``http://host:port`` proxy; connections are CONNECT tunnels to the
            checked address, so the proxy cannot be pointed elsewhere by DNS.
        tls: the TLS context (certificates are always verified, against the name in the URL).
    """

    policy: NetworkPolicy
    limiter: HostLimiter = field(default_factory=HostLimiter)
    user_agent: str | None = None
    cookies: http.cookiejar.CookieJar | None = None
    proxy: str | None = None
    tls: ssl.SSLContext | None = None  # default: certifi's authorities, verification on

    def open_socket(self, host: str, port: int, budget: Budget, url: str = "") -> socket.socket:
        """A connection to ``host:port`` allowed by the policy (tunnelled through ``proxy``).

        Raises:
            UrlRefused: the policy refuses the host (recorded in the budget).
            FetchError: the connection failed (transient).
        """
        try:
            if self.proxy is None:
                sock = self.policy.connect(host, port, budget.io_timeout(), url)
            else:
                addresses = self.policy.check_addresses(
                    host, self.policy.resolve(host, port), url, port)
                sock = self._tunnel(addresses[0], port, budget)
        except UrlRefused as exc:
            budget.refuse(exc)
            raise
        except TimeoutError as exc:
            budget.check()
            raise FetchError(f"connecting to {host}:{port} timed out", "timeout", True) from exc
        except OSError as exc:
            budget.check()
            raise FetchError(f"cannot connect to {host}:{port}: {exc}", "connection",
                             True) from exc
        budget.track(sock)
        return sock

    def _tunnel(self, address: str, port: int, budget: Budget) -> socket.socket:
        """A CONNECT tunnel through the upstream proxy to ``address:port``."""
        p_host, p_port, auth = parse_proxy(self.proxy or "")
        sock = socket.create_connection((p_host, p_port), timeout=budget.io_timeout())
        target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if auth:
            head += f"Proxy-Authorization: {auth}\r\n"
        sock.sendall((head + "\r\n").encode())
        reply = _read_head(sock, budget)
        status = reply.split(b" ", 2)[1] if reply.count(b" ") >= 1 else b""
        if status != b"200":
            sock.close()
            line = reply.split(b"\r\n", 1)[0].decode("latin-1")
            raise OSError(f"proxy {p_host}:{p_port} refused CONNECT {target}: {line}")
        return sock

    def request(self, url: str, budget: Budget, *, method: str = "GET",
                headers: dict[str, str] | None = None, body: bytes | None = None,
                follow: bool = True) -> Response:
        """Send one request (following redirects when ``follow``); the caller reads the body.

        Raises:
            UrlRefused: a hop breaks the policy.
            HttpStatusError: an error status (the body's first line in the message).
            FetchError: connection problems, too many redirects.
        """
        headers = dict(headers or {})
        for hop in range(MAX_REDIRECTS + 1):
            resp = self._send(url, budget, method, headers, body)
            if not follow or resp.status not in (301, 302, 303, 307, 308):
                break
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise FetchError(f"redirect {resp.status} from {url} without a Location",
                                 "bad_redirect")
            url = urllib.parse.urljoin(url, location.strip())
            if resp.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None
            if hop == MAX_REDIRECTS:
                raise FetchError(f"more than {MAX_REDIRECTS} redirects, last to {url}",
                                 "too_many_redirects")
        if follow and resp.status >= 400:
            text = b""
            with contextlib.suppress(FetchError):
                text = resp.read(300)
            resp.close()
            first = text.decode("utf-8", "replace").strip().splitlines()[:1]
            raise HttpStatusError(resp.status, url, first[0][:200] if first else "")
        return resp

    def _send(self, url: str, budget: Budget, method: str, headers: dict[str, str],
              body: bytes | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.policy.schemes or scheme not in ("http", "https"):
            err = UrlRefused("scheme_not_allowed", f"URL scheme {scheme!r} of {url!r} is not "
                             f"allowed here (allowed: {', '.join(self.policy.schemes)})")
            budget.refuse(err)
            raise err
        try:
            split_url(url)  # control characters, bad ports: refused before anything is sent
            host = parts.hostname
            if not host:
                raise UrlRefused("bad_url", f"URL {url!r} has no host")
        except UrlRefused as err:
            budget.refuse(err)
            raise
        port = parts.port or default_port(scheme) or 80
        self.limiter.before_request(host, budget)
        sock = self.open_socket(host, port, budget, url)
        try:
            conn: http.client.HTTPConnection = (
                _PinnedHTTPS(host, port, sock, self.tls or ssl_context()) if scheme == "https"
                else _PinnedHTTP(host, port, sock))
            io_sock = conn.sock  # getresponse() may drop conn.sock; the response reads from it
            if io_sock is not sock:
                budget.track(io_sock)
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.putrequest(method, path, skip_accept_encoding=True)
            sent = {k.lower() for k in headers}
            for k, v in headers.items():
                conn.putheader(k, v)
            if "user-agent" not in sent:
                conn.putheader("User-Agent", self.user_agent or _DEFAULT_UA)
            if "accept" not in sent:
                conn.putheader("Accept", "*/*")
            cookie = cookie_header(self.cookies, url)
            if cookie and "cookie" not in sent:
                conn.putheader("Cookie", cookie)
            if "accept-encoding" not in sent:
                conn.putheader("Accept-Encoding", "identity")
            conn.putheader("Connection", "close")
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
        except ssl.SSLError as exc:
            sock.close()
            budget.check()
            raise FetchError(f"TLS with {host} failed: {exc}", "tls_error") from exc
        except TimeoutError as exc:
            sock.close()
            budget.check()
            raise FetchError(f"{host} sent no answer within {budget.socket_timeout_s:g} s "
                             "(timed out)", "timeout", True) from exc
        except (OSError, http.client.HTTPException) as exc:
            sock.close()
            budget.check()
            raise FetchError(f"request to {host} failed: {exc}", "connection", True) from exc
        if self.cookies is not None:
            self.cookies.extract_cookies(resp, urllib.request.Request(url))  # type: ignore[arg-type]
        return Response(url, conn, resp, budget, host, self.limiter, sock, io_sock)


_DEFAULT_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/124.0 Safari/537.36")


def _read_head(sock: socket.socket, budget: Budget, limit: int = 65536) -> bytes:
    """Bytes up to the blank line that ends an HTTP head."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(budget.io_timeout())
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise OSError("HTTP head longer than 64 KiB")
    return data


# ------------------------------------------------------------------------------------- the proxy
class PolicyProxy:
    """A forward proxy on 127.0.0.1 that checks every request against the client's policy.

    Give its :attr:`url` to yt-dlp (``proxy``) or ffmpeg (``http_proxy``). Plain-HTTP requests are
    re-sent by :class:`HttpClient` (redirects are passed back to the program, whose next request
    comes through here again and is checked); ``CONNECT host:port`` tunnels (HTTPS) are opened by
    :meth:`HttpClient.open_socket`. Bytes are counted against, and connections closed with, the
    current :attr:`budget` (set per item by the thread that owns this proxy); a request that
    arrives with no budget set is refused.
    """

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.budget: Budget | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="policy-proxy").start()

    def close(self) -> None:
        """Stop listening (open connections end with their budget)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> PolicyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            budget = self.budget
            threading.Thread(target=self._serve, args=(conn, budget), daemon=True).start()

    def _serve(self, conn: socket.socket, budget: Budget | None) -> None:
        try:
            if budget is None or budget.aborted is not None:
                _reply(conn, 503, "no download in progress on this proxy")
                return
            # the client's connection is not tracked by the budget: a refusal ends the item
            # (closing every upstream socket), yet the client still gets its 403 answer
            head = _read_head(conn, budget)
            line, _, rest = head.partition(b"\r\n")
            method, target, *_ = line.decode("latin-1").split(" ") + ["", ""]
            if method == "CONNECT":
                self._tunnel(conn, target, rest, budget)
            elif target.startswith(("http://", "https://")):
                self._forward(conn, method, target, rest, budget)
            else:
                _reply(conn, 400, f"not a proxy request: {line[:100]!r}")
        except UrlRefused as exc:
            _reply(conn, 403, f"refused by the network policy: {exc}")
        except FetchError as exc:
            _reply(conn, 502, str(exc))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _tunnel(self, conn: socket.socket, target: str, rest: bytes, budget: Budget) -> None:
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            _reply(conn, 400, f"bad CONNECT target {target!r}")
            return
        url = f"https://{target}/"
        if "https" not in self.client.policy.schemes:
            err = UrlRefused("scheme_not_allowed", f"https to {target} is not allowed")
            budget.refuse(err)
            raise err
        self.client.limiter.before_request(host, budget)
        upstream = self.client.open_socket(host, int(port_text), budget, url)
        try:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            body_start = rest.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in rest else b""
            if body_start:
                upstream.sendall(body_start)
            _relay(conn, upstream, budget, host, self.client.limiter)
        finally:
            budget.untrack(upstream)
            upstream.close()

    def _forward(self, conn: socket.socket, method: str, target: str, rest: bytes,
                 budget: Budget) -> None:
        head, _, body = rest.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for raw in head.split(b"\r\n"):
            name, sep, value = raw.decode("latin-1").partition(":")
            if sep and name.strip().lower() not in _HOP_BY_HOP | {"host"}:
                headers[name.strip()] = value.strip()
        length = int(headers.pop("Content-Length", "0") or 0)
        while len(body) < length:
            conn.settimeout(budget.io_timeout())
            chunk = conn.recv(min(CHUNK, length - len(body)))
            if not chunk:
                break
            body += chunk
        resp = self.client.request(target, budget, method=method, headers=headers,
                                   body=body if length else None, follow=False)
        try:
            out = [f"HTTP/1.1 {resp.status} {http.client.responses.get(resp.status, '')}"]
            for name, value in resp.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    out.append(f"{name}: {value}")
            if resp.length is not None and "chunked" not in \
                    resp.headers.get("Transfer-Encoding", "").lower():
                out.append(f"Content-Length: {resp.length}")
            out.append("Connection: close")
            conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                with contextlib.suppress(FetchError):  # the head is out: cutting it short says it
                    for data in resp.iter_body():
                        conn.sendall(data)
        finally:
            resp.close()


def _reply(conn: socket.socket, status: int, text: str) -> None:
    body = (text + "\n").encode("utf-8", "replace")
    head = (f"HTTP/1.1 {status} {http.client.responses.get(status, '')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "X-Refused-By: prevad-curation\r\nConnection: close\r\n\r\n")
    with contextlib.suppress(OSError):
        conn.sendall(head.encode() + body)


def _relay(client: socket.socket, upstream: socket.socket, budget: Budget, host: str,
           limiter: HostLimiter) -> None:
    """Copy bytes both ways until one side closes; count what comes from upstream."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, upstream)
    sel.register(upstream, selectors.EVENT_READ, client)
    try:
        while True:
            events = sel.select(timeout=budget.io_timeout())
            if not events:
                return  # silent for the socket timeout: give up the tunnel
            for key, _ in events:
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                data = src.recv(CHUNK)
                if not data:
                    return
                if src is upstream:
                    budget.count(len(data))
                    limiter.consume(host, len(data), budget)
                key.data.sendall(data)
    except FetchError:
        return  # the budget ran out: it closed the sockets and remembers why
    except OSError:
        return
    finally:
        sel.close()


class YtdlpLog:
    """yt-dlp logger that keeps the messages (the original error text) instead of printing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        self.errors.append(str(msg))
