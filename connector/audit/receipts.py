"""Usage receipts and the cross-check of both parties' records.

The provider's data plane signs a receipt for each response (or for a batch, with ``chain_head``
the head of the hash chain over the batch's responses). The signature is a detached compact JWS
(typ ``usage-receipt+jws``, format in `connector.audit.signing`) over the canonical JSON of every
other field. Both parties log the receipt as an audit entry of kind ``receipt`` whose ``data`` is
`Receipt.to_dict()` and whose ``transfer_id`` / ``agreement_id`` are the receipt's.

Receipt sequence numbers count per transfer from `FIRST_SEQ`, without gaps.
"""

from __future__ import annotations

import builtins
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from connector.audit.log import Entry
from connector.audit.signing import RECEIPT_TYP, Signer, canonical, sign_detached, verify_detached
from connector.identity.keys import PublicKey

RECEIPT_KIND = "receipt"
FIRST_SEQ = 0
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Receipt:
    transfer_id: str
    agreement_id: str
    seq: int
    bytes: int
    sha256: str
    time: str
    chain_head: str | None = None
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["signature"]
        if self.chain_head is None:
            del fields["chain_head"]
        return fields

    def payload(self) -> builtins.bytes:
        return canonical(self.signed_fields())

    def to_dict(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Receipt:
        try:
            receipt = cls(
                transfer_id=raw["transfer_id"],
                agreement_id=raw["agreement_id"],
                seq=raw["seq"],
                bytes=raw["bytes"],
                sha256=raw["sha256"],
                time=raw["time"],
                chain_head=raw.get("chain_head"),
                signature=raw.get("signature", ""),
            )
        except KeyError as exc:
            raise ValueError(f"not a receipt: missing {exc.args[0]}") from exc
        for name in ("transfer_id", "agreement_id", "sha256", "time", "signature"):
            if not isinstance(getattr(receipt, name), str):
                raise ValueError(f"not a receipt: {name} is not a string")
        for name in ("seq", "bytes"):
            value = getattr(receipt, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"not a receipt: {name} is not a non-negative integer")
        if not _HEX64.fullmatch(receipt.sha256):
            raise ValueError("not a receipt: sha256 is not 64 lowercase hex digits")
        if receipt.chain_head is not None and not (
            isinstance(receipt.chain_head, str) and _HEX64.fullmatch(receipt.chain_head)
        ):
            raise ValueError("not a receipt: chain_head is not 64 lowercase hex digits")
        return receipt

    @property
    def key(self) -> tuple[str, int]:
        return (self.transfer_id, self.seq)


def sign_receipt(
    signer: Signer,
    *,
    transfer_id: str,
    agreement_id: str,
    seq: int,
    bytes: int,
    sha256: str,
    time: str,
    chain_head: str | None = None,
) -> Receipt:
    unsigned = Receipt(transfer_id, agreement_id, seq, bytes, sha256, time, chain_head)
    Receipt.from_dict(unsigned.to_dict())  # the same shape rules a verifier applies
    return Receipt(
        transfer_id, agreement_id, seq, bytes, sha256, time, chain_head,
        signature=sign_detached(signer, unsigned.payload(), RECEIPT_TYP),
    )


def verify_receipt(receipt: Receipt, public_key: PublicKey) -> bool:
    return verify_detached(receipt.signature, receipt.payload(), public_key, RECEIPT_TYP)


def receipts_from_entries(entries: Iterable[Entry]) -> list[tuple[Entry, Receipt | str]]:
    """Each ``receipt`` entry with its parsed receipt, or the reason it is not one."""
    found: list[tuple[Entry, Receipt | str]] = []
    for entry in entries:
        if entry.kind != RECEIPT_KIND:
            continue
        try:
            found.append((entry, Receipt.from_dict(entry.data)))
        except ValueError as exc:
            found.append((entry, str(exc)))
    return found


def _where(transfer_id: str, seq: int) -> str:
    return f"transfer {transfer_id} seq {seq}"


def _gaps(side: str, by_transfer: Mapping[str, list[int]]) -> list[str]:
    problems: list[str] = []
    for transfer_id, seqs in sorted(by_transfer.items()):
        present = sorted(set(seqs))
        missing = sorted(set(range(FIRST_SEQ, present[-1] + 1)) - set(present))
        for seq in missing:
            problems.append(f"{_where(transfer_id, seq)}: missing from the {side} (a gap in the sequence)")
    return problems


def _differences(mine: Receipt, theirs: Receipt) -> str:
    names = [n for n in ("agreement_id", "bytes", "sha256", "time", "chain_head", "signature")
             if getattr(mine, n) != getattr(theirs, n)]
    return ", ".join(
        f"{n} {getattr(theirs, n)!r} (provider) vs {getattr(mine, n)!r} (consumer)"
        if n != "signature" else "signature"
        for n in names
    )


def cross_check(
    consumer_log_entries: Iterable[Entry],
    provider_receipts: Iterable[Receipt],
    provider_public_key: PublicKey,
) -> list[str]:
    """Every disagreement between the consumer's log and the provider's receipts.

    Checks: each receipt the consumer logged is well-formed, matches its entry's ids and verifies
    with the provider's key; each provider receipt verifies too; per transfer, sequence numbers
    on each side run from `FIRST_SEQ` without gaps or duplicates; every provider receipt is in the
    consumer's log, identical, and vice versa.
    """
    problems: list[str] = []
    consumer: dict[tuple[str, int], Receipt] = {}
    consumer_seqs: dict[str, list[int]] = defaultdict(list)
    for entry, parsed in receipts_from_entries(consumer_log_entries):
        if isinstance(parsed, str):
            problems.append(f"consumer log seq {entry.seq}: {parsed}")
            continue
        where = _where(parsed.transfer_id, parsed.seq)
        if entry.transfer_id is not None and entry.transfer_id != parsed.transfer_id:
            problems.append(
                f"{where}: logged under transfer {entry.transfer_id} (consumer log seq {entry.seq})"
            )
        if entry.agreement_id is not None and entry.agreement_id != parsed.agreement_id:
            problems.append(
                f"{where}: logged under agreement {entry.agreement_id} (consumer log seq {entry.seq})"
            )
        if not verify_receipt(parsed, provider_public_key):
            problems.append(
                f"{where}: receipt signature does not verify with the provider's key "
                f"(consumer log seq {entry.seq})"
            )
        if parsed.key in consumer:
            problems.append(f"{where}: logged more than once by the consumer (consumer log seq {entry.seq})")
            continue
        consumer[parsed.key] = parsed
        consumer_seqs[parsed.transfer_id].append(parsed.seq)

    provider: dict[tuple[str, int], Receipt] = {}
    provider_seqs: dict[str, list[int]] = defaultdict(list)
    for receipt in provider_receipts:
        where = _where(receipt.transfer_id, receipt.seq)
        if not verify_receipt(receipt, provider_public_key):
            problems.append(f"{where}: the provider's own receipt does not verify with its key")
        if receipt.key in provider:
            problems.append(f"{where}: issued more than once by the provider")
            continue
        provider[receipt.key] = receipt
        provider_seqs[receipt.transfer_id].append(receipt.seq)

    problems += _gaps("consumer's log", consumer_seqs)
    problems += _gaps("provider's receipts", provider_seqs)

    for key in sorted(provider.keys() | consumer.keys()):
        where = _where(*key)
        theirs, mine = provider.get(key), consumer.get(key)
        if mine is None:
            problems.append(f"{where}: the provider issued a receipt the consumer did not log")
        elif theirs is None:
            problems.append(f"{where}: the consumer logged a receipt the provider has no record of")
        elif mine != theirs:
            problems.append(f"{where}: the receipts differ: {_differences(mine, theirs)}")
    return problems
