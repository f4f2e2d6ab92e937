"""The broker's TOML configuration (`connector broker serve CONFIG`).

```toml
[broker]
participant_dir = "broker"       # tls.crt, tls.key, ca.crt (as a connector's, from
                                 # `connector init --tls-host` and `connector authority issue-tls`)
authority_url = "http://127.0.0.1:8800"   # DATs of registering connectors are verified here
title = "Data space broker"      # in its self-description (GET /) and its page
curator = "https://example.org/"      # the participants responsible for it and running it,
maintainer = "https://example.org/"   # in its self-description (IRIs)
public_url = "https://broker.example"   # its IRI (default: the scheme and Host of the request)
host = "127.0.0.1"
port = 8804
tls_mode = "mutual"              # "mutual" | "server" | "proxy" | "none": as a connector's
                                 # [dsp] tls_mode (see below); "server" for anonymous searches
client_cert_header = "X-Forwarded-Client-Cert"  # "proxy": the proxy's certificate header
client_cert_format = "pem"       # "proxy": "pem" (nginx), "envoy-xfcc" or "auto" (a connector's)
trusted_proxies = []             # "proxy": CIDRs whose certificate header is believed
metrics_key_file = "metrics.key" # GET /metrics needs this key (Authorization: Bearer, or
                                 # X-Api-Key); unset: /metrics answers 404
validation = "lenient"           # IDS shapes: "lenient" indexes and lists violations,
                                 # "strict" refuses non-conforming descriptions, "off"
ttl = 300                        # s: an entry not renewed within this is unavailable
max_body_bytes = 4194304         # one registration body                   -> 413
max_triples = 200000             # triples of one description              -> 400
max_datasets = 20000             # datasets of one description             -> 400
sparql_timeout = 10.0            # s a SPARQL query may run                -> 400
sparql_max_rows = 10000          # rows (or triples) of one SPARQL result  -> 400
sparql_concurrency = 2           # SPARQL queries running at once
sync_interval = 5.0              # s between applying other replicas' registrations to this
                                 # one's SPARQL index (0: off, one broker process only)
crawl_interval = 300            # s between crawls of a connector's DSP catalog (0: no crawls)
crawl_concurrency = 8            # crawls at once
crawl_timeout = 60               # s for one connector's crawl (every page)
crawl_page_size = 1000           # datasets asked for per catalog page
crawl_backoff = 5                # s before retrying a failed crawl; doubles per failure ...
crawl_backoff_cap = 900          # ... up to this (with jitter)
crawl_max_datasets = 20000       # datasets indexed of one connector's catalog
catalog_page_size = 100          # datasets per page of the broker's DSP catalog of catalogs
peer_allow = ["10.0.0.0/8"]      # private addresses and host names the crawls may reach
                                 # (as a connector's [dsp] peer_allow; public ones always)
infomodel_dir = "..."            # the IDS shapes (default: $CONNECTOR_IDS_INFOMODEL_DIR, else
                                 # ../shared/conformance/ids-infomodel beside a checkout, else
                                 # the copy shipped in the package, vocab/ids)

[store]                          # as a connector's: SQLite by default (broker.db in the
url = "postgresql://..."         # participant directory), PostgreSQL for replicas

[limits]                         # as a connector's (connector.config)
```
Relative paths are relative to the config file's folder.

``tls_mode`` has the meaning of a connector's ``[dsp] tls_mode`` (connector.config; one
`ClientCertificates` decides, connector.http.clientcert) for every route that takes a DAT
(``POST /registrations``, ``DELETE /registrations/{id}``, ``POST /products``, the DSP
``/catalog/request``): ``"mutual"`` (the default, as a connector's) TLS with a client
certificate required at the handshake, from every client, and a bound DAT refused without one
of its certificates; ``"server"`` TLS with an optional client certificate, a DAT's binding
checked only where one is presented (a stolen DAT is usable without its holder's certificate),
for a broker whose searches, SPARQL and page are open to clients without a data-space
certificate (browsers, `connector search --ca`, a load balancer's /health); ``"proxy"`` plain
HTTP on a private or loopback ``host`` (a public or unspecified one is refused) behind a
TLS-terminating proxy, the certificate from ``client_cert_header`` of ``trusted_proxies`` only,
binding as ``"server"``, ``public_url`` the proxy's https URL; ``"none"`` plain HTTP for
loopback tests. The broker's crawls use TLS with its certificate in
every mode but ``"none"``. The older keys keep what they meant at the broker: ``plain_http =
true`` is ``"none"``, ``mutual_tls = true`` ``"mutual"``, ``mutual_tls = false`` and
``plain_http = false`` alone (the broker's old mutual_tls defaulted to false) ``"server"``; with
a different ``tls_mode`` they are a configuration error.

``GET /metrics`` (Prometheus text, connector.broker.metrics) is served only with
``metrics_key_file`` (a key of at least 16 characters): a scrape sends ``Authorization: Bearer
KEY`` (Prometheus: ``authorization.credentials_file``) or ``X-Api-Key: KEY``; none: 401, a wrong
one: 403. Without ``metrics_key_file`` the route does not exist (404): the broker's port is
public, its metrics never are by default. In ``"mutual"`` mode (the default) a scrape also
presents a data-space client certificate (Prometheus: ``tls_config``), as every client does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from connector.config import (
    ConfigError,
    LimitsSection,
    StoreSection,
    _read_toml,
    _Section,
    _TlsSection,
)
from connector.http.clientcert import CertFormat, TlsMode
from connector.http.outbound import validate_allow_list

MIN_KEY_CHARS = 16

__all__ = ["BrokerConfig", "BrokerSection", "load_broker_config"]


class BrokerSection(_TlsSection):
    MUTUAL_TLS_DEFAULT = False  # the broker's old mutual_tls defaulted to false

    participant_dir: Path
    authority_url: str
    title: str = Field(default="Data space broker", min_length=1, max_length=200)
    curator: str = "https://example.org/"  # the participant responsible for the broker (IRI)
    maintainer: str = "https://example.org/"  # the participant running it (IRI)
    public_url: str | None = None  # default: the scheme and Host of each request
    host: str = "127.0.0.1"
    port: int = Field(default=8804, ge=0, le=65535)
    tls_mode: TlsMode = "mutual"
    client_cert_header: str = "X-Forwarded-Client-Cert"
    client_cert_format: CertFormat = "pem"  # as a connector's [dsp] client_cert_format
    trusted_proxies: list[str] = Field(default_factory=list, max_length=256)
    plain_http: bool | None = None  # deprecated: true is tls_mode = "none"
    mutual_tls: bool | None = None  # deprecated: true is tls_mode = "mutual", false "server"
    metrics_key_file: Path | None = None  # unset: no /metrics (404)
    validation: Literal["off", "lenient", "strict"] = "lenient"
    ttl: float = Field(default=300.0, gt=0, le=86400 * 30)
    max_body_bytes: int = Field(default=4 << 20, ge=1024, le=1 << 30)
    max_triples: int = Field(default=200_000, ge=10, le=10_000_000)
    max_datasets: int = Field(default=20_000, ge=1, le=1_000_000)
    sparql_timeout: float = Field(default=10.0, gt=0, le=600)
    sparql_max_rows: int = Field(default=10_000, ge=1, le=10_000_000)
    sparql_concurrency: int = Field(default=2, ge=1, le=64)
    sync_interval: float = Field(default=5.0, ge=0, le=25)
    crawl_interval: float = Field(default=300.0, ge=0, le=86400 * 30)
    crawl_concurrency: int = Field(default=8, ge=1, le=256)
    crawl_timeout: float = Field(default=60.0, gt=0, le=3600)
    crawl_page_size: int = Field(default=1000, ge=1, le=10_000)
    crawl_backoff: float = Field(default=5.0, gt=0, le=3600)
    crawl_backoff_cap: float = Field(default=900.0, gt=0, le=86400)
    crawl_max_datasets: int = Field(default=20_000, ge=1, le=1_000_000)
    catalog_page_size: int = Field(default=100, ge=1, le=1000)
    peer_allow: list[str] = Field(default_factory=list, max_length=1000)
    infomodel_dir: Path | None = None

    @field_validator("peer_allow")
    @classmethod
    def _allow_list(cls, v: list[str]) -> list[str]:
        return validate_allow_list(v)

    @field_validator("authority_url", "public_url", "curator", "maintainer")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _proxy_url(self) -> BrokerSection:
        if self.tls_mode == "proxy" and not (self.public_url or "").startswith("https://"):
            raise ValueError(
                'tls_mode = "proxy": public_url must be the proxy\'s https URL (clients reach '
                "the broker over TLS at the proxy; the broker itself sees plain HTTP)"
            )
        return self


class BrokerConfig(_Section):
    broker: BrokerSection
    store: StoreSection = StoreSection()
    limits: LimitsSection = LimitsSection()
    base_dir: Path = Path(".")

    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def participant_dir(self) -> Path:
        return self.path(self.broker.participant_dir)

    @property
    def store_url(self) -> str:
        url = self.store.url
        if url is None:
            return f"sqlite:///{self.participant_dir / 'broker.db'}"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return f"sqlite:///{self.path(Path(url[len('sqlite:///') :]))}"
        return url

    @property
    def tls_files(self) -> tuple[Path, Path, Path]:
        d = self.participant_dir
        return d / "tls.crt", d / "tls.key", d / "ca.crt"

    @property
    def infomodel_dir(self) -> Path | None:
        d = self.broker.infomodel_dir
        return None if d is None else self.path(d)

    def metrics_key(self) -> str | None:
        """The key /metrics asks for; None: no /metrics. ConfigError when the file cannot be
        read or holds a key shorter than 16 characters (never served without one)."""
        if self.broker.metrics_key_file is None:
            return None
        path = self.path(self.broker.metrics_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"broker.metrics_key_file: cannot read {path}: {exc}") from exc
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"broker.metrics_key_file: the key in {path} is shorter than {MIN_KEY_CHARS} characters"
            )
        return key


def load_broker_config(path: str | Path) -> BrokerConfig:
    p = Path(path)
    data = _read_toml(p)
    try:
        config = BrokerConfig.model_validate({**data, "base_dir": p.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{p}: {problems}") from exc
    if config.broker.uses_tls:
        missing = [str(f) for f in config.tls_files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{p}: broker.tls_mode = {config.broker.tls_mode!r} uses TLS but {', '.join(missing)} "
                "is missing (as for a connector: `connector init --tls-host`, "
                "`connector authority issue-tls`, the CA as ca.crt), or set "
                'broker.tls_mode = "none" for a loopback test'
            )
    try:
        config.metrics_key()
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    if config.broker.validation != "off":
        from connector.selfdescription import infomodel_dir

        if importlib.util.find_spec("pyshacl") is None:
            raise ConfigError(
                f"{p}: broker.validation = {config.broker.validation!r} needs "
                'pyshacl (pip install pyshacl), or set broker.validation = "off"'
            )
        try:
            config.infomodel_dir or infomodel_dir()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{p}: broker.validation = {config.broker.validation!r} needs "
                f"the IDS shapes: {exc}; set broker.infomodel_dir"
            ) from exc
    return config
