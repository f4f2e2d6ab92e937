"""Outbound addresses: one policy for every call the connector makes on someone else's word.

The paths, each with its own allow-list (an `OutboundPolicy`):

* DSP calls (`connector.http.client.DspClient`): a peer's `callbackAddress`, the `peerUrl` given
  to the management API, the addresses of running processes (`[dsp] peer_allow`);
* push destinations, given by the consumer (`[dataplane] push_allow`);
* HTTP upstreams of assets (`[dataplane] upstream_allow`);
* consumer pulls from the endpoint the provider gave (`[dataplane] pull_allow`).

A URL passes in two steps. `parse_url` is syntax only (no DNS): an absolute http(s) URL of at
most `MAX_URL_LENGTH` characters with a host, no credentials, no fragment, a port in 1..65535,
and a host that is a DNS name (IDNA-encoded, labels of 1..63 characters, 253 at most) or an IP
literal. An IPv4 address written in any other form than dotted-quad decimal (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`, which `getaddrinfo` and browsers read as 127.0.0.1) is refused
with the address it stands for: what is checked is always what would be connected to. Then
`check_url` checks the address: a literal at once, a name by resolving it once and checking
every address it resolves to (one bad address refuses the name: a client could be steered to
it). Loopback, private, link-local, unique-local, unspecified, multicast, reserved and shared
addresses are refused unless the allow-list (CIDRs and/or host names) permits them; an IPv6
address that embeds an IPv4 one (IPv4-mapped, 6to4, NAT64, Teredo) is judged by the IPv4 one.

The addresses that passed are *pinned*: `GuardedResolver` hands aiohttp exactly those, so a DNS
answer that changes between the check and the connect (DNS rebinding) is never used; a host it
has not seen checked is resolved and checked on the spot, so no connection made through a
guarded connector can reach a refused address. aiohttp never follows a redirect for us
(`allow_redirects=False` everywhere); a caller that follows one checks each hop with
`check_redirect` (at most `max_redirects`).

Every refusal is an `OutboundRefused` of the class of its reason, with `reason` (safe to show
the caller) and `permanent` (False only for a name that does not resolve now: DNS may recover).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> addresses as text; injectable for tests
Resolve = Callable[[str, int], Awaitable[list[str]]]

HTTP_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253  # RFC 1035, without the trailing dot
MAX_LABEL_LENGTH = 63
MAX_PINS = 1024  # hosts a GuardedResolver remembers; a forgotten one is checked again
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class OutboundRefused(Exception):
    """A URL this connector will not call; `reason` says why (safe to show the caller)."""

    permanent = True  # the same URL will be refused again: retrying cannot help

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidUrl(OutboundRefused):
    """Not a URL that can be called: syntax, host name (IDNA, lengths), port, credentials."""


class SchemeRefused(OutboundRefused):
    """A scheme this path does not allow (anything but http(s); http where only https goes)."""


class AddressRefused(OutboundRefused):
    """The host is, or resolves to, an address the policy refuses."""


class Unresolvable(OutboundRefused):
    """The host name does not resolve (now: DNS may recover, so not permanent)."""

    permanent = False


class RedirectRefused(OutboundRefused):
    """A redirect that may not be followed (too many, or to a refused URL)."""


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _host_name(entry: str) -> str:
    """`entry` as a lower-case IDNA host name; ValueError if it is not a valid one."""
    host = entry.lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise ValueError(f"{entry!r} is neither an address, a CIDR nor a host name ({exc})") from None
    problem = _name_problem(host)
    if problem:
        raise ValueError(f"{entry!r} is neither an address, a CIDR nor a host name: {problem}")
    return host


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Where one outbound path may go beyond the public internet, and over which schemes."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()  # lower-case IDNA host names, exact match
    schemes: frozenset[str] = HTTP_SCHEMES
    max_redirects: int = 3

    @classmethod
    def from_config(
        cls, allow: Iterable[str] = (), *, schemes: Iterable[str] = HTTP_SCHEMES, max_redirects: int = 3
    ) -> OutboundPolicy:
        """`allow` entries are CIDRs / IP addresses (`10.1.0.0/16`, `::1`) or host names; an
        entry that is none of them raises ValueError (a typo must not allow something else)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in allow:
            entry = raw.strip()
            if not entry:
                continue
            net = _network(entry)
            if net is not None:
                networks.append(net)
            else:
                hosts.add(_host_name(entry))
        wanted = frozenset(s.lower() for s in schemes)
        if not wanted or not wanted <= HTTP_SCHEMES:
            raise ValueError(f"schemes must be http and/or https, not {sorted(wanted)}")
        return cls(tuple(networks), frozenset(hosts), wanted, max_redirects)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.allow_networks)


