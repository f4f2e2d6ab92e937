"""Kill -9 chaos on a loopback data space, and the invariants that must hold after it.

One run (`run_once`): fresh provider and consumer processes (fresh stores, audit logs and vaults;
identities copied from templates made once per data space) and an authority; a batch of
concurrent *lanes*, each: negotiate an offer whose contract allows `limit` uses (the
n-times-usage template), push the data once, start a pull transfer and pull through the
consumer's connector (`POST /api/transfers/{id}/pull`, receipts verified and logged by it) until
the data plane denies a use, then complete the transfer. After a number of the lanes' steps
drawn from the run's seeded RNG (anywhere from the first negotiation request to the last
completion; see `ChaosConfig.max_delay`), and a short random delay, the victim (provider,
consumer or authority) gets SIGKILL; after a pause drawn from the same RNG it is restarted on the
same configuration and store. The lanes ride the outage out (they retry what a dead process
could not answer). Then everything must settle within a bound, and:

Negotiations
  * every negotiation in the consumer's store (the lanes' and any a lost answer left behind) is
    FINALIZED or TERMINATED, and the provider holds exactly one with the same consumerPid, in
    the same state, with the same pids; the provider holds none the consumer does not;
  * every id a lane was given exists; none exists twice on either side;
  * every FINALIZED negotiation has exactly one agreement on each side: same id, same policy.
Transfers
  * every transfer is in a non-sending state other than REQUESTED, the same on both sides, once
    on each side, and every transfer a lane was given exists.
Outbox
  * no `pending` or `in_flight` row is left on either side (`dead` rows are counted and shown).
Uses (per agreement, limit N; the provider's counter C read from its store)
  * C <= N; the uses the consumer received (D: completed pushes and pulls the lanes saw) <= N;
    the full-content responses the consumer's audit log proves (its receipts) <= N;
  * a lane's final denial comes only with C == N: no use within the limit is refused, after a
    restart included;
  * C - D (uses counted but never received) is within what a kill may cost. The data plane
    counts a use when it decides to serve, so a response the kill cut off (the provider died
    streaming it, or the consumer receiving it; a push the consumer died under is terminated,
    one the provider died under is pushed again after its restart) spends its use. And, as
    `connector.dataplane.uses` promises, a provider that dies loses the reserved uses it held
    and had not handed out: at most `HELD_BLOCKS` blocks of max(1, left // `DIVISOR`) uses (one
    use each at these limits), which the counter keeps for good (they are never given back).
    The allowance per agreement (`_may_cost_a_use`): pulls lost with the consumer, or failed
    after data arrived or while under way at a connector's kill; pushes that failed, or were
    under way at the provider's kill; plus the held blocks when the provider is the victim.
Audit
  * both logs verify as `connector audit verify` checks them (`verify_file`: chain, signatures,
    head anchor); its notes (a head anchor one batch behind after a kill) are shown, not failed;
  * every settled process's final state has its entry in its side's audit log; a side that was
    not killed misses none (the victim may miss entries whose append the kill interrupted right
    after their commit: the runtime appends after the commit; counted in the notes);
  * the receipt cross-check (`connector.audit.receipts.cross_check`, what `connector audit verify
    --peer-receipts` reports) finds only what a kill explains (`EXPECTED_FINDINGS`), on a
    transfer with a data operation that was under way at the kill, failed or was lost:
    - "the provider issued a receipt the consumer did not log": the consumer died before it
      fetched and logged the receipt of a response it was receiving (or the provider pushed to
      a consumer that died), or the provider died after signing a receipt (its audit log has
      it) but before the store held it for the consumer to fetch;
    - "the consumer recorded no response N ... (the consumer logged the batch as unproven)",
      only when the consumer was the victim: the responses were received by the process that
      was killed, so the restarted one cannot recompute the chain over them; it logged the
      receipt as unproven and the chain goes on from the signed head.
    Anything else (a receipt only the consumer has, two different receipts, gaps, overlaps, a
    chain the consumer's record does not match) fails the run.

`bench/crash.py` runs this many times per victim; `tests/adversarial/test_crash_*.py` a few
runs with fixed seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from connector.audit.cli import load_public_key
from connector.audit.log import read_entries, verify_file
from connector.audit.receipts import cross_check, read_receipts
from connector.dataplane.uses import DIVISOR, HELD_BLOCKS
from connector.devspace import Connector, DataSpace, offer_asset
from connector.protocol.messages import PULL, PUSH
from connector.protocol.negotiation import NegotiationState
from connector.protocol.transfer import TransferState

VICTIMS = ("provider", "consumer", "authority")
ASSET_ID = "urn:asset:chaos"
SETTLED_NEGOTIATION = (NegotiationState.FINALIZED.value, NegotiationState.TERMINATED.value)
SETTLED_TRANSFER = tuple(
    s.value for s in TransferState if not s.is_sending and s is not TransferState.REQUESTED
)
IDENTITY_FILES = (
    "ca.crt",
    "participant.crt",
    "participant.id",
    "participant.json",
    "participant.key",
    "tls.crt",
    "tls.key",
)

# The receipt cross-check's findings a kill can cause (see the module docstring); each pattern
# names the transfer (the provider's pid) it is about.
PROVIDER_ONLY = re.compile(
    r"^transfer (\S+)(?: chain \S+)? .*: the provider issued a receipt "
    r"the consumer did not log$"
)
CONSUMER_UNPROVEN = re.compile(
    r"^transfer (\S+)(?: chain \S+)? .*: the consumer recorded no "
    r"response \d+, so it cannot prove what the receipt covers "
    r"\(the consumer logged the batch as unproven\)$"
)
EXPECTED_FINDINGS = {
    "provider-only receipt": PROVIDER_ONLY,
    "unproven after a consumer kill": CONSUMER_UNPROVEN,
}


class Unsettled(Exception):
    """A lane could not finish within the run's bound."""


