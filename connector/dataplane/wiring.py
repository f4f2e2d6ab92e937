"""The data plane on top of the connector's store: the transfer lookup, compiled agreements,
sources from asset data addresses, and the app with its token verifier and receipts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509

from connector.assets import DataRoots
from connector.audit.log import AuditLog
from connector.audit.receipts import RECEIPT_KIND, receipt_data
from connector.dataplane.app import CircumstancesOf, create_app
from connector.dataplane.modified import ModifiedSource
from connector.dataplane.pep import Circumstances, TransferView
from connector.dataplane.receipts import ReceiptBook, ReceiptChain
from connector.dataplane.sources import ASSET_GONE, FileSource, HttpSource, UnavailableSource
from connector.dataplane.tokencache import TokenCache
from connector.dataplane.uses import UseReservations
from connector.faults import StoreUnavailable
from connector.http.outbound import OutboundPolicy
from connector.identity.keys import SigningKey
from connector.identity.tokens import Claims, TransferTokenIssuer
from connector.identity.verify import ReplayCache, RevocationStatus, TransferTokenVerifier
from connector.odrl.terms import EXPORT_STATUS
from connector.protocol.transfer import TransferState
from connector.store import Store
from connector.usage.held import HeldFacts
from connector.usage.lifecycle import retirement_reason
from connector.usage.pipeline import (
    AttestedFacts,
    compiled_agreement,
    request_facts,
    stated_from_headers,
)

log = logging.getLogger(__name__)
TOKEN_LEEWAY = 2.0  # seconds


class TransferLookup:
    """The data plane's view of a transfer, cached for ``ttl`` seconds: the control plane in
    this process invalidates an entry the moment the transfer's state changes (suspend,
    terminate, complete); the TTL bounds how long a change made through another replica takes
    to reach this one."""

    def __init__(self, store: Store, upstream: OutboundPolicy, roots: DataRoots, ttl: float = 1.0) -> None:
        self._load = _loader(store, upstream, roots)
        self._ttl = ttl
        self._cache: dict[str, tuple[float, TransferView | None]] = {}
        self._consumers: dict[str, str] = {}  # transfer -> consumer, for receipts' audit entries

    def consumer_of(self, transfer_id: str) -> str:
        return self._consumers.get(transfer_id, "")

    def invalidate(self, transfer_id: str) -> None:
        self._cache.pop(transfer_id, None)

    async def __call__(self, transfer_id: str) -> TransferView | None:
        now = time.monotonic()
        hit = self._cache.get(transfer_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        view = await self._load(transfer_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._consumers.clear()
        self._cache[transfer_id] = (now + self._ttl, view)
        if view is not None:
            self._consumers[transfer_id] = view.consumer_id
        return view


def _loader(
    store: Store, upstream: OutboundPolicy, roots: DataRoots
) -> Callable[[str], Awaitable[TransferView | None]]:
    async def lookup(transfer_id: str) -> TransferView | None:
        async with store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
            if row is None or row.role != "provider":
                return None
            agreement = await tx.agreements.get(row.agreement_id)
            if agreement is None:
                return None
            address = await tx.assets.get_secret_address(agreement.target)
            asset = await tx.assets.get(agreement.target)
        policy = compiled_agreement(agreement.id, agreement.target, agreement.policy)
        source = _source(address, upstream, roots)
        if policy.transit is not None:  # the agreement's duty to modify the data on its way
            source = ModifiedSource(source, policy.transit, asset.content_type if asset else None)
        ended = (
            retirement_reason(agreement.id, agreement.retired_reason or "")
            if agreement.retired_at is not None
            else None
        )
        return TransferView(
            transfer_id=row.id,
            agreement_id=agreement.id,
            consumer_id=agreement.consumer_id,
            state="STARTED" if TransferState(row.state).is_serving else row.state,
            agreement=policy,
            source=source,
            started_at=agreement.signed_at,
            ended=ended,
            attested=row.data.get("peer_attested"),
        )

    return lookup


def _source(address: dict[str, Any] | None, upstream: OutboundPolicy, roots: DataRoots) -> Any:
    """The source of an asset's data address; a refusing one when the asset is gone (deleted
    behind the store's back: the store refuses to delete an asset under an agreement) or its
    address is unusable."""
    if address is None:
        return UnavailableSource(410, ASSET_GONE)
    kind = address.get("type")
    if kind == "file" and isinstance(address.get("path"), str) and address["path"]:
        return FileSource(Path(address["path"]), chunk_size=4 << 20, roots=roots)
    if kind == "http" and address.get("url"):
        return HttpSource(address["url"], upstream, headers=dict(address.get("headers") or {}))
    return UnavailableSource(403, "the asset has no data address this data plane can serve")


# a receipt as the store keeps it: (transfer, chain, seq_from, seq_to, token, signed at)
_ReceiptRow = tuple[str, str, int, int, str, datetime]


OwnAttributes = Callable[[], Awaitable[Mapping[str, Any]]]


def provider_circumstances(
    held: HeldFacts, *, own: OwnAttributes | None = None, revocations: RevocationStatus | None = None
) -> CircumstancesOf:
    """What a data request (pull or push) is decided on beyond its token, at the provider: the
    consumer's attested attributes (the snapshot in its transfer token, or kept with a push
    transfer), the facts the request states, the facts the provider holds (state, active
    events, registered assessments) and attests of itself (its jurisdiction), and the
    agreement's payments (a compensate duty must be paid before use). A snapshot older than
    the last change of what the authority attests of the consumer decides nothing: the
    request is denied until a fresh one is presented."""

    per_token = AttestedFacts()

    async def of(
        claims: Claims, transfer: TransferView, headers: Mapping[str, str], now: datetime
    ) -> Circumstances:
        attested = claims.attributes.get("attested")
        if revocations is not None:
            changed = revocations.changed_at(transfer.consumer_id)
            at = claims.attributes.get("attestedAt")
            if changed is not None and (not isinstance(at, int | float) or at < changed):
                return Circumstances(
                    unmet="what the authority attests of the consumer changed "
                    "after the attributes this transfer holds: a fresh "
                    "token is needed"
                )
        policy = transfer.agreement
        facts = (
            request_facts(
                attested,
                stated=stated_from_headers(headers),
                held=await held.facts(now),
                own=await own() if own is not None else None,
                attested_facts=per_token(claims.token_id, claims.attributes.get("attestedAt"), attested),
                derive=EXPORT_STATUS in policy.operands,
            )
            if policy.operands
            else {}
        )
        if not policy.pays or policy.model is None:
            return Circumstances(facts)
        check = await held.payment_check(
            transfer.agreement_id, policy.model, signed_at=transfer.started_at or now, now=now
        )
        return Circumstances(facts, check.duties, check.reason)

    return of


class SharedReceipts:
    """Every receipt this process signs goes into the store (and its audit log), so any replica
    can hand a consumer all of a transfer's receipts, whichever process served the data.

    A receipt the audit log or the store refused (a storage fault) is kept and written again by
    `ready`, which the data plane awaits before each data request: no data leaves while an
    earlier receipt cannot be recorded."""

    def __init__(self, store: Store | None, audit: AuditLog | None) -> None:
        self.store = store
        self.audit = audit
        self._writes: dict[str, set[asyncio.Task[Any]]] = {}
        self._unstored: list[_ReceiptRow] = []  # refused by the store, oldest first
        self._retrying = asyncio.Lock()

    def record(self, chain: ReceiptChain, token: str) -> None:
        if self.audit is not None:
            event = (
                RECEIPT_KIND,
                receipt_data(token),
                {
                    "transfer_id": chain.transfer_id,
                    "agreement_id": chain.agreement_id,
                    "participant_id": chain.consumer_id or None,
                },
            )
            try:
                self.audit.append_many([event])
            except StoreUnavailable as exc:
                log.warning("the receipt of %s waits for the audit log: %s", chain.transfer_id, exc.reason)
                self.audit.defer([event])
        if self.store is None:
            return
        claims = jwt.decode(token, options={"verify_signature": False})  # just signed here
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        row: _ReceiptRow = (
            chain.transfer_id,
            chain.chain_id,
            claims["seq_from"],
            claims["seq_to"],
            token,
            datetime.now(UTC),
        )
        task = loop.create_task(self.store.add_receipt(*row))
        pending = self._writes.setdefault(chain.transfer_id, set())
        pending.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            pending.discard(t)
            if not pending:
                self._writes.pop(chain.transfer_id, None)
            if t.cancelled():
                return
            error = t.exception()
            if isinstance(error, StoreUnavailable):
                log.warning("the receipt of %s waits for the store: %s", chain.transfer_id, error.reason)
                self._unstored.append(row)
            elif error is not None:
                log.error("keeping the receipt of %s failed: %s", chain.transfer_id, error)

        task.add_done_callback(done)

    async def ready(self) -> None:
        """Write what the audit log and the store refused earlier; raises `StoreUnavailable`
        while they still refuse. Costs nothing while nothing waits."""
        if self.audit is not None and self.audit.pending:
            await asyncio.to_thread(self.audit.flush_pending)
        if self._unstored:
            assert self.store is not None
            async with self._retrying:
                while self._unstored:
                    await self.store.add_receipt(*self._unstored[0])  # idempotent
                    self._unstored.pop(0)

    async def collect(self, transfer_id: str) -> list[str]:
        """The transfer's receipts of every replica (this one's pending writes awaited)."""
        pending = list(self._writes.get(transfer_id, ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.ready()
        assert self.store is not None
        return await self.store.list_receipts(transfer_id)


def receipt_book(
    signing: SigningKey,
    participant_id: str,
    certificate: x509.Certificate | None,
    audit: AuditLog | None,
    consumer_of: Callable[[str], str] | None = None,
    chain_id: str = "",
    store: Store | None = None,
) -> ReceiptBook:
    """The provider's receipts: each one signed goes into its audit log (kind ``receipt``) and,
    with ``store``, into the store for every replica to hand out. ``chain_id`` names this
    process's chains (one per process: replicas, and a restarted process, never continue each
    other's chain)."""
    shared = SharedReceipts(store, audit)
    book = ReceiptBook(
        signing,
        participant_id,
        certificate=certificate,
        on_signed=shared.record,
        consumer_of=consumer_of,
        chain_id=chain_id,
    )
    book.shared = shared
    return book


