"""The connector's configuration: one TOML file, validated with pydantic at the boundary.

```toml
[connector]
participant_dir = "provider"            # from `connector init` (key, certificate, TLS files)
authority_url = "http://127.0.0.1:8700"
public_url = "https://127.0.0.1:8801"   # where peers reach this connector's DSP endpoints
title = "Provider connector"
curator = "https://provider.example/"
maintainer = "https://provider.example/"

[dsp]
host = "127.0.0.1"
port = 8801
tls_mode = "mutual"                     # "mutual" | "server" | "proxy" | "none": see below
client_cert_header = "X-Forwarded-Client-Cert"  # "proxy": the proxy's certificate header
trusted_proxies = []                    # "proxy": CIDRs whose certificate header is believed
peer_allow = []                         # private/loopback peers DSP calls may reach (CIDRs,
                                        # host names): callbackAddress, peerUrl; see below

[management]
host = "127.0.0.1"
port = 8802
api_key_file = "provider/management.key"   # or api_key = "..."

[store]
url = "sqlite:///provider/connector.db"    # default: connector.db in the participant dir;
                                           # "postgresql://..." for PostgreSQL
sqlite_synchronous = "NORMAL"              # "FULL": also durable across a power cut

[assets]
roots = ["data"]                           # folders whose files may be file assets

[broker]
url = "https://127.0.0.1:8804"             # register the self-description there on start
heartbeat = 60.0                           # s between renewals (under the broker's ttl)

[limits]                         # request limits on every port; defaults shown
dsp_body_bytes = 2097152         # one DSP request body                               -> 413
management_body_bytes = 4194304  # one management API request body                    -> 413
authority_body_bytes = 65536     # one authority request body (`authority serve --limits FILE`)
json_depth = 64                  # nested arrays/objects in a JSON body               -> 400
json_string_chars = 65536        # characters in one JSON string (keys too)           -> 400
json_items = 10000               # entries in one JSON array or object                -> 400
header_line_bytes = 8190         # the request line and each header line              -> 400
header_field_bytes = 8190        # one header value                                   -> 400
header_count = 100               # headers in one request                             -> 400
header_timeout = 10.0            # s from connecting (or a request's first byte) to complete
                                 # headers, and for the TLS handshake   -> connection closed
body_timeout = 30.0              # s to receive a JSON body; longest pause in an upload -> 408
idle_timeout = 60.0              # s a keep-alive connection may idle between requests -> closed
shutdown_grace = 10.0            # s from SIGTERM to exit: requests in flight finish or are cancelled
```
JSON bodies with `NaN`, `Infinity` or a number beyond the double range are refused (400) whatever
the limits. The authority reads the same `[limits]` section from the file given to
`connector authority serve --limits`.
Relative paths are relative to the config file's folder. String values may name environment
variables: ``${NAME}`` (required), ``${NAME:-default}``, ``$$`` for a literal ``$``; a value
that is one variable may stand for a number (``port = "${DSP_PORT:-8801}"``): connector.tomlenv.

``[dsp] tls_mode`` (connector.http.clientcert decides, once, where a request's client certificate
comes from): ``"mutual"`` (default) TLS on the data-space CA with a client certificate required,
and a DAT bound to certificates (``transportCertsSha256``) refused without one of them;
``"server"`` TLS with an optional client certificate (peers such as EDC): the DAT is still
required, its binding checked only where a certificate is presented (one that does not match is
refused); ``"proxy"`` plain HTTP on a private or loopback address (a public or unspecified one is
refused) behind a TLS-terminating proxy, the certificate taken from ``client_cert_header`` only
from ``trusted_proxies`` in the format ``client_cert_format`` (``"pem"``, the default: URL-escaped
PEM, nginx's ``$ssl_client_escaped_cert``; ``"envoy-xfcc"``: Envoy's ``x-forwarded-client-cert``,
its last element's ``Cert`` and/or ``Hash``; ``"auto"``: either, told apart per request), binding
as ``"server"``, ``connector.public_url`` the proxy's https URL; ``"none"`` plain HTTP for loopback
tests. The older ``plain_http = true`` means ``"none"``, ``mutual_tls = false`` ``"server"``;
setting them with a different ``tls_mode`` is a configuration error.

``[assets] roots``: a file asset must lie inside one of these folders once ``..`` and symlinks
are resolved (checked when it is created, and again at every serve: see ``connector.assets``).
Default: none, and file assets are refused with a 400 that says to set this. A root must be an
existing directory; it may not equal, contain or lie inside the participant directory, contain
the store's SQLite file, the audit log, the management API key file or this config file, or
overlap ``/proc``, ``/sys`` or ``/dev``: such a root is refused when the config is loaded.

Outbound addresses (connector.http.outbound): every call made on someone else's word goes only to
public addresses unless its path's allow-list names the private, loopback or link-local address
(a CIDR or an IP address) or the host name:
`[dsp] peer_allow` for DSP calls (a peer's callbackAddress, a peerUrl given to the management
API), `[dataplane] push_allow` (push destinations), `upstream_allow` (HTTP upstreams of assets)
and `pull_allow` (the endpoints providers give for pulls). Entries that are neither an address,
a CIDR nor a host name are a configuration error.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connector.assets import DataRoots, RootRefused
from connector.http.clientcert import (
    HEADER_NAME,
    CertFormat,
    ClientCertificates,
    TlsMode,
    parse_networks,
)
from connector.http.limits import DEFAULT_LIMITS, Limits
from connector.http.outbound import validate_allow_list
from connector.tomlenv import TomlEnvError, read_toml


class ConfigError(ValueError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _d(text: str, **kw: Any) -> Any:
    """A field with its description: the one text `connector init` writes above the key and
    `connector config check` quotes (connector.initconfig)."""
    return Field(description=text, **kw)


class ConnectorSection(_Section):
    participant_dir: Path = _d(
        "the participant directory from `connector init` (key, certificate, TLS files, ca.crt)"
    )
    authority_url: str = _d("the data-space authority (DATs, revocations)")
    public_url: str = _d("where peers reach this connector's DSP endpoints")
    title: str = _d("the connector's title in its self-description", default="Data space connector")
    description: str | None = _d("a description for the self-description", default=None)
    curator: str = _d("the curator named in the self-description", default="https://example.org/")
    maintainer: str = _d("the maintainer named in the self-description", default="https://example.org/")
    revocation_poll_interval: float = _d(
        "s between fetches of the authority's revocation list: a revoked participant's tokens "
        "are refused no later than this after the revocation",
        default=60.0,
        gt=0,
        le=3600,
    )
    audit_log: Path | None = _d(
        "the hash-chained, signed audit log, one per process (replicas "
        "each keep their own); default: audit.log in the participant "
        "directory",
        default=None,
    )

    @field_validator("authority_url", "public_url", "curator", "maintainer")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")


class _TlsSection(_Section):
    """What a section with TLS keys (``tls_mode``, ``client_cert_header``,
    ``client_cert_format``, ``trusted_proxies`` and the older ``plain_http`` / ``mutual_tls``)
    validates and derives: the connector's ``[dsp]`` and the broker's ``[broker]``. The fields
    stay in each section (their order and descriptions are its own)."""

    # what an unset mutual_tls meant beside plain_http = false (the broker's old default: false)
    MUTUAL_TLS_DEFAULT: ClassVar[bool] = True

    if TYPE_CHECKING:
        host: str
        tls_mode: TlsMode
        client_cert_header: str
        client_cert_format: CertFormat
        trusted_proxies: list[str]
        plain_http: bool | None
        mutual_tls: bool | None

    @field_validator("trusted_proxies", check_fields=False)
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        return trusted_proxy_list(v)

    @field_validator("client_cert_header", check_fields=False)
    @classmethod
    def _header_name(cls, v: str) -> str:
        return header_name(v)

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        self.tls_mode = settled_tls_mode(
            self.tls_mode,
            given="tls_mode" in self.model_fields_set,
            plain_http=self.plain_http,
            mutual_tls=self.mutual_tls,
            host=self.host,
            mutual_tls_default=self.MUTUAL_TLS_DEFAULT,
        )
        return self

    @property
    def serves_tls(self) -> bool:
        """Whether the port itself speaks TLS (not behind a proxy, not a loopback test)."""
        return self.tls_mode in ("mutual", "server")

    @property
    def uses_tls(self) -> bool:
        """Whether the process has TLS files: its outbound calls use TLS with its certificate
        (every mode but "none")."""
        return self.tls_mode != "none"

    def client_certificates(self) -> ClientCertificates:
        """Where requests' client certificates come from (connector.http.clientcert)."""
        return ClientCertificates.of(
            self.tls_mode,
            header=self.client_cert_header,
            trusted_proxies=self.trusted_proxies,
            format=self.client_cert_format,
        )


