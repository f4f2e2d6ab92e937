"""The decisions a side takes on its own after a transition (connector.protocol.followups): pure
functions of the process, so each case is one call."""

from __future__ import annotations

from dataclasses import replace

import pytest
from protocol_testlib import CONSUMER, NOW, PROVIDER

from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.protocol.followups import finalized_unacknowledged, transfer_follow_ups
from connector.protocol.messages import PULL, PUSH, DataAddress

ADDRESS = DataAddress.model_validate(
    {
        "@type": "DataAddress",
        "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
        "endpoint": "https://provider.test/data/t",
    }
)
REQUESTED = xfer.Transfer(
    id="t",
    role=Role.PROVIDER,
    provider_pid="t",
    consumer_pid="c",
    state=xfer.TransferState.REQUESTED,
    counter_party_id=CONSUMER,
    counter_party_address="https://consumer.test",
    agreement_id="a",
    format=PULL,
    created_at=NOW,
    updated_at=NOW,
)


def test_a_requested_pull_starts_with_the_minted_address() -> None:
    minted: list[str] = []

    def mint(t: xfer.Transfer) -> DataAddress:
        minted.append(t.id)
        return ADDRESS

    (start,) = transfer_follow_ups(REQUESTED, pull_address=mint, push_enabled=False)
    assert isinstance(start, xfer.Start) and start.data_address == ADDRESS and minted == ["t"]


@pytest.mark.parametrize(
    ("fmt", "push_enabled", "expected"),
    [
        (PULL, True, "this connector runs no data plane for pull transfers"),
        (PUSH, False, "this connector runs no data plane for push transfers"),
    ],
)
def test_a_transfer_without_its_data_plane_is_terminated(fmt: str, push_enabled: bool, expected: str) -> None:
    (cmd,) = transfer_follow_ups(replace(REQUESTED, format=fmt), pull_address=None, push_enabled=push_enabled)
    assert isinstance(cmd, xfer.Terminate) and cmd.reason == expected


def test_a_push_starts_without_an_address_and_others_wait() -> None:
    (start,) = transfer_follow_ups(replace(REQUESTED, format=PUSH), pull_address=None, push_enabled=True)
    assert isinstance(start, xfer.Start) and start.data_address is None
    assert (
        transfer_follow_ups(replace(REQUESTED, role=Role.CONSUMER), pull_address=None, push_enabled=True)
        == []
    )
    assert (
        transfer_follow_ups(
            replace(REQUESTED, state=xfer.TransferState.STARTED), pull_address=None, push_enabled=True
        )
        == []
    )


def test_finalized_unacknowledged_is_the_providers_pending_event_for_that_consumer() -> None:
    n = neg.Negotiation(
        id="p",
        role=Role.PROVIDER,
        provider_pid="p",
        consumer_pid="c",
        state=neg.NegotiationState.FINALIZING,
        counter_party_id=CONSUMER,
        counter_party_address="https://consumer.test",
        offer={},
        created_at=NOW,
        updated_at=NOW,
        pending_message_id="m",
    )
    assert finalized_unacknowledged(n, CONSUMER)
    assert not finalized_unacknowledged(n, PROVIDER)
    assert not finalized_unacknowledged(replace(n, pending_message_id=None), CONSUMER)
    assert not finalized_unacknowledged(replace(n, state=neg.NegotiationState.FINALIZED), CONSUMER)
