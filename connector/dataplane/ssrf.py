"""SSRF guard for the data plane's outbound requests (HTTP upstream sources, push destinations).

A URL is checked by resolving its host and refusing any address that is not globally routable
(loopback, link-local, private, unique-local, unspecified, multicast, reserved, shared, ...)
unless the operator's allow-list (CIDRs and/or host names) permits it. The addresses that passed
are then *pinned*: `GuardedResolver` hands aiohttp exactly those, so a DNS answer that changes
between the check and the connect (DNS rebinding) is never used. Hosts the resolver has not seen
checked are resolved and checked on the spot, so no connection made through a guarded connector
can reach a refused address. Redirects are never followed by aiohttp (`allow_redirects=False`);
callers check each hop with `check_redirect` (at most `max_redirects`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> addresses as text; injectable for tests
Resolve = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443}


class SsrfRefused(Exception):
    """The URL may not be fetched or pushed to; `reason` says why (safe to show the operator)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SsrfPolicy:
    """What the operator allows beyond the public internet."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()  # lower-case host names, exact match
    schemes: frozenset[str] = frozenset({"http", "https"})
    max_redirects: int = 3

    @classmethod
    def from_config(cls, allow: Iterable[str] = (), *, max_redirects: int = 3) -> SsrfPolicy:
        """`allow` entries are CIDRs / IP addresses (`10.1.0.0/16`, `::1`) or host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts), max_redirects=max_redirects)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.allow_networks)


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A checked URL and the addresses it may be connected to (and only those)."""

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]
    allowed_by: str = "public"  # "public" | "allow-list"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def address_category(address: IPAddress) -> str | None:
    """Why `address` is not a public destination, or None if it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return address_category(mapped)
        if address.teredo is not None:
            return "Teredo tunnel (reserved)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable (reserved)"
    return None


def check_address(address: IPAddress, host: str, policy: SsrfPolicy) -> str | None:
    """None if `address` may be contacted for `host`; else the reason."""
    category = address_category(address)
    if category is None or policy.host_allowed(host) or policy.address_allowed(address):
        return None
    return f"{host} resolves to {address}, a {category} address (not on the allow-list)"


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id


async def check_url(
    url: str | URL, policy: SsrfPolicy, *, resolve: Resolve | None = None
) -> ResolvedTarget:
    """Check `url` against `policy`; the returned target pins the vetted addresses.

    Raises SsrfRefused(reason) for a non-http(s) scheme, a missing host, credentials in the URL,
    a name that does not resolve, or any resolved address the policy refuses (one bad address
    refuses the whole name: a client could otherwise be steered to it).
    """
    try:
        u = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise SsrfRefused(f"malformed URL: {exc}") from None
    scheme = (u.scheme or "").lower()
    if scheme not in policy.schemes:
        raise SsrfRefused(f"scheme {scheme or '(none)'!r} is not allowed (only http and https)")
    host = u.raw_host
    if not host:
        raise SsrfRefused("URL has no host")
    if u.raw_user is not None or u.raw_password is not None:
        raise SsrfRefused("credentials in the URL are not allowed")
    try:
        port = u.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise SsrfRefused(f"invalid port: {exc}") from None
    host = host.strip("[]")
    try:
        literal: IPAddress | None = _parse_ip(host)
    except ValueError:
        literal = None
    if literal is not None:
        reason = check_address(literal, host, policy)
        if reason:
            raise SsrfRefused(reason)
        return ResolvedTarget(u, host, port, (str(literal),),
                              "public" if address_category(literal) is None else "allow-list")
    try:
        texts = await (resolve or _system_resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise SsrfRefused(f"{host} does not resolve: {exc}") from None
    if not texts:
        raise SsrfRefused(f"{host} does not resolve")
    addresses: list[str] = []
    allowed_by = "public"
    for text in dict.fromkeys(texts):
        try:
            address = _parse_ip(text)
        except ValueError:
            raise SsrfRefused(f"{host} resolves to an unparseable address {text!r}") from None
        reason = check_address(address, host, policy)
        if reason:
            raise SsrfRefused(reason)
        if address_category(address) is not None:
            allowed_by = "allow-list"
        addresses.append(str(address))
    return ResolvedTarget(u, host, port, tuple(addresses), allowed_by)


async def check_redirect(
    current: ResolvedTarget, location: str, hops: int, policy: SsrfPolicy,
    *, resolve: Resolve | None = None,
) -> ResolvedTarget:
    """Check a redirect's `Location` (relative to `current`) as hop number `hops` (1-based)."""
    if hops > policy.max_redirects:
        raise SsrfRefused(f"too many redirects (more than {policy.max_redirects})")
    try:
        target = current.url.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise SsrfRefused(f"malformed redirect location: {exc}") from None
    try:
        return await check_url(target, policy, resolve=resolve)
    except SsrfRefused as exc:
        raise SsrfRefused(f"redirect refused: {exc.reason}") from None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns vetted addresses.

    Hosts pinned with `pin(target)` get exactly the addresses checked then (no second DNS
    lookup, so no rebinding window); any other host is resolved and checked now.
    """

    def __init__(self, policy: SsrfPolicy, *, resolve: Resolve | None = None) -> None:
        self._policy = policy
        self._resolve = resolve
        self._pinned: dict[tuple[str, int], tuple[str, ...]] = {}

    def pin(self, target: ResolvedTarget) -> None:
        self._pinned[(target.host.lower(), target.port)] = target.addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pinned.get((host.lower(), port))
        if addresses is None:
            try:
                target = await check_url(URL.build(scheme="http", host=host, port=port or 80),
                                         self._policy, resolve=self._resolve)
            except SsrfRefused as exc:
                raise OSError(exc.reason) from None
            addresses = target.addresses
        results: list[ResolveResult] = []
        for text in addresses:
            address = _parse_ip(text)
            fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            results.append({"hostname": host, "host": text, "port": port, "family": fam,
                            "proto": 0, "flags": socket.AI_NUMERICHOST})
        if not results:
            raise OSError(f"no vetted address for {host}")
        return results

    async def close(self) -> None:
        self._pinned.clear()


def guarded_connector(resolver: GuardedResolver, **kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector that connects only to addresses `resolver` vetted (DNS cache off)."""
    return aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, **kwargs)
