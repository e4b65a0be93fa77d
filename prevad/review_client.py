"""A small Label Studio REST client for ``prevad review push|pull``: one origin, bounded answers.

Security rules (the token is a credential of the Label Studio account):

- **The token never leaves the server's origin.** ``requests`` strips ``Authorization`` when a
  redirect changes host, port or scheme, but it re-sends a request *body* on 307/308 redirects
  (the token exchange posts the token in its body) and keeps custom headers. So redirects are
  never followed by ``requests``: a redirect within the origin of ``--url`` (same scheme, host
  and port) is followed here, at most :data:`MAX_REDIRECTS` times; a redirect to any other origin
  is refused before anything is sent there, with one error line naming the other origin.
- **The token is never printed.** Every message this client raises, and every message built
  from a server's answer (``scrub``), has the personal access token, the access token it was
  exchanged for, ``Bearer``/``Token`` credentials and JWT-looking strings replaced by
  ``[redacted]``, also when a server echoes only part of them.
- ``~/.netrc`` credentials are never sent (every request has an auth object, so ``requests``
  does not look them up), and the token's characters are checked before it is sent.

Answers of unexpected shapes end in one :class:`~prevad.errors.ReviewError` line: an answer
larger than ``max_answer_bytes`` or slower than ``max_answer_s`` in total, a body that is not
JSON, JSON of the wrong type, items without the fields the review needs. Paginated lists stop on
the total, an empty or short page, or a 404 past the last page; a page that repeats an earlier
one, or more than ``max_pages`` pages, is an error (never an endless loop).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

from prevad.errors import ReviewError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
#: Same-origin redirects followed per request (a cross-origin one is never followed).
MAX_REDIRECTS = 5
#: Largest answer read (bytes, after decompression); a project export is the largest answer.
MAX_ANSWER_BYTES = 512 << 20
#: Longest time one answer may take to arrive in full, seconds (a trickling server is cut off).
MAX_ANSWER_S = 600.0
#: Items asked per page, and the most pages read from one list endpoint.
PAGE_SIZE = 100
MAX_PAGES = 10_000
REDACTED = "[redacted]"
_REDIRECT_CODES = (301, 302, 303, 307, 308)
#: Characters of tokens (JWTs, legacy hex tokens): anything else cannot be a header value here.
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]{1,4096}$")
#: Shortest piece of a secret that is redacted wherever it appears.
PIECE = 10
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
_CREDENTIAL = re.compile(r"(?i)\b(bearer|token)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{16,}")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, the port made explicit."""
    p = urllib.parse.urlsplit(url)
    scheme = p.scheme.lower()
    try:
        port = p.port or (443 if scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        port = -1
    return scheme, (p.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def check_token(token: str, var: str = TOKEN_ENV) -> str:
    """The token, if it has the characters a token has (never echoed back).

    Raises:
        ReviewError: empty, or it holds whitespace, control or other characters that cannot be
            part of a Label Studio token (a header would be malformed, or carry more than it).
    """
    token = token.strip()
    if not token:
        raise ReviewError(
            f"set {var} to a Label Studio personal access token (Account & Settings -> "
            "Personal Access Token)"
        )
    if not _TOKEN_CHARS.match(token):
        raise ReviewError(
            f"{var} holds characters a Label Studio token cannot have (expected letters, digits "
            "and ._~+/=-, at most 4096); copy the token again"
        )
    return token


class _HeaderAuth:
    """Sets ``Authorization`` on each request, or nothing (``value`` None). Always given: with
    no auth object ``requests`` would add ``~/.netrc`` credentials of the host."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, r: Any) -> Any:
        if self.value is not None:
            r.headers["Authorization"] = self.value
        return r


class LabelStudio:
    """A Label Studio REST client (requests) for the review round trip.

    Authentication: a personal access token (a JWT refresh token, Label Studio >= 1.18) is
    exchanged for a short-lived access token at ``/api/token/refresh/`` and sent as
    ``Authorization: Bearer``; the access token is refreshed once when the server answers 401.
    A legacy token (enabled per organisation) is sent as ``Authorization: Token``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 60.0,
        *,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        max_answer_s: float = MAX_ANSWER_S,
        max_pages: int = MAX_PAGES,
    ) -> None:
        """Connect to the server at ``url`` (e.g. http://127.0.0.1:8080).

        Raises:
            ReviewError: a bad URL or token, the server cannot be reached or refuses the token.
        """
        import requests

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or origin(url)[2] < 0:
            raise ReviewError(
                f"--url must be an http(s) URL of a Label Studio server, got {url[:200]!r}"
            )
        if parsed.username or parsed.password:
            raise ReviewError("--url must not hold a user name or password; the token is "
                              f"taken from {TOKEN_ENV}")
        self._secrets: list[str] = []
        self._token = check_token(token)
        self._secrets.append(self._token)
        self.url = url.rstrip("/")
        self.origin = origin(self.url)
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self.max_answer_s = max_answer_s
        self.max_pages = max_pages
        self._http = requests.Session()
        self._auth = self._authenticate()

    # -- secrets -------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` without any credential (the token, the access token, or parts of them)."""
        # Any piece of a secret of PIECE characters or more, wherever it lies (a server may echo
        # a truncated or re-wrapped header, a message may cut a long value in the middle).
        hidden = bytearray(len(text))
        for secret in self._secrets:
            for i in range(max(len(secret) - PIECE + 1, 1)):
                piece = secret[i:i + PIECE]
                at = text.find(piece)
                while at != -1:
                    hidden[at:at + len(piece)] = b"\x01" * len(piece)
                    at = text.find(piece, at + 1)
        if any(hidden):
            out, i = [], 0
            while i < len(text):
                j = i
                while j < len(text) and hidden[j] == hidden[i]:
                    j += 1
                out.append(REDACTED if hidden[i] else text[i:j])
                i = j
            text = "".join(out)
        text = _JWT.sub(REDACTED, text)
        return _CREDENTIAL.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

    def _fail(self, message: str) -> ReviewError:
        return ReviewError(self.scrub(message))

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, auth: str | None, **kw: Any) -> tuple[int, bytes,
                                                                                     str]:
        """One request, following same-origin redirects only; returns (status, body, type).

        Raises:
            ReviewError: unreachable, a cross-origin redirect, too many redirects, or an answer
                over the size or time bound.
        """
        import requests

        url = f"{self.url}{path}"
        for _ in range(MAX_REDIRECTS + 1):
            try:
                r = self._http.request(
                    method, url, auth=_HeaderAuth(auth), timeout=self.timeout,
                    allow_redirects=False, stream=True, **kw,
                )
            except (requests.RequestException, ValueError) as exc:
                raise self._fail(f"{method} {path}: cannot reach Label Studio at {self.url}: "
                                 f"{exc}") from None
            with r:
                if r.status_code in _REDIRECT_CODES and r.headers.get("location"):
                    target = urllib.parse.urljoin(url, r.headers["location"])
                    if origin(target) != self.origin:
                        raise self._fail(
                            f"{method} {path}: Label Studio at {self.url} answered HTTP "
                            f"{r.status_code}, a redirect to another origin "
                            f"({_origin_text(target)}); not followed, so the token is not sent "
                            "there (give --url the server's own address)"
                        )
                    if r.status_code == 303 or (r.status_code in (301, 302) and method != "GET"):
                        method = "GET"  # what browsers do; the body is not sent again
                        kw.pop("json", None)
                    kw.pop("params", None)  # the new location carries its own query
                    url = target
                    continue
                body = self._read(r, method, path)
                return r.status_code, body, r.headers.get("content-type", "")
        raise self._fail(f"{method} {path}: more than {MAX_REDIRECTS} redirects from "
                         f"Label Studio at {self.url}")

    def _read(self, r: Any, method: str, path: str) -> bytes:
        """The whole body, within :attr:`max_answer_bytes` and :attr:`max_answer_s`."""
        import requests

        limit = self.max_answer_bytes
        declared = r.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._fail(f"{method} {path}: the answer would be {int(declared)} bytes, over "
                             f"the limit of {limit}")
        deadline = time.monotonic() + self.max_answer_s
        chunks, size = [], 0
        try:
            for chunk in _chunks(r):
                size += len(chunk)
                if size > limit:
                    raise self._fail(f"{method} {path}: the answer is larger than the limit of "
                                     f"{limit} bytes; not read further")
                if time.monotonic() > deadline:
                    raise self._fail(f"{method} {path}: the answer took longer than "
                                     f"{self.max_answer_s:g} s to arrive; not read further")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise self._fail(f"{method} {path}: the answer broke off: {exc}") from None
        return b"".join(chunks)

    def _snippet(self, body: bytes) -> str:
        return repr(self.scrub(body[:300].decode("utf-8", "replace")))

    def _json(self, body: bytes, method: str, path: str) -> Any:
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise self._fail(f"{method} {path}: the answer is not JSON: "
                             f"{self._snippet(body)}") from None

    def _authenticate(self) -> str:
        status, body, ctype = self._send(
            "POST", "/api/token/refresh/", auth=None, json={"refresh": self._token}
        )
        answer = None
        if "json" in ctype:
            try:
                answer = json.loads(body)
            except (ValueError, RecursionError):
                answer = None
        access = answer.get("access") if isinstance(answer, dict) else None
        if 200 <= status < 300 and isinstance(access, str):
            if not _TOKEN_CHARS.match(access):
                raise self._fail("POST /api/token/refresh/: the access token in the answer has "
                                 "characters a token cannot have")
            self._secrets.append(access)
            return f"Bearer {access}"
        if status >= 500:
            raise self._fail(f"POST /api/token/refresh/: Label Studio at {self.url} answered "
                             f"HTTP {status}: {self._snippet(body)}")
        # Not a personal access token: try it as a legacy token.
        legacy = f"Token {self._token}"
        probe, _, _ = self._send("GET", "/api/current-user/whoami", auth=legacy)
        if 200 <= probe < 300:
            return legacy
        raise self._fail(
            f"Label Studio at {self.url} refused the token in {TOKEN_ENV} (HTTP {status} "
            f"as a personal access token, HTTP {probe} as a legacy token); create a personal "
            "access token under Account & Settings"
        )

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """Send a request (JSON in and out); refresh the access token once on 401.

        Raises:
            ReviewError: unreachable, an error status, a redirect elsewhere, an answer that is
                not JSON or over its bounds (token never in the message).
        """
        status, body, _ = self._send(method, path, auth=self._auth, **kw)
        if status == 401 and self._auth.startswith("Bearer"):
            self._auth = self._authenticate()
            status, body, _ = self._send(method, path, auth=self._auth, **kw)
        if not 200 <= status < 300:
            raise self._fail(f"{method} {path}: HTTP {status}: {self._snippet(body)}")
        return self._json(body, method, path)

    def _shape(self, what: str, expected: str, got: Any) -> ReviewError:
        return self._fail(f"{what}: Label Studio answered {type(got).__name__} where {expected} "
                          "was expected; is --url a Label Studio server?")

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """All items of a paginated list endpoint (bounded: see the module docstring)."""
        items: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for page in range(1, self.max_pages + 1):
            try:
                body = self.request("GET", path,
                                    params={**params, "page": page, "page_size": PAGE_SIZE})
            except ReviewError as exc:
                if page > 1 and ": HTTP 404:" in str(exc):  # Django REST: past the last page
                    return items
                raise
            if isinstance(body, list):  # a server that does not paginate: all items at once
                if page == 1:
                    return self._objects(body, f"GET {path}")
                raise self._shape(f"GET {path} page {page}", "a page object", body)
            if not isinstance(body, dict):
                raise self._shape(f"GET {path}", f"an object with {key!r}", body)
            batch = body.get(key)
            if batch is None and page == 1 and key not in body:
                raise self._fail(f"GET {path}: the answer has no {key!r} list "
                                 f"(keys: {sorted(map(str, body))[:8]})")
            batch = self._objects(batch or [], f"GET {path} page {page}")
            fingerprint = _fingerprint(batch)
            if batch and fingerprint in seen:
                raise self._fail(
                    f"GET {path}: page {page} repeats page {seen[fingerprint]}; the server "
                    "ignores pagination (stopped instead of reading forever)"
                )
            seen[fingerprint] = page
            items.extend(batch)
            total = body.get("total", body.get("count"))
            has_total = isinstance(total, int) and not isinstance(total, bool) and total >= 0
            if not batch or len(batch) < PAGE_SIZE or (has_total and len(items) >= total):
                return items
        raise self._fail(f"GET {path}: more than {self.max_pages} pages of {PAGE_SIZE}; "
                         "stopped (raise max_pages for a project this large)")

    def _objects(self, items: Any, what: str) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            raise self._shape(what, "a list", items)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise self._fail(f"{what}: item {i} is {type(item).__name__}, not an object")
        return items

    def _object(self, body: Any, what: str, *required: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise self._shape(what, "an object", body)
        for name in required:
            if name not in body:
                raise self._fail(f"{what}: the answer has no {name!r} field")
        return body

    @staticmethod
    def _id(value: Any, what: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ReviewError(f"{what}: expected a numeric id, got {str(value)[:40]!r}")

    # -- resources -------------------------------------------------------------------------------
    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project titled ``title`` (None if there is none)."""
        for p in self._pages("/api/projects/", "results", {"title": title}):
            if p.get("title") == title:
                self._id(p.get("id"), "GET /api/projects/ (project id)")
                return p
        return None

    def ensure_project(self, title: str, config: str) -> tuple[dict[str, Any], bool]:
        """Create the project, or update its labeling config; returns (project, created)."""
        project = self.find_project(title)
        if project is None:
            body = {
                "title": title, "label_config": config,
                "description": "PreVAD review: AI pre-labels checked by people (prevad review)",
                "show_collab_predictions": True,
            }
            made = self._object(self.request("POST", "/api/projects/", json=body),
                                "POST /api/projects/", "id")
            self._id(made["id"], "POST /api/projects/ (project id)")
            return made, True
        if project.get("label_config") != config:
            pid = self._id(project.get("id"), "project id")
            project = self._object(
                self.request("PATCH", f"/api/projects/{pid}/", json={"label_config": config}),
                f"PATCH /api/projects/{pid}/", "id",
            )
        return project, False

    def ensure_local_storage(self, project_id: int, folder: Path) -> None:
        """A local-files storage covering ``folder``, so Label Studio may serve the videos.

        It is never synced: tasks are imported by :func:`prevad.review.push`, and the files
        stay in place.
        """
        existing = self.request("GET", "/api/storages/localfiles", params={"project": project_id})
        for s in self._objects(existing or [], "GET /api/storages/localfiles"):
            path = s.get("path")
            if isinstance(path, str) and path and folder.is_relative_to(Path(path)):
                return
        self.request("POST", "/api/storages/localfiles", json={
            "project": project_id, "path": str(folder), "title": f"prevad store {folder}",
            "use_blob_urls": True, "regex_filter": r".*\.(mp4|webm|mkv|avi|mov)$",
        })

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of a project (with their predictions' model versions)."""
        return self._pages("/api/tasks/", "tasks", {"project": project_id, "fields": "all"})

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> None:
        """Import tasks (with predictions) into the project."""
        self.request("POST", f"/api/projects/{project_id}/import", json=tasks)

    def add_prediction(self, task_id: int, prediction: dict[str, Any]) -> None:
        """Attach a prediction to an existing task."""
        self.request("POST", "/api/predictions/", json={"task": task_id, **prediction})

    def export(self, project_id: int) -> list[Any]:
        """The project's JSON export (every task, with its annotations).

        Items are checked one by one by the import (a bad task is reported, not fatal).
        """
        body = self.request(
            "GET", f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )
        if not isinstance(body, list):
            raise self._shape(f"GET /api/projects/{project_id}/export", "a list of tasks", body)
        return body

    def users(self) -> dict[int, str]:
        """User id -> e-mail (to name the annotator); users without an id are left out."""
        body = self.request("GET", "/api/users/")
        items = body if isinstance(body, list) else self._object(
            body, "GET /api/users/", "results")["results"]
        out = {}
        for u in self._objects(items, "GET /api/users/"):
            uid = u.get("id")
            if isinstance(uid, int) and not isinstance(uid, bool):
                name = u.get("email") or u.get("username") or uid
                out[uid] = str(name)[:256]
        return out


def _fingerprint(batch: list[dict[str, Any]]) -> str:
    ids = [item.get("id") for item in batch]
    if all(isinstance(i, int | str) for i in ids):
        text = json.dumps(ids)
    else:
        try:
            text = json.dumps(batch, sort_keys=True, default=str)
        except (ValueError, RecursionError):
            text = repr(len(batch))
    return hashlib.sha256(text.encode()).hexdigest()


def _chunks(r: Any) -> Any:
    """The body as it arrives: one socket read per chunk (urllib3 2's ``read1``), so a server
    that trickles bytes cannot keep a read going past the deadline; ``iter_content`` else."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:
        yield from r.iter_content(1 << 16)
        return
    import requests
    import urllib3

    try:
        while chunk := read1(1 << 16, decode_content=True):
            yield chunk
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # as requests' own errors
        raise requests.RequestException(str(exc)) from None
