"""VaultExport: one export of a vault copy decided on the agreement, logged, and streamed."""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector.audit.log import AuditLog
from connector.consumer import Denied, Vault, agreement_duties
from connector.identity.ca import CertificateAuthority, create_csr, participant_id
from connector.identity.keys import SigningKey
from connector.odrl.plain import POLICY_CONTEXT
from connector.odrl.templates import fill
from connector.store import Store
from connector.store.rows import AgreementRow
from connector.usage import envelope as E
from connector.usage.export import IRI_ONLY, VaultExport

# certificates are issued as of the collection, however late the suite reaches this module
NOW = dt.datetime.now(dt.UTC)
ISSUED = NOW.timestamp() - 3600
DATA = b"a,b\n" + b"1,2\n" * 50000
THIRD = "https://provider.example/policies/third-party-use"


def stored(policy: dict[str, Any], agreement_id: str, assignee: str) -> dict[str, Any]:
    """The agreement as the store keeps it (compact, without its context)."""
    doc = {k: v for k, v in policy.items() if k != "@context"}
    return {**doc, "@id": agreement_id, "@type": "Agreement", "assignee": assignee}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = CertificateAuthority.create(ca_key, "Test", now=ISSUED)
    me = ec.generate_private_key(ec.SECP256R1())
    my_cert = ca.sign_csr(create_csr(me, "consumer"), now=ISSUED)
    bob = ec.generate_private_key(ec.SECP256R1())
    bob_cert = ca.sign_csr(create_csr(bob, "bob"), now=ISSUED)
    audit = AuditLog.open(tmp_path / "audit.log", me, my_cert.public_key(), time.time)  # type: ignore[arg-type]
    store = await Store.open(f"sqlite:///{tmp_path / 'connector.db'}")
    await store.migrate()
    vault = Vault(store)
    export = VaultExport(
        store=store,
        vault=vault,
        ca=ca.certificate,
        audit=audit,
        clock=lambda: NOW,
        participant_id=participant_id(my_cert),
        sender=E.Sender(SigningKey.from_private_key(me), my_cert),
    )

    async def copy(
        agreement_id: str,
        template: str,
        params: dict[str, str] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> str:
        doc = policy or fill(template, params or {}, target="urn:asset:x", assigner="urn:p")
        kept = stored(doc, agreement_id, participant_id(my_cert))
        async with store.transaction() as tx:
            await tx.agreements.add(
                AgreementRow(
                    id=agreement_id,
                    provider_id="urn:p",
                    consumer_id="urn:consumer",
                    target="urn:asset:x",
                    policy=kept,
                    signed_at=NOW,
                )
            )
        f = tmp_path / f"{agreement_id.rsplit(':', 1)[-1]}.csv"
        f.write_bytes(DATA)
        item = await vault.register(
            f,
            agreement_id=agreement_id,
            duties=agreement_duties(kept, NOW),
            transfer_id="t1",
            provider_id="urn:p",
            provider_address="https://p",
            now=NOW,
        )
        return item.id

    bob_pem = bob_cert.public_bytes(serialization.Encoding.PEM).decode()
    yield SimpleNamespace(export=export, audit=audit, copy=copy, bob=bob, bob_pem=bob_pem, ca=ca, vault=vault)
    await store.close()


def kinds(w: SimpleNamespace, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in w.audit.entries() if e.kind == kind]


def opened(export: Any, key: Any) -> tuple[dict[str, Any], bytes]:
    o = E.open_envelope(io.BytesIO(b"".join(export.stream())), key)
    return o.header, b"".join(o.chunks)


async def test_an_encrypted_only_copy_leaves_encrypted_and_logged(world: SimpleNamespace) -> None:
    item = await world.copy("urn:a:enc", "distribute-only-if-encrypted")
    with pytest.raises(Denied) as denied:
        await world.export.prepare(item, recipient_pem=None, plain=True)
    assert denied.value.status == 403 and "no unencrypted export" in denied.value.reason
    with pytest.raises(Denied) as unnamed:
        await world.export.prepare(item, recipient_pem=None, plain=False)
    assert unnamed.value.status == 400
    out = await world.export.prepare(item, recipient_pem=world.bob_pem, plain=False)
    header, data = opened(out, world.bob)
    assert data == DATA
    signed = E.open_envelope(io.BytesIO(b"".join(out.stream())), world.bob, ca=world.ca.certificate, now=NOW)
    assert signed.sender == header["sender"] and b"".join(signed.chunks) == DATA
    assert header["agreementId"] == "urn:a:enc" and header["provider"] == "urn:p"
    assert header["nextPolicy"] is None
    [logged] = kinds(world, "vault.distributed")
    assert logged["encrypted"] is True and logged["vaultId"] == item
    assert logged["recipient"]["certificateSha256"] == header["recipient"]["certificateSha256"]
    assert [d["action"] for d in kinds(world, "vault.denied")] == ["distribute"]


async def test_the_next_policy_goes_with_the_copy(world: SimpleNamespace) -> None:
    by_iri = await world.copy("urn:a:iri", "attach-policy-for-third-party", {"nextPolicy": THIRD})
    out = await world.export.prepare(by_iri, recipient_pem=world.bob_pem, plain=False)
    header, _ = opened(out, world.bob)
    assert header["nextPolicy"] == {"@id": THIRD} and header["nextPolicyNote"] == IRI_ONLY
    # embedded in the agreement: the whole document travels
    doc = fill("attach-policy-for-third-party", {"nextPolicy": THIRD}, target="urn:asset:x", assigner="urn:p")
    embedded = {
        "@id": THIRD,
        "@type": "Set",
        "permission": [
            {
                "action": "use",
                "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "urn:purpose:x"}],
            }
        ],
    }
    doc["permission"][1]["duty"][0]["target"] = embedded
    item = await world.copy("urn:a:doc", "", policy=doc)
    out = await world.export.prepare(item, recipient_pem=world.bob_pem, plain=False)
    header, _ = opened(out, world.bob)
    # the store keeps agreements compact without a context: the policies' context is given
    assert header["nextPolicy"] == {"@context": POLICY_CONTEXT, **embedded}
    assert "nextPolicyNote" not in header
    # a plain copy carries no policy: refused
    with pytest.raises(Denied) as plain:
        await world.export.prepare(item, recipient_pem=None, plain=True)
    assert "travels only in an envelope" in plain.value.reason
    assert [d["nextPolicyDocument"] for d in kinds(world, "vault.distributed")] == [False, True]


async def test_use_grants_no_distribution_and_strangers_are_no_recipients(world: SimpleNamespace) -> None:
    item = await world.copy("urn:a:n", "n-times-usage", {"max": "3"})
    with pytest.raises(Denied) as denied:
        await world.export.prepare(item, recipient_pem=world.bob_pem, plain=False)
    assert denied.value.status == 403
    assert denied.value.reason.startswith("distribute is not granted")
    enc = await world.copy("urn:a:enc2", "distribute-only-if-encrypted")
    other = CertificateAuthority.create(ec.generate_private_key(ec.SECP256R1()), "Test", now=ISSUED)
    stranger = (
        other.sign_csr(create_csr(ec.generate_private_key(ec.SECP256R1()), "bob"), now=ISSUED)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with pytest.raises(Denied) as refused:
        await world.export.prepare(enc, recipient_pem=stranger, plain=False)
    assert refused.value.status == 400 and "not issued by this data space's CA" in refused.value.reason
    assert kinds(world, "vault.distributed") == []


async def test_a_changed_copy_does_not_leave(world: SimpleNamespace) -> None:
    item = await world.copy("urn:a:changed", "distribute-only-if-encrypted")
    Path((await world.vault.get(item)).path).write_bytes(DATA + b"9,9\n")
    with pytest.raises(Denied) as changed:
        await world.export.prepare(item, recipient_pem=world.bob_pem, plain=False)
    assert changed.value.status == 409
    with pytest.raises(Denied) as missing:
        await world.export.prepare("0" * 24, recipient_pem=world.bob_pem, plain=False)
    assert missing.value.status == 404


async def test_a_plain_copy_leaves_where_the_agreement_permits_it(world: SimpleNamespace) -> None:
    doc = {
        "@context": POLICY_CONTEXT,
        "@type": "Offer",
        "@id": "urn:offer:plain",
        "target": "urn:asset:x",
        "assigner": "urn:p",
        "permission": [{"action": "use"}, {"action": "distribute"}],
    }
    item = await world.copy("urn:a:plain", "", policy=doc)
    out = await world.export.prepare(item, recipient_pem=None, plain=True)
    assert not out.encrypted and b"".join(out.stream()) == DATA
    [logged] = kinds(world, "vault.distributed")
    assert logged["encrypted"] is False and logged["recipient"] is None


async def test_a_copy_whose_delete_obligation_is_due_does_not_leave(world: SimpleNamespace) -> None:
    past = (NOW - dt.timedelta(minutes=1)).isoformat()
    doc = {
        "@context": POLICY_CONTEXT,
        "@type": "Offer",
        "@id": "urn:offer:gone",
        "target": "urn:asset:x",
        "assigner": "urn:p",
        "permission": [{"action": "use"}, {"action": "distribute"}],
        "obligation": [
            {
                "action": "idsc:DELETE",
                "assigner": "urn:p",
                "constraint": [{"leftOperand": "dateTime", "operator": "gteq", "rightOperand": past}],
            }
        ],
    }
    item = await world.copy("urn:a:gone", "", policy=doc)
    with pytest.raises(Denied) as gone:
        await world.export.prepare(item, recipient_pem=None, plain=True)
    assert gone.value.status == 410 and "delete duty" in gone.value.reason
    assert kinds(world, "vault.distributed") == []
