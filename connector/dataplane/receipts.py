"""Usage receipts: a per-transfer hash chain over every response, signed in batches.

For response n (seq 1, 2, ...) carrying `bytes` bytes whose SHA-256 is `digest`:

    head_0 = sha256("usage-receipt-chain/1" 0x00 transfer_id 0x00 agreement_id)
    head_n = sha256(head_{n-1} || u64be(seq) || u64be(bytes) || digest)

A receipt is a compact JWS (typ `usage-receipt+jwt`) by the provider key over
{transfer_id, agreement_id, seq_from, seq_to, bytes, chain_head, time}: it commits to every
response up to seq_to, so one signature (~70 us) covers a whole batch. A receipt is signed when
the oldest unreceipted response is `interval` seconds old (checked as responses complete and by
`ReceiptBook.run`), and on `flush`/`finish`. The consumer's `ReceiptVerifier` recomputes the
chain from the responses it received and checks each receipt's signature and head.

Responses may finish out of order (concurrent requests of one transfer); the chain advances
over completed sequence numbers in order, so a receipt never skips a response.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity.jose import VerificationKey
from connector.identity.keys import SigningKey
from connector.wireformat import RECEIPT_TYP, WallClock

log = logging.getLogger(__name__)
_U64 = struct.Struct(">QQ")


class ReceiptError(Exception):
    """A receipt is missing, forged, or does not match the responses received."""


class ReceiptsNotCovered(ReceiptError):
    """Responses no receipt covers yet: the receipt of the last ones may still be on its way."""


def genesis(transfer_id: str, agreement_id: str, chain_id: str = "") -> bytes:
    """The head before the first response. ``chain_id`` names one replica's chain of a transfer
    (each provider process keeps its own chain; "" for the single chain of a lone process)."""
    return hashlib.sha256(
        b"usage-receipt-chain/1\x00"
        + transfer_id.encode()
        + b"\x00"
        + agreement_id.encode()
        + (b"\x00" + chain_id.encode() if chain_id else b"")
    ).digest()


def chain_step(head: bytes, seq: int, nbytes: int, digest: bytes) -> bytes:
    return hashlib.sha256(head + _U64.pack(seq, nbytes) + digest).digest()


class BodyHasher:
    """SHA-256 and length of the bytes actually sent, fed chunk by chunk."""

    __slots__ = ("_h", "nbytes")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.nbytes = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.nbytes += len(chunk)

    def digest(self) -> bytes:
        return self._h.digest()


@dataclass(slots=True)
class ReceiptChain:
    """The provider's chain for one transfer."""

    transfer_id: str
    agreement_id: str
    signer: SigningKey
    issuer: str
    interval: float = 1.0
    head: bytes = b""
    next_seq: int = 1  # next sequence number to hand out
    chained_to: int = 0  # responses folded into `head`
    receipted_to: int = 0  # responses covered by a signed receipt
    pending_bytes: int = 0  # bytes chained but not yet receipted
    oldest_pending: float | None = None  # when the oldest unreceipted response completed
    receipts: list[str] = field(default_factory=list)
    _done: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    consumer_id: str = ""
    x5c: tuple[str, ...] = ()  # the provider's certificate, so a consumer can tie the key to it
    chain_id: str = ""  # this process's chain of the transfer (X-Receipt-Chain; claim "chain")
    on_signed: Callable[[ReceiptChain, str], None] | None = None  # e.g. the provider's audit log

    def __post_init__(self) -> None:
        if not self.head:
            self.head = genesis(self.transfer_id, self.agreement_id, self.chain_id)

    def begin(self) -> int:
        """Reserve the sequence number of a response about to be sent (for X-Receipt-Seq)."""
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def complete(
        self, seq: int, nbytes: int, digest: bytes, now: float, *, broken: bool = False
    ) -> str | None:
        """Record what response `seq` actually sent; returns a receipt if one became due.

        Every begun response must be completed (with what was sent, even if the send failed
        half-way), or the chain stops advancing at it.
        """
        if not 0 < seq < self.next_seq or seq <= self.chained_to or seq in self._done:
            raise ValueError(f"response {seq} was not begun or is already complete")
        self._done[seq] = (nbytes, digest)
        if self.oldest_pending is None:
            self.oldest_pending = now
        while self.chained_to + 1 in self._done:
            n = self.chained_to + 1
            size, d = self._done.pop(n)
            self.head = chain_step(self.head, n, size, d)
            self.pending_bytes += size
            self.chained_to = n
        # a response that broke off (cut off, client gone) ends its batch at once: the consumer
        # cannot prove that batch, and no response after it should share it
        return self.flush(now) if broken or self.due(now) else None

    def due(self, now: float) -> bool:
        return self.oldest_pending is not None and now - self.oldest_pending >= self.interval

    def flush(self, now: float) -> str | None:
        """Sign a receipt over every chained, unreceipted response (None if there is none)."""
        if self.chained_to == self.receipted_to:
            return None
        claims = {
            "iss": self.issuer,
            "transfer_id": self.transfer_id,
            "agreement_id": self.agreement_id,
            "seq_from": self.receipted_to + 1,
            "seq_to": self.chained_to,
            "bytes": self.pending_bytes,
            "chain_head": self.head.hex(),
            "time": round(now, 3),
        }
        if self.chain_id:
            claims["chain"] = self.chain_id
        headers: dict[str, Any] = {"kid": self.signer.kid, "typ": RECEIPT_TYP}
        if self.x5c:
            headers["x5c"] = list(self.x5c)
        token = jwt.encode(claims, self.signer.private_key, algorithm=self.signer.alg, headers=headers)
        self.receipts.append(token)
        if self.on_signed is not None:
            try:
                self.on_signed(self, token)
            except Exception:  # the receipt stands; a failing log must not break the data path
                log.exception("recording receipt of %s failed", self.transfer_id)
        self.receipted_to = self.chained_to
        self.pending_bytes = 0
        # responses still out of order stay pending; their age restarts now (bounded delay)
        self.oldest_pending = now if self._done else None
        return token