class DspSection(_TlsSection):
    host: str = _d(
        'the address the DSP endpoints listen on; with tls_mode = "proxy" a '
        "private or loopback IP address (a public one is refused)",
        default="127.0.0.1",
    )
    port: int = _d("the DSP port", default=8801, ge=0, le=65535)
    tls_mode: TlsMode = _d(
        'how DSP is secured. "mutual": TLS, every peer presents its data-space client '
        'certificate and a DAT bound to a certificate must come with it. "server": TLS, a '
        "client certificate is optional (peers such as EDC have none): the DAT is still "
        "required, its certificate binding is checked only where a certificate is presented, "
        'so a stolen DAT is usable without its holder\'s certificate. "proxy": plain HTTP on '
        "a private address behind a TLS-terminating proxy; the client certificate comes from "
        'client_cert_header, only from trusted_proxies; binding as "server"; public_url '
        'stays https. "none": plain HTTP, loopback tests only',
        default="mutual",
    )
    client_cert_header: str = _d(
        'tls_mode = "proxy": the header in which the proxy passes the client certificate, in '
        "the format client_cert_format; taken only from trusted_proxies",
        default="X-Forwarded-Client-Cert",
    )
    client_cert_format: CertFormat = _d(
        'tls_mode = "proxy": the format of client_cert_header. "pem": the certificate as '
        "URL-escaped PEM (nginx: proxy_set_header X-Forwarded-Client-Cert "
        '$ssl_client_escaped_cert). "envoy-xfcc": Envoy\'s x-forwarded-client-cert '
        "(forward_client_cert_details SANITIZE_SET or APPEND_FORWARD): only its last element, "
        "the one the proxy added, is read; its Cert (a Hash beside it must match) or else its "
        'Hash is the certificate. "auto": Envoy\'s where the value starts with Key=, else PEM. '
        "A value that cannot be read is refused (401), never guessed from",
        default="pem",
    )
    trusted_proxies: list[str] = _d(
        'tls_mode = "proxy": the addresses (CIDRs or IP addresses) of the proxies whose '
        "client_cert_header is believed; from anyone else it is ignored (and logged)",
        default_factory=list,
        max_length=256,
    )
    plain_http: bool | None = _d('deprecated: true is tls_mode = "none"', default=None)
    mutual_tls: bool | None = _d('deprecated: false is tls_mode = "server", true "mutual"', default=None)
    peer_allow: list[str] = _d(
        "private, loopback or link-local peers DSP calls may reach (CIDRs, addresses, host "
        "names): callbackAddresses, peerUrls, the processes' counter-parties; empty: public "
        "addresses only",
        default_factory=list,
    )

    @field_validator("peer_allow")
    @classmethod
    def _allow_list(cls, v: list[str]) -> list[str]:
        return validate_allow_list(v)