# ------------------------------------------------------------------ configuration and records


@dataclass(frozen=True)
class ChaosConfig:
    lanes: int = 6  # concurrent negotiations, each with a push and a pull transfer
    limit: int = 5  # the agreement's use limit (n-times-usage)
    stagger: float = 0.4  # lane i starts i * stagger seconds into the batch (phases spread)
    # The kill comes after a random number of the batch's steps (a negotiation requested or
    # settled, a transfer requested or started, a push or a pull done, ...: `Driver.step`), then
    # U(0, max_delay) seconds more: a point in the work, whatever the machine's speed.
    max_delay: float = 0.3
    max_pause: float = 0.5  # the victim stays dead U(0, max_pause) seconds, plus its start-up
    # the authority longer, U(0, authority_max_pause): in some runs its outage outlasts the
    # connectors' revocation poll interval (2 s in the loopback data space), so no DAT can be
    # checked for a while (DSP answers 503 and the outboxes retry)
    authority_max_pause: float = 3.0
    bound: float = 90.0  # seconds a lane may take, outage included
    settle: float = 30.0  # seconds everything may take to settle after the lanes
    push: bool = True
    content_size: int = 1 << 20  # large enough for a kill to land mid-stream now and then
    pg_url: str | None = None  # PostgreSQL (fresh schemas per run) instead of SQLite


@dataclass
class DataOp:
    """One use the lane asked for: a push transfer, or one pull job."""

    kind: str  # "push" | "pull"
    transfer_id: str | None
    started: float
    ended: float | None = None
    outcome: str = "running"  # delivered | denied | failed | lost
    detail: str = ""
    provider_pid: str | None = None
    got_data: bool = False  # a pull job that failed after bytes arrived


@dataclass
class Lane:
    index: int
    phase: str = "waiting"
    negotiation_ids: list[str] = field(default_factory=list)
    agreement_id: str | None = None
    transfer_ids: list[str] = field(default_factory=list)
    ops: list[DataOp] = field(default_factory=list)
    limit_reached: bool = False
    error: str = ""

    @property
    def delivered(self) -> int:
        return sum(op.outcome == "delivered" for op in self.ops)


@dataclass
class Kill:
    victim: str
    after_step: int  # the kill comes once the lanes made this many steps ...
    delay: float  # ... and this many seconds later
    pause: float  # the victim stays down this long before its restart
    steps: int = 0  # the steps actually made by the kill
    at: float = 0.0  # monotonic time of the SIGKILL
    back: float = 0.0  # monotonic time the victim answered again
    phases: dict[str, int] = field(default_factory=dict)  # what the lanes were doing then
    error: str = ""


@dataclass
class RunReport:
    victim: str
    seed: int
    kill: Kill
    seconds: float = 0.0
    negotiations: int = 0
    finalized: int = 0
    terminated: list[str] = field(default_factory=list)  # the reasons
    transfers: int = 0
    settled: int = 0  # process pairs (negotiations and transfers) settled on both sides
    uses_counted: int = 0  # sum of the provider's counters
    uses_received: int = 0  # pushes and pulls the lanes saw complete
    uses_allowed_loss: int = 0  # what the kill may cost (see the module docstring)
    dead_messages: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    limit_violations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # anything else that must not happen
    expected: list[str] = field(default_factory=list)  # cross-check findings the kill explains
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of the run

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.limit_violations or self.failures)

    def problems(self) -> list[str]:
        return (
            [f"lost: {x}" for x in self.lost]
            + [f"duplicated: {x}" for x in self.duplicated]
            + [f"use limit: {x}" for x in self.limit_violations]
            + self.failures
        )

    def line(self) -> str:
        phases = ",".join(f"{k}={v}" for k, v in sorted(self.kill.phases.items()))
        return (
            f"{self.victim:9} seed={self.seed:<6} kill@step {self.kill.steps}+"
            f"{self.kill.delay:.2f}s "
            f"down={self.kill.back - self.kill.at:.1f}s [{phases}] "
            f"neg={self.negotiations} fin={self.finalized} term={len(self.terminated)} "
            f"xfer={self.transfers} uses={self.uses_received}/{self.uses_counted} "
            f"(kill may cost {self.uses_allowed_loss}) expected-findings={len(self.expected)} "
            f"{self.seconds:.1f}s {'OK' if self.ok else 'FAILED'}"
        )


# ------------------------------------------------------------------ the data space


