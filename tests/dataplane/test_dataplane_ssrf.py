"""SSRF guard: every blocked range, the allow-list, schemes, redirects, pinned resolution."""

from __future__ import annotations

import socket

import pytest

from connector.dataplane.ssrf import (
    GuardedResolver,
    SsrfPolicy,
    SsrfRefused,
    check_redirect,
    check_url,
)

DEFAULT = SsrfPolicy()


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


BLOCKED = [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "reserved"), ("192.0.2.10", "private"),
]


@pytest.mark.parametrize(("address", "category"), BLOCKED)
async def test_blocked_addresses_refused_as_literals_and_via_dns(address: str, category: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(SsrfRefused, match=category):
        await check_url(f"http://{host}/x", DEFAULT)
    with pytest.raises(SsrfRefused, match=category):
        await check_url("https://api.example.com/x", DEFAULT,
                        resolve=fake_dns({"api.example.com": ["93.184.216.34", address]}))


@pytest.mark.parametrize(("address", "_category"), BLOCKED)
async def test_allow_list_cidr_permits(address: str, _category: str) -> None:
    net = address + ("/128" if ":" in address else "/32")
    policy = SsrfPolicy.from_config([net])
    target = await check_url("https://internal.corp/x", policy,
                             resolve=fake_dns({"internal.corp": [address]}))
    assert target.addresses == (str(__import__("ipaddress").ip_address(address)),)
    assert target.allowed_by == "allow-list"


async def test_allow_list_host_name_permits_its_addresses() -> None:
    policy = SsrfPolicy.from_config(["internal.corp", "10.9.0.0/16"])
    dns = fake_dns({"internal.corp": ["10.1.1.1"], "other.corp": ["10.2.2.2"], "ok.corp": ["10.9.3.4"]})
    assert (await check_url("http://Internal.Corp:8080/", policy, resolve=dns)).port == 8080
    assert (await check_url("http://ok.corp/", policy, resolve=dns)).addresses == ("10.9.3.4",)
    with pytest.raises(SsrfRefused, match="private"):
        await check_url("http://other.corp/", policy, resolve=dns)


async def test_public_address_allowed() -> None:
    target = await check_url("https://api.example.com/v1", DEFAULT,
                             resolve=fake_dns({"api.example.com": ["93.184.216.34", "2606:2800:220:1::1"]}))
    assert target.port == 443 and target.allowed_by == "public"
    assert target.addresses == ("93.184.216.34", "2606:2800:220:1::1")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/",
                                 "data:text/plain,hi", "unix:///var/run/x.sock", "//example.com/x",
                                 "javascript:alert(1)"])
async def test_non_http_schemes_refused(url: str) -> None:
    with pytest.raises(SsrfRefused, match="scheme"):
        await check_url(url, DEFAULT)


async def test_other_refusals() -> None:
    with pytest.raises(SsrfRefused, match="credentials"):
        await check_url("http://user:pw@93.184.216.34/", DEFAULT)
    with pytest.raises(SsrfRefused, match="does not resolve"):
        await check_url("http://nowhere.example/", DEFAULT, resolve=fake_dns({}))
    with pytest.raises(SsrfRefused, match="no host"):
        await check_url("http:///path", DEFAULT)


async def test_redirects_rechecked_and_bounded() -> None:
    dns = fake_dns({"a.example": ["93.184.216.34"], "evil.example": ["10.0.0.5"]})
    start = await check_url("https://a.example/x", DEFAULT, resolve=dns)
    hop = await check_redirect(start, "/y?z=1", 1, DEFAULT, resolve=dns)
    assert str(hop.url) == "https://a.example/y?z=1"
    with pytest.raises(SsrfRefused, match=r"redirect refused.*private"):
        await check_redirect(start, "http://evil.example/", 1, DEFAULT, resolve=dns)
    with pytest.raises(SsrfRefused, match=r"redirect refused.*link-local"):
        await check_redirect(start, "http://169.254.169.254/latest/meta-data", 2, DEFAULT, resolve=dns)
    with pytest.raises(SsrfRefused, match=r"redirect refused.*scheme"):
        await check_redirect(start, "file:///etc/passwd", 1, DEFAULT, resolve=dns)
    with pytest.raises(SsrfRefused, match="too many redirects"):
        await check_redirect(start, "/again", 4, DEFAULT, resolve=dns)


async def test_guarded_resolver_pins_vetted_addresses_against_rebinding() -> None:
    table = {"rebind.example": ["93.184.216.34"]}
    dns = fake_dns(table)
    target = await check_url("http://rebind.example/", DEFAULT, resolve=dns)
    resolver = GuardedResolver(DEFAULT, resolve=dns)
    resolver.pin(target)
    table["rebind.example"] = ["127.0.0.1"]  # the attacker's DNS flips after the check
    results = await resolver.resolve("rebind.example", 80, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["93.184.216.34"]
    # an unpinned host is checked on the spot: the flipped answer is refused
    resolver2 = GuardedResolver(DEFAULT, resolve=dns)
    with pytest.raises(OSError, match="loopback"):
        await resolver2.resolve("rebind.example", 80, socket.AF_UNSPEC)