def legacy_tls_mode(
    plain_http: bool | None, mutual_tls: bool | None, *, mutual_tls_default: bool = True
) -> TlsMode | None:
    """The tls_mode the older keys mean; None when neither is set. ``mutual_tls_default``: what
    an unset mutual_tls meant beside a plain_http = false (the connector's true, the broker's
    false)."""
    if plain_http:
        return "none"
    if plain_http is None and mutual_tls is None:
        return None
    return "mutual" if (mutual_tls_default if mutual_tls is None else mutual_tls) else "server"


def settled_tls_mode(
    tls_mode: TlsMode,
    *,
    given: bool,
    plain_http: bool | None,
    mutual_tls: bool | None,
    host: str,
    mutual_tls_default: bool = True,
) -> TlsMode:
    """The mode a section's ``tls_mode`` (``given``: set in the file) and older keys mean, for
    a server listening on ``host`` ([dsp], the broker's [broker]); ValueError for older keys
    that contradict tls_mode, or proxy mode on an address a public network reaches."""
    legacy = legacy_tls_mode(plain_http, mutual_tls, mutual_tls_default=mutual_tls_default)
    if legacy is not None:
        if given and tls_mode != legacy:
            raise ValueError(
                f"tls_mode = {tls_mode!r} contradicts the older plain_http = "
                f"{_flag(plain_http)}, mutual_tls = {_flag(mutual_tls)} (which mean "
                f"tls_mode = {legacy!r}): remove plain_http and mutual_tls"
            )
        tls_mode = legacy
    if tls_mode == "proxy":
        why = _not_private(host)
        if why:
            raise ValueError(
                f'tls_mode = "proxy" serves plain HTTP: host must be a private or loopback address, and {why}'
            )
    return tls_mode


