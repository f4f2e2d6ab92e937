"""The outbound-address policy on its own: every refused range as a literal and behind a name,
IPv6 forms that embed an IPv4 address, the numeric forms of IPv4 that getaddrinfo accepts, URL
syntax (schemes, hosts, IDNA, lengths, credentials, fragments), the allow-list, redirects, and
the pinned resolver against DNS rebinding."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from connector.http.outbound import (
    MAX_PINS,
    AddressRefused,
    GuardedResolver,
    InvalidUrl,
    OutboundPolicy,
    OutboundRefused,
    RedirectRefused,
    SchemeRefused,
    Unresolvable,
    check_redirect,
    check_url,
    parse_url,
)

DEFAULT = OutboundPolicy()


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "reserved"),
    ("192.0.2.10", "private"),
    # IPv6 addresses that embed an IPv4 one are judged by it
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("2002:7f00:1::1", "loopback"),
    ("2002:a00:1::1", "private"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("::127.0.0.1", "reserved"),
]


@pytest.mark.parametrize(("address", "category"), BLOCKED)
async def test_blocked_addresses_refused_as_literals_and_via_dns(address: str, category: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(AddressRefused, match=category):
        await check_url(f"http://{host}/x", DEFAULT)
    with pytest.raises(AddressRefused, match=category):
        await check_url(
            "https://api.example.com/x",
            DEFAULT,
            resolve=fake_dns({"api.example.com": ["93.184.216.34", address]}),
        )


@pytest.mark.parametrize(("address", "_category"), BLOCKED)
async def test_allow_list_cidr_permits(address: str, _category: str) -> None:
    net = address + ("/128" if ":" in address else "/32")
    policy = OutboundPolicy.from_config([net])
    target = await check_url(
        "https://internal.corp/x", policy, resolve=fake_dns({"internal.corp": [address]})
    )
    assert target.addresses == (str(ipaddress.ip_address(address)),)
    assert target.allowed_by == "allow-list"


async def test_an_allowed_ipv4_address_does_not_allow_its_ipv6_forms() -> None:
    policy = OutboundPolicy.from_config(["127.0.0.1"])
    assert (await check_url("http://127.0.0.1:8801/", policy)).addresses == ("127.0.0.1",)
    for form in ("[::ffff:127.0.0.1]", "[2002:7f00:1::1]", "[64:ff9b::7f00:1]"):
        with pytest.raises(AddressRefused, match="loopback"):
            await check_url(f"http://{form}:8801/", policy)


NUMERIC = [
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "127.1",
    "127.0.1",
    "017700000001",
    "0x7f.1",
    "0177.1",
]


@pytest.mark.parametrize("host", NUMERIC)
async def test_numeric_ipv4_forms_are_refused_naming_the_address_they_stand_for(host: str) -> None:
    # what getaddrinfo (and so a connection) would make of the host: the address the reason names
    connected = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)[0][4][0]
    assert connected == "127.0.0.1"
    for policy in (DEFAULT, OutboundPolicy.from_config(["127.0.0.0/8", host])):
        with pytest.raises(
            InvalidUrl,
            match=r"IPv4 address 127\.0\.0\.1 \(loopback\) in a "
            r"non-canonical form.*write it as 127\.0\.0\.1",
        ):
            await check_url(f"http://{host}:8801/", policy)


@pytest.mark.parametrize("host", ["0", "0x0", "00.0"])
async def test_numeric_forms_of_the_unspecified_address(host: str) -> None:
    with pytest.raises(InvalidUrl, match=r"0\.0\.0\.0 \(unspecified\)"):
        await check_url(f"http://{host}/", DEFAULT)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "08.0.0.1", "0x1g.0.0.1", "example.123"])
async def test_hosts_ending_in_a_number_that_are_no_address_are_refused(host: str) -> None:
    with pytest.raises(InvalidUrl, match="not a valid IPv4 address"):
        await check_url(f"http://{host}/", DEFAULT)


async def test_localhost_through_the_system_resolver() -> None:
    with pytest.raises(AddressRefused, match=r"localhost resolves to 127\.0\.0\.1, a loopback"):
        await check_url("http://localhost:8801/", DEFAULT)
    with pytest.raises(AddressRefused, match="loopback"):
        await check_url("http://LocalHost:8801/", DEFAULT)


async def test_allow_list_host_name_permits_its_addresses() -> None:
    policy = OutboundPolicy.from_config(["internal.corp", "10.9.0.0/16"])
    dns = fake_dns({"internal.corp": ["10.1.1.1"], "other.corp": ["10.2.2.2"], "ok.corp": ["10.9.3.4"]})
    assert (await check_url("http://Internal.Corp:8080/", policy, resolve=dns)).port == 8080
    assert (await check_url("http://ok.corp/", policy, resolve=dns)).addresses == ("10.9.3.4",)
    with pytest.raises(AddressRefused, match="private"):
        await check_url("http://other.corp/", policy, resolve=dns)


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "not a host", "-bad.example", "a..b", "x" * 64, "http://10.0.0.1/"]
)
def test_allow_list_entries_that_are_nothing_are_an_error(entry: str) -> None:
    with pytest.raises(ValueError, match="neither an address, a CIDR nor a host name"):
        OutboundPolicy.from_config([entry])


async def test_public_address_allowed() -> None:
    target = await check_url(
        "https://api.example.com/v1",
        DEFAULT,
        resolve=fake_dns({"api.example.com": ["93.184.216.34", "2606:2800:220:1::1"]}),
    )
    assert target.port == 443 and target.allowed_by == "public"
    assert target.addresses == ("93.184.216.34", "2606:2800:220:1::1")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file:",
        "ftp://example.com/x",
        "gopher://x/",
        "data:text/plain,hi",
        "unix:///var/run/x.sock",
        "javascript:alert(1)",
        "ws://example.com/",
    ],
)
async def test_non_http_schemes_refused(url: str) -> None:
    with pytest.raises(SchemeRefused, match="scheme"):
        await check_url(url, DEFAULT)


async def test_https_only_policy_refuses_http() -> None:
    tls_only = OutboundPolicy.from_config([], schemes=("https",))
    with pytest.raises(SchemeRefused, match=r"scheme 'http' is not allowed \(only https\)"):
        await check_url("http://93.184.216.34/", tls_only)
    assert (await check_url("https://93.184.216.34/", tls_only)).port == 443


SYNTAX = [
    ("", "not an absolute URL"),
    ("not a callback address", "not an absolute URL"),
    ("//example.com/x", "not an absolute URL"),
    ("http:example.com", "not an absolute URL"),
    ("http:///path", "not an absolute URL"),
    ("http://", "not an absolute URL"),
    ("https://exa mple.com/", "spaces or control characters"),
    ("https://example.com/\x00", "spaces or control characters"),
    ("http://user:pw@93.184.216.34/", "credentials"),
    ("http://@93.184.216.34/", "credentials"),
    ("http://93.184.216.34/#frag", "fragment"),
    ("http://93.184.216.34/#", "fragment"),
    ("http://93.184.216.34:0/", "port 0"),
    ("http://93.184.216.34:99999/", "Port out of range"),
    ("http://[::1/", "not a valid URL"),
    ("http://[1.2.3.4]/", "not a valid URL"),
    ("https://" + "a" * 300 + "/", "longer than 253 characters"),
    ("https://" + "a" * 64 + ".example/", "longer than 63 characters"),
    ("https://" + ("a" * 60 + ".") * 5 + "example/", "longer than 253 characters"),
    ("https://" + "\u00e9" * 70 + ".example/", "not a valid internationalized domain name"),
    ("https://a..example/", "empty label"),
    ("https://-a.example/", "characters a DNS name cannot have"),
    ("https://a%2Fb.example/", "characters a DNS name cannot have"),
    ("https://example.com/" + "x" * 2100, "longer than 2048 characters"),
]


@pytest.mark.parametrize(("url", "reason"), SYNTAX)
async def test_url_syntax_errors_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidUrl, match=reason.replace("(", r"\(")) as err:
        await check_url(url, DEFAULT, resolve=fake_dns({}))
    assert err.value.permanent


def test_base_urls_take_no_query_and_international_names_are_encoded() -> None:
    with pytest.raises(InvalidUrl, match="query"):
        parse_url("https://peer.example/dsp?x=1", base=True)
    assert str(parse_url("https://peer.example/dsp?x=1")) == "https://peer.example/dsp?x=1"
    assert parse_url("https://B\u00fccher.example/dsp").raw_host == "xn--bcher-kva.example"
    assert parse_url("https://peer.example./").raw_host == "peer.example."


async def test_only_a_name_that_does_not_resolve_is_worth_retrying() -> None:
    with pytest.raises(Unresolvable, match="does not resolve") as err:
        await check_url("http://nowhere.example/", DEFAULT, resolve=fake_dns({}))
    assert not err.value.permanent
    for cls in (InvalidUrl, SchemeRefused, AddressRefused, RedirectRefused):
        assert cls("x").permanent and issubclass(cls, OutboundRefused)


async def test_redirects_rechecked_and_bounded() -> None:
    dns = fake_dns({"a.example": ["93.184.216.34"], "evil.example": ["10.0.0.5"], "localhost": ["127.0.0.1"]})
    start = await check_url("https://a.example/x", DEFAULT, resolve=dns)
    hop = await check_redirect(start, "/y?z=1", 1, DEFAULT, resolve=dns)
    assert str(hop.url) == "https://a.example/y?z=1"
    for location, why in [
        ("http://evil.example/", "private"),
        ("http://localhost:8801/", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://2130706433/", "non-canonical"),
        ("file:///etc/passwd", "scheme"),
    ]:
        with pytest.raises(RedirectRefused, match=f"redirect refused.*{why}"):
            await check_redirect(start, location, 1, DEFAULT, resolve=dns)
    with pytest.raises(RedirectRefused, match="too many redirects"):
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


async def test_guarded_resolver_keeps_a_bounded_number_of_pins() -> None:
    table = {f"h{i}.example": ["93.184.216.34"] for i in range(MAX_PINS + 1)}
    dns = fake_dns(table)
    resolver = GuardedResolver(DEFAULT, resolve=dns)
    for i in range(MAX_PINS + 1):
        resolver.pin(await check_url(f"http://h{i}.example/", DEFAULT, resolve=dns))
    table["h0.example"] = ["10.0.0.1"]  # forgotten, so checked again: refused
    with pytest.raises(OSError, match="private"):
        await resolver.resolve("h0.example", 80, socket.AF_UNSPEC)
    table[f"h{MAX_PINS}.example"] = ["10.0.0.1"]  # still pinned: the vetted address
    assert [r["host"] for r in await resolver.resolve(f"h{MAX_PINS}.example", 80)] == ["93.184.216.34"]
