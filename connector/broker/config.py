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
plain_http = false               # true: no TLS (loopback tests only)
mutual_tls = false               # true: every client presents a data-space certificate
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
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from connector.config import ConfigError, LimitsSection, StoreSection, _read_toml, _Section
from connector.http.outbound import validate_allow_list

__all__ = ["BrokerConfig", "BrokerSection", "load_broker_config"]


class BrokerSection(_Section):
    participant_dir: Path
    authority_url: str
    title: str = Field(default="Data space broker", min_length=1, max_length=200)
    curator: str = "https://example.org/"  # the participant responsible for the broker (IRI)
    maintainer: str = "https://example.org/"  # the participant running it (IRI)
    public_url: str | None = None  # default: the scheme and Host of each request
    host: str = "127.0.0.1"
    port: int = Field(default=8804, ge=0, le=65535)
    plain_http: bool = False
    mutual_tls: bool = False
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


def load_broker_config(path: str | Path) -> BrokerConfig:
    p = Path(path)
    data = _read_toml(p)
    try:
        config = BrokerConfig.model_validate({**data, "base_dir": p.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{p}: {problems}") from exc
    if not config.broker.plain_http:
        missing = [str(f) for f in config.tls_files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{p}: the broker serves over TLS but {', '.join(missing)} is "
                "missing (as for a connector: `connector init --tls-host`, "
                "`connector authority issue-tls`, the CA as ca.crt), or set "
                "broker.plain_http = true for a loopback test"
            )
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
