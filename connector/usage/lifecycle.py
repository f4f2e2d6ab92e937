"""An agreement's life cycle as the management API shows it: active, retired, or expired.

Retired: the provider retired it (``AgreementRow.retired_at`` is set), whatever its terms say.
Expired: the time window of every permission has passed (each permission closes with a
``dateTime lt/lteq`` bound, the rental's end included), so no use can ever be permitted again.
An agreement with a permission that has no end never expires.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from connector.odrl.model import Policy
from connector.usage.window import rule_window

# the DSP termination code of a transfer ended because its agreement was retired
AGREEMENT_RETIRED = "agreement-retired"
AgreementStatus = Literal["active", "retired", "expired"]
STATUSES: tuple[AgreementStatus, ...] = ("active", "retired", "expired")


def agreement_status(policy: Policy, retired_at: datetime | None, now: datetime) -> AgreementStatus:
    """The status of an agreement with terms ``policy`` at ``now``."""
    if retired_at is not None and retired_at <= now:
        return "retired"
    windows = [rule_window(p) for p in policy.permissions]
    if windows and all(w.ended(now) for w in windows):
        return "expired"
    return "active"


def retirement_reason(agreement_id: str, reason: str) -> str:
    """What a peer and the logs are told: ``agreement <id> retired: <reason>``."""
    return f"agreement {agreement_id} retired: {reason}"