def trusted_proxy_list(v: list[str]) -> list[str]:
    """``trusted_proxies`` checked (CIDRs or addresses; ValueError naming a bad entry)."""
    parse_networks(v)
    return v


def header_name(v: str) -> str:
    """``client_cert_header`` checked (an HTTP field name)."""
    if not HEADER_NAME.fullmatch(v):
        raise ValueError(f"{v!r} is not an HTTP header name")
    return v


def _flag(v: bool | None) -> str:
    return "(unset)" if v is None else str(v).lower()


def _not_private(host: str) -> str | None:
    """Why ``host`` is not an address only a private network reaches, or None."""
    if host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address"
    if address.is_unspecified:
        return f"{host} listens on every interface, public ones too"
    if not (address.is_private or address.is_loopback or address.is_link_local):
        return f"{host} is a public address"
    return None


class ManagementSection(_Section):
    host: str = _d("the address the management API listens on (keep it private)", default="127.0.0.1")
    port: int = _d("the management API port", default=8802, ge=0, le=65535)
    api_key: str | None = _d("the API key itself (at least 16 characters); or api_key_file", default=None)
    api_key_file: Path | None = _d(
        "a file holding the API key; set exactly one of api_key and api_key_file", default=None
    )

    @model_validator(mode="after")
    def _one_key(self) -> ManagementSection:
        if (self.api_key is None) == (self.api_key_file is None):
            raise ValueError("set exactly one of api_key and api_key_file")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("api_key must be at least 16 characters")
        return self


