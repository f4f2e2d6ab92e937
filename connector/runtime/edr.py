"""Data references (the DSP ``dataAddress``, an EDR): what the provider hands out for a pull
(its data plane's URL and a transfer token bound to the agreement, the transfer and the
consumer, with a one-time refresh token), what the consumer hands out for a push (its push
endpoint and a secret made for the transfer), and the refresh of a pull's tokens on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from connector.dataplane.receiver import new_push_secret
from connector.identity.errors import IdentityError
from connector.identity.tokens import Claims, TransferTokenIssuer
from connector.protocol import transfer as xfer
from connector.protocol.messages import DataAddress
from connector.runtime.errors import Conflict, Invalid, NotFound, PeerRefused
from connector.runtime.lookups import find_transfer
from connector.runtime.mapping import row_to_transfer
from connector.runtime.transport import Poster
from connector.store import Store

HTTP_ENDPOINT = "https://w3id.org/idsa/v4.1/HTTP"


def _property(name: str, value: str) -> dict[str, str]:
    return {"@type": "EndpointProperty", "name": name, "value": value}


class DataReferences:
    """Mints and refreshes data references. ``transfer_tokens`` and ``dataplane_url``: the
    provider's signer of transfer tokens and where its data plane serves them (None: no pull
    transfers); ``push_url``: where providers push to this consumer (None: no push inbox)."""

    def __init__(
        self,
        store: Store,
        client: Poster,
        *,
        transfer_tokens: TransferTokenIssuer | None = None,
        dataplane_url: str | None = None,
        push_url: str | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.transfer_tokens = transfer_tokens
        self.dataplane_url = dataplane_url.rstrip("/") if dataplane_url else None
        self.push_url = push_url.rstrip("/") if push_url else None

    @property
    def serves_pulls(self) -> bool:
        return self.transfer_tokens is not None and self.dataplane_url is not None

    def pull_address(self, t: xfer.Transfer, peer: Claims | None = None) -> DataAddress:
        """Provider: the endpoint data reference of a pull: the data plane URL and a transfer
        token bound to the agreement, the transfer and the consumer, with a refresh token."""
        assert self.transfer_tokens is not None and self.dataplane_url is not None
        tokens = self.transfer_tokens.issue(
            agreement_id=t.agreement_id,
            transfer_id=t.id,
            consumer_id=t.counter_party_id,
            audience=self.dataplane_url,
            attested=peer,
        )
        return DataAddress.model_validate(
            {
                "@type": "DataAddress",
                "endpointType": HTTP_ENDPOINT,
                "endpoint": f"{self.dataplane_url}/data/{t.id}",
                "endpointProperties": [
                    _property("authorization", tokens.access_token),
                    _property("authType", "bearer"),
                    _property("expiresIn", str(tokens.expires_in)),
                    _property("refreshToken", tokens.refresh_token),
                ],
            }
        )

    def push_address(self, process_id: str, facts: Mapping[str, str]) -> DataAddress:
        """Consumer: where the provider pushes a transfer, under a secret made for it, with the
        facts the use states (purpose, application, event, location) for its decision."""
        if self.push_url is None:
            raise Conflict("this connector takes no push transfers")
        secret, _ = new_push_secret()
        props = [_property("authorization", secret), _property("authType", "bearer")]
        props.extend(_property(name, value) for name, value in sorted(facts.items()) if value)
        return DataAddress.model_validate(
            {
                "@type": "DataAddress",
                "endpointType": HTTP_ENDPOINT,
                "endpoint": f"{self.push_url}/{process_id}",
                "endpointProperties": props,
            }
        )

    async def refresh_transfer_token(
        self, pid: str, refresh_token: str, sender: str, attested: Claims | None = None
    ) -> dict[str, Any]:
        """Provider: a new access token (and a new one-time refresh token) for a pull."""
        if self.transfer_tokens is None:
            raise NotFound("this connector runs no data plane")
        async with self.store.transaction(readonly=True) as tx:
            row = await find_transfer(tx, pid, sender)
        if row.role != "provider" or not xfer.TransferState(row.state).is_running:
            raise Invalid(f"transfer {pid} is not running")
        try:
            tokens = self.transfer_tokens.refresh(refresh_token, consumer_id=sender, attested=attested)
        except IdentityError as exc:
            raise Invalid(str(exc)) from exc
        return {
            "authorization": tokens.access_token,
            "refreshToken": tokens.refresh_token,
            "expiresIn": tokens.expires_in,
        }

    async def refresh_pull_token(self, transfer_id: str) -> xfer.Transfer:
        """Consumer: exchange the pull's refresh token at the provider; keep the new tokens."""
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
        if row is None or row.role != "consumer":
            raise NotFound(f"no transfer {transfer_id} of this consumer")
        t = row_to_transfer(row)
        if t.state.is_ended:  # the provider would refuse it: say so here, without asking
            raise Conflict(f"transfer {transfer_id} is {t.state.value}: its token is no longer refreshed")
        address = t.data_address
        refresh = address.property("refreshToken") if address else None
        if address is None or not refresh or not t.provider_pid:
            raise Conflict("this transfer has no refresh token")
        d = await self.client.post(
            f"{t.counter_party_address.rstrip('/')}/transfers/{t.provider_pid}/token",
            {"refreshToken": refresh},
        )
        if not d.ok or not isinstance(d.body, dict):
            raise PeerRefused(f"the provider refused the refresh: {d.reason}")
        props = {p.name: p.value for p in address.endpoint_properties or ()}
        props.update(
            authorization=str(d.body.get("authorization", "")),
            refreshToken=str(d.body.get("refreshToken", "")),
            expiresIn=str(d.body.get("expiresIn", "")),
        )
        fresh_address = DataAddress.model_validate(
            {**address.to_json(), "endpointProperties": [_property(k, v) for k, v in props.items()]}
        )
        async with self.store.transaction() as tx:
            fresh = await tx.transfers.get(transfer_id)
            assert fresh is not None
            data = {**fresh.data, "data_address": fresh_address.to_json()}
            await tx.transfers.save(replace(fresh, data=data), expected_version=fresh.version)
        return replace(t, data_address=fresh_address)
