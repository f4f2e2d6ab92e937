"""Pulls run by the consumer's connector.

`Downloads` pulls a STARTED transfer's data with the endpoint data reference the provider sent:
streamed to disk, the transfer token refreshed when the data plane answers 401, every response
(denials included) recorded by its receipt sequence number, size and SHA-256, then the
provider's signed receipts fetched and verified against them. The key a receipt is checked with
comes from the certificate in the receipt (x5c), which must be the provider's, issued by the
data-space CA. Each verified receipt goes into the consumer's audit log with the responses it
covers, so `connector audit verify --peer-receipts` can cross-check the two parties' logs. The
copy is registered in the vault, under the agreement's duties. A pull whose copy the vault cannot
hold (a full disk, a read-only file system, the store or the audit log unavailable) fails with
that reason and leaves no file: only a complete, verified, registered copy stays. Where the
agreement has the consumer modify the data at rest (connector.usage.modify), a pulled or pushed
copy is modified as it streams to disk (the receipts still cover the bytes as received; the
vault records the SHA-256 of what is stored), or not kept at all when it cannot be.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from connector.audit.receipts import RECEIPT_KIND, receipt_data
from connector.consumer.config import ConsumerConfig
from connector.consumer.duty_rounds import DutyRunner
from connector.consumer.errors import PullFailed
from connector.consumer.ports import ControlPlanePort
from connector.dataplane.receipts import (
    ReceiptError,
    ReceiptsNotCovered,
    ReceiptVerifier,
    certified_keys,
)
from connector.faults import StoreUnavailable, from_os_error
from connector.http.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    guarded_connector,
)
from connector.odrl.parse import load_policy
from connector.protocol import transfer as xfer
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import PULL, DataAddress
from connector.store.rows import TransferRow
from connector.usage import pipeline
from connector.usage.modify import (
    REFUSED_AT_REST,
    Modification,
    ModificationError,
    Transformer,
    choose_media_type,
    planned,
)
from connector.wireformat import RECEIPT_CHAIN_HEADER, RECEIPT_SEQ_HEADER

log = logging.getLogger(__name__)
CHUNK = 1 << 20
RECEIPT_WAIT = 3.0  # seconds to wait for the receipt of the last response


@dataclass
class PullJob:
    transfer_id: str
    agreement_id: str
    path: str
    state: str = "running"  # running | done | failed
    bytes: int = 0
    total: int | None = None
    sha256: str = ""
    receipts: int = 0
    responses: int = 0
    error: str = ""
    vault_id: str | None = None
    delete_at: str | None = None
    stored_sha256: str = ""  # of the copy as stored (modified at rest: not the bytes received)
    started: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "transferId": self.transfer_id,
            "agreementId": self.agreement_id,
            "path": self.path,
            "state": self.state,
            "bytes": self.bytes,
            "total": self.total,
            "sha256": self.sha256,
            "receipts": self.receipts,
            "responses": self.responses,
            "error": self.error or None,
            "vaultId": self.vault_id,
            "deleteAt": self.delete_at,
            "storedSha256": self.stored_sha256 or None,
        }


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a pull reads from and whose receipts prove it: the transfer as stored, or as the
    control plane returns it after a token refresh."""

    transfer_id: str
    agreement_id: str
    provider_id: str
    provider_pid: str
    endpoint: str
    authorization: str

    @classmethod
    def of(cls, t: xfer.Transfer | TransferRow) -> _Source:
        if isinstance(t, TransferRow):
            raw = t.data.get("data_address")
            address = DataAddress.parse(raw) if raw else None
        else:
            address = t.data_address
        return cls(
            t.id,
            t.agreement_id,
            t.counter_party_id or "",
            t.provider_pid or "",
            (address.endpoint or "") if address is not None else "",
            (address.property("authorization") or "") if address is not None else "",
        )


@dataclass
class _Responses:
    """What this consumer received in one transfer, for the receipts."""

    received: dict[tuple[str, int], tuple[int, bytes]] = field(default_factory=dict)  # (chain, seq)
    logged: set[str] = field(default_factory=set)  # receipts already in the audit log