class StoreSection(_Section):
    url: str | None = _d(
        '"sqlite:///PATH" or "postgresql://..." (replicas share one PostgreSQL); '
        "default: connector.db in the participant directory",
        default=None,
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = _d(
        "SQLite in WAL mode with NORMAL keeps every committed transaction across a process crash "
        "(kill -9); FULL also across a power cut, at an fsync per commit",
        default="NORMAL",
    )


class DataplaneSection(_Section):
    """The provider's data plane (pull transfers): where it listens and how consumers reach it."""

    enabled: bool = _d("serve pull transfers (a provider's data plane)", default=True)
    host: str = _d("the address the data plane listens on", default="127.0.0.1")
    port: int = _d("the data plane port", default=8803, ge=0, le=65535)
    public_url: str | None = _d(
        "where consumers reach the data plane; default: http(s)://host:port (TLS as for DSP)", default=None
    )
    upstream_allow: list[str] = _d(
        "private or loopback HTTP upstreams of assets the data plane may fetch from (SSRF "
        "guard: everything else private is refused)",
        default_factory=list,
    )
    push_allow: list[str] = _d(
        "private or loopback consumers' push endpoints this provider may connect to", default_factory=list
    )
    pull_allow: list[str] = _d(
        "private or loopback providers' data planes this consumer may pull from (the endpoint "
        "comes from the provider)",
        default_factory=list,
    )
    token_lifetime: int = _d(
        "s a transfer token lives; the consumer refreshes it with its one-time refresh token",
        default=300,
        ge=1,
        le=3600,
    )

    @field_validator("upstream_allow", "push_allow", "pull_allow")
    @classmethod
    def _allow_lists(cls, v: list[str]) -> list[str]:
        return validate_allow_list(v)


class NegotiationSection(_Section):
    counter_offers: Literal["stricter", "offer", "reject"] = _d(
        'a request that differs from the offers: "stricter" agrees if provably at least as '
        'strict as an offer, else terminates with the reason; "offer" answers a looser one with '
        'a counter-offer of the offer; "reject" agrees to exact offers only',
        default="stricter",
    )


class AssetsSection(_Section):
    roots: list[Path] = _d(
        "folders whose files may be file assets (relative to this file's folder; not the "
        "participant directory); empty: file assets are refused",
        default_factory=list,
        max_length=64,
    )


class LimitsSection(_Section):
    """Request limits on every listening port (connector.http.limits; defaults there)."""

    dsp_body_bytes: int = _d(
        "bytes of one DSP request body; larger: 413",
        default=DEFAULT_LIMITS.dsp_body_bytes,
        ge=1024,
        le=1 << 30,
    )
    management_body_bytes: int = _d(
        "bytes of one management API request body; larger: 413",
        default=DEFAULT_LIMITS.management_body_bytes,
        ge=1024,
        le=1 << 30,
    )
    authority_body_bytes: int = _d(
        "bytes of one authority request body (`authority serve --limits FILE`); larger: 413",
        default=DEFAULT_LIMITS.authority_body_bytes,
        ge=1024,
        le=1 << 30,
    )
    json_depth: int = _d(
        "nested arrays/objects in a JSON body; deeper: 400", default=DEFAULT_LIMITS.json_depth, ge=8, le=200
    )
    json_string_chars: int = _d(
        "characters in one JSON string (keys too); more: 400",
        default=DEFAULT_LIMITS.json_string_chars,
        ge=256,
        le=1 << 30,
    )
    json_items: int = _d(
        "entries in one JSON array or object; more: 400",
        default=DEFAULT_LIMITS.json_items,
        ge=16,
        le=10_000_000,
    )
    header_line_bytes: int = _d(
        "bytes of the request line and of each header line; more: 400",
        default=DEFAULT_LIMITS.header_line_bytes,
        ge=1024,
        le=1 << 20,
    )
    header_field_bytes: int = _d(
        "bytes of one header value; more: 400", default=DEFAULT_LIMITS.header_field_bytes, ge=1024, le=1 << 20
    )
    header_count: int = _d(
        "headers in one request; more: 400", default=DEFAULT_LIMITS.header_count, ge=16, le=10_000
    )
    header_timeout: float = _d(
        "s from connecting (or a request's first byte) to complete "
        "headers, and for the TLS handshake; later: connection closed",
        default=DEFAULT_LIMITS.header_timeout,
        gt=0,
        le=3600,
    )
    body_timeout: float = _d(
        "s to receive a JSON body, and the longest pause in an upload; later: 408",
        default=DEFAULT_LIMITS.body_timeout,
        gt=0,
        le=3600,
    )
    idle_timeout: float = _d(
        "s a keep-alive connection may idle between requests",
        default=DEFAULT_LIMITS.idle_timeout,
        gt=0,
        le=3600,
    )
    shutdown_grace: float = _d(
        "s from SIGTERM to exit: requests in flight finish or are cancelled",
        default=DEFAULT_LIMITS.shutdown_grace,
        gt=0,
        le=600,
    )

    def limits(self) -> Limits:
        return Limits(**self.model_dump())


class BrokerLinkSection(_Section):
    """The broker this connector registers its self-description at (connector.broker.heartbeat)."""

    url: str | None = _d("a broker to register this connector's self-description at on start", default=None)
    heartbeat: float = _d(
        "s between renewals at the broker (keep it well under the broker's ttl)", default=60.0, gt=0, le=86400
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/") if v else v


class WebhookSection(_Section):
    """A URL told of state changes (connector.runtime.webhooks), signed with an HMAC."""

    url: str = _d("where events are POSTed (http(s))")
    events: list[Literal["negotiation", "transfer", "agreement"]] = _d(
        "which events: negotiation and transfer state changes, agreements signed",
        default_factory=lambda: ["negotiation", "transfer", "agreement"],
        min_length=1,
    )
    secret_file: Path = _d(
        "a file holding the HMAC-SHA256 key the events are signed with "
        "(X-Connector-Signature), at least 16 bytes"
    )
    allow: list[str] = _d(
        "private or loopback addresses (CIDRs, host names) this webhook may reach, as every "
        "other outbound call; its own: another webhook's entries do not apply to it; empty: "
        "public addresses only",
        default_factory=list,
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("allow")
    @classmethod
    def _allow_list(cls, v: list[str]) -> list[str]:
        return validate_allow_list(v)


class Config(_Section):
    connector: ConnectorSection
    dsp: DspSection = DspSection()
    management: ManagementSection
    store: StoreSection = StoreSection()
    negotiation: NegotiationSection = NegotiationSection()
    dataplane: DataplaneSection = DataplaneSection()
    assets: AssetsSection = AssetsSection()
    limits: LimitsSection = LimitsSection()
    broker: BrokerLinkSection = BrokerLinkSection()
    webhooks: list[WebhookSection] = Field(default_factory=list, max_length=32)
    base_dir: Path = Path(".")
    config_file: Path | None = None  # set by load_config: never servable (it may hold the API key)

    @model_validator(mode="after")
    def _public_https(self) -> Config:
        if self.dsp.tls_mode == "proxy" and not self.connector.public_url.startswith("https://"):
            raise ValueError(
                'dsp.tls_mode = "proxy": connector.public_url must be the proxy\'s '
                "https URL (peers reach this connector over TLS at the proxy)"
            )
        return self

    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def participant_dir(self) -> Path:
        return self.path(self.connector.participant_dir)

    @property
    def store_url(self) -> str:
        if self.store.url:
            url = self.store.url
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                rel = Path(url[len("sqlite:///") :])
                return f"sqlite:///{self.path(rel)}"
            return url
        return f"sqlite:///{self.participant_dir / 'connector.db'}"

    def management_api_key(self) -> str:
        if self.management.api_key is not None:
            return self.management.api_key
        assert self.management.api_key_file is not None
        path = self.path(self.management.api_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"management.api_key_file: cannot read {path}: {exc.strerror}") from exc
        if len(key) < 16:
            raise ConfigError(f"management.api_key_file: the key in {path} is shorter than 16 characters")
        return key

    def webhook_secrets(self) -> list[bytes]:
        """Each webhook's HMAC key, read from its file (ConfigError with the reason)."""
        keys = []
        for i, hook in enumerate(self.webhooks):
            path = self.path(hook.secret_file)
            try:
                key = path.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"webhooks[{i}].secret_file: cannot read {path}: {exc.strerror}") from exc
            if len(key) < 16:
                raise ConfigError(f"webhooks[{i}].secret_file: the key in {path} is shorter than 16 bytes")
            keys.append(key)
        return keys

    @property
    def audit_log_path(self) -> Path:
        if self.connector.audit_log is not None:
            return self.path(self.connector.audit_log)
        return self.participant_dir / "audit.log"

    def data_roots(self) -> DataRoots:
        """The file assets' data roots, checked against what must never be served (the
        participant directory, the store's files, the audit log, the API key file, this file)."""
        files: dict[str, Path] = {"the audit log": self.audit_log_path}
        url = self.store_url
        if url.startswith("sqlite:///"):
            db = Path(url[len("sqlite:///") :].split("?", 1)[0])
            files |= {
                "the store": db,
                **{
                    f"the store's {suffix} file": Path(f"{db}-{suffix}")
                    for suffix in ("wal", "shm", "journal")
                },
            }
        if self.management.api_key_file is not None:
            files["the management API key file"] = self.path(self.management.api_key_file)
        if self.config_file is not None:
            files["the config file"] = self.config_file
        for i, hook in enumerate(self.webhooks):  # never served as a file asset
            files[f"webhook {i}'s secret file"] = self.path(hook.secret_file)
        try:
            return DataRoots.build(
                [self.path(r) for r in self.assets.roots],
                protected_dirs={"the participant directory": self.participant_dir},
                protected_files=files,
            )
        except RootRefused as exc:
            raise ConfigError(f"assets.roots: {exc}") from exc

    @property
    def tls_files(self) -> tuple[Path, Path, Path]:
        """(certificate, key, data-space CA certificate) for DSP over TLS."""
        d = self.participant_dir
        return d / "tls.crt", d / "tls.key", d / "ca.crt"


def _read_toml(p: Path) -> dict[str, Any]:
    """The TOML file ``p`` as a dict, its ``${VARIABLES}`` expanded (connector.tomlenv);
    ConfigError with the reason if it cannot be read."""
    try:
        return read_toml(p)
    except TomlEnvError as exc:
        raise ConfigError(str(exc)) from exc


def load_config(path: str | Path) -> Config:
    p = Path(path)
    data = _read_toml(p)
    try:
        config = Config.model_validate({**data, "base_dir": p.resolve().parent, "config_file": p.resolve()})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{p}: {problems}") from exc
    if config.dsp.uses_tls:
        missing = [str(f) for f in config.tls_files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{p}: dsp.tls_mode = {config.dsp.tls_mode!r} uses TLS but {', '.join(missing)} "
                "is missing (create the "
                "TLS key with `connector init --tls-host`, have it certified with `connector "
                "authority issue-tls`, and copy the data-space CA certificate as ca.crt), or "
                'set dsp.tls_mode = "none" for a loopback test'
            )
    try:
        config.data_roots()
        config.webhook_secrets()
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return config


def load_limits(path: str | Path | None) -> Limits:
    """The ``[limits]`` section of a TOML file (the authority's ``--limits``); the defaults
    without one."""
    if path is None:
        return DEFAULT_LIMITS
    p = Path(path)
    data = _read_toml(p)
    try:
        return LimitsSection.model_validate(data.get("limits", {})).limits()
    except ValidationError as exc:
        problems = "; ".join(f"limits.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{p}: {problems}") from exc
