"""`connector serve CONFIG`: one connector process (control plane: DSP + management API)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from connector.audit.log import AuditLog
from connector.broker.heartbeat import heartbeat
from connector.config import Config
from connector.consumer import ConsumerConfig, ConsumerSide
from connector.dataplane.pushing import PushRunner
from connector.dataplane.receiver import push_receiver
from connector.dataplane.uses import UseReservations
from connector.dataplane.wiring import (
    TransferLookup,
    dataplane_app,
    dataplane_key,
    provider_circumstances,
    receipt_book,
    transfer_tokens,
)
from connector.http.client import DspClient
from connector.http.dsp import dsp_app
from connector.http.limits import (
    WATCHDOG_MARGIN,
    Limits,
    ShutdownWatchdog,
    start_site,
    stop_sites,
    until_signalled,
)
from connector.http.management import management_app
from connector.http.observe import Readiness, count_requests, operations
from connector.http.outbound import OutboundPolicy
from connector.http.tls import client_context, server_context
from connector.http.webhooks import WebhookClient, WebhookTarget
from connector.identity.client import DatClient, ParticipantIdentity
from connector.identity.tokens import Claims
from connector.identity.verify import DatVerifier
from connector.logs import LogFormat
from connector.logs import configure as configure_logs
from connector.runtime import CatalogSnapshot, ControlPlane
from connector.runtime.webhooks import Webhook, Webhooks
from connector.store import Store, StoreError, StoreUnavailable
from connector.ui.dashboard import dashboard_app
from connector.usage.envelope import Sender
from connector.usage.export import VaultExport
from connector.usage.held import HeldFacts

log = logging.getLogger("connector")


async def _retry(what: str, fn: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    """Start-up calls to the authority: wait for it a while rather than fail at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            return await fn()
        except Exception as exc:
            if loop.time() >= deadline:
                raise SystemExit(f"connector: {what} failed: {exc}") from exc
            await asyncio.sleep(0.5)


Describe = Callable[[str | None], Awaitable[tuple[bytes, str] | None]]