@dataclass
class ChaosSpace:
    """A data space whose participants are made once; each run starts fresh processes."""

    space: DataSpace
    provider_template: Path
    consumer_template: Path
    runs: int = 0

    @classmethod
    def create(cls, space: DataSpace) -> ChaosSpace:
        prov = space.connector("chaosprov", roles=("provider",), start=False)
        cons = space.connector("chaoscons", roles=("consumer",), start=False)
        space.connectors.remove(prov)
        space.connectors.remove(cons)
        return cls(space, prov.directory, cons.directory)

    def participants(self, cfg: ChaosConfig) -> tuple[Connector, Connector, list[str]]:
        """Fresh provider and consumer processes (started), and their PostgreSQL schemas."""
        self.runs += 1
        run_dir = self.space.root / f"run{self.runs}"
        schemas: list[str] = []
        out = []
        for role, template in (("provider", self.provider_template), ("consumer", self.consumer_template)):
            d = run_dir / role
            d.mkdir(parents=True)
            for name in IDENTITY_FILES:
                if (template / name).exists():
                    shutil.copy2(template / name, d / name)
            store = None
            if cfg.pg_url:
                schema = f"chaos_{uuid.uuid4().hex[:10]}"
                schemas.append(schema)
                store = f"{cfg.pg_url}{'&' if '?' in cfg.pg_url else '?'}schema={schema}"
            out.append(
                self.space.connector(
                    f"{role[:4]}{self.runs}", roles=(role,), participant_dir=d, store=store, start=False
                )
            )
        prov, cons = out
        _parallel(prov.start, cons.start)
        return prov, cons, schemas


def _parallel(*fns: Callable[[], Any]) -> None:
    with ThreadPoolExecutor(len(fns)) as pool:
        for f in [pool.submit(fn) for fn in fns]:
            f.result()


# ------------------------------------------------------------------ reading a store


class StoreReader:
    """Read-only queries on a connector's store (SQLite opened read-only, or a PG schema)."""

    def __init__(self, connector: Connector, pg_url: str | None, schema: str | None) -> None:
        self.sqlite = connector.directory / "connector.db"
        self.pg_url = pg_url
        self.schema = schema

    def rows(self, sql: str) -> list[dict[str, Any]]:
        if self.pg_url is not None and self.schema is not None:
            return asyncio.run(self._pg(sql))
        db = sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql)]
        finally:
            db.close()

    async def _pg(self, sql: str) -> list[dict[str, Any]]:
        assert self.pg_url is not None
        base = self.pg_url.split("?", 1)[0]
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'SET search_path TO "{self.schema}"')
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass
class Snapshot:
    negotiations: list[dict[str, Any]]
    agreements: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    counters: list[dict[str, Any]]

    @classmethod
    def read(cls, store: StoreReader) -> Snapshot:
        return cls(
            negotiations=store.rows(
                "SELECT id, role, state, provider_pid, consumer_pid, agreement_id, data FROM negotiations"
            ),
            agreements=[
                {**a, "policy": _json(a["policy"])}
                for a in store.rows("SELECT id, negotiation_id, policy FROM agreements")
            ],
            transfers=store.rows(
                "SELECT id, role, state, provider_pid, consumer_pid, "
                "agreement_id, format, data FROM transfers"
            ),
            outbox=store.rows("SELECT status, process_kind, process_id, attempts, last_error FROM outbox"),
            counters=store.rows("SELECT agreement_id, count FROM usage_counters"),
        )

    def open_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.outbox if m["status"] in ("pending", "in_flight")]


def _settled(prov: Snapshot, cons: Snapshot) -> bool:
    """Everything at rest: processes in settled states, the same on both sides; outboxes empty."""
    by_cpid = {n["consumer_pid"]: n for n in prov.negotiations}
    for n in cons.negotiations:
        p = by_cpid.get(n["consumer_pid"])
        if n["state"] not in SETTLED_NEGOTIATION or p is None or p["state"] != n["state"]:
            return False
    t_by_cpid = {t["consumer_pid"]: t for t in prov.transfers}
    for t in cons.transfers:
        p = t_by_cpid.get(t["consumer_pid"])
        if t["state"] not in SETTLED_TRANSFER or p is None or p["state"] != t["state"]:
            return False
    return not prov.open_messages() and not cons.open_messages()


# ------------------------------------------------------------------ the lanes


