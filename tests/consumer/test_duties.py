"""An agreement's duties, read one way from the ODRL model: in every spelling of the delete
duty (odrl:delete, delete, its IRI, idsc:DELETE, IDS-G's idsc:DELETE action), under a
permission's duty or as an obligation, timed by a dateTime or a delay, the copy's deletion is
scheduled in the vault, local use is refused once it is due, and the duty round deletes the copy
and reports it to the provider."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from connector.audit.log import AuditLog
from connector.consumer import (
    ConsumerConfig,
    ConsumerSide,
    Denied,
    DutyRunner,
    LocalUse,
    Vault,
    agreement_duties,
    delete_after,
)
from connector.consumer.notices import NOTICE_TYP, verify_notice
from connector.consumer.vault import item_id
from connector.http.client import Delivery
from connector.identity.ca import CertificateAuthority, certificate_pem, create_csr, participant_id
from connector.identity.keys import SigningKey, generate_private_key
from connector.protocol.transfer import Transfer
from connector.store import AgreementRow, Store, TransferRow

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
AT = datetime(2026, 11, 24, tzinfo=UTC)  # the dateTime forms' deletion time
DELAY = timedelta(days=2)  # the delay forms' deletion time after signing
IDS_CLASSES = Path(__file__).parents[1] / "odrl" / "ids-classes"
PROVIDER, PROVIDER_URL = "urn:test:provider", "https://provider.example/dsp"
CONSUMER = "urn:test:consumer"
O = "http://www.w3.org/ns/odrl/2/"

ACTIONS = {
    "delete": "delete",
    "odrl:delete": "odrl:delete",
    "iri": O + "delete",
    "idsc:DELETE": "idsc:DELETE",
    "idsc:DELETE node": {"@id": "idsc:DELETE"},
}
TIMES = {
    "dateTime": ({"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2026-11-24T00:00:00Z"}, AT),
    "dateTime typed": (
        {
            "leftOperand": "odrl:dateTime",
            "operator": "odrl:eq",
            "rightOperand": {"@value": "2026-11-24T00:00:00Z", "@type": "xsd:dateTime"},
        },
        AT,
    ),
    "elapsedTime": (
        {
            "leftOperand": "elapsedTime",
            "operator": "gteq",
            "rightOperand": {"@value": "P2D", "@type": "xsd:duration"},
        },
        NOW + DELAY,
    ),
    "idsc:DELAY": (
        {
            "leftOperand": "idsc:DELAY",
            "operator": "idsc:DURATION_EQ",
            "rightOperand": {"@value": "P2D", "@type": "xsd:duration"},
        },
        NOW + DELAY,
    ),
}


def compact(action: Any, constraint: dict[str, Any], placement: str) -> dict[str, Any]:
    """An agreement as the store keeps it, its delete duty where ``placement`` says."""
    duty = {"action": action, "constraint": [constraint]}
    doc: dict[str, Any] = {
        "@id": "urn:agreement:x",
        "@type": "Agreement",
        "target": "urn:asset:x",
        "assigner": PROVIDER,
        "assignee": CONSUMER,
        "permission": [{"action": "use"}],
    }
    if placement == "duty":
        doc["permission"][0]["duty"] = [duty]
    else:
        doc["obligation"] = [{**duty, "assigner": PROVIDER, "assignee": CONSUMER}]
    return doc


def ids_document(name: str) -> dict[str, Any]:
    return json.loads((IDS_CLASSES / name).read_text())


CASES: list[Any] = [
    pytest.param(compact(action, constraint, placement), due, id=f"{name}-{placement}-{form}")
    for name, action in ACTIONS.items()
    for placement in ("duty", "obligation")
    for form, (constraint, due) in TIMES.items()
]
# IDS-G: ids:postDuty with the action idsc:DELETE, delayed (idsc:DELAY) or at a time
CASES += [
    pytest.param(
        ids_document("pc12-idsg-use-and-delete-after.json"),
        NOW + timedelta(days=7),
        id="idsg-postDuty-idsc:DELETE-delay",
    ),
    pytest.param(
        ids_document("pc12-ids-use-and-delete-after.json"),
        datetime(2027, 1, 1, tzinfo=UTC),
        id="ids-postDuty-idsc:DELETE-dateTime",
    ),
    pytest.param(
        ids_document("pc12-odrl-use-and-delete-after.json"),
        datetime(2027, 1, 1, tzinfo=UTC),
        id="odrl-document-delete",
    ),
]


@pytest.mark.parametrize(("policy", "due"), CASES)
def test_every_spelling_schedules_the_deletion(policy: dict[str, Any], due: datetime) -> None:
    duties = agreement_duties(policy, NOW)
    assert duties.delete_at == due and duties.has_delete and duties.unhandled == ()
    assert delete_after(policy, NOW) == due
    assert not duties.deletion_due(due - timedelta(seconds=1)) and duties.deletion_due(due)


def test_use_duties_of_an_agreement() -> None:
    d = agreement_duties(
        {
            "permission": [
                {
                    "action": "use",
                    "duty": [
                        {"action": "idsc:LOG"},
                        {"action": "inform", "informedParty": {"@id": "https://p.example"}},
                        {"action": "delete", "constraint": []},
                    ],
                }
            ]
        }
    )
    assert d.log and d.inform == ("https://p.example",) and d.unhandled == ()
    assert d.has_delete and d.delete_at is None  # a delete duty with no time schedules nothing
    # IDS's notify is inform; no informed party named: the provider is told
    d = agreement_duties({"permission": [{"action": "use", "duty": [{"action": "idsc:NOTIFY"}]}]})
    assert d.inform == ("",) and not d.log
    # what the connector cannot fulfil stops local use (fail closed), obligations included
    d = agreement_duties(
        {
            "permission": [{"action": "use", "duty": [{"action": "anonymize"}]}],
            "obligation": [{"action": "compensate"}],
        }
    )
    assert d.unhandled == ("anonymize", "compensate")
    # a distribute permission's duties bind an export, not a local read; its delete duty still
    # deletes the copy
    d = agreement_duties(
        {
            "permission": [
                {"action": "use"},
                {
                    "action": "distribute",
                    "duty": [
                        {"action": "idsc:ENCRYPT"},
                        {
                            "action": "delete",
                            "constraint": [
                                {
                                    "leftOperand": "dateTime",
                                    "operator": "gteq",
                                    "rightOperand": "2026-11-24T00:00:00Z",
                                }
                            ],
                        },
                    ],
                },
            ]
        }
    )
    assert d.unhandled == () and d.delete_at == AT


def test_delete_after_from_datetime_and_elapsed_time() -> None:
    dt = {
        "permission": [
            {
                "duty": [
                    {
                        "action": "delete",
                        "constraint": [
                            {
                                "leftOperand": "dateTime",
                                "operator": "gteq",
                                "rightOperand": "2026-12-01T00:00:00Z",
                            }
                        ],
                    }
                ]
            }
        ]
    }
    assert delete_after(dt, NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    el = {
        "permission": [
            {
                "duty": [
                    {
                        "action": "delete",
                        "constraint": [
                            {
                                "leftOperand": "elapsedTime",
                                "operator": "gteq",
                                "rightOperand": {"@value": "P2D", "@type": "xsd:duration"},
                            }
                        ],
                    }
                ]
            }
        ]
    }
    assert delete_after(el, NOW) == NOW + timedelta(days=2)
    assert delete_after({"permission": [{"action": "use"}]}, NOW) is None


# ------------------------------------------------------------------ in the vault, with a store


@dataclass
class Provider:
    """The provider's /notices endpoint as the consumer's DSP client reaches it."""

    notices: list[tuple[str, str]] = field(default_factory=list)
    up: bool = True

    async def post(self, url: str, payload: Any) -> Delivery:
        if not self.up:
            return Delivery(False, False, None, None, "connection refused")
        self.notices.append((url, payload["notice"]))
        return Delivery(True, False, 200, {"received": True}, "")


@dataclass
class Consumer:
    """The control plane as the consumer side sees it (connector.consumer.ports)."""

    store: Store
    audit: AuditLog | None
    client: Provider
    now: datetime = NOW
    participant_id: str = CONSUMER
    held: None = None

    def clock(self) -> datetime:
        return self.now

    async def transfer_command(self, transfer_id: str, command: Any) -> Transfer:
        raise AssertionError("not used by local use")

    async def refresh_pull_token(self, transfer_id: str) -> Transfer:
        raise AssertionError("not used by local use")

    async def own_attributes(self) -> Mapping[str, Any]:
        return {}


@pytest.fixture
def space(tmp_path: Path) -> dict[str, Any]:
    ca = CertificateAuthority.create(generate_private_key("ES256"), "Space", now=NOW.timestamp())
    key = generate_private_key("EdDSA")
    cert = ca.sign_csr(create_csr(key, "Consumer"), now=NOW.timestamp())
    (tmp_path / "ca.crt").write_text(certificate_pem(ca.certificate))
    config = ConsumerConfig.load(
        ca_file=tmp_path / "ca.crt",
        vault_dir=tmp_path / "vault",
        signing_key=SigningKey.from_private_key(key),
        certificate=cert,
    )
    audit = AuditLog.open(tmp_path / "audit.log", key, cert.public_key(), lambda: NOW.timestamp())  # type: ignore[arg-type]
    return {"ca": ca, "config": config, "audit": audit, "pid": participant_id(cert)}


async def hold(store: Store, policy: dict[str, Any], tmp_path: Path, n: int = 1) -> str:
    """An agreement, a consumer transfer under it and its copy on disk; the transfer id."""
    agreement_id, transfer_id = f"urn:agreement:{n}", f"urn:transfer:{n}"
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id=agreement_id,
                provider_id=PROVIDER,
                consumer_id=CONSUMER,
                target="urn:asset:x",
                policy=policy,
                signed_at=NOW,
            )
        )
        await tx.transfers.add(
            TransferRow(
                id=transfer_id,
                role="consumer",
                state="COMPLETED",
                created_at=NOW,
                updated_at=NOW,
                agreement_id=agreement_id,
                counter_party_id=PROVIDER,
                counter_party_address=PROVIDER_URL,
            )
        )
    (tmp_path / f"copy-{n}.csv").write_text("a,b\n1,2\n")
    return transfer_id


@pytest.mark.parametrize(("policy", "due"), CASES)
async def test_deleted_when_due_and_not_used_after(
    store: Store, space: dict[str, Any], tmp_path: Path, policy: dict[str, Any], due: datetime
) -> None:
    provider = Provider()
    cp = Consumer(store, space["audit"], provider)
    vault = Vault(store)
    runner = DutyRunner(cp, space["config"], vault)
    local = LocalUse(cp, space["config"], vault)
    transfer_id = await hold(store, policy, tmp_path)
    item = await runner.register_local_copy(tmp_path / "copy-1.csv", transfer_id)
    assert item.delete_at == due.isoformat()
    cp.now = due - timedelta(seconds=1)
    assert await vault.due(cp.now) == [] and await runner.run_duties() == 0
    if not policy.get("@context"):  # the compact agreements: a use before the duty is due
        used, path = await local.use(item.id)
        assert used.uses == 1 and path.read_text() == "a,b\n1,2\n"
    cp.now = due
    assert [i.id for i in await vault.due(due)] == [item.id]
    # due, and the scheduler has not run yet: no use
    with pytest.raises(Denied) as refused:
        await local.use(item.id)
    assert refused.value.status == 410 and "delete duty" in refused.value.reason
    provider.up = False  # deleted, but the provider not told: told in a later round
    assert await runner.run_duties() == 0
    assert not (tmp_path / "copy-1.csv").exists()
    assert [i.id for i in await vault.due(due)] == [item.id]
    provider.up = True
    assert await runner.run_duties() == 1
    assert await vault.due(due + timedelta(days=1)) == []
    [(url, notice)] = provider.notices
    assert url == f"{PROVIDER_URL}/notices"
    if due < datetime.now(UTC):  # pyjwt checks iat against the wall clock
        claims = verify_notice(
            notice, ca=space["ca"].certificate, sender=space["pid"], audience=PROVIDER, now=due
        )
        assert claims["typ"] == NOTICE_TYP
    else:
        claims = jwt.decode(notice, options={"verify_signature": False})
        assert jwt.get_unverified_header(notice)["typ"] == NOTICE_TYP
    assert claims["agreementId"] == item.agreement_id and claims["sha256"] == item.sha256
    gone = await vault.get(item.id)
    assert gone is not None and gone.deleted_at == due.isoformat() and gone.notice_sent
    with pytest.raises(Denied) as deleted:
        await local.use(item.id)
    assert deleted.value.status == 410
    kinds = [e.kind for e in space["audit"].entries()]
    assert kinds.count("duty.deleted") == 1 and kinds.count("deletion-notice.sent") == 1


async def test_a_copy_registered_before_the_duty_was_read_is_not_used_when_due(
    store: Store, space: dict[str, Any], tmp_path: Path
) -> None:
    """An index row without a deletion time (an older version's reading missed idsc:DELETE or
    the obligation): local use still reads the agreement's duties and refuses once due."""
    policy = compact("idsc:DELETE", TIMES["dateTime"][0], "obligation")
    cp = Consumer(store, space["audit"], Provider())
    vault = Vault(store)
    transfer_id = await hold(store, policy, tmp_path)
    item = await vault.register(
        tmp_path / "copy-1.csv",
        agreement_id="urn:agreement:1",
        duties=agreement_duties({"permission": [{"action": "use"}]}),
        transfer_id=transfer_id,
        provider_id=PROVIDER,
        provider_address=PROVIDER_URL,
        now=NOW,
    )
    assert item.delete_at is None
    cp.now = AT
    with pytest.raises(Denied) as refused:
        await LocalUse(cp, space["config"], vault).use(item.id)
    assert refused.value.status == 410


