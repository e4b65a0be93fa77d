"""Real HTTP servers on 127.0.0.1 for the client tests: each answers with a function of the
request and records every request it received (method, path, headers, body).

Two servers on two ports are two origins, which is what the redirect tests need.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Everything the request carried, as text (to look for a secret in it)."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


@dataclass
class Answer:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(obj: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})


Route = Callable[[Request], Answer]


@dataclass
class Server:
    url: str
    requests: list[Request]

    def saw(self, text: str) -> bool:
        """True when any request received carried ``text`` (in its line, headers or body)."""
        return any(text in r.text() for r in self.requests)


def _handler(route: Route, log: list[Request]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, self.path, dict(self.headers.items()),
                          self.rfile.read(n) if n else b"")
            log.append(req)
            answer = route(req)
            try:
                self.send_response(answer.status)
                streamed = not isinstance(answer.body, bytes)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                if streamed:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if streamed:
                    for chunk in answer.body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                else:
                    self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a bounded client does
            if not isinstance(answer.body, bytes):
                self.close_connection = True

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


@contextmanager
def serve(route: Route) -> Iterator[Server]:
    """A server on a free port of 127.0.0.1 answering with ``route``; stopped on exit."""
    log: list[Request] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(route, log))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", log)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def fake_label_studio(token: str, access: str, routes: dict[str, Route] | None = None) -> Route:
    """A route that behaves like Label Studio's auth (PAT ``token`` -> ``access``) and then
    answers API paths from ``routes`` (path without query -> route); 404 otherwise."""
    routes = routes or {}

    def route(req: Request) -> Answer:
        path = req.path.split("?", 1)[0]
        if path == "/api/token/refresh/" and req.method == "POST":
            body = json.loads(req.body or b"{}")
            if body.get("refresh") == token:
                return json_answer({"access": access})
            return json_answer({"detail": "bad token"}, 401)
        if req.headers.get("Authorization") != f"Bearer {access}":
            return json_answer({"detail": "not authenticated"}, 401)
        if path in routes:
            return routes[path](req)
        return json_answer({"detail": "Not found."}, 404)

    return route
