"""The network policy for fetched URLs (docs/DECISIONS.md, D4)."""

from __future__ import annotations

import os

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
