"""What the media stages (``acquire``, ``record``, and ``add``'s expansions) share: fetch
settings, their checks, and the pool that runs items concurrently.

:class:`FetchSettings` holds the bounds and the network rules of one run. It is declared the way
every stage's config is (:mod:`curation.options`): its fields carry their own help text and flag
name, the stage commands are generated from the fields, and it is validated when it is built
(``__post_init__``), so a bad value — from ``prevad curate acquire``, from ``prevad curate run
-p`` or from a flow — is one :class:`~prevad.errors.ValidationError` naming the option before any
item is touched.

Stage modules subclass :class:`FetchSettings` with their own fields (same metadata) and list in
``version()`` what changes results (see :meth:`FetchSettings.version_params`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import traceback
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.netpolicy import NetworkPolicy, UrlRefused
from curation.options import (  # noqa: F401 - the option helpers media stages use
    check_bool,
    check_number,
    check_text,
    command_from,
    flag_of,
    opt,
    settings_from,
    settings_from_cli,
    settings_parameters,
    stage_command,
)
from prevad.errors import ValidationError
from prevad.stage import Failed, ItemResult

GIB = 1024**3


_flag = flag_of  # the flag of a settings field (kept for callers of the old name)


# ----------------------------------------------------------------------------------- settings
@dataclass(slots=True)
class FetchSettings:
    """Bounds and network rules shared by ``acquire`` and ``record`` (see the module docstring).

    Raises:
        ValidationError: a value breaks its rule (NaN, infinite, negative, wrong type, a proxy
            that is not ``http://host:port``, an unreadable cookies file, ...).
    """

    max_bytes: int = opt(2 * GIB, "Most bytes one item may download; more is rejected "
                         "(too_large).")
    max_duration_s: float = opt(3 * 3600.0, "Longest video (s) an item may have; longer is "
                                "rejected (too_long).", "--max-duration")
    timeout_s: float | None = opt(900.0, "Wall-clock seconds one item may take, retries "
                                  "included; then it fails (timeout).", "--timeout")
    socket_timeout_s: float = opt(20.0, "Longest silence of one connection (s).",
                                  "--socket-timeout")
    retries: int = opt(3, "Retries of transient errors (5xx, resets, socket timeouts) per item "
                       "and run.")
    backoff_s: float = opt(1.0, "First retry delay (s), doubled each retry.", "--backoff")
    rate_limit: int | None = opt(None, "Bytes/s per host, shared by concurrent downloads.")
    min_interval_s: float = opt(0.0, "Seconds between two requests to one host.",
                                "--min-interval")
    concurrency: int = opt(4, "Items fetched at once.")
    allow_private_network: bool = opt(False, "Also fetch from loopback, private and link-local "
                                      "addresses (refused by default, docs/DECISIONS.md D4).")
    allow_addresses: tuple[str, ...] = opt((), "A non-public network allowed anyway: CIDR or "
                                           "address, optional :port (repeatable).",
                                           "--allow-address", factory=tuple)
    proxy: str | None = opt(None, "Upstream proxy http://[user:pass@]host:port.")
    cookies: str | None = opt(None, "Netscape cookies file (as yt-dlp --cookies).")
    user_agent: str | None = opt(None, "User-Agent header.")
    max_attempts: int = opt(3, "Attempts per item across runs before it is given up.")

    def __post_init__(self) -> None:
        check_number(self, "max_bytes", integer=True, minimum=0)
        check_number(self, "max_duration_s", minimum=0)
        check_number(self, "timeout_s", minimum=0, optional=self._timeout_optional())
        check_number(self, "socket_timeout_s", minimum=0)
        check_number(self, "retries", integer=True, minimum=0, strict=False)
        check_number(self, "backoff_s", minimum=0, strict=False)
        check_number(self, "rate_limit", integer=True, minimum=0, optional=True)
        check_number(self, "min_interval_s", minimum=0, strict=False)
        check_number(self, "concurrency", integer=True, minimum=0)
        if self.concurrency > 64:
            raise ValidationError(f"--concurrency (concurrency) must be at most 64, got "
                                  f"{self.concurrency}")
        check_number(self, "max_attempts", integer=True, minimum=0)
        check_bool(self, "allow_private_network")
        if isinstance(self.allow_addresses, str):
            object.__setattr__(self, "allow_addresses", (self.allow_addresses,))
        if not isinstance(self.allow_addresses, list | tuple) or \
                not all(isinstance(a, str) for a in self.allow_addresses):
            raise ValidationError(f"--allow-address (allow_addresses) must be a list of "
                                  f"networks, got {self.allow_addresses!r}")
        object.__setattr__(self, "allow_addresses", tuple(self.allow_addresses))
        for name in ("proxy", "cookies", "user_agent"):
            check_text(self, name)
        try:
            NetworkPolicy(allow_addresses=self.allow_addresses)
            if self.proxy is not None:
                from curation.fetch import parse_proxy

                parse_proxy(self.proxy)
            if self.cookies is not None:
                from curation.fetch import load_cookies

                load_cookies(self.cookies)
        except (UrlRefused, ValueError) as exc:
            raise ValidationError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - CurationError from the loaders
            raise ValidationError(str(exc)) from None

    def _timeout_optional(self) -> bool:
        return False

    def policy(self, schemes: tuple[str, ...], allow_file: bool = False) -> NetworkPolicy:
        """The :class:`NetworkPolicy` of these settings."""
        return NetworkPolicy(allow_private_network=self.allow_private_network,
                             allow_file=allow_file, schemes=tuple(schemes),
                             allow_addresses=self.allow_addresses)

    def version_params(self) -> dict[str, Any]:
        """The fetch settings that change results: bounds (which items are rejected or time
        out), the request identity (cookies, user agent, proxy: what a server answers).

        Pacing (rate limit, interval, concurrency) and retry counts only change how hard and how
        fast the stage tries, not what counts as a result, so they stay out.
        """
        params: dict[str, Any] = {
            "max_bytes": self.max_bytes, "max_duration_s": self.max_duration_s,
            "timeout_s": self.timeout_s, "socket_timeout_s": self.socket_timeout_s,
        }
        if self.cookies:
            params["cookies_sha256"] = hashlib.sha256(Path(self.cookies).read_bytes()).hexdigest()
        if self.user_agent:
            params["user_agent"] = self.user_agent
        if self.proxy:
            parts = urllib.parse.urlsplit(self.proxy)
            params["proxy"] = f"{parts.hostname}:{parts.port}"  # never the credentials
        return params


# ---------------------------------------------------------------------------------- item pool
class ItemPool:
    """Runs a stage's per-item function on ``concurrency`` threads, results in input order.

    Each thread keeps its own per-thread resources (yt-dlp instance, proxy) through
    :meth:`local`; an exception of one item becomes that item's :class:`Failed` result (so the
    stage runner never repeats the whole batch one by one).
    """

    def __init__(self, concurrency: int, name: str) -> None:
        self._size = concurrency
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def map(self, fn: Callable[[dict[str, Any]], ItemResult],
            rows: list[dict[str, Any]]) -> list[ItemResult]:
        """``fn`` over ``rows`` concurrently."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._size, thread_name_prefix=self._name)
        return list(self._pool.map(lambda r: _guard(fn, r), rows))

    def local(self, key: str, make: Callable[[], Any], close: Callable[[Any], None]) -> Any:
        """This thread's ``key`` resource, made on first use and closed by :meth:`close`."""
        value = getattr(self._local, key, None)
        if value is None:
            value = make()
            setattr(self._local, key, value)
            with self._lock:
                self._closers.append(lambda: close(value))
        return value

    def close(self) -> None:
        """Close every per-thread resource and stop the threads."""
        with self._lock:
            closers, self._closers = self._closers, []
        for c in closers:
            with contextlib.suppress(Exception):
                c()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _guard(fn: Callable[[dict[str, Any]], ItemResult], row: dict[str, Any]) -> ItemResult:
    try:
        return fn(row)
    except Exception:  # noqa: BLE001 - one item's bug must not fail its neighbours
        return Failed(traceback.format_exc(limit=4).strip()[-2000:])

