"""The ODRL operators on coerced Python values, shared by ``evaluate`` and ``compile``.

Multi-valued operands follow one strict reading: a scalar operator must hold for every left
value; the set operators compare the left values as a set with the right-operand set.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from connector.odrl import terms as T

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    T.LT: _op.lt,
    T.LTEQ: _op.le,
    T.GT: _op.gt,
    T.GTEQ: _op.ge,
}
SYMBOL = {T.EQ: "=", T.NEQ: "≠", T.LT: "<", T.LTEQ: "≤", T.GT: ">", T.GTEQ: "≥"}


class Incomparable(TypeError):
    """The two values have types the operator cannot compare (e.g. a date and a number)."""


_KINDS = (datetime, timedelta, str, bool)
_NUMBERS = (Decimal, int, float)


def _same_kind(a: Any, b: Any) -> bool:
    for kind in _KINDS:
        if isinstance(a, kind) or isinstance(b, kind):
            return isinstance(a, kind) and isinstance(b, kind)
    return isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS)


def member(x: str, collection: str, part_of: Mapping[str, frozenset[str]]) -> bool:
    """x is (reflexively, transitively) odrl:partOf the collection."""
    if x == collection:
        return True
    seen: set[str] = set()
    stack = list(part_of.get(x, ()))
    while stack:
        y = stack.pop()
        if y == collection:
            return True
        if y in seen:
            continue
        seen.add(y)
        stack.extend(part_of.get(y, ()))
    return False


def compare(
    op: str,
    lefts: Sequence[Any],
    rights: Sequence[Any],
    types: Mapping[str, frozenset[str]],
    part_of: Mapping[str, frozenset[str]],
) -> bool:
    """Does ``lefts op rights`` hold? Raises Incomparable / ValueError for unusable input."""
    if not lefts:
        return False
    if not rights:
        raise ValueError("no right operand value")
    ranked = _security_levels(lefts, rights)
    if ranked is not None:
        # IDS security profiles are levels (BASE < TRUST < TRUST_PLUS): a policy that names one
        # asks for at least that level, so `eq` reads as "at least"; the order operators
        # compare levels, isAnyOf/isNoneOf/neq the levels themselves
        lefts, rights = ranked
        if op == T.EQ:
            op = T.GTEQ
    if op == T.EQ:
        return all(any(_eq(lv, rv) for rv in rights) for lv in lefts)
    if op == T.NEQ:
        return all(not _eq(lv, rv) for lv in lefts for rv in rights)
    fn = _ORDER.get(op)
    if fn is not None:
        for lv in lefts:
            for rv in rights:
                if not _same_kind(lv, rv) or isinstance(lv, bool):
                    raise Incomparable(f"cannot order {lv!r} and {rv!r}")
                if not fn(lv, rv):
                    return False
        return True
    if op == T.IS_A:
        return all(any(str(rv) in types.get(str(lv), ()) for rv in rights) for lv in lefts)
    if op == T.IS_PART_OF:
        return all(any(member(str(lv), str(rv), part_of) for rv in rights) for lv in lefts)
    if op == T.HAS_PART:
        return all(member(str(rv), str(lv), part_of) for lv in lefts for rv in rights)
    if op == T.IS_ANY_OF:
        return all(any(_eq(lv, rv) for rv in rights) for lv in lefts)
    if op == T.IS_NONE_OF:
        return all(not _eq(lv, rv) for lv in lefts for rv in rights)
    if op == T.IS_ALL_OF:
        return all(any(_eq(lv, rv) for lv in lefts) for rv in rights)
    raise ValueError(f"unknown operator {T.short(op)}")


def _eq(a: Any, b: Any) -> bool:
    if _same_kind(a, b):
        return bool(a == b)
    # An IRI and a plain literal that spell the same thing are the same value to a user.
    return str(a) == str(b)


SECURITY_LEVELS = {
    T.IDSC_NS + name: rank
    for rank, name in enumerate(
        ("BASE_SECURITY_PROFILE", "TRUST_SECURITY_PROFILE", "TRUST_PLUS_SECURITY_PROFILE")
    )
}


def _security_levels(lefts: Sequence[Any], rights: Sequence[Any]) -> tuple[list[int], list[int]] | None:
    """Both sides as security levels, when every value is an IDS security profile."""
    try:
        return ([SECURITY_LEVELS[str(v)] for v in lefts], [SECURITY_LEVELS[str(v)] for v in rights])
    except KeyError:
        return None


def satisfying_levels(op: str, rights: Sequence[Any]) -> frozenset[str] | None:
    """The security profiles that satisfy ``<level> op rights`` as ``compare`` decides it (for
    a compiled set test), or None when ``rights`` are not all security profiles."""
    if not rights or any(str(r) not in SECURITY_LEVELS for r in rights):
        return None
    try:
        return frozenset(level for level in SECURITY_LEVELS if compare(op, (level,), rights, {}, {}))
    except (Incomparable, ValueError):
        return None