def self_description_source(
    cp: ControlPlane, config: Config, identity: ParticipantIdentity, security_profile: str
) -> Describe:
    from connector.selfdescription import (
        ConnectorInfo,
        DatasetInfo,
        DistributionInfo,
        negotiate,
        self_description_graph,
        serialize,
    )

    cache: dict[tuple[int, str], bytes] = {}
    public_pem = (
        identity.certificate.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    base = config.connector.public_url

    def info() -> ConnectorInfo:
        return ConnectorInfo(
            id=f"{base}/",
            participant_id=identity.participant_id,
            title=config.connector.title,
            description=config.connector.description,
            curator=config.connector.curator,
            maintainer=config.connector.maintainer,
            security_profile=security_profile,
            dsp_base_url=base,
            self_description_url=f"{base}/",
            public_key_pem=public_pem,
            catalog_id=f"{base}#catalog",
            dsp_service_id=f"{base}#dsp",
        )

    def datasets(snap: CatalogSnapshot) -> list[DatasetInfo]:
        out = []
        for p in snap.builder._datasets:  # the same datasets the DSP catalog shows
            d = p.dataset
            out.append(
                DatasetInfo(
                    id=d.id,
                    title=d.title or d.id,
                    description=d.description,
                    keywords=d.keywords,
                    distributions=[DistributionInfo(x.format, base) for x in d.distributions],
                    offers=[{k: v for k, v in o.offer.items() if k != "target"} for o in d.offers],
                )
            )
        return out

    async def describe(accept: str | None) -> tuple[bytes, str] | None:
        media_type = negotiate(accept)
        if media_type is None:
            return None
        snap = await cp.catalog()
        key = (id(snap), media_type)
        if key not in cache:
            cache.clear()
            cache[key] = serialize(self_description_graph(info(), datasets(snap)), media_type)
        return cache[key], media_type

    return describe


def _cannot_open(url: str, exc: Exception) -> SystemExit:
    """The one line `connector serve` ends with when its store cannot be used: why, and what
    to check (no traceback: nothing is wrong with the connector)."""
    where = f"connector: cannot open the store {Store.shown_url(url)}"
    if isinstance(exc, StoreUnavailable):
        return SystemExit(f"{where}: {exc.reason}" + (f" (check {exc.check})" if exc.check else ""))
    if isinstance(exc, ValueError):
        return SystemExit(f"{where}: {exc} (check [store] url in the configuration)")
    return SystemExit(f"{where}: {exc}")


async def open_store(config: Config) -> Store:
    """The store, opened and migrated; one that cannot be ends the process with one line."""
    try:
        store = await Store.open(config.store_url, sqlite_synchronous=config.store.sqlite_synchronous)
    except (StoreUnavailable, StoreError, ValueError) as exc:
        raise _cannot_open(config.store_url, exc) from None
    try:
        await store.migrate()
    except (StoreUnavailable, StoreError) as exc:
        await store.close()
        raise _cannot_open(config.store_url, exc) from None
    return store


async def _stop_within(what: str, work: Awaitable[Any], deadline: float, grace: float) -> None:
    """Await ``work`` until ``deadline`` (loop time); past it, give up on it with a warning."""
    try:
        async with asyncio.timeout_at(deadline):
            await work
    except TimeoutError:
        log.warning("shutdown: %s did not stop within %g s", what, grace)


async def _shutdown(
    limits: Limits, runners: list[web.AppRunner], background: list[tuple[str, Awaitable[Any]]]
) -> None:
    """Stop serving and stop the background work, all at once, within the shutdown grace.

    Requests in flight get a third of the grace to finish, then are cancelled (long waits,
    streams); pulls, pushes and the outbox stop at once. Nothing is lost: every state change is
    one transaction, and messages not yet delivered stay in the outbox for the next start."""
    grace = limits.shutdown_grace
    deadline = asyncio.get_running_loop().time() + grace
    await asyncio.gather(
        stop_sites(runners, limits), *(_stop_within(what, work, deadline, grace) for what, work in background)
    )


async def run(
    config: Config, *, ready: Callable[[str], None] | None = None, stopping: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT; ``stopping`` is called when the signal arrives."""
    store = await open_store(config)
    identity = ParticipantIdentity.load(config.participant_dir)
    timeout = aiohttp.ClientTimeout(total=15)
    session = aiohttp.ClientSession(timeout=timeout)
    authority = config.connector.authority_url
    audit: AuditLog | None = None
    client: DspClient | None = None
    try:
        dat = await _retry("authority discovery", lambda: DatClient.discover(session, authority, identity))
        verifier = await _retry(
            "authority JWKS",
            lambda: DatVerifier.from_authority(
                session, authority, revocation_poll_interval=config.connector.revocation_poll_interval
            ),
        )
        # a change of what the authority attests about us makes our cached DAT stale
        dat.changed_at = lambda: verifier.revocations.changed_at(identity.participant_id)
        own = await _retry("obtaining a DAT", dat.token)
        claims = await verifier.verify(own)

        async def own_claims() -> Claims:
            return await verifier.verify(await dat.token())

        cert, key, ca = config.tls_files
        client_ssl = client_context(ca, cert, key) if config.dsp.uses_tls else None
        client = DspClient(
            dat.token,
            renew=dat.renew,
            ssl_context=client_ssl,
            policy=OutboundPolicy.from_config(
                config.dsp.peer_allow, schemes=("https",) if config.dsp.uses_tls else ("http", "https")
            ),
        )
        dp = config.dataplane
        tls_scheme = "https" if config.dsp.uses_tls else "http"
        dataplane_url = (dp.public_url or f"{tls_scheme}://{dp.host}:{dp.port}").rstrip("/")
        issuer = (
            transfer_tokens(identity.key, identity.participant_id, lifetime=dp.token_lifetime)
            if dp.enabled
            else None
        )
        # fsync off: entries reach the OS at once (a kill -9 loses none), as the SQLite store
        public = identity.certificate.public_key()
        if not isinstance(public, Ed25519PublicKey | EllipticCurvePublicKey):
            raise SystemExit("connector: the participant key must be Ed25519 or EC to sign the audit log")
        audit = AuditLog.open(config.audit_log_path, identity.key, public, time.time, fsync=False)
        # the consumer's side (its vault and duties, pulls, the push inbox, local use) and the
        # deletion and use notices providers take in: both check peers against the CA
        ca_file = config.participant_dir / "ca.crt"
        consumer_config = None
        if ca_file.is_file():
            consumer_config = ConsumerConfig.load(
                ca_file=ca_file,
                vault_dir=config.participant_dir / "vault",
                signing_key=dataplane_key(identity.key),
                certificate=identity.certificate,
                records_dir=config.participant_dir / "vault-records",
                outbound=OutboundPolicy.from_config(dp.pull_allow),
            )
        else:
            log.warning("no %s: the vault, local-copy duties and notices are off", ca_file)
        # One worker id per replica (its DSP address): a restarted replica takes back the
        # outbox messages it had in flight when it stopped.
        cp = ControlPlane(
            store,
            client,
            participant_id=identity.participant_id,
            dsp_url=config.connector.public_url,
            worker_id=f"{config.connector.public_url}",
            counter_offers=config.negotiation.counter_offers,
            transfer_tokens=issuer,
            dataplane_url=dataplane_url if dp.enabled else None,
            audit=audit,
            notice_ca=consumer_config.ca if consumer_config is not None else None,
            # providers push to <public url>/push/<consumerPid> (needs the CA: the
            # provider's receipts are checked against it)
            push_url=f"{config.connector.public_url.rstrip('/')}/push"
            if consumer_config is not None
            else None,
            push_enabled=dp.enabled,
            own_claims=own_claims,
        )
        hooks = _webhooks(config)
        cp.engine.webhooks = hooks
        await cp.start()
        describe = self_description_source(
            cp,
            config,
            identity,
            str(claims.security_profile or "idsc:BASE_SECURITY_PROFILE").replace(
                "idsc:", "https://w3id.org/idsa/code/"
            ),
        )
        version = {"protocolVersions": [{"version": "2025-1", "path": "/", "binding": "HTTPS"}]}
        limits = config.limits.limits()
        dsp = dsp_app(
            cp,
            verifier,
            client_certs=config.dsp.client_certificates(),
            version_document=version,
            self_description=describe,
            limits=limits,
        )
        side: ConsumerSide | None = None
        export: VaultExport | None = None
        if consumer_config is not None:
            side = ConsumerSide(cp, consumer_config)
            await side.start()
            cp.local_copies = side.duties
            export = VaultExport(
                store=store,
                vault=side.vault,
                ca=consumer_config.ca,
                audit=audit,
                clock=cp.clock,
                participant_id=identity.participant_id,
                sender=Sender(consumer_config.signing_key, consumer_config.certificate),
            )
            dsp.add_subapp("/push", push_receiver(side.inbox.resolve, side.inbox.on_receipts, limits=limits))
        downloads = side.downloads if side is not None else None
        local = side.local if side is not None else None
        # where file assets may lie (checked when the config loaded; built now that the store
        # and the audit log exist, so links to them are recognised too)
        roots = config.data_roots()
        # the facts and payments this connector holds: one cache for its management API, its
        # data plane (pulls and pushes) and its local uses, so a change counts at once
        held = HeldFacts(store)
        cp.held = held
        ui = dashboard_app(
            cp,
            config.management_api_key(),
            audit=audit,
            downloads=downloads,
            local=local,
            data_roots=roots,
            title=config.connector.title,
        )
        mgmt = management_app(
            cp,
            config.management_api_key(),
            audit=audit,
            held=held,
            downloads=downloads,
            local=local,
            data_roots=roots,
            limits=limits,
            export=export,
            observe=operations(_readiness(store, session, authority, dat), store),
            ui=ui,
        )
        runners: list[web.AppRunner] = []
        urls = []
        pusher: PushRunner | None = None
        # TLS on the DSP port in "mutual" and "server"; behind a proxy or in a loopback test none
        server_ssl = (
            server_context(cert, key, ca, require_client_cert=(config.dsp.tls_mode == "mutual"))
            if config.dsp.serves_tls
            else None
        )
        sites = [
            (dsp, config.dsp.host, config.dsp.port, server_ssl),
            (mgmt, config.management.host, config.management.port, None),
        ]
        if issuer is not None:
            # consumers present transfer tokens here, not DATs: TLS without a client certificate
            data_ssl = (
                server_context(cert, key, ca, require_client_cert=False) if config.dsp.uses_tls else None
            )
            lookup = TransferLookup(store, OutboundPolicy.from_config(dp.upstream_allow), roots)
            cp.transfer_listeners.append(lookup.invalidate)
            book = receipt_book(
                dataplane_key(identity.key),
                identity.participant_id,
                identity.certificate,
                audit,
                lookup.consumer_of,
                chain_id=secrets.token_urlsafe(6),
                store=store,
            )
            uses = UseReservations(store)
            cp.consume_use = uses  # a consumer's local uses count on the same reservations
            pusher = PushRunner(
                cp,
                lookup=lookup,
                receipts=book,
                policy=OutboundPolicy.from_config(dp.push_allow),
                ssl_context=client_ssl,
                consume=uses,
                circumstances=provider_circumstances(
                    held, own=cp.own_attributes, revocations=verifier.revocations
                ),
            )
            cp.transfer_listeners.append(pusher.notify)
            if await pusher.resume_after_restart():
                log.info("pushing again the transfers started before a restart")
            sites.append(
                (
                    dataplane_app(
                        store,
                        issuer,
                        participant_id=identity.participant_id,
                        public_url=dataplane_url,
                        signer=identity.key,
                        upstream_allow=dp.upstream_allow,
                        lookup=lookup,
                        revocations=verifier.revocations,
                        receipts=book,
                        uses=uses,
                        held=held,
                        own=cp.own_attributes,
                    ),
                    dp.host,
                    dp.port,
                    data_ssl,
                )
            )
        for (app, host, port, ssl_ctx), name in zip(sites, ("dsp", "management", "dataplane"), strict=False):
            listening = await start_site(
                count_requests(app, name), host, port, limits=limits, ssl_context=ssl_ctx
            )
            runners.append(listening.runner)
            urls.append(listening.url)
        line = f"connector {identity.participant_id} ready dsp={urls[0]} management={urls[1]}"
        if len(urls) > 2:
            line += f" dataplane={urls[2]}"
        (ready or (lambda s: print(s, flush=True)))(line)
        beat: asyncio.Task[None] | None = None
        if config.broker.url is not None:
            beat = asyncio.create_task(
                heartbeat(
                    session,
                    config.broker.url,
                    describe,
                    dat.token,
                    every=config.broker.heartbeat,
                    ssl_context=client_ssl,
                )
            )
        await until_signalled()
        if stopping is not None:
            stopping()
        if beat is not None:
            beat.cancel()
        background: list[tuple[str, Awaitable[Any]]] = [("the control plane", cp.stop())]
        if hooks is not None and isinstance(hooks.sender, WebhookClient):
            background.append(("webhooks", hooks.sender.close()))
        if side is not None:
            background.append(("the consumer side", side.stop()))
        if pusher is not None:
            background.append(("pushes", pusher.close()))
        await _shutdown(limits, runners, background)
    finally:
        if client is not None:
            await client.close()
        await session.close()
        await store.close()
        if audit is not None:
            audit.close()


def _webhooks(config: Config) -> Webhooks | None:
    """The configured webhooks (connector.runtime.webhooks), each signing with its key and
    reaching only what the outbound policy allows it (its own ``allow`` entries)."""
    if not config.webhooks:
        return None
    secrets = config.webhook_secrets()
    hooks = [Webhook(f"h{i}", hook.url, frozenset(hook.events)) for i, hook in enumerate(config.webhooks)]
    client = WebhookClient(
        {  # each hook reaches what its own allow list names (and public addresses), no more
            h.name: WebhookTarget(hook.url, key, OutboundPolicy.from_config(hook.allow))
            for h, hook, key in zip(hooks, config.webhooks, secrets, strict=True)
        },
        clock=time.time,
    )
    return Webhooks(hooks, client)


def _readiness(store: Store, session: aiohttp.ClientSession, authority: str, dat: DatClient) -> Readiness:
    """What `GET /ready` checks: the store answers, the authority answers, this connector holds
    a valid DAT (its keys are loaded and the authority accepts them)."""

    async def store_answers() -> None:
        await store.ping()

    async def authority_answers() -> None:
        async with session.get(authority.rstrip("/") + "/health") as r:
            if r.status != 200:
                raise RuntimeError(f"the authority answers {r.status}")

    async def holds_a_dat() -> None:
        await dat.token()

    return Readiness({"store": store_answers, "authority": authority_answers, "dat": holds_a_dat})


def serve(config: Config, *, log_level: str = "INFO", log_format: LogFormat = "text") -> None:
    configure_logs(log_level, log_format)
    grace = config.limits.shutdown_grace

    def watchdog() -> None:
        # the process ends even if an orderly stop hangs (armed for the rest of its life)
        ShutdownWatchdog(grace + WATCHDOG_MARGIN).start()

    try:
        asyncio.run(run(config, stopping=watchdog))
    except StoreUnavailable as exc:
        # start-up: the store opened but refused its first write (read-only), or the audit log
        # cannot be opened: one line, as for a store that cannot be opened
        raise SystemExit(
            f"connector: cannot start: {exc.reason}" + (f" (check {exc.check})" if exc.check else "")
        ) from None