class Driver:
    """Runs the lanes of one run against a provider and a consumer that may die under them."""

    def __init__(
        self,
        provider: Connector,
        consumer: Connector,
        offer: str,
        cfg: ChaosConfig,
        content: bytes,
        deadline: float,
    ) -> None:
        self.provider = provider
        self.consumer = consumer
        self.offer = offer
        self.cfg = cfg
        self.content = content
        self.deadline = deadline
        self.lanes = [Lane(i) for i in range(cfg.lanes)]
        self.steps = 0
        self.finished = 0
        self._progress = threading.Condition()

    @staticmethod
    def steps_per_lane(cfg: ChaosConfig) -> int:
        """Steps of a lane with no failure: negotiation requested and settled, (push requested
        and done,) pull transfer requested and started, one step per pull (the push takes one
        use: limit - 1 delivered, or limit without a push, then the denial), complete requested
        and done."""
        return 6 + (2 if cfg.push else 0) + cfg.limit + (0 if cfg.push else 1)

    def step(self) -> None:
        with self._progress:
            self.steps += 1
            self._progress.notify_all()

    def wait_steps(self, n: int) -> int:
        """Wait until the lanes made ``n`` steps (or all ended); the steps made."""
        with self._progress:
            self._progress.wait_for(
                lambda: self.steps >= n or self.finished == len(self.lanes),
                timeout=max(1.0, self.deadline - time.monotonic()),
            )
            return self.steps

    def call(
        self,
        c: Connector,
        method: str,
        path: str,
        body: Any = None,
        expect: Iterable[int] = (200,),
        timeout: float = 15,
    ) -> tuple[int, Any]:
        """One management API call; while the process is down (or answers 5xx, e.g. a 502
        because its peer is down) it is retried until the lane's deadline. A POST whose answer
        was lost may have been taken: what it created is found in the stores, not here."""
        wanted = set(expect)
        while True:
            try:
                status, out = c.api(method, path, body, timeout=timeout)
            except OSError as exc:
                status, out = 0, f"{type(exc).__name__}: {exc}"
            if status in wanted or 400 <= status < 500:
                return status, out
            if time.monotonic() > self.deadline:
                raise Unsettled(f"{method} {path}: {status} {str(out)[:300]}")
            time.sleep(0.1)

    def wait_negotiation(self, nid: str) -> dict[str, Any]:
        while True:
            status, n = self.call(
                self.consumer,
                "GET",
                f"/api/negotiations/{nid}?waitFor=FINALIZED,TERMINATED&timeout=5",
                timeout=20,
            )
            if status != 200:
                raise Unsettled(f"negotiation {nid}: {status} {n}")
            if n["internalState"] in SETTLED_NEGOTIATION:
                return dict(n)
            if time.monotonic() > self.deadline:
                raise Unsettled(f"negotiation {nid} still {n['internalState']}")

    def wait_transfer(self, tid: str, states: set[str]) -> dict[str, Any]:
        while True:
            status, t = self.call(self.consumer, "GET", f"/api/transfers/{tid}")
            if status != 200:
                raise Unsettled(f"transfer {tid}: {status} {t}")
            if t["internalState"] in states:
                return dict(t)
            if time.monotonic() > self.deadline:
                raise Unsettled(f"transfer {tid} still {t['internalState']}")
            time.sleep(0.05)

    def request_transfer(self, lane: Lane, fmt: str) -> dict[str, Any]:
        status, t = self.call(
            self.consumer,
            "POST",
            "/api/transfers",
            {"agreementId": lane.agreement_id, "format": fmt},
            expect=(201,),
        )
        if status != 201:
            raise Unsettled(f"transfer request: {status} {t}")
        lane.transfer_ids.append(t["id"])
        return dict(t)

    def run_lane(self, lane: Lane) -> None:
        try:
            self._lane(lane)
            lane.phase = "done"
        except Unsettled as exc:
            lane.error = str(exc)
            lane.phase = "unsettled"
        except Exception as exc:  # a driver bug must fail the run, not hang it
            lane.error = f"{type(exc).__name__}: {exc}"
            lane.phase = "crashed"
        finally:
            with self._progress:
                self.finished += 1
                self._progress.notify_all()

    def _lane(self, lane: Lane) -> None:
        time.sleep(lane.index * self.cfg.stagger)
        lane.phase = "negotiating"
        status, n = self.call(
            self.consumer,
            "POST",
            "/api/negotiations",
            {"peerUrl": self.provider.dsp_url, "offerId": self.offer},
            expect=(201,),
        )
        if status != 201:
            raise Unsettled(f"negotiation request: {status} {n}")
        lane.negotiation_ids.append(n["id"])
        self.step()
        final = self.wait_negotiation(n["id"])
        self.step()
        if final["internalState"] != NegotiationState.FINALIZED.value:
            lane.phase = "terminated"
            return
        lane.agreement_id = final["agreementId"]
        if self.cfg.push:
            lane.phase = "pushing"
            self.push(lane)
        lane.phase = "transferring"
        t = self.request_transfer(lane, PULL)
        self.step()
        t = self.wait_transfer(t["id"], {"STARTED", "TERMINATED"})
        self.step()
        if t["internalState"] != "STARTED":
            raise Unsettled(f"pull transfer {t['id']} {t['internalState']}: {t['terminationReason']}")
        lane.phase = "pulling"
        # pull until the data plane denies a use; failures (a victim down) are retried until the
        # deadline; more deliveries than the limit stop the lane (the check reports them)
        while lane.delivered <= self.cfg.limit:
            op = self.pull(t)
            lane.ops.append(op)
            self.step()
            if op.outcome == "denied":
                lane.limit_reached = True
                break
            if op.outcome != "delivered":
                if time.monotonic() > self.deadline:
                    raise Unsettled(f"pull transfer {t['id']}: still failing: {op.detail}")
                time.sleep(0.3)  # the victim may still be down
        lane.phase = "completing"
        # a 409: the command was taken by a process killed before it answered (now COMPLETING)
        status, out = self.call(
            self.consumer, "POST", f"/api/transfers/{t['id']}/complete", expect=(200, 409)
        )
        self.step()
        done = self.wait_transfer(t["id"], {"COMPLETED", "TERMINATED"})
        if done["internalState"] != "COMPLETED":
            raise Unsettled(f"complete {t['id']}: {status} {out}; the transfer is {done['internalState']}")
        self.step()

    def push(self, lane: Lane) -> None:
        t = self.request_transfer(lane, PUSH)
        op = DataOp("push", t["id"], time.monotonic())
        lane.ops.append(op)
        self.step()
        done = self.wait_transfer(t["id"], {"COMPLETED", "TERMINATED"})
        self.step()
        op.ended, op.provider_pid = time.monotonic(), done.get("providerPid")
        if done["internalState"] == "COMPLETED":
            op.outcome = "delivered"
        else:
            op.outcome, op.detail = "failed", "; ".join(done.get("terminationReason") or [])

    def pull(self, t: dict[str, Any]) -> DataOp:
        """One pull job through the consumer's connector: delivered (data and receipts verified),
        denied (the data plane refused the use: a response with a receipt and no data), failed,
        or lost (the consumer died with the job)."""
        op = DataOp("pull", t["id"], time.monotonic(), provider_pid=t.get("providerPid"))
        path = f"/api/transfers/{t['id']}/pull"
        status, job = self.call(self.consumer, "POST", path, {"complete": False}, expect=(202,))
        refused = status == 409  # a job runs (its answer was lost?), or the transfer is busy
        if refused:
            job = {"state": "running", "error": str(job)}
        elif status != 202:
            op.ended, op.outcome, op.detail = time.monotonic(), "failed", f"{status} {job}"
            return op
        while job.get("state") == "running":
            status, job = self.call(self.consumer, "GET", f"{path}?wait=10", timeout=20)
            if status == 404:  # no job: the consumer restarted and the job died with it
                op.ended, op.outcome = time.monotonic(), "failed" if refused else "lost"
                op.detail = "the pull was refused (409)" if refused else "no such job"
                return op
            if status != 200:
                op.ended, op.outcome, op.detail = time.monotonic(), "failed", f"{status} {job}"
                return op
        op.ended, op.detail = time.monotonic(), str(job.get("error") or "")
        op.got_data = bool(job.get("bytes"))
        if job["state"] == "done" and job["bytes"] == len(self.content):
            op.outcome = "delivered"
        elif job["responses"] and not job["bytes"] and job["receipts"]:
            op.outcome = "denied"
        else:
            op.outcome = "failed"
        return op

    def phases(self) -> dict[str, int]:
        return dict(Counter(lane.phase for lane in self.lanes))


