"""Usage receipts in both parties' audit logs, and the cross-check of the two records.

The provider's data plane covers every response with a receipt: a compact JWS (typ
``usage-receipt+jwt``, `connector.dataplane.receipts`) over the head of a per-transfer hash
chain of the responses ``seq_from..seq_to``. Both parties log each receipt as an audit entry of
kind ``receipt``:

- the provider, when it signs one: ``data = {"token": <jws>}``, with the transfer and agreement
  ids and the consumer as ``participant_id``;
- the consumer, when it has verified one against what it received:
  ``data = {"token": <jws>, "responses": [[seq, bytes, sha256 hex], ...]}`` (the responses the
  receipt covers), with the provider as ``participant_id``.

`cross_check` takes the consumer's log and the provider's: every receipt on either side must
verify with the provider's key; per transfer the receipts must run from response 1 without gaps
or overlaps on each side; the two sides must hold the same receipts; and the consumer's logged
responses must recompute every receipt's chain head and byte count, so the consumer can prove
each response it received (its size and SHA-256) was the one the provider signed for.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from connector.audit.log import Entry
from connector.dataplane.receipts import chain_step, genesis
from connector.identity.keys import PublicKey, algorithm_of
from connector.wireformat import RECEIPT_TYP

RECEIPT_KIND = "receipt"
_HEX64 = re.compile(r"[0-9a-f]{64}")

Response = tuple[int, int, str]  # (seq, bytes, sha256 hex)


@dataclass(frozen=True, slots=True)
class LoggedReceipt:
    """A receipt found in a log, with what its signature covers."""

    token: str
    transfer_id: str
    agreement_id: str
    seq_from: int
    seq_to: int
    bytes: int
    chain_head: str
    line: int  # the entry's seq in its log
    participant_id: str | None
    responses: tuple[Response, ...] = ()
    chain: str = ""  # the provider process's chain of the transfer ("" for a lone process)
    unproven: bool = False  # the consumer logged that what it got differs from what was signed

    @property
    def where(self) -> str:
        return _where(self.transfer_id, self.chain)

    @property
    def span(self) -> str:
        return (
            f"response {self.seq_from}"
            if self.seq_from == self.seq_to
            else f"responses {self.seq_from}..{self.seq_to}"
        )


def _where(transfer_id: str, chain: str) -> str:
    return f"transfer {transfer_id}" + (f" chain {chain}" if chain else "")


def receipt_data(
    token: str, responses: Sequence[tuple[int, int, bytes | str]] | None = None
) -> dict[str, Any]:
    """The ``data`` of a ``receipt`` audit entry (``responses`` on the consumer's side)."""
    data: dict[str, Any] = {"token": token}
    if responses is not None:
        data["responses"] = [[seq, n, d.hex() if isinstance(d, bytes) else d] for seq, n, d in responses]
    return data


def _claims(token: object, key: PublicKey) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > 64 * 1024:
        raise ValueError("not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ValueError(f"malformed receipt ({exc})") from None
    if header.get("typ") != RECEIPT_TYP:
        raise ValueError("not a usage receipt (typ)")
    alg = algorithm_of(key)
    if header.get("alg") != alg:
        raise ValueError(f"signed with {header.get('alg')!r}, the provider's key is {alg}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],  # type: ignore[arg-type]
            options={"verify_aud": False, "verify_exp": False},
        )
    except jwt.PyJWTError:
        raise ValueError("the signature does not verify with the provider's key") from None
    for name in ("seq_from", "seq_to", "bytes"):
        if type(claims.get(name)) is not int or claims[name] < 0:
            raise ValueError(f"claim {name!r} is not a non-negative integer")
    for name in ("transfer_id", "agreement_id"):
        if not isinstance(claims.get(name), str):
            raise ValueError(f"claim {name!r} is missing")
    if not isinstance(claims.get("chain_head"), str) or not _HEX64.fullmatch(claims["chain_head"]):
        raise ValueError("claim 'chain_head' is not 64 lowercase hex digits")
    if not 1 <= claims["seq_from"] <= claims["seq_to"]:
        raise ValueError("the receipt's response range is empty")
    if not isinstance(claims.get("chain", ""), str):
        raise ValueError("claim 'chain' is not a string")
    return claims


def _responses(raw: object) -> tuple[Response, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("'responses' is not a list")
    out: list[Response] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or type(item[0]) is not int
            or type(item[1]) is not int
            or not isinstance(item[2], str)
            or not _HEX64.fullmatch(item[2])
        ):
            raise ValueError("a response must be [seq, bytes, sha256 hex]")
        out.append((item[0], item[1], item[2]))
    return tuple(out)


def read_receipts(
    entries: Iterable[Entry], key: PublicKey, side: str
) -> tuple[list[LoggedReceipt], list[str]]:
    """The ``receipt`` entries of a log, verified with the provider's ``key``; the problems."""
    found: list[LoggedReceipt] = []
    problems: list[str] = []
    for entry in entries:
        if entry.kind != RECEIPT_KIND:
            continue
        data = entry.data if isinstance(entry.data, Mapping) else {}
        try:
            claims = _claims(data.get("token"), key)
            responses = _responses(data.get("responses"))
        except ValueError as exc:
            problems.append(f"{side} log seq {entry.seq}: {exc}")
            continue
        if entry.agreement_id is not None and entry.agreement_id != claims["agreement_id"]:
            problems.append(
                f"{side} log seq {entry.seq}: logged under agreement {entry.agreement_id}, "
                f"the receipt is for {claims['agreement_id']}"
            )
        found.append(
            LoggedReceipt(
                token=data["token"],
                transfer_id=claims["transfer_id"],
                agreement_id=claims["agreement_id"],
                seq_from=claims["seq_from"],
                seq_to=claims["seq_to"],
                bytes=claims["bytes"],
                chain_head=claims["chain_head"],
                line=entry.seq,
                participant_id=entry.ids.get("participant_id"),
                responses=responses,
                chain=claims.get("chain", ""),
                unproven=data.get("unproven") is True,
            )
        )
    return found, problems


def _sequence(side: str, receipts: list[LoggedReceipt]) -> tuple[dict[int, LoggedReceipt], list[str]]:
    """One side's receipts of one transfer by seq_from; gaps, overlaps and duplicates."""
    problems: list[str] = []
    by_start: dict[int, LoggedReceipt] = {}
    expected = 1
    for r in sorted(receipts, key=lambda r: (r.seq_from, r.line)):
        where = f"{r.where} {r.span}"
        if r.seq_from in by_start:
            if by_start[r.seq_from].token != r.token:
                problems.append(f"{where}: two different receipts in the {side}'s log")
            else:
                problems.append(f"{where}: logged more than once by the {side}")
            continue
        if r.seq_from > expected:
            gap = (
                f"response {expected} is"
                if expected == r.seq_from - 1
                else f"responses {expected}..{r.seq_from - 1} are"
            )
            problems.append(f"{r.where}: {gap} covered by no receipt in the {side}'s log (a gap)")
        elif r.seq_from < expected:
            problems.append(f"{where}: overlaps an earlier receipt in the {side}'s log")
        by_start[r.seq_from] = r
        expected = max(expected, r.seq_to + 1)
    return by_start, problems


def _recompute(receipts: list[LoggedReceipt]) -> list[str]:
    """The consumer's responses against the chain heads the provider signed."""
    problems: list[str] = []
    if not receipts:
        return problems
    first = receipts[0]
    head = genesis(first.transfer_id, first.agreement_id, first.chain)
    responses: dict[int, tuple[int, str]] = {}
    for r in receipts:
        for seq, n, d in r.responses:
            responses[seq] = (n, d)
    expected = 1
    for r in sorted(receipts, key=lambda r: r.seq_from):
        where = f"{r.where} {r.span}"
        # the chain runs through every response from the first: a gap breaks it
        admitted = " (the consumer logged the batch as unproven)" if r.unproven else ""
        missing = [n for n in range(expected, r.seq_to + 1) if n not in responses]
        if missing:
            problems.append(
                f"{where}: the consumer recorded no response {missing[0]}, so it cannot "
                f"prove what the receipt covers{admitted}"
            )
        else:
            total = 0
            for n in range(expected, r.seq_to + 1):
                size, digest = responses[n]
                head = chain_step(head, n, size, bytes.fromhex(digest))
                total += size if n >= r.seq_from else 0
            if head.hex() != r.chain_head or total != r.bytes:
                problems.append(
                    f"{where}: the consumer's record of the responses does not match the "
                    f"chain head and byte count the provider signed{admitted}"
                )
            else:
                expected = r.seq_to + 1
                continue
        # the chain goes on from the head the provider signed (its signature is checked)
        head, expected = bytes.fromhex(r.chain_head), r.seq_to + 1
    return problems


def cross_check(
    consumer_entries: Iterable[Entry],
    provider_entries: Iterable[Entry],
    provider_key: PublicKey,
    *,
    consumer_id: str | None = None,
) -> tuple[list[str], int]:
    """Every disagreement between the consumer's log and the provider's receipts, and the
    number of provider receipts checked. With ``consumer_id``, only the provider's receipts
    for that consumer are compared (the provider's log holds every consumer's)."""
    mine, problems = read_receipts(consumer_entries, provider_key, "consumer")
    theirs, theirs_problems = read_receipts(provider_entries, provider_key, "provider")
    problems += theirs_problems
    if consumer_id is not None:
        theirs = [r for r in theirs if r.participant_id in (None, consumer_id)]
    consumer_by: dict[tuple[str, str], list[LoggedReceipt]] = defaultdict(list)
    provider_by: dict[tuple[str, str], list[LoggedReceipt]] = defaultdict(list)
    for r in mine:
        consumer_by[(r.transfer_id, r.chain)].append(r)
    for r in theirs:
        provider_by[(r.transfer_id, r.chain)].append(r)
    for key in sorted(consumer_by.keys() | provider_by.keys()):
        where = _where(*key)
        cons, cons_problems = _sequence("consumer", consumer_by.get(key, []))
        prov, prov_problems = _sequence("provider", provider_by.get(key, []))
        problems += prov_problems + cons_problems
        for start in sorted(cons.keys() | prov.keys()):
            c, p = cons.get(start), prov.get(start)
            if c is None:
                assert p is not None
                problems.append(f"{where} {p.span}: the provider issued a receipt the consumer did not log")
            elif p is None:
                problems.append(
                    f"{where} {c.span}: the consumer logged a receipt the provider has no record of"
                )
            elif c.token != p.token:
                problems.append(f"{where} {c.span}: the two logs hold different receipts")
        problems += _recompute(list(cons.values()))
    return problems, len(theirs)


__all__ = ["RECEIPT_KIND", "LoggedReceipt", "cross_check", "read_receipts", "receipt_data"]
