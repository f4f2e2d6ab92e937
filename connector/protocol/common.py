"""What both state machines share: roles, the events the runtime and the edge feed in, what comes
out (outgoing messages, the HTTP response), and the rules for a message that arrives while one
of ours is still unacknowledged.

How the two sides stay in step (DSP: a process enters a state when the counter-party acknowledges
the message that causes it):

* A local command puts the process in a *sending* state (REQUESTING, AGREEING, ...) and emits one
  message with a fresh message id; ``Acknowledged(message id)`` from the outbox moves it into the
  DSP state. The receiver enters that state when it accepts the message (its 2xx response).
* A message that arrives while ours is unacknowledged is taken when it is valid in the state ours
  leads to (the counter-party could only send it after taking ours: an implicit acknowledgement),
  or when it crossed ours on the wire and is at least as final (termination > finalization or
  completion > anything else). Otherwise it is refused with 400, and the counter-party will in
  turn take ours.
* A message the counter-party refuses, or that cannot be delivered, leaves the sides out of step:
  the process is terminated (DSP: "in case the states differ, the CN is terminated"). A process
  never claims TERMINATED on its own when its last message may have finalized or completed it at
  the counter-party: it then stays TERMINATING (``in_doubt``) until the counter-party answers.
* A message already taken in is recognized by its fingerprint and answered again with no effect,
  as long as the process is not terminal. A terminal process (FINALIZED, TERMINATED, COMPLETED)
  refuses every further message with 400, a re-delivered one too (DSP: "Terminal states are
  final"). So a sender whose acknowledgement was lost may get a 400 for a message the
  counter-party did take: on a refusal the runtime asks the counter-party for its process state
  (``GET .../{pid}``) and reports it in ``DeliveryFailed.peer_state``; when the counter-party is
  already in the state our message leads to, the refusal counts as the acknowledgement
  (``StateTable.settled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import uuid4

from connector.protocol.messages import DspModel

MAX_PROCESSED = 64  # fingerprints of inbound messages kept per process for de-duplication


class Role(StrEnum):
    PROVIDER = "PROVIDER"
    CONSUMER = "CONSUMER"

    @property
    def other(self) -> Role:
        return Role.CONSUMER if self is Role.PROVIDER else Role.PROVIDER


def new_uuid() -> str:
    """The default identifier factory (processes, agreements, outbox message ids)."""
    return f"urn:uuid:{uuid4()}"


@dataclass(frozen=True)
class Outgoing:
    """A message for the outbox: POST ``message.to_wire()`` to ``url``; report the outcome with
    ``Acknowledged(message_id, body)`` or ``DeliveryFailed(message_id, permanent)``."""

    message: DspModel
    address: str  # the counter-party's base URL (DSP endpoint or callbackAddress)
    path: str  # the DSP path under it, e.g. /negotiations/urn:uuid:.../agreement
    message_id: str

    @property
    def url(self) -> str:
        return self.address.rstrip("/") + self.path


@dataclass(frozen=True)
class Response:
    """What the HTTP edge answers to an inbound message: 201 for the message that created the
    process, 200 after; ``body`` is the ACK (ContractNegotiation / TransferProcess)."""

    status: int
    body: DspModel


@dataclass(frozen=True)
class Received:
    """An inbound DSP message. ``sender`` is the participant id the edge authenticated (DAT);
    ``agreement`` is the edge's check of the agreement a TransferRequestMessage names; ``offer``
    its check that the offer of an initial ContractRequestMessage is one the provider knows."""

    message: DspModel
    sender: str
    agreement: AgreementCheck | None = None
    offer: OfferCheck | None = None


@dataclass(frozen=True)
class AgreementCheck:
    """Whether a transfer may be started under the named agreement, and why not."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class OfferCheck:
    """Whether the provider knows the offer a consumer asks for by its ``@id``, and why not."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Acknowledged:
    """The counter-party answered 2xx to an outbox message (``body``: its response, if any)."""

    message_id: str
    body: DspModel | None = None


@dataclass(frozen=True)
class DeliveryFailed:
    """An outbox message failed: ``permanent`` when the counter-party refused it (4xx) or the
    retries are exhausted; a transient failure changes nothing (the outbox retries).
    ``peer_state`` is the DSP state the counter-party reported for the process after refusing
    it (None: not asked, or it has no such process)."""

    message_id: str
    permanent: bool
    reason: str = ""
    peer_state: str | None = None


@dataclass(frozen=True)
class StateTable:
    """A DSP state machine: ``(from wire state | None, message kind) -> (to, senders)``."""

    transitions: Mapping[tuple[Any, str], tuple[Any, frozenset[Role]]]
    sending: Mapping[Any, Any]  # sending state -> the DSP state its acknowledgement enters
    terminated: Any
    success: frozenset[Any]  # the other terminal states (FINALIZED / COMPLETED)

    @property
    def terminal(self) -> frozenset[Any]:
        return self.success | {self.terminated}

    def rank(self, target: Any) -> int:
        return 3 if target == self.terminated else 2 if target in self.success else 1

    def allowed(self, frm: Any, kind: str, sender: Role) -> Any | None:
        """The DSP state ``kind`` from ``sender`` leads to from ``frm``, or None."""
        entry = self.transitions.get((frm, kind))
        return entry[0] if entry is not None and sender in entry[1] else None

    def resolve(self, state: Any, wire: Any, kind: str, sender: Role) -> tuple[Any, Any] | None:
        """(the DSP state the message is taken from, the state it leads to), or None."""
        if state in self.terminal:
            return None
        target = self.sending.get(state)
        if target is None:
            to = self.allowed(state, kind, sender)
            return (state, to) if to is not None else None
        if target not in self.terminal:
            to = self.allowed(target, kind, sender)
            if to is not None:
                return target, to  # implicitly acknowledges ours
        if wire is not None:
            to = self.allowed(wire, kind, sender)
            if to is not None and self.rank(to) >= self.rank(target):
                return wire, to  # crossed ours on the wire and wins
        return None

    def leads_to(self, kind: str) -> Any:
        """The DSP state a message of ``kind`` puts the process in where it is taken."""
        return next(to for (_, k), (to, _) in self.transitions.items() if k == kind)

    def settled(self, state: Any, peer_state: str | None, *, in_doubt: bool) -> Any | None:
        """The DSP state a refused message of ours leaves us in when the counter-party reports
        ``peer_state``, or None when the refusal stands.

        The counter-party is already where our message leads (it took the message and refused
        only a re-delivery of it, its acknowledgement having been lost): that state. A
        termination sent while our finalization or completion was in doubt, refused by a
        counter-party that reports FINALIZED / COMPLETED: the finalization was taken, that state.
        """
        target = self.sending.get(state)
        if peer_state is None or target is None:
            return None
        if peer_state == target:
            return target
        if in_doubt and target == self.terminated:
            return next((s for s in self.success if s == peer_state), None)
        return None


def remember(processed: tuple[str, ...], fingerprint: str) -> tuple[str, ...]:
    if fingerprint in processed:
        return processed
    return (*processed, fingerprint)[-MAX_PROCESSED:]


def reasons_text(reasons: Any) -> tuple[str, ...]:
    if not reasons:
        return ()
    return tuple(r if isinstance(r, str) else str(r) for r in reasons)