# ------------------------------------------------------------------ one run


def run_once(chaos: ChaosSpace, victim: str, seed: int, cfg: ChaosConfig) -> RunReport:
    """One chaos run: fresh participants, the lanes, one SIGKILL of ``victim``, the checks."""
    if victim not in VICTIMS:
        raise ValueError(f"victim must be one of {', '.join(VICTIMS)}")
    rng = random.Random(seed)
    pause = cfg.authority_max_pause if victim == "authority" else cfg.max_pause
    kill = Kill(
        victim,
        rng.randrange(cfg.lanes * Driver.steps_per_lane(cfg)),
        rng.uniform(0, cfg.max_delay),
        rng.uniform(0, pause),
    )
    report = RunReport(victim, seed, kill)
    began = time.monotonic()
    content = rng.randbytes(cfg.content_size)
    provider, consumer, schemas = chaos.participants(cfg)
    report.timings["start"] = time.monotonic() - began
    try:
        offer = offer_asset(
            provider,
            asset_id=ASSET_ID,
            content=content,
            contract={"template": "n-times-usage", "params": {"max": str(cfg.limit)}},
        )
        driver = Driver(provider, consumer, offer, cfg, content, time.monotonic() + cfg.bound)
        target: Any = {"provider": provider, "consumer": consumer, "authority": chaos.space.authority}[victim]

        def killer() -> None:
            kill.steps = driver.wait_steps(kill.after_step)
            time.sleep(kill.delay)
            kill.phases = driver.phases()
            kill.at = time.monotonic()
            target.kill9()
            time.sleep(kill.pause)
            try:
                target.start()
            except Exception as exc:  # it did not come back: the run fails with the reason
                kill.error = f"restart failed: {exc}"
            kill.back = time.monotonic()

        with ThreadPoolExecutor(cfg.lanes + 1) as pool:
            k = pool.submit(killer)
            for f in [pool.submit(driver.run_lane, lane) for lane in driver.lanes]:
                f.result()
            k.result()
        report.timings["lanes"] = time.monotonic() - began
        check(report, driver, provider, consumer, cfg, content, schemas)
        report.timings["checks"] = time.monotonic() - began
    finally:
        for c in (provider, consumer):
            c.stop()
        if cfg.pg_url:
            asyncio.run(_drop_schemas(cfg.pg_url, schemas))
    report.seconds = time.monotonic() - began
    return report