def dataplane_key(key: SigningKey) -> SigningKey:
    """The participant key under its JWK thumbprint as kid (the participant's own key carries
    none: client assertions are matched by their issuer). Signs transfer tokens and receipts."""
    return SigningKey.from_private_key(key.private_key)


def transfer_tokens(key: SigningKey, participant_id: str, *, lifetime: int = 300) -> TransferTokenIssuer:
    return TransferTokenIssuer(
        dataplane_key(key), participant_id, replay=ReplayCache(), access_lifetime=lifetime
    )


def dataplane_app(
    store: Store,
    issuer: TransferTokenIssuer,
    *,
    participant_id: str,
    public_url: str,
    signer: SigningKey,
    upstream_allow: list[str],
    lookup: TransferLookup | None = None,
    roots: DataRoots | None = None,
    revocations: RevocationStatus | None = None,
    certificate: x509.Certificate | None = None,
    audit: AuditLog | None = None,
    receipts: ReceiptBook | None = None,
    uses: UseReservations | None = None,
    held: HeldFacts | None = None,
    own: OwnAttributes | None = None,
) -> web.Application:
    """``revocations``: the authority's revocation list (the DAT verifier's): a revoked
    consumer's transfer tokens stop working within its poll interval, cached ones included.
    ``certificate`` goes into every receipt (x5c) so consumers tie its key to this participant;
    every receipt signed is appended to ``audit``. ``roots``: where file assets may lie (none:
    every file asset is refused), for the lookup made here when ``lookup`` is not given.
    ``held``: the facts and payments the provider holds (shared with its management API)."""
    verifier = TransferTokenVerifier(
        {issuer.verification_key.kid or "": issuer.verification_key},
        provider_id=participant_id,
        audience=public_url,
        cache_claims=False,
        revocations=revocations,
        # issuer and verifier share this process's clock
        leeway=TOKEN_LEEWAY,
    )
    signing = dataplane_key(signer)

    def revoked(claims: Any) -> bool:
        """A cached token no longer good: its consumer revoked, or its attested snapshot older
        than the last change of what the authority attests of the consumer (the verifier then
        refuses it with the reason, and the consumer refreshes it with a fresh DAT)."""
        if revocations is None:
            return False
        if claims.subject in revocations.revoked:
            return True
        changed = revocations.changed_at(claims.subject)
        at = claims.attributes.get("attestedAt")
        return changed is not None and (not isinstance(at, int | float) or at < changed)

    lookup = lookup or TransferLookup(store, OutboundPolicy.from_config(upstream_allow), roots or DataRoots())
    book = receipts or receipt_book(
        signing, participant_id, certificate, audit, lookup.consumer_of, store=store
    )
    shared: SharedReceipts | None = book.shared
    app = create_app(
        verifier=TokenCache(verifier, is_revoked=revoked),
        lookup=lookup,
        consume=uses or UseReservations(store),
        receipts=book,
        clock=time.time,
        shared_receipts=shared.collect if shared is not None and shared.store is not None else None,
        ready=shared.ready if shared is not None else None,
        circumstances=provider_circumstances(held or HeldFacts(store), own=own, revocations=revocations),
    )

    async def keys(request: web.Request) -> web.Response:
        """The key receipts and transfer tokens are signed with, for consumers to verify."""
        return web.json_response({"keys": [signing.jwk()], "issuer": participant_id})

    app.router.add_get("/keys", keys)

    async def poll_revocations(app: web.Application) -> Any:
        """Keep the revocation list fresh even when only data requests arrive (cache hits do
        not fetch it)."""

        async def loop() -> None:
            while True:
                with contextlib.suppress(Exception):
                    await revocations.ensure_fresh(time.time())  # type: ignore[union-attr]
                await asyncio.sleep(1.0)

        task = asyncio.create_task(loop()) if revocations is not None else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(poll_revocations)
    return app
