"""What a side does next on its own, decided from the state a process just reached: pure
functions of the process, the provider's offers and the time (no store, no clock, no I/O).

The runtime applies them in the same transaction as the message that called for them: the
provider's agree / terminate / counter-offer, the consumer's check of the agreement it gets, the
provider's finalization, and the provider's start (or refusal) of a transfer it was asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.protocol.decide import (
    KnownOffer,
    Requester,
    access_decision,
    decide_request,
    same_terms,
    verify_agreement,
)
from connector.protocol.messages import PULL, DataAddress

# the provider's rule for a request that differs from its offers: "stricter" agrees if provably
# at least as strict as an offer, else terminates; "offer" answers a looser one with a
# counter-offer of the offer instead; "reject" agrees to exact offers only
CounterOfferRule = Literal["stricter", "offer", "reject"]
COUNTER_OFFER_RULES: tuple[CounterOfferRule, ...] = ("stricter", "offer", "reject")


def negotiation_follow_ups(
    n: neg.Negotiation,
    *,
    offers: Sequence[KnownOffer],
    requester: Requester | None,
    now: datetime,
    participant_id: str,
    counter_offers: CounterOfferRule,
    new_id: Callable[[], str],
) -> list[neg.Command]:
    """The commands this side applies on its own after ``n`` reached its state. ``requester``:
    who sent the message just taken in (None: not an inbound message; the provider decides only
    on those). ``new_id`` names a counter-offer."""
    s = neg.NegotiationState
    if n.role is Role.PROVIDER and n.state in (s.REQUESTED, s.ACCEPTED) and requester is not None:
        d = decide_request(offers, n.offer, requester, now, provider_id=participant_id)
        exact = next((o for o in offers if o.id == d.offer_id), None)
        if d.agree and d.agreement:
            if (
                counter_offers == "reject"
                and n.state is s.REQUESTED
                and not (exact is not None and same_terms(n.offer, exact.offer))
            ):
                return [
                    neg.Terminate(
                        "this provider agrees to its offers as they are; counter-offers are not accepted"
                    )
                ]
            return [neg.Agree(d.agreement)]
        if (
            counter_offers == "offer"
            and n.state is s.REQUESTED
            and exact is not None
            and access_decision(exact, requester, now).permit
        ):
            # eligible, but the terms asked for are looser: offer ours instead
            return [neg.Offer({**exact.offer, "@id": f"{exact.id}#counter-{new_id()}"})]
        return [neg.Terminate(d.reason)]
    if n.role is Role.CONSUMER and n.state is s.AGREED and n.agreement is not None:
        problems = verify_agreement(
            n.offer, n.agreement, consumer_id=participant_id, provider_id=n.counter_party_id
        )
        return [neg.Terminate("; ".join(problems))] if problems else [neg.Verify()]
    if n.role is Role.PROVIDER and n.state is s.VERIFIED:
        return [neg.Finalize()]
    return []


def transfer_follow_ups(
    t: xfer.Transfer, *, pull_address: Callable[[xfer.Transfer], DataAddress] | None, push_enabled: bool
) -> list[xfer.Command]:
    """The provider starts a transfer it was asked for, or terminates it when it runs no data
    plane for the format. ``pull_address`` mints the pull's data address (None: no pulls)."""
    if t.role is Role.PROVIDER and t.state is xfer.TransferState.REQUESTED:
        if t.format == PULL:
            if pull_address is None:
                return [xfer.Terminate("this connector runs no data plane for pull transfers")]
            return [xfer.Start(pull_address(t))]
        if not push_enabled:
            return [xfer.Terminate("this connector runs no data plane for push transfers")]
        return [xfer.Start()]  # the PushRunner streams once the consumer has the start
    return []


def finalized_unacknowledged(n: neg.Negotiation, sender: str) -> bool:
    """A provider's negotiation whose FINALIZED event awaits the consumer ``sender``'s answer."""
    return (
        n.role is Role.PROVIDER
        and n.state is neg.NegotiationState.FINALIZING
        and n.pending_message_id is not None
        and n.counter_party_id == sender
    )