async def _drop_schemas(url: str, schemas: list[str]) -> None:
    conn = await asyncpg.connect(url.split("?", 1)[0])
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# ------------------------------------------------------------------ the invariants


def check(
    report: RunReport,
    driver: Driver,
    provider: Connector,
    consumer: Connector,
    cfg: ChaosConfig,
    content: bytes,
    schemas: list[str],
) -> None:
    kill = report.kill
    if kill.error:
        report.failures.append(f"the {kill.victim}: {kill.error}")
    for lane in driver.lanes:
        if lane.error:
            report.failures.append(f"lane {lane.index} did not finish ({lane.phase}): {lane.error}")
        for op in lane.ops:
            if _may_cost_a_use(op, kill):
                report.notes.append(
                    f"lane {lane.index} {op.kind} {op.outcome} at "
                    f"{op.started - kill.at:+.2f}s from the kill: {op.detail}"
                )
    prov_store = StoreReader(provider, cfg.pg_url, schemas[0] if schemas else None)
    cons_store = StoreReader(consumer, cfg.pg_url, schemas[1] if schemas else None)
    deadline = time.monotonic() + cfg.settle
    while True:
        prov, cons = Snapshot.read(prov_store), Snapshot.read(cons_store)
        if _settled(prov, cons) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    report.timings["settle"] = time.monotonic() - deadline + cfg.settle
    check_negotiations(report, driver, prov, cons)
    check_transfers(report, driver, prov, cons)
    check_outbox(report, prov, cons)
    check_uses(report, driver, prov, cfg)
    check_audit(report, driver, provider, consumer, content, cfg)
    check_audit_trail(report, provider, prov, consumer, cons)


def check_negotiations(report: RunReport, driver: Driver, prov: Snapshot, cons: Snapshot) -> None:
    report.negotiations = len(cons.negotiations)
    for side, snap, pid in (("provider", prov, "consumer_pid"), ("consumer", cons, "provider_pid")):
        for value, k in Counter(n[pid] for n in snap.negotiations if n[pid]).items():
            if k > 1:
                report.duplicated.append(f"{k} negotiations with {pid} {value} at the {side}")
    known = {n["id"] for n in cons.negotiations}
    for lane in driver.lanes:
        for nid in lane.negotiation_ids:
            if nid not in known:
                report.lost.append(f"negotiation {nid} (lane {lane.index}) is not in the consumer's store")
    given = {nid for lane in driver.lanes for nid in lane.negotiation_ids}
    for nid in sorted(known - given):  # a request taken whose answer the kill swallowed
        report.notes.append(f"negotiation {nid} was started by a request whose answer was lost")
    at_provider = {n["consumer_pid"]: n for n in prov.negotiations}
    consumer_pids = {n["consumer_pid"] for n in cons.negotiations}
    for n in prov.negotiations:
        if n["consumer_pid"] not in consumer_pids:
            report.lost.append(f"the provider's negotiation {n['id']} has no consumer side")
    prov_agreements = _by_negotiation(prov.agreements)
    cons_agreements = _by_negotiation(cons.agreements)
    for n in cons.negotiations:
        p = at_provider.get(n["consumer_pid"])
        state = n["state"]
        if p is None:
            if n["provider_pid"]:  # the provider acknowledged it: it must hold it
                report.lost.append(f"negotiation {n['id']} ({state}) is missing at the provider")
            else:
                report.failures.append(f"negotiation {n['id']} never reached the provider ({state})")
            continue
        if state not in SETTLED_NEGOTIATION or p["state"] != state:
            report.failures.append(
                f"negotiation {n['id']} not settled: consumer {state}, provider {p['state']}"
            )
            continue
        if p["provider_pid"] != n["provider_pid"]:
            report.failures.append(
                f"negotiation {n['id']}: providerPid {n['provider_pid']} at the "
                f"consumer, {p['provider_pid']} at the provider"
            )
        report.settled += 1
        if state == NegotiationState.TERMINATED.value:
            report.terminated.append(
                "; ".join(_json(n["data"]).get("termination_reason") or []) or "(no reason)"
            )
            continue
        report.finalized += 1
        mine, theirs = cons_agreements.get(n["id"], []), prov_agreements.get(p["id"], [])
        if len(mine) != 1 or len(theirs) != 1:
            (report.duplicated if len(mine) > 1 or len(theirs) > 1 else report.lost).append(
                f"FINALIZED negotiation {n['id']}: {len(mine)} agreement(s) at the consumer, "
                f"{len(theirs)} at the provider"
            )
        elif mine[0]["id"] != theirs[0]["id"] or mine[0]["policy"] != theirs[0]["policy"]:
            report.failures.append(f"negotiation {n['id']}: the two sides hold different agreements")
        elif n["agreement_id"] != mine[0]["id"] or p["agreement_id"] != theirs[0]["id"]:
            report.failures.append(f"negotiation {n['id']}: its agreement id differs from its agreement")
    for side, snap in (("provider", prov), ("consumer", cons)):
        for aid, k in Counter(a["id"] for a in snap.agreements).items():
            if k > 1:
                report.duplicated.append(f"agreement {aid} {k} times at the {side}")