class Downloads:
    def __init__(self, cp: ControlPlanePort, config: ConsumerConfig, duties: DutyRunner) -> None:
        self.cp = cp
        self.ca = config.ca
        self.ssl = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file))
        # the endpoint comes from the provider: no pulls from private addresses unless allowed
        self.policy: OutboundPolicy = config.outbound
        self._resolver = GuardedResolver(self.policy)  # connects only to what check_url vetted
        self.vault_dir = config.vault_dir
        self.duties = duties
        self.jobs: dict[str, PullJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._responses: dict[str, _Responses] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self._resolver),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                trust_env=False,
                auto_decompress=False,
            )
        return self._session

    async def start(
        self,
        transfer_id: str,
        *,
        out: str | None,
        purpose: str | None,
        complete: bool = True,
        stated: Mapping[str, str] | None = None,
    ) -> PullJob:
        """Pull a STARTED transfer's data; the request states ``purpose`` and ``stated``
        (application, event, location) to the provider's data plane as headers."""
        async with self.cp.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
        if row is None or row.role != "consumer":
            raise ProtocolError(404, "404", [f"no transfer {transfer_id} of this consumer"])
        if row.format != PULL:
            raise ProtocolError(409, "409", [f"transfer {transfer_id} is {row.format}, not a pull"])
        if row.state != "STARTED" or not row.data.get("data_address"):
            raise ProtocolError(409, "409", [f"transfer {transfer_id} is {row.state}, not STARTED"])
        running = self.jobs.get(transfer_id)
        if running is not None and running.state == "running":
            raise ProtocolError(409, "409", [f"transfer {transfer_id} is being pulled already"])
        if out:
            path = Path(out)
            if not path.is_absolute():
                raise ProtocolError(400, "400", ["out must be an absolute path"])
        else:
            path = self.vault_dir / vault_name(row.agreement_id) / vault_name(transfer_id)
        job = PullJob(transfer_id, row.agreement_id, str(path))
        self.jobs[transfer_id] = job
        headers = pipeline.headers_for({**(stated or {}), "purpose": purpose})
        self._tasks[transfer_id] = asyncio.create_task(self._run(job, headers, complete))
        return job

    async def wait(self, transfer_id: str, timeout: float) -> PullJob | None:
        task = self._tasks.get(transfer_id)
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return self.jobs.get(transfer_id)

    async def _run(self, job: PullJob, stating: Mapping[str, str], complete: bool) -> None:
        try:
            await self._pull(job, stating)
            if complete:
                with contextlib.suppress(ProtocolError):
                    await self.cp.transfer_command(job.transfer_id, xfer.Complete())
            job.state = "done"
        except asyncio.CancelledError:
            job.state, job.error = "failed", "cancelled"
            raise
        except PullFailed as exc:
            job.state, job.error = "failed", str(exc)
        except StoreUnavailable as exc:  # the store or the audit log: nothing was kept
            job.state, job.error = "failed", f"{exc.reason}; the copy was not kept"
        except Exception as exc:
            log.exception("pull of %s failed", job.transfer_id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self._tasks.pop(job.transfer_id, None)
            if self.cp.audit is not None:
                with contextlib.suppress(Exception):
                    await self.cp.audit.aappend(
                        "pull." + ("done" if job.state == "done" else "failed"),
                        {
                            "bytes": job.bytes,
                            "sha256": job.sha256,
                            "receipts": job.receipts,
                            "storedSha256": job.stored_sha256 or None,
                            "error": job.error or None,
                        },
                        transfer_id=job.transfer_id,
                        agreement_id=job.agreement_id,
                    )

    async def _pull(self, job: PullJob, stating: Mapping[str, str]) -> None:
        async with self.cp.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(job.transfer_id)
            agreement = await tx.agreements.get(job.agreement_id)
        assert row is not None
        t = _Source.of(row)
        at_rest = at_rest_modification(agreement.policy) if agreement is not None else None
        seen = self._seen(job.transfer_id)
        must: set[tuple[str, int]] = set()  # this pull's responses: their receipts must prove them
        path = Path(job.path)
        with _vault_writes(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
            os.close(fd)
        tmp = Path(tmp_name)
        http = self._http()
        headers: dict[str, str] = {}
        try:
            for attempt in range(2):
                endpoint = t.endpoint
                try:
                    self._resolver.pin(await check_url(endpoint, self.policy))
                except OutboundRefused as exc:
                    raise PullFailed(f"the provider's data address is refused: {exc.reason}") from None
                headers = {"Authorization": f"Bearer {t.authorization}", **stating}
                async with http.get(
                    endpoint, headers=headers, ssl=self._ssl_for(endpoint), allow_redirects=False
                ) as r:
                    if r.status == 401 and attempt == 0:  # expired: refresh once, retry
                        t = _Source.of(await self.cp.refresh_pull_token(job.transfer_id))
                        continue
                    seq = _seq(r.headers.get(RECEIPT_SEQ_HEADER))
                    chain = r.headers.get(RECEIPT_CHAIN_HEADER, "")[:128]
                    if r.status != 200:
                        body = await r.content.read(64 * 1024 + 1)
                        body = b"" if len(body) > 64 * 1024 else body
                        denied = f"the provider's data plane answered {r.status}: {_reason(body)}"
                        if seq and body:
                            # a denial is a response too: its receipt goes into the log
                            seen.received[(chain, seq)] = (len(body), hashlib.sha256(body).digest())
                            must.add((chain, seq))
                            job.responses = len(must)
                            try:
                                await self._receipts(job, t, endpoint, headers, seen, must)
                            except PullFailed as exc:
                                denied += f" ({exc})"
                        raise PullFailed(denied)
                    length = r.headers.get("Content-Length")
                    job.total = int(length) if length and length.isdigit() else None
                    sha = hashlib.sha256()
                    size = 0
                    out = _VaultFile(
                        tmp, at_rest, choose_media_type(r.headers.get("Content-Type"), name=path.name)
                    )
                    try:
                        async for chunk in r.content.iter_chunked(CHUNK):
                            out.write(chunk)
                            sha.update(chunk)
                            size += len(chunk)
                            job.bytes = size
                    except aiohttp.ClientPayloadError as exc:
                        if seq:  # what arrived; its batch is logged as unproven later
                            seen.received[(chain, seq)] = (size, sha.digest())
                        raise PullFailed(
                            f"the data stopped after {size} bytes ({exc}); "
                            "the provider may have suspended the transfer"
                        ) from None
                    finally:
                        out.close()
                    if seq:
                        seen.received[(chain, seq)] = (size, sha.digest())
                        must.add((chain, seq))
                    job.responses = len(seen.received)
                    if out.fault is not None:  # received in full, but not kept
                        raise out.fault
                    if job.total is not None and size != job.total:
                        raise PullFailed(f"got {size} of {job.total} bytes")
                    job.sha256 = sha.hexdigest()
                    break
            else:
                raise PullFailed("the refreshed transfer token was refused too")
            await self._receipts(job, t, endpoint, headers, seen, must)
            with _vault_writes(path.parent):
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        try:
            with _vault_writes(path.parent):
                item = await self.duties.register_local_copy(path, job.transfer_id)
        except (PullFailed, StoreUnavailable):
            # a copy the vault does not hold under its agreement is not kept
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        job.vault_id, job.delete_at, job.stored_sha256 = item.id, item.delete_at, item.sha256

    def _ssl_for(self, endpoint: str) -> ssl.SSLContext | bool:
        return self.ssl if endpoint.startswith("https:") else False

    def _seen(self, transfer_id: str) -> _Responses:
        """What this connector received and logged of a transfer; after a restart, rebuilt from
        its audit log (the receipts logged there, with the responses they cover)."""
        seen = self._responses.get(transfer_id)
        if seen is not None:
            return seen
        seen = self._responses[transfer_id] = _Responses()
        if self.cp.audit is not None:
            for entry in self.cp.audit.entries():
                if entry.kind != RECEIPT_KIND or entry.transfer_id != transfer_id:
                    continue
                token = entry.data.get("token") if isinstance(entry.data, dict) else None
                if not isinstance(token, str):
                    continue
                seen.logged.add(token)
                try:
                    chain = jwt.decode(token, options={"verify_signature": False}).get("chain", "")
                    for s, n, d in entry.data.get("responses") or []:
                        if s not in (entry.data.get("unreceived") or []):
                            seen.received[(str(chain), int(s))] = (int(n), bytes.fromhex(d))
                except (jwt.PyJWTError, ValueError, TypeError):
                    continue
        return seen

    async def _receipts(
        self,
        job: PullJob,
        t: _Source,
        endpoint: str,
        headers: dict[str, str],
        seen: _Responses,
        must: set[tuple[str, int]],
    ) -> None:
        """Fetch the provider's receipts (every replica's chains); verify they prove this pull's
        responses; log the new ones (a batch this consumer cannot prove, e.g. one with an
        earlier response that broke off, is logged as unproven)."""
        deadline = time.monotonic() + RECEIPT_WAIT
        refreshed = False
        while True:
            async with self._http().get(
                f"{endpoint}/receipts", headers=headers, ssl=self._ssl_for(endpoint), allow_redirects=False
            ) as r:
                if r.status == 401 and not refreshed:  # the token expired during the pull
                    t = _Source.of(await self.cp.refresh_pull_token(job.transfer_id))
                    headers = {**headers, "Authorization": f"Bearer {t.authorization}"}
                    refreshed = True
                    continue
                if r.status != 200:
                    raise PullFailed(f"the provider gave no receipts ({r.status})")
                receipts = (await r.json()).get("receipts")
            if not isinstance(receipts, list) or not all(isinstance(x, str) for x in receipts):
                raise PullFailed("the provider's receipts are malformed")
            try:
                if not receipts:
                    raise ReceiptError("no receipt covers the data")
                keys = certified_keys(ca=self.ca, provider_id=t.provider_id, now=time.time())
                verifier = ReceiptVerifier(
                    keys, transfer_id=t.provider_pid, agreement_id=t.agreement_id, issuer=t.provider_id
                )
                for (chain, seq), (n, d) in seen.received.items():
                    verifier.add(seq, n, d, chain)
                verified = verifier.verify_lenient(receipts, must)
                coverage = verified.coverage
                break
            except ReceiptsNotCovered as exc:
                # the last response's receipt may be a moment behind its bytes
                if time.monotonic() > deadline:
                    raise PullFailed(f"the provider's receipts do not cover the data: {exc}") from None
                await asyncio.sleep(0.1)
            except ReceiptError as exc:
                raise PullFailed(f"the provider's receipts do not cover the data: {exc}") from None
        job.receipts = coverage.receipts
        if self.cp.audit is not None:
            events = []
            for token in receipts:
                if token in seen.logged:
                    continue
                claims = jwt.decode(token, options={"verify_signature": False})  # verified above
                chain = claims.get("chain", "")
                span = range(claims["seq_from"], claims["seq_to"] + 1)
                covered = [(s, *seen.received[(chain, s)]) for s in span if (chain, s) in seen.received]
                data = receipt_data(token, covered)
                if token in verified.unproven:
                    data["unproven"] = True  # what the consumer got differs from what was signed
                    data["unreceived"] = [s for s in span if (chain, s) not in seen.received]
                events.append(
                    (
                        RECEIPT_KIND,
                        data,
                        {
                            "transfer_id": job.transfer_id,
                            "agreement_id": job.agreement_id,
                            "participant_id": t.provider_id,
                        },
                    )
                )
            if events:
                await self.cp.audit.aappend_many(events)
            seen.logged.update(receipts)


class _VaultFile:
    """The file a pull streams into. A storage fault (a full disk) is kept, not raised: the rest
    of the response is still read and hashed, so the provider's receipt for it stays provable,
    and the pull then fails with the fault. With the agreement's modification at rest, the
    bytes are modified before they are written; data that cannot be modified is such a fault
    too (nothing of it is kept)."""

    def __init__(
        self, path: Path, modification: Modification | None = None, media_type: str | None = None
    ) -> None:
        self.path = path
        self.fault: PullFailed | None = None
        self._modify: Transformer | None = None
        with _vault_writes(path.parent):
            self._file = path.open("wb")
        if modification is not None:
            try:
                self._modify = modification.start(media_type)
            except ModificationError as exc:
                self.fault = _not_kept(exc)

    def write(self, chunk: bytes) -> None:
        if self.fault is None:
            self._put(lambda: self._modify.feed(chunk) if self._modify is not None else chunk)

    def _put(self, data: Callable[[], bytes]) -> None:
        """Write what ``data`` gives (the modification applied); a fault is kept, not raised."""
        try:
            out = data()
            with _vault_writes(self.path.parent):
                self._file.write(out)
        except PullFailed as exc:
            self.fault = exc
        except ModificationError as exc:
            self.fault = _not_kept(exc)

    def close(self) -> None:
        """Flush and close; a fault here is kept too (the descriptor is closed either way)."""
        if self._modify is not None and self.fault is None:
            self.write_tail()
        try:
            with _vault_writes(self.path.parent):
                self._file.close()
        except PullFailed as exc:
            self.fault = self.fault or exc

    def write_tail(self) -> None:
        modify = self._modify
        assert modify is not None
        self._put(modify.finish)


def _not_kept(exc: ModificationError) -> PullFailed:
    return PullFailed(f"{REFUSED_AT_REST}: {exc.reason}; the copy was not kept")


def at_rest_modification(agreement: dict[str, Any]) -> Modification | None:
    """What the agreement's duty to modify the data at rest requires of this consumer's copy
    (an unperformable one refuses every copy, with the reason)."""
    return planned(load_policy(pipeline.agreement_document(agreement)), "rest")


@contextlib.contextmanager
def _vault_writes(directory: Path) -> Iterator[None]:
    """A storage fault writing the vault (a full disk, a read-only file system) fails the pull
    with its reason; the caller removes what it wrote."""
    try:
        yield
    except OSError as exc:
        fault = from_os_error(exc, "the vault", directory)
        if fault is None:
            raise
        raise PullFailed(f"{fault.reason}; the copy was not kept (check {fault.check})") from exc


def _seq(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def _reason(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace")


def vault_name(name: str) -> str:
    """A file name for an id the counter-party may have chosen: never "." or "..", never a
    path, and distinct ids never collide."""
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


__all__ = ["CHUNK", "RECEIPT_WAIT", "Downloads", "PullJob", "at_rest_modification", "vault_name"]