async def test_the_consumer_side_imports_old_records_on_start(
    store: Store, space: dict[str, Any], tmp_path: Path
) -> None:
    records = tmp_path / "vault-records"
    records.mkdir()
    transfer_id = await hold(store, compact("delete", TIMES["dateTime"][0], "duty"), tmp_path)
    path = str((tmp_path / "copy-1.csv").resolve())
    vid = item_id("urn:agreement:1", path)
    (records / f"{vid}.json").write_text(
        json.dumps(
            {
                "path": path,
                "agreement_id": "urn:agreement:1",
                "transfer_id": transfer_id,
                "provider_id": PROVIDER,
                "provider_address": PROVIDER_URL,
                "sha256": "ab" * 32,
                "delete_at": AT.isoformat(),
                "registered_at": NOW.isoformat(),
                "deleted_at": None,
                "notice_sent": False,
                "uses": 0,
            }
        )
    )
    cp = Consumer(store, space["audit"], Provider(), now=AT)
    side = ConsumerSide(cp, replace(space["config"], records_dir=records))
    await side.start()
    try:
        assert [i["id"] for i in await side.local.list_items()] == [vid]
        assert [i.id for i in await side.vault.due(AT)] == [vid]
        assert await side.duties.run_duties() == 1
        assert not (tmp_path / "copy-1.csv").exists()
    finally:
        await side.stop()