def _by_negotiation(agreements: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in agreements:
        out.setdefault(a["negotiation_id"], []).append(a)
    return out


def check_transfers(report: RunReport, driver: Driver, prov: Snapshot, cons: Snapshot) -> None:
    report.transfers = len(cons.transfers)
    for value, k in Counter(t["consumer_pid"] for t in prov.transfers).items():
        if k > 1:
            report.duplicated.append(f"{k} transfers with consumerPid {value} at the provider")
    for value, k in Counter(t["provider_pid"] for t in cons.transfers if t["provider_pid"]).items():
        if k > 1:
            report.duplicated.append(f"{k} transfers with providerPid {value} at the consumer")
    known = {t["id"] for t in cons.transfers}
    for lane in driver.lanes:
        for tid in lane.transfer_ids:
            if tid not in known:
                report.lost.append(f"transfer {tid} (lane {lane.index}) is not in the consumer's store")
    at_provider = {t["consumer_pid"]: t for t in prov.transfers}
    consumer_pids = {t["consumer_pid"] for t in cons.transfers}
    for t in prov.transfers:
        if t["consumer_pid"] not in consumer_pids:
            report.lost.append(f"the provider's transfer {t['id']} has no consumer side")
    for t in cons.transfers:
        p = at_provider.get(t["consumer_pid"])
        if p is None:
            (report.lost if t["provider_pid"] else report.failures).append(
                f"transfer {t['id']} ({t['state']}) is missing at the provider"
            )
            continue
        if t["state"] not in SETTLED_TRANSFER or p["state"] != t["state"]:
            report.failures.append(
                f"transfer {t['id']} not settled: consumer {t['state']}, provider {p['state']}"
            )
            continue
        if p["provider_pid"] != t["provider_pid"] or p["agreement_id"] != t["agreement_id"]:
            report.failures.append(f"transfer {t['id']}: the two sides disagree on its pids or agreement")
            continue
        report.settled += 1


def check_outbox(report: RunReport, prov: Snapshot, cons: Snapshot) -> None:
    for side, snap in (("provider", prov), ("consumer", cons)):
        for m in snap.open_messages():
            report.failures.append(
                f"{side} outbox: a {m['status']} message of {m['process_kind']} "
                f"{m['process_id']} ({m['attempts']} attempts, {m['last_error']})"
            )
        dead = [m for m in snap.outbox if m["status"] == "dead"]
        report.dead_messages += len(dead)
        for m in dead:
            report.notes.append(
                f"{side} outbox: dead message of {m['process_kind']} {m['process_id']}: {m['last_error']}"
            )


def _in_flight(op: DataOp, kill: Kill) -> bool:
    """The data operation was under way when the victim was killed."""
    end = op.ended if op.ended is not None else float("inf")
    return op.started <= kill.at <= end


def _may_cost_a_use(op: DataOp, kill: Kill) -> bool:
    """Whether a use may have been counted without the consumer receiving it: a pull the
    consumer died with; a pull that failed after data arrived, or that was under way when a
    connector was killed; a push that failed (its use is counted before it streams), or one
    under way when the provider was killed (pushed again after its restart: counted twice). An
    authority outage stops nothing under way: its DATs only gate new requests."""
    if op.outcome in ("lost", "running"):
        return True
    under_way = _in_flight(op, kill) and kill.victim != "authority"
    if op.kind == "push":
        if op.outcome == "delivered":
            return under_way and kill.victim == "provider"
        return op.outcome == "failed"
    return op.outcome == "failed" and (op.got_data or under_way)


def check_uses(report: RunReport, driver: Driver, prov: Snapshot, cfg: ChaosConfig) -> None:
    counted = {c["agreement_id"]: int(c["count"]) for c in prov.counters}
    block = max(1, cfg.limit // DIVISOR)
    kill = report.kill
    for lane in driver.lanes:
        if lane.agreement_id is None:
            continue
        c = counted.get(lane.agreement_id, 0)
        d = lane.delivered
        report.uses_counted += c
        report.uses_received += d
        if c > cfg.limit:
            report.limit_violations.append(f"agreement {lane.agreement_id}: counter {c} > {cfg.limit}")
        if d > cfg.limit:
            report.limit_violations.append(f"agreement {lane.agreement_id}: {d} uses received > {cfg.limit}")
        if lane.limit_reached and c != cfg.limit:
            report.lost.append(
                f"agreement {lane.agreement_id}: a use was refused at counter {c} < limit {cfg.limit}"
            )
        at_risk = sum(_may_cost_a_use(op, kill) for op in lane.ops)
        allowed = at_risk + (HELD_BLOCKS * block if kill.victim == "provider" else 0)
        report.uses_allowed_loss += min(allowed, cfg.limit)
        if c - d > allowed:
            report.lost.append(
                f"agreement {lane.agreement_id}: {c - d} uses counted but not "
                f"received, a kill explains at most {allowed}"
            )
        if d > c:
            report.failures.append(f"agreement {lane.agreement_id}: {d} uses received, the counter says {c}")


def check_audit(
    report: RunReport,
    driver: Driver,
    provider: Connector,
    consumer: Connector,
    content: bytes,
    cfg: ChaosConfig,
) -> None:
    logs = {c.name: c.directory / f"audit-{c.name}.log" for c in (provider, consumer)}
    for c in (provider, consumer):
        # what `connector audit verify LOG --cert CERT` runs: the chain, signatures, head anchor
        verified = verify_file(logs[c.name], load_public_key(c.directory / "participant.crt"))
        if not verified.ok:
            report.failures.append(f"audit verify of the {c.name} log: {verified.summary()}")
        report.notes += [f"{c.name} audit: {n}" for n in verified.notes]
    key = load_public_key(provider.directory / "participant.crt")
    consumer_entries = list(read_entries(logs[consumer.name]))
    problems, _ = cross_check(
        consumer_entries, read_entries(logs[provider.name]), key, consumer_id=consumer.participant_id
    )
    kill = report.kill
    affected = {
        op.provider_pid
        for lane in driver.lanes
        for op in lane.ops
        if op.provider_pid and (op.outcome in ("failed", "lost") or _in_flight(op, kill))
    }
    for problem in problems:
        kind = next((k for k, rx in EXPECTED_FINDINGS.items() if rx.match(problem)), None)
        m = EXPECTED_FINDINGS[kind].match(problem) if kind else None
        explained = (
            m is not None
            and m.group(1) in affected
            and (kind != "unproven after a consumer kill" or kill.victim == "consumer")
        )
        (report.expected if explained else report.failures).append(
            f"receipts: {problem}" if explained else f"receipt cross-check: {problem}"
        )
    # the responses the consumer's log proves it received in full: never more than the limit
    full = hashlib.sha256(content).hexdigest()
    receipts, _ = read_receipts(consumer_entries, key, "consumer")
    proven: dict[str, set[tuple[str, str, int]]] = {}
    for r in receipts:
        for seq, n, digest in r.responses:
            if n == len(content) and digest == full:
                proven.setdefault(r.agreement_id, set()).add((r.transfer_id, r.chain, seq))
    for agreement, responses in proven.items():
        if len(responses) > cfg.limit:
            report.limit_violations.append(
                f"agreement {agreement}: the consumer's receipts prove "
                f"{len(responses)} full responses > {cfg.limit}"
            )


def check_audit_trail(
    report: RunReport, provider: Connector, prov: Snapshot, consumer: Connector, cons: Snapshot
) -> None:
    """Every settled process's final state is in its side's audit log. The runtime appends the
    entry right after the commit (connector.runtime.auditing): a kill in between loses the entry,
    never the state, so the victim's log may miss some (counted in the notes); a side that was
    not killed must miss none."""
    for c, snap in ((provider, prov), (consumer, cons)):
        wanted = [
            (f"negotiation.{n['state'].lower()}", n["id"])
            for n in snap.negotiations
            if n["state"] in SETTLED_NEGOTIATION
        ]
        wanted += [
            (f"transfer.{t['state'].lower()}", t["id"])
            for t in snap.transfers
            if t["state"] in SETTLED_TRANSFER
        ]
        role = "provider" if c is provider else "consumer"
        deadline = time.monotonic() + 5  # the last entries follow their commits closely
        while True:
            log = c.directory / f"audit-{c.name}.log"
            logged = {(e.kind, e.process_id) for e in read_entries(log)}
            missing = [w for w in wanted if w not in logged]
            if not missing or role == report.victim or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if role == report.victim:
            if missing:
                report.notes.append(
                    f"the {role}'s audit log misses {len(missing)} final state(s) "
                    "appended after a commit the kill interrupted"
                )
        else:
            report.failures += [f"the {role}'s audit log has no {kind} for {pid}" for kind, pid in missing]


# ------------------------------------------------------------------ a whole bench


@dataclass
class Summary:
    reports: list[RunReport] = field(default_factory=list)

    def table(self) -> list[str]:
        lines = [
            f"{'victim':9} {'runs':>4} {'faults':>6} {'settled':>7} {'lost':>4} {'dup':>4} "
            f"{'limit':>5} {'failed':>6} {'terminated':>10} {'uses rcvd/counted':>17} "
            f"{'kill cost<=':>11} {'expected':>8} {'time s':>7}"
        ]
        for victim in VICTIMS:
            rs = [r for r in self.reports if r.victim == victim]
            if not rs:
                continue
            lines.append(
                f"{victim:9} {len(rs):>4} {sum(r.kill.at > 0 for r in rs):>6} "
                f"{sum(r.settled for r in rs):>7} {sum(len(r.lost) for r in rs):>4} "
                f"{sum(len(r.duplicated) for r in rs):>4} "
                f"{sum(len(r.limit_violations) for r in rs):>5} "
                f"{sum(not r.ok for r in rs):>6} {sum(len(r.terminated) for r in rs):>10} "
                f"{sum(r.uses_received for r in rs):>8}/{sum(r.uses_counted for r in rs):<8} "
                f"{sum(r.uses_allowed_loss for r in rs):>11} "
                f"{sum(len(r.expected) for r in rs):>8} {sum(r.seconds for r in rs):>7.1f}"
            )
        return lines


__all__ = ["VICTIMS", "ChaosConfig", "ChaosSpace", "RunReport", "Summary", "run_once"]
