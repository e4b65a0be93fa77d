"""The Label Studio token never goes to another origin and is never printed.

Real HTTP servers on 127.0.0.1 (two ports = two origins): one redirects, the other records what
reaches it; others echo the request (headers and body) in their error text, as some servers do.
"""

from __future__ import annotations

import pytest
import requests
from typer.testing import CliRunner

from prevad import review
from prevad.review_client import REDACTED, LabelStudio
from toolkit.cli import app

from .conftest import make_review_store
from .local_http import Answer, fake_label_studio, json_answer, serve

#: JWT-shaped personal access token and the access token the fake server exchanges it for.
TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImp0aSI6IjEifQ"
         ".c2VjcmV0LXJlZnJlc2gtc2lnbmF0dXJlLTAxMjM0NTY3ODk")
ACCESS = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwianRpIjoiMiJ9"
          ".c2VjcmV0LWFjY2Vzcy1zaWduYXR1cmUtOTg3NjU0MzIxMA")
LEGACY = "4f3c2b1a0918273645546372819aabbccddeeff0"


def _no_secret(text: str) -> None:
    for secret in (TOKEN, ACCESS, LEGACY):
        for piece in (secret, secret[:20], secret[-20:], secret.split(".")[-1][:16]):
            assert piece not in text, piece


def _pull(url: str, token: str, tmp_path) -> object:
    store, _ = make_review_store(tmp_path / "store", [])
    return CliRunner().invoke(app, ["review", "pull", str(store.root), "--url", url],
                              env={review.TOKEN_ENV: token})


def test_requests_itself_would_forward_the_token():
    """Why redirects are handled here: with requests' defaults a 307 from the token endpoint
    re-sends the token (in the body) to another origin, and custom headers follow any redirect.
    Only ``Authorization`` is stripped by requests on a host change."""
    with serve(lambda r: Answer(200, b"{}")) as other:
        def to_other(r):
            return Answer(307, b"", {"Location": other.url + r.path})

        with serve(to_other) as ls:
            requests.post(f"{ls.url}/api/token/refresh/", json={"refresh": TOKEN}, timeout=10)
            requests.get(f"{ls.url}/api/x", headers={"Authorization": f"Bearer {ACCESS}",
                                                     "X-Api-Key": LEGACY}, timeout=10)
        assert other.saw(TOKEN) and other.saw(LEGACY)
        assert not other.saw(ACCESS)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_token_endpoint_redirect_to_another_origin_is_refused(status, tmp_path):
    with serve(lambda r: json_answer({"access": "x"})) as other:
        def to_other(r):
            return Answer(status, b"", {"Location": other.url + "/api/token/refresh/"})

        with serve(to_other) as ls:
            res = _pull(ls.url, TOKEN, tmp_path)
        assert other.requests == []  # nothing at all reached the other origin
    assert res.exit_code == 2
    [line] = res.output.strip().splitlines()
    assert line.startswith("error: POST /api/token/refresh/: ")
    assert f"HTTP {status}, a redirect to another origin ({other.url}" in line
    _no_secret(res.output)


def test_api_redirect_to_another_origin_is_refused_after_login(tmp_path):
    with serve(lambda r: json_answer({"results": []})) as other:
        routes = {"/api/projects/": lambda r: Answer(302, b"",
                                                     {"Location": other.url + r.path})}
        with serve(fake_label_studio(TOKEN, ACCESS, routes)) as ls:
            res = _pull(ls.url, TOKEN, tmp_path)
        assert other.requests == []
    assert res.exit_code == 2
    assert "GET /api/projects/: " in res.output and "another origin" in res.output
    _no_secret(res.output)


def test_same_origin_redirect_is_followed_with_the_token(tmp_path):
    routes = {
        "/api/projects": lambda r: Answer(301, b"", {"Location": "/api/projects/?title=x"}),
        "/api/projects/": lambda r: json_answer({"results": [{"id": 4, "title": "x"}],
                                                 "count": 1}),
    }
    with serve(fake_label_studio(TOKEN, ACCESS, routes)) as ls:
        client = LabelStudio(ls.url, TOKEN)
        assert client.request("GET", "/api/projects")["count"] == 1
        assert ls.requests[-1].path == "/api/projects/?title=x"
        assert ls.requests[-1].headers["Authorization"] == f"Bearer {ACCESS}"


def _echo(status: int):
    """A server whose errors echo the whole request (line, headers, body)."""
    return lambda r: Answer(status, r.text().encode(), {"Content-Type": "text/plain"})


@pytest.mark.parametrize("status", [500, 502, 503])
def test_echoed_token_in_a_token_endpoint_error_is_scrubbed(status, tmp_path):
    with serve(_echo(status)) as ls:
        res = _pull(ls.url, TOKEN, tmp_path)
    assert res.exit_code == 2
    assert REDACTED in res.output  # the echo was there, and is scrubbed
    _no_secret(res.output)


def test_echoed_credentials_in_api_errors_and_answers_are_scrubbed(tmp_path):
    partial = {"/api/projects/": lambda r: Answer(
        500, f"bad auth header starting {r.headers['Authorization'][7:40]}".encode())}
    echo_all = {"/api/projects/": _echo(403)}
    not_json = {"/api/projects/": lambda r: Answer(200, r.text().encode())}
    in_data = {  # a hostile server's export puts the token where the import quotes it
        "/api/projects/": lambda r: json_answer({"results": [{"id": 1, "title": "PreVAD review"}],
                                                 "count": 1}),
        "/api/projects/1/export": lambda r: json_answer([
            {"id": 1, "data": {"clip_id": TOKEN}, "annotations": []},
            {"id": 2, "data": {"clip_id": "x"}, "annotations": [
                {"id": 3, "result": [{"from_name": "category", "value": {
                    "choices": [f"Bearer {ACCESS}"]}}]}]}]),
        "/api/users/": lambda r: json_answer([]),
    }
    for routes in (partial, echo_all, not_json, in_data):
        with serve(fake_label_studio(TOKEN, ACCESS, routes)) as ls:
            res = _pull(ls.url, TOKEN, tmp_path / str(id(routes)))
        assert res.exit_code == 2, res.output
        assert REDACTED in res.output
        _no_secret(res.output)


def test_legacy_token_is_scrubbed_and_netrc_never_replaces_it(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-password-123\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    def legacy(r):
        if r.path.startswith("/api/token/refresh/"):
            return json_answer({"detail": "not a refresh token"}, 401)
        return Answer(401, f"token {r.headers.get('Authorization', '')} rejected".encode())

    with serve(legacy) as ls:
        res = _pull(ls.url, LEGACY, tmp_path)
    assert res.exit_code == 2
    assert "refused the token in LABEL_STUDIO_API_KEY (HTTP 401 as a personal access token, " \
           "HTTP 401 as a legacy token)" in res.output
    assert [r.headers.get("Authorization") for r in ls.requests] == [None, f"Token {LEGACY}"]
    assert not ls.saw("Basic")
    _no_secret(res.output)


def test_a_token_that_is_not_a_token_is_refused_unechoed(tmp_path):
    for bad in ("abc\r\nX-Injected: 1", "tok en with spaces", "x" * 5000):
        res = _pull("http://127.0.0.1:9", bad, tmp_path / str(len(bad)))
        assert res.exit_code == 2
        assert "holds characters a Label Studio token cannot have" in res.output
        assert bad.strip()[:12] not in res.output