def same_endpoint(url: str, endpoint_url: str) -> bool:
    """Whether ``url`` is at ``endpoint_url`` (scheme, host, port and path; the query aside): a
    peer's next page is followed only there, or one peer could pass another's answers off as
    its own."""
    a, b = urlsplit(url), urlsplit(endpoint_url)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def validate_allow_list(allow: list[str]) -> list[str]:
    """For config validators: the entries unchanged, or ValueError naming the bad one."""
    OutboundPolicy.from_config(allow)
    return allow


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A checked URL and the addresses it may be connected to (and only those)."""

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]
    allowed_by: str = "public"  # "public" | "allow-list"


# ---------------------------------------------------------------------------------- syntax


def _name_problem(host: str) -> str | None:
    """Why the ASCII host name `host` (no trailing dot) is not a valid DNS name, or None."""
    if len(host) > MAX_HOST_LENGTH:
        return f"the host name is longer than {MAX_HOST_LENGTH} characters"
    for label in host.split("."):
        if not label:
            return "the host name has an empty label"
        if len(label) > MAX_LABEL_LENGTH:
            return f"a label of the host name is longer than {MAX_LABEL_LENGTH} characters"
        if not _LABEL.fullmatch(label):
            return f"the host name label {label[:MAX_LABEL_LENGTH]!r} has characters a DNS name cannot have"
    return None


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host whose last label is numeric stands for, as `getaddrinfo` and the
    WHATWG URL standard read it; InvalidUrl if it is not canonical or not an address at all."""
    labels = host.split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    try:
        return ipaddress.IPv4Address(host)  # dotted-quad decimal, no leading zeros
    except ValueError:
        pass
    try:
        address = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise InvalidUrl(f"host {host!r} is not a valid IPv4 address") from None
    what = address_category(address)
    raise InvalidUrl(
        f"host {host!r} is the IPv4 address {address}"
        f"{f' ({what})' if what else ''} in a non-canonical form (decimal, octal, "
        f"hex or short); write it as {address}"
    )


def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id


def parse_url(url: str | URL, *, schemes: Iterable[str] = HTTP_SCHEMES, base: bool = False) -> URL:
    """The URL, if its syntax is one this connector calls (no DNS, no address policy).

    `base`: a base URL that paths are appended to (a callbackAddress, a peer URL), so no query
    either. Raises InvalidUrl or SchemeRefused with the reason.
    """
    text = str(url)
    if len(text) > MAX_URL_LENGTH:
        raise InvalidUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    start = _SCHEME.match(text)
    if start is None:
        raise InvalidUrl("not an absolute URL (scheme://host/...)")
    scheme = start.group(1).lower()
    allowed = sorted(s.lower() for s in schemes)
    if scheme not in allowed:
        raise SchemeRefused(f"scheme {scheme!r} is not allowed (only {', '.join(allowed)})")
    if not text[start.end() :].startswith("//"):
        raise InvalidUrl("not an absolute URL (scheme://host/...)")
    if _CONTROL.search(text):
        raise InvalidUrl("the URL contains spaces or control characters")
    try:
        u = url if isinstance(url, URL) else URL(url)
    except UnicodeError as exc:  # IDNA: a label empty or longer than 63 characters, ...
        raise InvalidUrl(f"the host is not a valid internationalized domain name: {exc}"[:300]) from None
    except (ValueError, TypeError) as exc:
        raise InvalidUrl(f"not a valid URL: {exc}"[:300]) from None
    if not u.absolute or u.scheme.lower() != scheme:
        raise InvalidUrl("not an absolute URL (scheme://host/...)")
    authority = re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0]
    if "@" in authority or u.raw_user is not None or u.raw_password is not None:
        raise InvalidUrl("credentials in the URL are not allowed")
    if "#" in text:
        raise InvalidUrl("a fragment (#...) is not allowed")
    if base and "?" in text:
        raise InvalidUrl("a query (?...) is not allowed in a base URL")
    host = u.raw_host
    if not host:
        raise InvalidUrl("the URL has no host")
    if u.explicit_port == 0:
        raise InvalidUrl("port 0 is not a port to connect to")
    if ":" in host:  # an IPv6 literal (yarl has checked the brackets' content)
        try:
            _parse_ip(host)
        except ValueError:
            raise InvalidUrl(f"host [{host}] is not a valid IPv6 address") from None
        return u
    name = host[:-1] if host.endswith(".") else host
    if _ipv4_literal(name) is None:
        problem = _name_problem(name)
        if problem:
            raise InvalidUrl(problem)
    return u


# ---------------------------------------------------------------------------------- addresses


