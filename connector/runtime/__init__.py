"""The runtime: drives the pure protocol machines (``connector.protocol``) with a store, a
transport and a clock.

Modules, from the centre out:

* ``engine``      ``ProcessEngine``: one transition persisted with the messages it causes (the
                  transactional outbox), their delivery with retries and backoff, ``wait_for``,
                  and the after-commit hooks; generic over the two ``Kind`` s of process.
* ``transport``   the ``Transport`` protocol the engine sends through (``DspClient`` fits it).
* ``mapping``     the one owner of the row <-> process mapping and its JSON layout.
* ``catalog``     the provider's catalog and its cache; ``policy_problems``.
* ``edr``         data references: a pull's address and transfer tokens, a push's address,
                  token refresh on both sides.
* ``auditing``    the after-commit hook writing one audit entry per state reached.
* ``lookups``     a process as its counter-party names it (404 for anyone else).
* ``notices``     the provider's side of consumers' deletion and use notices.
* ``errors``      the runtime's typed failures (``ProtocolError`` subclasses: mapped as today).
* ``controlplane`` ``ControlPlane``, the facade the edges call.

One negotiation (consumer C asks provider P for an offer)::

    C mgmt API -> ControlPlane.request_offer -> engine.transition(NEGOTIATION, Request)
        -> protocol.negotiation.apply -> mapping.negotiation_to_row -> store (row + outbox, one
           commit) -> engine delivers at once -> transport (DspClient) POST /negotiations/request
    P DSP route -> ControlPlane.negotiation_message -> catalog (offers) -> engine.transition(
           Received) -> protocol.followups.negotiation_follow_ups: Agree -> commit (row,
           agreement, outbox: the agreement message) -> ACK 201 -> C
    C: Received(agreement) -> follow-up Verify -> outbox -> P: Received(verification)
           -> follow-up Finalize -> outbox -> C: Received(event FINALIZED)
    each delivery's 2xx -> engine: Acknowledged -> transition (the internal "sending" state
    becomes the acknowledged one); after each commit: wake, audit (auditing), waiters (wait_for)

One pull (C holds the FINALIZED agreement)::

    C mgmt API -> ControlPlane.request_transfer -> engine.transition(TRANSFER, Request)
        -> outbox -> P DSP route -> ControlPlane.transfer_message (agreement checked, retired?)
        -> engine.transition(Received) -> protocol.followups.transfer_follow_ups: Start with
           edr.DataReferences.pull_address (data plane URL + transfer token) -> outbox ->
           C: Received(start) -> mapping keeps the dataAddress -> after-commit hook: transfer
           listeners (the data plane's cache) -> C pulls from P's data plane with the token;
           edr.refresh_pull_token / refresh_transfer_token renew it
"""

from connector.runtime.catalog import (
    CATALOG_TTL,
    CatalogCache,
    CatalogSnapshot,
    build_catalog,
    offer_for_catalog,
    policy_problems,
)
from connector.runtime.controlplane import RUNNING_TRANSFER_STATES, ControlPlane
from connector.runtime.engine import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    NEGOTIATION,
    TRANSFER,
    Committed,
    Decisions,
    Inbound,
    Kind,
    PeerProbe,
    ProcessEngine,
    utcnow,
)
from connector.runtime.mapping import (
    negotiation_to_row,
    row_to_negotiation,
    row_to_transfer,
    transfer_to_row,
    with_peer_attested,
)
from connector.runtime.transport import Transport

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CATALOG_TTL",
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "NEGOTIATION",
    "RUNNING_TRANSFER_STATES",
    "TRANSFER",
    "CatalogCache",
    "CatalogSnapshot",
    "Committed",
    "ControlPlane",
    "Decisions",
    "Inbound",
    "Kind",
    "PeerProbe",
    "ProcessEngine",
    "Transport",
    "build_catalog",
    "negotiation_to_row",
    "offer_for_catalog",
    "policy_problems",
    "row_to_negotiation",
    "row_to_transfer",
    "transfer_to_row",
    "utcnow",
    "with_peer_attested",
]
