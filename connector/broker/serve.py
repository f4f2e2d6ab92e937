"""`connector broker serve CONFIG`: one broker process. Its port follows ``[broker] tls_mode``
(connector.broker.config): TLS with a required ("mutual") or optional ("server") client
certificate, plain HTTP behind a TLS-terminating proxy on a private address ("proxy", the client
certificate from the trusted proxy's header) or for loopback tests ("none")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from connector.broker.app import About, broker_app
from connector.broker.config import BrokerConfig
from connector.broker.crawl import Crawler, CrawlSettings
from connector.broker.service import Broker, BrokerSettings
from connector.broker.sparql import SparqlIndex
from connector.broker.store import prune_changes
from connector.http.client import DspClient
from connector.http.limits import (
    WATCHDOG_MARGIN,
    ShutdownWatchdog,
    start_site,
    stop_sites,
    until_signalled,
)
from connector.http.observe import Readiness, count_requests, health_routes
from connector.http.outbound import OutboundPolicy
from connector.http.tls import client_context, server_context
from connector.identity.client import DatClient, ParticipantIdentity
from connector.identity.errors import IdentityError
from connector.identity.verify import DatVerifier
from connector.logs import LogFormat
from connector.logs import configure as configure_logs
from connector.store import Store, StoreError, StoreUnavailable

log = logging.getLogger("connector.broker")
PRUNE_AFTER = 86400.0  # seconds the change rows of registrations are kept


async def _keep_in_step(broker: Broker, every: float) -> None:
    """Replicas: other replicas' registration changes into this one's SPARQL index."""
    pruned_at = 0.0
    while True:
        await asyncio.sleep(every)
        try:
            await broker.sync()
            now = broker.clock()
            if now - pruned_at > 3600:
                await prune_changes(broker.store, now - PRUNE_AFTER)
                pruned_at = now
        except (StoreUnavailable, StoreError) as exc:
            log.warning("the SPARQL index cannot be kept in step with the store: %s", exc)


async def _verifier(session: aiohttp.ClientSession, authority: str) -> DatVerifier:
    """The authority's verifier; waits for the authority a while rather than fail at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while True:
        try:
            return await DatVerifier.from_authority(session, authority)
        except Exception as exc:
            if loop.time() >= deadline:
                raise SystemExit(f"broker: the authority's JWKS cannot be read: {exc}") from exc
            await asyncio.sleep(0.5)


def _signer(config: BrokerConfig) -> ParticipantIdentity | None:
    """The broker's participant identity (signs data product certificates), if it has one."""
    try:
        return ParticipantIdentity.load(config.participant_dir)
    except (OSError, IdentityError, ValueError) as exc:
        log.warning(
            "no data product certificates: the participant key or certificate in %s cannot be used (%s)",
            config.participant_dir,
            exc,
        )
        return None


async def _crawler(config: BrokerConfig, broker: Broker, session: aiohttp.ClientSession) -> Crawler | None:
    """The federated crawl, as the broker's participant (its DAT, its TLS certificate); None
    when crawls are off or the broker has no participant identity."""
    b = config.broker
    if b.crawl_interval <= 0:
        return None
    if broker.signer is None:
        log.warning("no federated catalog: the broker has no participant identity to request catalogs with")
        return None
    try:
        dat = await DatClient.discover(session, b.authority_url, broker.signer)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
        log.warning("no federated catalog: the authority's token endpoint cannot be found: %s", exc)
        return None
    cert, key, ca = config.tls_files
    client = DspClient(
        dat.token,
        renew=dat.renew,
        ssl_context=client_context(ca, cert, key) if b.uses_tls else None,
        policy=OutboundPolicy.from_config(
            b.peer_allow, schemes=("https",) if b.uses_tls else ("http", "https")
        ),
        timeout=b.crawl_timeout,
    )
    settings = CrawlSettings(
        interval=b.crawl_interval,
        concurrency=b.crawl_concurrency,
        timeout=b.crawl_timeout,
        page_size=b.crawl_page_size,
        backoff=b.crawl_backoff,
        backoff_cap=b.crawl_backoff_cap,
        max_datasets=b.crawl_max_datasets,
    )
    return Crawler(broker.store, client, settings, ttl=b.ttl, indexed=broker.reindex, clock=broker.clock)


async def run(
    config: BrokerConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stopping: Callable[[], None] | None = None,
) -> None:
    shown = Store.shown_url(config.store_url)
    try:
        store = await Store.open(config.store_url, sqlite_synchronous=config.store.sqlite_synchronous)
    except (StoreUnavailable, StoreError, ValueError) as exc:
        raise SystemExit(f"broker: cannot open the store {shown}: {exc}") from None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    b = config.broker
    try:
        verifier = await _verifier(session, b.authority_url)
        broker = Broker(
            store,
            SparqlIndex(
                max_rows=b.sparql_max_rows, timeout=b.sparql_timeout, concurrency=b.sparql_concurrency
            ),
            BrokerSettings(
                validation=b.validation,
                ttl=b.ttl,
                max_triples=b.max_triples,
                max_datasets=b.max_datasets,
                infomodel_dir=config.infomodel_dir,
            ),
        )
        broker.signer = _signer(config)
        try:
            await broker.start()
        except (StoreUnavailable, StoreError) as exc:
            raise SystemExit(f"broker: cannot use the store {shown}: {exc}") from None
        limits = config.limits.limits()
        about = About(
            title=b.title,
            public_url=b.public_url,
            curator=b.curator,
            maintainer=b.maintainer,
            participant_id=broker.signer.participant_id if broker.signer else None,
            catalog_page_size=b.catalog_page_size,
        )
        app = broker_app(
            broker,
            verifier,
            limits=limits,
            body_bytes=b.max_body_bytes,
            client_certs=b.client_certificates(),
            about=about,
            metrics_key=config.metrics_key(),
        )
        app.add_routes(health_routes(Readiness({"store": store.ping})))
        count_requests(app, "broker")
        cert, key, ca = config.tls_files
        ssl_ctx = (
            server_context(cert, key, ca, require_client_cert=b.tls_mode == "mutual")
            if b.serves_tls
            else None
        )
        listening = await start_site(app, b.host, b.port, limits=limits, ssl_context=ssl_ctx)
        (ready or (lambda s: print(s, flush=True)))(
            f"broker ready url={listening.url} store={shown} registrations="
            f"{len(await broker.registrations())}"
        )
        sync = asyncio.create_task(_keep_in_step(broker, b.sync_interval)) if b.sync_interval > 0 else None
        crawler = await _crawler(config, broker, session)
        crawling = asyncio.create_task(crawler.run()) if crawler is not None else None
        await until_signalled()
        if stopping is not None:
            stopping()
        for task in (sync, crawling):
            if task is not None:
                task.cancel()
        if crawling is not None and crawler is not None:
            await asyncio.gather(crawling, return_exceptions=True)
            await crawler.client.close()
        await stop_sites([listening.runner], limits)
    finally:
        await session.close()
        await store.close()


def serve(config: BrokerConfig, *, log_level: str = "INFO", log_format: LogFormat = "text") -> None:
    configure_logs(log_level, log_format)
    grace = config.limits.shutdown_grace

    def watchdog() -> None:
        # the process ends even if an orderly stop hangs
        ShutdownWatchdog(grace + WATCHDOG_MARGIN).start()

    asyncio.run(run(config, stopping=watchdog))