class ReceiptBook:
    """The data plane's chains, one per transfer, and the ticker that keeps receipts flowing."""

    def __init__(
        self,
        signer: SigningKey,
        issuer: str,
        *,
        interval: float = 1.0,
        clock: WallClock = time.time,
        certificate: x509.Certificate | None = None,
        on_signed: Callable[[ReceiptChain, str], None] | None = None,
        consumer_of: Callable[[str], str] | None = None,
        chain_id: str = "",
    ) -> None:
        self.consumer_of = consumer_of
        self.shared: Any = None  # where the wiring keeps every replica's receipts (SharedReceipts)
        # several provider processes serve one transfer: each signs its own chain, named so
        self.chain_id = chain_id
        self.signer = signer
        self.issuer = issuer
        self.x5c: tuple[str, ...] = (
            (base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode(),)
            if certificate is not None
            else ()
        )
        self.on_signed = on_signed
        self.interval = interval
        self.clock = clock
        self.chains: dict[str, ReceiptChain] = {}

    def chain(self, transfer_id: str, agreement_id: str, consumer_id: str = "") -> ReceiptChain:
        chain = self.chains.get(transfer_id)
        if chain is None:
            if not consumer_id and self.consumer_of is not None:
                consumer_id = self.consumer_of(transfer_id)
            chain = self.chains[transfer_id] = ReceiptChain(
                transfer_id,
                agreement_id,
                self.signer,
                self.issuer,
                self.interval,
                consumer_id=consumer_id,
                x5c=self.x5c,
                on_signed=self.on_signed,
                chain_id=self.chain_id,
            )
        elif chain.agreement_id != agreement_id:
            raise ValueError("transfer is bound to another agreement")
        return chain

    def flush_due(self, now: float) -> int:
        """Sign receipts for every chain whose oldest unreceipted response is due."""
        n = 0
        for chain in self.chains.values():
            if chain.due(now) and chain.flush(now) is not None:
                n += 1
        return n

    def finish(self, transfer_id: str, now: float) -> list[str]:
        """End of the transfer: a final receipt, and the transfer's receipts (chain dropped)."""
        chain = self.chains.pop(transfer_id, None)
        if chain is None:
            return []
        chain.flush(now)
        return chain.receipts

    async def run(self) -> None:
        """Flush due receipts every `interval / 4` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval / 4)
            self.flush_due(self.clock())


# --- consumer side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a verified set of receipts proves: responses 1..seq_to, `bytes` bytes in all."""

    seq_to: int
    bytes: int
    receipts: int


