"""The DSP 2025-1 transfer process state machine, for both roles, as a pure function:
``apply(transfer | None, event, now) -> Transition``.

DSP transitions (C = consumer sends, P = provider sends)::

    (new)     --TransferRequestMessage C-->              REQUESTED
    REQUESTED --TransferStartMessage P-->                STARTED
    STARTED   --TransferSuspensionMessage P/C-->         SUSPENDED
    STARTED   --TransferCompletionMessage P/C-->         COMPLETED
    SUSPENDED --TransferStartMessage P/C--> (resume)     STARTED
    REQUESTED, STARTED, SUSPENDED --TerminationMessage P/C--> TERMINATED

Formats: ``HttpData-PULL`` (the provider's start message carries the dataAddress the consumer
pulls from) and ``HttpData-PUSH`` (the request carries the consumer's dataAddress).

The provider takes a TransferRequestMessage only under a FINALIZED agreement whose consumer is
the caller: the edge checks that (``check_agreement`` does it from the stored negotiation) and
passes the result in ``Received(..., agreement=AgreementCheck(...))``; without it the request is
refused (fail closed). A consumer may resume only a transfer the provider has not suspended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from connector.protocol.common import (
    Acknowledged,
    AgreementCheck,
    DeliveryFailed,
    Outgoing,
    Received,
    Response,
    Role,
    StateTable,
    new_uuid,
    reasons_text,
    remember,
)
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import (
    PULL,
    PUSH,
    DataAddress,
    DspModel,
    TransferCompletionMessage,
    TransferError,
    TransferProcess,
    TransferRequestMessage,
    TransferStartMessage,
    TransferStateName,
    TransferSuspensionMessage,
    TransferTerminationMessage,
)
from connector.protocol.negotiation import Negotiation, NegotiationState

SUPPORTED_FORMATS = (PULL, PUSH)


class TransferState(StrEnum):
    # DSP states
    REQUESTED = "REQUESTED"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"
    # internal: our message is out, not yet acknowledged
    REQUESTING = "REQUESTING"
    STARTING = "STARTING"
    SUSPENDING = "SUSPENDING"
    COMPLETING = "COMPLETING"
    TERMINATING = "TERMINATING"

    @property
    def is_sending(self) -> bool:
        return self in SENDING

    @property
    def is_terminal(self) -> bool:
        return self in (S.COMPLETED, S.TERMINATED)

    @property
    def is_serving(self) -> bool:
        """The provider has sent its start (STARTED, or STARTING while the start message is
        out): its data plane serves the transfer (the consumer can hold the token only if it
        got the start)."""
        return self in (S.STARTED, S.STARTING)

    @property
    def is_running(self) -> bool:
        """Started and not ended: serving, or suspended (a pull's token may be refreshed)."""
        return self in (S.STARTED, S.STARTING, S.SUSPENDED)

    @property
    def awaits_push(self) -> bool:
        """Consumer of a push: the provider's data may arrive (requested or started; STARTING:
        this consumer resumed and the provider's answer may trail its push)."""
        return self in (S.REQUESTED, S.STARTED, S.STARTING)

    @property
    def is_ended(self) -> bool:
        """Completed or terminated, or our completion / termination is out (it may already be
        taken): no data is served for it any more, so its tokens are not refreshed either."""
        return self in ENDED


S = TransferState
SENDING: dict[TransferState, TransferState] = {
    S.REQUESTING: S.REQUESTED,
    S.STARTING: S.STARTED,
    S.SUSPENDING: S.SUSPENDED,
    S.COMPLETING: S.COMPLETED,
    S.TERMINATING: S.TERMINATED,
}
WIRE_STATES = (S.REQUESTED, S.STARTED, S.SUSPENDED, S.COMPLETED, S.TERMINATED)
ENDED = frozenset({S.COMPLETED, S.TERMINATED, S.COMPLETING, S.TERMINATING})
NON_TERMINAL = (S.REQUESTED, S.STARTED, S.SUSPENDED)

REQUEST_INITIAL, START, SUSPENSION = "request-initial", "start", "suspension"
COMPLETION, TERMINATION = "completion", "termination"
KINDS = (REQUEST_INITIAL, START, SUSPENSION, COMPLETION, TERMINATION)

_C, _P, _BOTH = frozenset({Role.CONSUMER}), frozenset({Role.PROVIDER}), frozenset(Role)
TRANSITIONS: dict[tuple[TransferState | None, str], tuple[TransferState, frozenset[Role]]] = {
    (None, REQUEST_INITIAL): (S.REQUESTED, _C),
    (S.REQUESTED, START): (S.STARTED, _P),
    (S.STARTED, SUSPENSION): (S.SUSPENDED, _BOTH),
    (S.STARTED, COMPLETION): (S.COMPLETED, _BOTH),
    (S.SUSPENDED, START): (S.STARTED, _BOTH),
    **{(s, TERMINATION): (S.TERMINATED, _BOTH) for s in NON_TERMINAL},
}
TABLE = StateTable(TRANSITIONS, SENDING, S.TERMINATED, frozenset({S.COMPLETED}))
SENDER_OF: dict[str, frozenset[Role]] = {}
for (_, _kind), (_, _senders) in TRANSITIONS.items():
    SENDER_OF[_kind] = SENDER_OF.get(_kind, frozenset()) | _senders

_PATHS = {
    REQUEST_INITIAL: "/transfers/request",
    START: "/transfers/{pid}/start",
    SUSPENSION: "/transfers/{pid}/suspension",
    COMPLETION: "/transfers/{pid}/completion",
    TERMINATION: "/transfers/{pid}/termination",
}
_DESCRIBE = {
    REQUEST_INITIAL: "a TransferRequestMessage",
    START: "a TransferStartMessage",
    SUSPENSION: "a TransferSuspensionMessage",
    COMPLETION: "a TransferCompletionMessage",
    TERMINATION: "a TransferTerminationMessage",
}


def message_kind(msg: DspModel) -> str:
    kind = {
        TransferRequestMessage: REQUEST_INITIAL,
        TransferStartMessage: START,
        TransferSuspensionMessage: SUSPENSION,
        TransferCompletionMessage: COMPLETION,
        TransferTerminationMessage: TERMINATION,
    }.get(type(msg))
    if kind is None:
        raise ProtocolError(400, "400", [f"{type(msg).__name__} is not a transfer process message"])
    return kind


# ----------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class Transfer:
    """One transfer process as this connector keeps it (either role)."""

    id: str  # this side's process id (providerPid / consumerPid)
    role: Role
    provider_pid: str | None
    consumer_pid: str | None
    state: TransferState
    counter_party_id: str
    counter_party_address: str
    agreement_id: str
    format: str
    created_at: datetime
    updated_at: datetime
    data_address: DataAddress | None = None  # pull: the provider's endpoint; push: the consumer's
    suspended_by: frozenset[Role] = frozenset()
    suspension_reason: tuple[str, ...] = ()
    suspension_code: str | None = None
    termination_reason: tuple[str, ...] = ()
    termination_code: str | None = None
    processed: tuple[str, ...] = ()
    origin: str | None = None
    pending_message_id: str | None = None
    acked_state: TransferState | None = None
    in_doubt: bool = False  # terminating after a completion that may have been taken
    delivery_error: str | None = field(default=None, compare=False)

    @property
    def wire_state(self) -> TransferState:
        if not self.state.is_sending:
            return self.state
        return self.acked_state if self.acked_state is not None else SENDING[self.state]

    @property
    def peer_pid(self) -> str | None:
        return self.consumer_pid if self.role is Role.PROVIDER else self.provider_pid

    @property
    def peer_status_path(self) -> str | None:
        """Where the counter-party tells its state of this transfer (GET, under its address)."""
        return f"/transfers/{self.peer_pid}" if self.peer_pid is not None else None

    def to_dsp(self) -> TransferProcess:
        return TransferProcess(
            provider_pid=self.provider_pid or "",
            consumer_pid=self.consumer_pid or "",
            state=cast(TransferStateName, self.wire_state.value),
        )

    def error_body(self, err: ProtocolError) -> TransferError:
        return transfer_error(err, self.provider_pid, self.consumer_pid)


def transfer_error(err: ProtocolError, provider_pid: str | None, consumer_pid: str | None) -> TransferError:
    return TransferError(
        provider_pid=provider_pid or "",
        consumer_pid=consumer_pid or "",
        code=err.code,
        reason=list(err.reasons),
    )


def check_agreement(negotiation: Negotiation | None, *, agreement_id: str, caller: str) -> AgreementCheck:
    """Whether ``caller`` may start a transfer under ``agreement_id`` (from the provider's stored
    negotiation that produced it): FINALIZED, and its consumer is the caller."""
    if negotiation is None or negotiation.agreement is None:
        return AgreementCheck(False, f"no agreement {agreement_id}")
    if negotiation.agreement.get("@id") != agreement_id or negotiation.role is not Role.PROVIDER:
        return AgreementCheck(False, f"no agreement {agreement_id}")
    consumer = negotiation.agreement.get("assignee")
    if caller not in (consumer, negotiation.counter_party_id) or consumer != negotiation.counter_party_id:
        # the same answer as for a missing agreement: its existence is not the caller's business
        return AgreementCheck(False, f"no agreement {agreement_id}")
    if negotiation.state is not NegotiationState.FINALIZED:
        return AgreementCheck(
            False, f"agreement {agreement_id} is not finalized (negotiation {negotiation.wire_state.value})"
        )
    return AgreementCheck(True, f"agreement {agreement_id} is finalized for {caller}")


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Request:
    """Consumer: request a transfer under a finalized agreement."""

    agreement_id: str
    format: str
    provider_address: str
    callback_address: str
    provider_id: str
    data_address: DataAddress | None = None  # push: where the provider sends the data
    process_id: str | None = None  # the consumerPid to use (push: it names the data address)


@dataclass(frozen=True)
class Start:
    """Provider: start a requested transfer (pull: with the dataAddress to pull from)."""

    data_address: DataAddress | None = None


@dataclass(frozen=True)
class Resume:
    """Either side: resume a suspended transfer (a TransferStartMessage from SUSPENDED)."""

    data_address: DataAddress | None = None


@dataclass(frozen=True)
class Suspend:
    reason: str
    code: str | None = None


@dataclass(frozen=True)
class Complete:
    """Either side: the transfer has completed."""


@dataclass(frozen=True)
class Terminate:
    reason: str
    code: str | None = None


Command = Request | Start | Resume | Suspend | Complete | Terminate
Event = Received | Acknowledged | DeliveryFailed | Command


@dataclass(frozen=True)
class Transition:
    transfer: Transfer
    outgoing: list[Outgoing] = field(default_factory=list)
    response: Response | None = None
    duplicate: bool = False  # a message already taken in: nothing to persist


# ----------------------------------------------------------------------------- apply


def apply(
    t: Transfer | None, event: Event, now: datetime, *, new_id: Callable[[], str] = new_uuid
) -> Transition:
    """The next state of ``t`` after ``event``; raises ``ProtocolError`` for what DSP forbids."""
    if isinstance(event, Received):
        return _receive(t, event, now, new_id)
    if isinstance(event, Request):
        return _request(t, event, now, new_id)
    if t is None:
        raise ProtocolError(404, "404", ["no such transfer process"])
    if isinstance(event, Acknowledged):
        return _acknowledged(t, event, now)
    if isinstance(event, DeliveryFailed):
        return _failed(t, event, now, new_id)
    return _command(t, event, now, new_id)


def _bad(reason: str, t: Transfer | None = None, status: int = 400) -> ProtocolError:
    return ProtocolError(status, str(status), [reason], transfer=t)


def _send(t: Transfer, kind: str, msg: DspModel, new_id: Callable[[], str]) -> Outgoing:
    pid = t.provider_pid if t.role is Role.CONSUMER else t.consumer_pid
    return Outgoing(msg, t.counter_party_address, _PATHS[kind].format(pid=pid), new_id())


def _pids(t: Transfer) -> dict[str, Any]:
    return {"provider_pid": t.provider_pid, "consumer_pid": t.consumer_pid}


def _check_address(
    fmt: str,
    address: DataAddress | None,
    *,
    who: str,
    required: bool,
    t: Transfer | None = None,
    status: int = 400,
) -> None:
    if fmt == PULL and who == "consumer" and address is not None:
        raise _bad("a pull transfer's request carries no dataAddress", t, status)
    if fmt == PUSH and who == "provider" and address is not None:
        raise _bad("a push transfer's start message carries no dataAddress", t, status)
    if required and address is None:
        raise _bad(
            f"{'a push transfer request' if fmt == PUSH else 'the start of a pull transfer'} needs "
            "a dataAddress",
            t,
            status,
        )


# --- inbound ----------------------------------------------------------------------------------


def _receive(t: Transfer | None, ev: Received, now: datetime, new_id: Callable[[], str]) -> Transition:
    msg = ev.message
    kind = message_kind(msg)
    fp = msg.fingerprint()
    if t is None:
        if kind != REQUEST_INITIAL:
            raise _bad("no such transfer process", status=404)
        assert isinstance(msg, TransferRequestMessage)
        return _create(msg, fp, ev, now, new_id)
    if ev.sender != t.counter_party_id:
        raise _bad(f"no transfer process {t.id} for {ev.sender}", status=404)
    sender = t.role.other
    if sender not in SENDER_OF[kind]:
        raise _bad(f"a {t.role.value.lower()} does not receive {_DESCRIBE[kind]}", t)
    if t.state.is_terminal:
        # DSP: terminal states are final. A re-delivery too: its sender resolves that from our
        # state (common.StateTable.settled), never from a 2xx that would hide the refusal.
        raise _bad(
            f"transfer process {t.id} is {t.state.value}, a terminal state: {_DESCRIBE[kind]} is "
            "not taken any more",
            t,
        )
    if kind == REQUEST_INITIAL:
        if fp in t.processed:
            return _duplicate(t, fp)
        raise _bad(
            f"a transfer process with consumerPid {t.consumer_pid} already exists; a new transfer "
            "needs a new consumerPid",
            t,
        )
    checked = _check_pids(t, msg)
    resolved = TABLE.resolve(t.state, t.acked_state, kind, sender)
    if resolved is None:
        if fp in t.processed:
            return _duplicate(t, fp)
        state = t.wire_state.value + (f" (our {t.state.value} is in flight)" if t.state.is_sending else "")
        raise _bad(f"{_DESCRIBE[kind]} is not allowed in state {state}", t)
    frm, to = resolved
    changes: dict[str, Any] = {
        "state": to,
        "acked_state": to,
        "pending_message_id": None,
        "in_doubt": False,
        "processed": remember(t.processed, fp),
        "updated_at": now,
    }
    if isinstance(msg, TransferStartMessage):
        if t.role is Role.PROVIDER:  # a consumer's attempt to resume
            if Role.PROVIDER in t.suspended_by:
                raise _bad("the provider suspended this transfer; only the provider resumes it", t)
            if t.format == PULL and msg.data_address is not None:
                raise _bad("a consumer resuming a pull transfer sends no dataAddress", t)
        else:
            _check_address(
                t.format,
                msg.data_address,
                who="provider",
                required=t.format == PULL and frm is S.REQUESTED,
                t=t,
            )
        if msg.data_address is not None:
            changes["data_address"] = msg.data_address
        changes["suspended_by"] = frozenset()
    elif isinstance(msg, TransferSuspensionMessage):
        changes["suspended_by"] = t.suspended_by | {sender}
        changes["suspension_reason"] = reasons_text(msg.reason)
        changes["suspension_code"] = msg.code
    elif isinstance(msg, TransferTerminationMessage):
        changes["termination_reason"] = reasons_text(msg.reason)
        changes["termination_code"] = msg.code
    t = replace(checked, **changes)
    return Transition(t, [], Response(200, t.to_dsp()))


def _create(
    msg: TransferRequestMessage, fp: str, ev: Received, now: datetime, new_id: Callable[[], str]
) -> Transition:
    check = ev.agreement
    if check is None or not check.ok:
        raise _bad(check.reason if check is not None else "the agreement was not checked (fail closed)")
    if msg.format not in SUPPORTED_FORMATS:
        raise _bad(f"format {msg.format!r} is not supported (use {' or '.join(SUPPORTED_FORMATS)})")
    _check_address(msg.format, msg.data_address, who="consumer", required=msg.format == PUSH)
    pid = new_id()
    t = Transfer(
        id=pid,
        role=Role.PROVIDER,
        provider_pid=pid,
        consumer_pid=msg.consumer_pid,
        state=S.REQUESTED,
        counter_party_id=ev.sender,
        counter_party_address=msg.callback_address,
        agreement_id=msg.agreement_id,
        format=msg.format,
        data_address=msg.data_address,
        created_at=now,
        updated_at=now,
        processed=(fp,),
        origin=fp,
        acked_state=S.REQUESTED,
    )
    return Transition(t, [], Response(201, t.to_dsp()))


def _check_pids(t: Transfer, msg: Any) -> Transfer:
    learned: dict[str, Any] = {}
    for attr, name in (("provider_pid", "providerPid"), ("consumer_pid", "consumerPid")):
        given, known = getattr(msg, attr), getattr(t, attr)
        if known is None:
            learned[attr] = given
        elif given != known:
            raise _bad(f"{name} {given} does not match this transfer's {known}", t)
    return replace(t, **learned) if learned else t


def _duplicate(t: Transfer, fp: str) -> Transition:
    return Transition(t, [], Response(201 if fp == t.origin else 200, t.to_dsp()), duplicate=True)


# --- outbox outcomes --------------------------------------------------------------------------


def _acknowledged(t: Transfer, ev: Acknowledged, now: datetime) -> Transition:
    if ev.message_id != t.pending_message_id or not t.state.is_sending:
        return Transition(t)
    to = SENDING[t.state]
    changes: dict[str, Any] = {
        "state": to,
        "acked_state": to,
        "pending_message_id": None,
        "updated_at": now,
        "delivery_error": None,
    }
    if to is S.STARTED:
        changes["suspended_by"] = frozenset()
    if isinstance(ev.body, TransferProcess) and t.provider_pid is None:
        changes["provider_pid"] = ev.body.provider_pid
    return Transition(replace(t, **changes))


def _failed(t: Transfer, ev: DeliveryFailed, now: datetime, new_id: Callable[[], str]) -> Transition:
    if ev.message_id != t.pending_message_id or not ev.permanent:
        return Transition(t)
    settled = TABLE.settled(t.state, ev.peer_state, in_doubt=t.in_doubt)
    if settled is SENDING[t.state]:  # the counter-party is there already: it took ours before
        return _acknowledged(t, Acknowledged(ev.message_id), now)
    if settled is not None:  # our in-doubt completion was taken after all
        return Transition(
            replace(
                t,
                state=settled,
                acked_state=settled,
                pending_message_id=None,
                updated_at=now,
                delivery_error=None,
                in_doubt=False,
                termination_reason=(),
                termination_code=None,
            )
        )
    why = ev.reason or "the counter-party did not accept it"
    if t.state is S.TERMINATING:
        if t.in_doubt:  # the counter-party may have completed: never claim TERMINATED alone
            return Transition(replace(t, pending_message_id=None, updated_at=now, delivery_error=why))
        return Transition(
            replace(
                t,
                state=S.TERMINATED,
                acked_state=S.TERMINATED,
                pending_message_id=None,
                updated_at=now,
                delivery_error=why,
            )
        )
    if t.peer_pid is None:
        return Transition(
            replace(
                t,
                state=S.TERMINATED,
                acked_state=S.TERMINATED,
                pending_message_id=None,
                updated_at=now,
                termination_reason=(f"delivery of the transfer request failed: {why}",),
                delivery_error=why,
            )
        )
    if t.state is S.STARTING and t.acked_state is S.SUSPENDED and t.role is Role.CONSUMER:
        # a refused attempt to resume leaves the transfer suspended (the provider may refuse it)
        return Transition(
            replace(
                t,
                state=S.SUSPENDED,
                pending_message_id=None,
                updated_at=now,
                suspended_by=t.suspended_by | {Role.PROVIDER},
                delivery_error=why,
            )
        )
    reason = f"delivery of our {SENDING[t.state].value} message failed: {why}"
    return _terminate(
        t, Terminate(reason, "DELIVERY_FAILED"), now, new_id, in_doubt=t.state is S.COMPLETING, error=why
    )


# --- local commands ---------------------------------------------------------------------------


def _request(t: Transfer | None, cmd: Request, now: datetime, new_id: Callable[[], str]) -> Transition:
    if t is not None:
        raise _bad("a transfer process is requested once", t, 409)
    if cmd.format not in SUPPORTED_FORMATS:
        raise _bad(f"format {cmd.format!r} is not supported", status=409)
    _check_address(cmd.format, cmd.data_address, who="consumer", required=cmd.format == PUSH, status=409)
    pid = cmd.process_id or new_id()
    msg = TransferRequestMessage(
        consumer_pid=pid,
        agreement_id=cmd.agreement_id,
        format=cmd.format,
        data_address=cmd.data_address,
        callback_address=cmd.callback_address,
    )
    out = Outgoing(msg, cmd.provider_address, _PATHS[REQUEST_INITIAL], new_id())
    tp = Transfer(
        id=pid,
        role=Role.CONSUMER,
        provider_pid=None,
        consumer_pid=pid,
        state=S.REQUESTING,
        counter_party_id=cmd.provider_id,
        counter_party_address=cmd.provider_address,
        agreement_id=cmd.agreement_id,
        format=cmd.format,
        data_address=cmd.data_address,
        created_at=now,
        updated_at=now,
        pending_message_id=out.message_id,
    )
    return Transition(tp, [out])


def _command(t: Transfer, cmd: Command, now: datetime, new_id: Callable[[], str]) -> Transition:
    if isinstance(cmd, Terminate):
        return _terminate(t, cmd, now, new_id)
    name = type(cmd).__name__
    changes: dict[str, Any] = {}
    if isinstance(cmd, Start):
        if t.role is not Role.PROVIDER:
            raise _bad("Start is a provider command (a consumer resumes with Resume)", t, 409)
        _need_state(t, name, (S.REQUESTED,))
        _check_address(t.format, cmd.data_address, who="provider", required=t.format == PULL, t=t, status=409)
        msg: DspModel = TransferStartMessage(**_pids(t), data_address=cmd.data_address)
        kind, sending = START, S.STARTING
    elif isinstance(cmd, Resume):
        _need_state(t, name, (S.SUSPENDED,))
        if t.role is Role.CONSUMER and Role.PROVIDER in t.suspended_by:
            raise _bad("the provider suspended this transfer; only the provider resumes it", t, 409)
        if cmd.data_address is not None:
            _check_address(
                t.format, cmd.data_address, who=t.role.value.lower(), required=False, t=t, status=409
            )
            if t.role is Role.CONSUMER and t.format == PULL:
                raise _bad("a consumer resuming a pull transfer sends no dataAddress", t, 409)
        msg = TransferStartMessage(**_pids(t), data_address=cmd.data_address)
        kind, sending = START, S.STARTING
    elif isinstance(cmd, Suspend):
        _need_state(t, name, (S.STARTED,))
        msg = TransferSuspensionMessage(**_pids(t), code=cmd.code, reason=[cmd.reason])
        kind, sending = SUSPENSION, S.SUSPENDING
        changes = {
            "suspended_by": t.suspended_by | {t.role},
            "suspension_reason": (cmd.reason,),
            "suspension_code": cmd.code,
        }
    else:
        _need_state(t, name, (S.STARTED,))
        msg = TransferCompletionMessage(**_pids(t))
        kind, sending = COMPLETION, S.COMPLETING
    out = _send(t, kind, msg, new_id)
    return Transition(
        replace(t, **changes, state=sending, pending_message_id=out.message_id, updated_at=now), [out]
    )


def _need_state(t: Transfer, name: str, sources: tuple[TransferState, ...]) -> None:
    if t.state not in sources:
        raise _bad(
            f"{name} is not possible in state {t.state.value} (only from "
            f"{', '.join(s.value for s in sources)})",
            t,
            409,
        )


def _terminate(
    t: Transfer,
    cmd: Terminate,
    now: datetime,
    new_id: Callable[[], str],
    *,
    in_doubt: bool = False,
    error: str | None = None,
) -> Transition:
    if t.state.is_terminal or (t.state in (S.TERMINATING, S.COMPLETING) and error is None):
        why = (
            "it is already terminal"
            if t.state.is_terminal
            else "a termination is already under way"
            if t.state is S.TERMINATING
            else "its completion is in flight and may already be taken"
        )
        raise _bad(f"cannot terminate transfer {t.id} in state {t.state.value}: {why}", t, 409)
    if t.peer_pid is None:
        raise _bad(
            f"transfer {t.id} is not yet acknowledged by the provider; it cannot be named in a "
            "termination until it is (a failed delivery terminates it)",
            t,
            409,
        )
    msg = TransferTerminationMessage(**_pids(t), code=cmd.code, reason=[cmd.reason])
    out = _send(t, TERMINATION, msg, new_id)
    t = replace(
        t,
        state=S.TERMINATING,
        pending_message_id=out.message_id,
        updated_at=now,
        termination_reason=(cmd.reason,),
        termination_code=cmd.code,
        in_doubt=in_doubt,
        delivery_error=error,
    )
    return Transition(t, [out])
