"""The network policy for fetched URLs (docs/DECISIONS.md, D4)."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from curation.netpolicy import NetworkPolicy, UrlRefused, address_is_public


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                  "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                  "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"])
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert not address_is_public(addr)


@pytest.mark.parametrize("addr", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(addr: str) -> None:
    assert address_is_public(addr)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v.mp4", "http://localhost/v.mp4",
                                 "https://[::1]/x", "http://0x7f000001/x",
                                 "http://169.254.169.254/latest/meta-data"])
def test_loopback_and_private_urls_are_refused_by_default(url: str) -> None:
    with pytest.raises(UrlRefused) as err:
        NetworkPolicy().check(url)
    assert err.value.reason == "private_address"
    assert "--allow-private-network" in str(err.value)
    NetworkPolicy(allow_private_network=True).check(url)  # the explicit option lifts it


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.org/v.mp4", "scheme_not_allowed"),
    ("tcp://127.0.0.1:9000", "scheme_not_allowed"),
    ("file:///etc/passwd", "scheme_not_allowed"),
    ("", "bad_url"),
    ("http://", "bad_url"),
    ("http://host:99999/x", "bad_url"),
    ("http://exa\nmple.org/", "bad_url"),
    ("http://no-such-host.invalid/x", "unresolvable_host"),
])
def test_bad_urls_get_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as err:
        NetworkPolicy().check(url)
    assert err.value.reason == reason


def test_file_urls_only_for_regular_files(tmp_path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    policy = NetworkPolicy(allow_file=True)
    policy.check(video.as_uri())
    for special in ("file:///dev/zero", tmp_path.as_uri()):
        with pytest.raises(UrlRefused) as err:
            policy.check(special)
        assert err.value.reason == "file_not_regular"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UrlRefused, match="not a regular file"):
        policy.check(fifo.as_uri())


# ------------------------------------------------------------- allowed networks, pinning
@pytest.mark.parametrize(("entry", "address", "port", "allowed"), [
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.0.0.0/8", "192.168.1.1", 80, False),
    ("192.168.1.20", "192.168.1.20", 8080, True),
    ("127.0.0.1:8000", "127.0.0.1", 8000, True),
    ("127.0.0.1:8000", "127.0.0.1", 8001, False),
    ("[::1]:8000", "::1", 8000, True),
    ("fd00::/8", "fd12::1", 443, True),
])
def test_allowed_networks_lift_the_rule_only_for_themselves(entry, address, port, allowed):
    policy = NetworkPolicy(allow_addresses=(entry,))
    assert policy.address_allowed(address, port) is allowed


@pytest.mark.parametrize("entry", ["not-a-net", "10.0.0.0/33", "127.0.0.1:99999", "[::1]x"])
def test_bad_allowed_network_is_refused_at_construction(entry):
    with pytest.raises(UrlRefused) as err:
        NetworkPolicy(allow_addresses=(entry,))
    assert err.value.reason == "bad_allow_address"


def test_connect_pins_the_checked_address_against_dns_rebinding():
    # a name that answers an allowed address first and an internal one afterwards
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answers = [["127.0.0.1"], ["10.0.0.1"]]
    calls = []

    def rebinding(host, p):
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    policy = NetworkPolicy(allow_addresses=(f"127.0.0.1:{port}",), resolver=rebinding)
    with policy.connect("rebind.test", port, 5.0) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"  # the address that was checked
    assert calls == ["rebind.test"]  # resolved once per connection, never again before use
    with pytest.raises(UrlRefused) as err:  # the next answer is checked too
        policy.connect("rebind.test", port, 5.0)
    assert err.value.reason == "private_address" and "10.0.0.1" in str(err.value)
    listener.close()


def test_a_name_with_any_internal_address_is_refused():
    policy = NetworkPolicy(resolver=lambda host, port: ["8.8.8.8", "127.0.0.1"])
    with pytest.raises(UrlRefused, match="127.0.0.1"):
        policy.check("http://mixed.test/v.mp4")


def test_proxy_checks_and_pins_every_request(tmp_path):
    """The loopback proxy yt-dlp and ffmpeg use refuses what the policy refuses."""
    import urllib.error
    import urllib.request

    from curation.fetch import Budget, HttpClient, PolicyProxy
    from tests.curation.webservers import Route, WebServer

    good, internal = WebServer(), WebServer()
    try:
        good.add("ok.txt", Route(body=b"hello", content_type="text/plain"))
        good.add("jump", Route(redirect=internal.url("secret.txt")))
        internal.add("secret.txt", Route(body=b"secret", content_type="text/plain"))
        client = HttpClient(NetworkPolicy(allow_addresses=(good.address,)))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler(
            {"http": (proxy := PolicyProxy(client)).url}))
        with Budget(10_000, 30, 5) as budget:
            proxy.budget = budget
            assert opener.open(good.url("ok.txt"), timeout=10).read() == b"hello"
            with pytest.raises(urllib.error.HTTPError) as err:
                opener.open(good.url("jump"), timeout=10)  # follows the redirect via the proxy
            assert err.value.code == 403
            assert budget.refusals and budget.refusals[0].reason == "private_address"
        assert internal.hits() == 0 and good.hits("jump") == 1
        proxy.budget = None
        with pytest.raises(urllib.error.HTTPError) as err:  # no item in progress: nothing
            opener.open(good.url("ok.txt"), timeout=10)
        assert err.value.code == 503
        proxy.close()
    finally:
        good.close()
        internal.close()


def test_budget_counts_bytes_through_the_proxy():
    import http.client
    import urllib.error
    import urllib.request

    from curation.fetch import Budget, HttpClient, PolicyProxy, TooLarge
    from tests.curation.webservers import Route, WebServer

    srv = WebServer()
    try:
        srv.add("big.bin", Route(body=bytes(200_000), content_type="application/octet-stream"))
        proxy = PolicyProxy(HttpClient(NetworkPolicy(allow_private_network=True)))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
        with Budget(50_000, 30, 5) as budget:
            proxy.budget = budget
            with pytest.raises((OSError, urllib.error.URLError, http.client.IncompleteRead)):
                opener.open(srv.url("big.bin"), timeout=10).read()  # cut short, not padded
            assert isinstance(budget.aborted, TooLarge)
        proxy.close()
    finally:
        srv.close()


def test_proxy_tunnels_only_to_allowed_addresses():
    """HTTPS goes through ``CONNECT host:port`` tunnels: each is checked like a request."""
    from curation.fetch import Budget, HttpClient, PolicyProxy
    from tests.curation.webservers import Route, WebServer

    good, internal = WebServer(), WebServer()
    good.add("ok.txt", Route(body=b"hello", content_type="text/plain"))
    proxy = PolicyProxy(HttpClient(NetworkPolicy(allow_addresses=(good.address,))))

    def connect(target: str) -> tuple[bytes, socket.socket]:
        sock = socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), 10)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return sock.recv(4096), sock

    try:
        with Budget(100_000, 30, 5) as budget:
            proxy.budget = budget
            head, sock = connect(internal.address)
            assert head.startswith(b"HTTP/1.1 403") and b"non-public address" in head
            sock.close()
            assert budget.refusals[0].reason == "private_address" and internal.hits() == 0
        with Budget(100_000, 30, 5) as budget:
            proxy.budget = budget
            head, sock = connect(good.address)
            assert head.startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            sock.close()
            assert reply.endswith(b"hello") and budget.used >= len(reply)
    finally:
        proxy.close()
        good.close()
        internal.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_is_pinned_and_verified(tmp_path):
    """Our client speaks TLS over the checked connection, verifies the certificate against the
    name in the URL (SNI), and refuses one it cannot verify."""
    from curation.fetch import Budget, FetchError, HttpClient
    from tests.curation.webservers import Route, WebServer, make_tls

    server_tls, client_tls = make_tls(tmp_path / "tls")
    srv = WebServer(tls=server_tls)
    try:
        srv.add("a.txt", Route(body=b"over tls", content_type="text/plain"))
        url = f"https://localhost:{srv.port}/a.txt"
        client = HttpClient(NetworkPolicy(allow_private_network=True), tls=client_tls)
        with Budget(10_000, 30, 5) as budget, client.request(url, budget) as resp:
            assert resp.status == 200 and resp.read() == b"over tls"
        with Budget(10_000, 30, 5) as budget, pytest.raises(FetchError) as err:
            HttpClient(NetworkPolicy(allow_private_network=True)).request(url, budget)
        assert err.value.reason == "tls_error" and "certificate" in str(err.value).lower()
        with Budget(10_000, 30, 5) as budget, pytest.raises(UrlRefused):
            HttpClient(NetworkPolicy(), tls=client_tls).request(url, budget)  # still the rule
    finally:
        srv.close()
