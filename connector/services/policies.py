"""Policies: a template filled, plain ODRL rules or JSON-LD, validated strictly when added, so an
invalid policy is refused here and can never break the catalog later."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connector.odrl.plain import policy_document as plain_policy_document
from connector.odrl.templates import TemplateError, fill
from connector.runtime import policy_problems
from connector.services.errors import Conflict, InvalidInput
from connector.services.records import RemovableRecords, fresh_id
from connector.store import DuplicateKey, PolicyRow, Store
from connector.wireformat import Clock


def policy_document(
    policy_id: str,
    *,
    template: str | None = None,
    params: Mapping[str, str] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A template filled, or plain rules / JSON-LD as the policy engine reads them
    (connector.odrl.plain: the one conversion, shared with `connector policy check`)."""
    if template is not None:
        try:
            return fill(template, dict(params or {}), policy_id=policy_id)
        except TemplateError as exc:
            raise InvalidInput(str(exc)) from exc
    if policy is None:
        raise InvalidInput("give either 'template' (with 'params') or 'policy'")
    return plain_policy_document(policy, policy_id)


class Policies(RemovableRecords[PolicyRow]):
    def __init__(self, store: Store, clock: Clock) -> None:
        super().__init__(store, lambda tx: tx.policies, "policy", in_use="an offer still uses this policy")
        self._clock = clock

    async def add(
        self,
        *,
        policy_id: str | None,
        template: str | None = None,
        params: Mapping[str, str] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> PolicyRow:
        """`InvalidInput` with every problem of an invalid policy; `Conflict` if the id is taken."""
        pid = fresh_id(policy_id, "policy")
        doc = policy_document(pid, template=template, params=params, policy=policy)
        problems = policy_problems(doc)
        if problems:
            raise InvalidInput("invalid policy", problems)
        row = PolicyRow(id=pid, body=json.dumps(doc), created_at=self._clock())
        try:
            async with self.store.transaction() as tx:
                await tx.policies.add(row)
        except DuplicateKey as exc:
            raise Conflict(f"policy {pid} exists") from exc
        return row