@functools.lru_cache(maxsize=4096)
def address_category(address: IPAddress) -> str | None:
    """Why `address` is not a public destination, or None if it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_category(embedded)
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


def check_address(address: IPAddress, host: str, policy: OutboundPolicy) -> str | None:
    """None if `address` may be contacted for `host`; else the reason."""
    category = address_category(address)
    if category is None or policy.host_allowed(host) or policy.address_allowed(address):
        return None
    if _same(host, address):
        return f"{address} is a {category} address (not on the allow-list)"
    return f"{host} resolves to {address}, a {category} address (not on the allow-list)"


def _same(host: str, address: IPAddress) -> bool:
    try:
        return _parse_ip(host) == address
    except ValueError:
        return False


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _check_host(
    host: str, port: int, policy: OutboundPolicy, resolve: Resolve | None
) -> tuple[tuple[str, ...], str]:
    """The addresses `host` may be connected to, and why ("public" or "allow-list")."""
    try:
        literal: IPAddress | None = _parse_ip(host)
    except ValueError:
        literal = None
    if literal is not None:
        reason = check_address(literal, host, policy)
        if reason:
            raise AddressRefused(reason)
        return (str(literal),), "public" if address_category(literal) is None else "allow-list"
    try:
        texts = await (resolve or _system_resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"{host} does not resolve: {exc}"[:300]) from None
    if not texts:
        raise Unresolvable(f"{host} does not resolve")
    addresses: list[str] = []
    allowed_by = "public"
    for text in dict.fromkeys(texts):
        try:
            address = _parse_ip(text)
        except ValueError:
            raise AddressRefused(f"{host} resolves to an unparseable address {text!r}") from None
        reason = check_address(address, host, policy)
        if reason:
            raise AddressRefused(reason)
        if address_category(address) is not None:
            allowed_by = "allow-list"
        addresses.append(str(address))
    return tuple(addresses), allowed_by


async def check_url(
    url: str | URL, policy: OutboundPolicy, *, resolve: Resolve | None = None, base: bool = False
) -> ResolvedTarget:
    """Check `url` against `policy`; the returned target pins the vetted addresses.

    Raises the OutboundRefused of the reason: a syntax error, a scheme the policy does not
    allow, a name that does not resolve, or any address the policy refuses.
    """
    u = parse_url(url, schemes=policy.schemes, base=base)
    scheme = u.scheme.lower()
    port = u.explicit_port or DEFAULT_PORTS[scheme]
    host = u.raw_host or ""
    addresses, allowed_by = await _check_host(host, port, policy, resolve)
    return ResolvedTarget(u, host, port, addresses, allowed_by)


async def check_redirect(
    current: ResolvedTarget,
    location: str,
    hops: int,
    policy: OutboundPolicy,
    *,
    resolve: Resolve | None = None,
) -> ResolvedTarget:
    """Check a redirect's `Location` (relative to `current`) as hop number `hops` (1-based)."""
    if hops > policy.max_redirects:
        raise RedirectRefused(f"too many redirects (more than {policy.max_redirects})")
    try:
        target = current.url.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise RedirectRefused(f"malformed redirect location: {exc}"[:300]) from None
    try:
        return await check_url(target, policy, resolve=resolve)
    except OutboundRefused as exc:
        raise RedirectRefused(f"redirect refused: {exc.reason}") from None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns vetted addresses.

    Hosts pinned with `pin(target)` get exactly the addresses checked then (no second DNS
    lookup, so no rebinding window; the latest check of a host wins, at most `MAX_PINS` hosts
    are kept); any other host is resolved and checked now. aiohttp does not ask a resolver
    about IP literals: callers check every URL with `check_url` before they request it.
    """

    def __init__(self, policy: OutboundPolicy, *, resolve: Resolve | None = None) -> None:
        self._policy = policy
        self._resolve = resolve
        self._pinned: OrderedDict[tuple[str, int], tuple[str, ...]] = OrderedDict()

    def pin(self, target: ResolvedTarget) -> None:
        key = (target.host.lower(), target.port)
        self._pinned[key] = target.addresses
        self._pinned.move_to_end(key)
        while len(self._pinned) > MAX_PINS:
            self._pinned.popitem(last=False)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pinned.get((host.lower(), port))
        if addresses is None:
            try:
                addresses, _ = await _check_host(host, port, self._policy, self._resolve)
            except OutboundRefused as exc:
                raise OSError(exc.reason) from None
        results: list[ResolveResult] = []
        for text in addresses:
            address = _parse_ip(text)
            fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": text,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not results:
            raise OSError(f"no vetted address for {host}")
        return results

    async def close(self) -> None:
        self._pinned.clear()


def guarded_connector(resolver: GuardedResolver, **kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector that connects only to addresses `resolver` vetted (DNS cache off)."""
    return aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, **kwargs)


def guarded_session(resolver: GuardedResolver) -> aiohttp.ClientSession:
    """A client session whose connections go only where ``resolver`` vetted: no proxy from the
    environment, no cookies kept between calls."""
    return aiohttp.ClientSession(
        connector=guarded_connector(resolver), trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )
