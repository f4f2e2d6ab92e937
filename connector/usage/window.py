"""The time window a rule grants: its ``odrl:dateTime`` bounds, read from the ODRL model.

A permission ``dateTime gteq start`` (or ``gt``) opens the window, ``dateTime lteq end`` (or
``lt``) closes it. Only constraints of the rule itself count (a bound inside ``odrl:or`` does not
make a window). The rental's periods and an agreement's expiry are both read from here, so the
two never disagree about when a use is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from connector.odrl import terms as T
from connector.odrl.model import Constraint, Rule


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime | None = None  # the first instant of use (None: no lower bound)
    end: datetime | None = None  # the bound of the last instant (None: open-ended)
    end_inclusive: bool = True  # lteq: `end` itself is inside the window

    def ended(self, now: datetime) -> bool:
        if self.end is None:
            return False
        return now > self.end if self.end_inclusive else now >= self.end

    def started(self, now: datetime) -> bool:
        return self.start is None or now >= self.start


def rule_window(rule: Rule) -> Window:
    """The narrowest window the rule's own ``dateTime`` constraints give."""
    start: datetime | None = None
    end: datetime | None = None
    inclusive = True
    for c in rule.constraints:
        if not isinstance(c, Constraint) or c.left_operand != T.DATE_TIME or len(c.right) != 1:
            continue
        value = c.right[0].py
        if not isinstance(value, datetime):
            continue
        if c.operator in (T.GTEQ, T.GT) and (start is None or value > start):
            start = value
        elif c.operator in (T.LTEQ, T.LT) and (
            end is None or value < end or (value == end and c.operator == T.LT)
        ):
            end, inclusive = value, c.operator == T.LTEQ
    return Window(start, end, inclusive)