def certified_key(token: str, *, ca: x509.Certificate, provider_id: str, now: float) -> VerificationKey:
    """The key a receipt is signed with, taken from the certificate in its `x5c` header once that
    certificate is shown to be the provider's: issued by the data-space CA, valid now, naming
    ``provider_id``. So the consumer trusts receipts by the provider's identity, not by where it
    fetched a key from."""
    from connector.identity.ca import participant_id
    from connector.identity.keys import algorithm_of

    try:
        header = jwt.get_unverified_header(token)
        chain = header.get("x5c")
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            raise ReceiptError("receipt: no certificate (x5c) to tie its key to the provider")
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (jwt.PyJWTError, ValueError) as exc:
        raise ReceiptError(f"receipt: malformed header ({exc})") from None
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        raise ReceiptError("receipt: the certificate is not issued by this data space's CA") from None
    moment = datetime.fromtimestamp(now, UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise ReceiptError("receipt: the provider's certificate is not valid now")
    try:
        who = participant_id(cert)
    except Exception:
        raise ReceiptError("receipt: the certificate names no participant") from None
    if who != provider_id:
        raise ReceiptError("receipt: signed by another participant than the provider")
    key = cert.public_key()
    alg = algorithm_of(key)
    if header.get("alg") != alg:
        raise ReceiptError("receipt: its alg does not match the certificate's key")
    return VerificationKey(kid=header.get("kid"), alg=alg, key=key)  # type: ignore[arg-type]


def certified_keys(*, ca: x509.Certificate, provider_id: str, now: float) -> Callable[[str], VerificationKey]:
    """`certified_key` per receipt (a provider may have renewed its key or certificate between
    two chains), each certificate checked once."""
    cache: dict[str, VerificationKey] = {}

    def key_for(token: str) -> VerificationKey:
        try:
            x5c = jwt.get_unverified_header(token).get("x5c")
            marker = str(x5c[0]) if isinstance(x5c, list) and x5c else ""
        except jwt.PyJWTError:
            marker = ""
        found = cache.get(marker) if marker else None
        if found is None:
            found = certified_key(token, ca=ca, provider_id=provider_id, now=now)
            if marker:
                cache[marker] = found
        return found

    return key_for


@dataclass(frozen=True, slots=True)
class Verified:
    """What `ReceiptVerifier.verify_lenient` established."""

    coverage: Coverage
    unproven: frozenset[str]  # receipts whose batch the consumer cannot prove (logged as such)


class ReceiptVerifier:
    """The consumer's check that the provider's receipts cover every response it received."""

    def __init__(
        self,
        key: VerificationKey | Callable[[str], VerificationKey],
        *,
        transfer_id: str,
        agreement_id: str,
        issuer: str | None = None,
    ) -> None:
        self._key_for = key if callable(key) else None
        self.key = key if not callable(key) else None
        self.transfer_id = transfer_id
        self.agreement_id = agreement_id
        self.issuer = issuer
        self._responses: dict[tuple[str, int], tuple[int, bytes]] = {}

    def add(self, seq: int, nbytes: int, digest: bytes, chain: str = "") -> None:
        if (chain, seq) in self._responses:
            raise ReceiptError(f"response {seq} received twice")
        self._responses[(chain, seq)] = (nbytes, digest)

    def add_body(self, seq: int, body: bytes, chain: str = "") -> None:
        self.add(seq, len(body), hashlib.sha256(body).digest(), chain)

    def decode(self, token: str) -> dict[str, Any]:
        key = self._key_for(token) if self._key_for is not None else self.key
        assert key is not None
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != RECEIPT_TYP or header.get("alg") != key.alg:
                raise ReceiptError("receipt: wrong typ or alg")
            if header.get("kid") not in (None, key.kid):
                raise ReceiptError("receipt: signed by another key")
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[key.alg], options={"verify_aud": False}
            )
        except jwt.PyJWTError as exc:
            raise ReceiptError(f"receipt: invalid signature or format ({exc})") from None
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise ReceiptError("receipt: wrong issuer")
        if claims.get("transfer_id") != self.transfer_id or claims.get("agreement_id") != self.agreement_id:
            raise ReceiptError("receipt: for another transfer or agreement")
        for name in ("seq_from", "seq_to", "bytes"):
            if type(claims.get(name)) is not int:
                raise ReceiptError(f"receipt: claim {name!r} must be an integer")
        if not isinstance(claims.get("chain_head"), str):
            raise ReceiptError("receipt: missing chain_head")
        if not isinstance(claims.get("chain", ""), str):
            raise ReceiptError("receipt: claim 'chain' must be a string")
        return claims

    def verify(self, receipts: Sequence[str], *, require_all: bool = True) -> Coverage:
        """Check `receipts` (in issue order) against the responses added.

        The chain is recomputed from the responses received; every receipt must continue the
        previous one, carry the recomputed head and byte count, and (with `require_all`) the
        receipts must cover every response received. A response the consumer did not receive
        but a receipt claims makes the head unverifiable, and is reported as such.
        """
        chains: dict[str, tuple[bytes, int]] = {}  # chain -> (head, last seq)
        total = 0
        for token in receipts:
            claims = self.decode(token)
            chain = claims.get("chain", "")
            head, seq = chains.get(chain) or (genesis(self.transfer_id, self.agreement_id, chain), 0)
            if claims["seq_from"] != seq + 1 or claims["seq_to"] < claims["seq_from"]:
                raise ReceiptError(
                    f"receipt for {claims['seq_from']}..{claims['seq_to']} does not continue at {seq + 1}"
                )
            batch = 0
            for n in range(claims["seq_from"], claims["seq_to"] + 1):
                got = self._responses.get((chain, n))
                if got is None:
                    raise ReceiptError(f"receipt covers response {n}, which was not received")
                head = chain_step(head, n, got[0], got[1])
                batch += got[0]
            if claims["chain_head"] != head.hex():
                raise ReceiptError(
                    f"chain head mismatch at response {claims['seq_to']}: a response differs "
                    "from what the provider sent"
                )
            if claims["bytes"] != batch:
                raise ReceiptError(f"byte count mismatch in receipt up to {claims['seq_to']}")
            chains[chain] = (head, claims["seq_to"])
            total += batch
        if require_all:
            missing = sorted(n for c, n in self._responses if n > chains.get(c, (b"", 0))[1])
            if missing:
                raise ReceiptsNotCovered(f"responses {missing[:5]} are not covered by any receipt")
        seq = max((last for _, last in chains.values()), default=0)
        return Coverage(seq, total, len(receipts))

    def verify_lenient(self, receipts: Sequence[str], must: set[tuple[str, int]]) -> Verified:
        """Check `receipts` proving at least the responses in `must` ((chain, seq)).

        A batch the consumer cannot recompute (a response it never got, or got cut off, as the
        provider recorded it sent) is *unproven*: its signature is checked, and the chain goes
        on from the head it signs; every response in `must` has to be in a proven batch, and
        covered (else ReceiptError; ReceiptsNotCovered when a receipt may still be on its way)."""
        chains: dict[str, tuple[bytes, int]] = {}
        total = 0
        unproven: set[str] = set()
        proven: set[tuple[str, int]] = set()
        for token in receipts:
            claims = self.decode(token)
            chain = claims.get("chain", "")
            head, seq = chains.get(chain) or (genesis(self.transfer_id, self.agreement_id, chain), 0)
            if claims["seq_from"] != seq + 1 or claims["seq_to"] < claims["seq_from"]:
                raise ReceiptError(
                    f"receipt for {claims['seq_from']}..{claims['seq_to']} does not continue at {seq + 1}"
                )
            span = range(claims["seq_from"], claims["seq_to"] + 1)
            batch = 0
            ok = True
            for n in span:
                got = self._responses.get((chain, n))
                if got is None:
                    ok = False
                    break
                head = chain_step(head, n, got[0], got[1])
                batch += got[0]
            ok = ok and claims["chain_head"] == head.hex() and claims["bytes"] == batch
            if ok:
                proven.update((chain, n) for n in span)
                total += batch
            else:
                needed = [n for n in span if (chain, n) in must]
                if needed:
                    raise ReceiptError(
                        f"response {needed[0]} differs from what the provider signed for (or a "
                        "response batched with it was not received as sent)"
                    )
                unproven.add(token)
                head = bytes.fromhex(claims["chain_head"])
            chains[chain] = (head, claims["seq_to"])
        missing = sorted(n for c, n in must if (c, n) not in proven)
        if missing:
            raise ReceiptsNotCovered(f"responses {missing[:5]} are not covered by any receipt")
        seq = max((last for _, last in chains.values()), default=0)
        return Verified(Coverage(seq, total, len(receipts) - len(unproven)), frozenset(unproven))
