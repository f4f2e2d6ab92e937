"""Every usage-policy template, offered, negotiated and used through real processes (an
authority, a provider and two consumers on loopback): the permitted request succeeds, the
forbidden one is denied with its reason, at the point where the template's IDS class is
enforced (catalog, negotiation, data plane, the consumer's local use), and its duties are done.

The participants, as the authority attests them: ``prov`` (provider, jurisdiction DE); ``cons``
(consumer role, BASE security profile, jurisdiction DE, no connector attested) and ``trusted``
(provider and consumer roles, TRUST_PLUS, jurisdiction CN, its connector attested as
``referringConnector``, member of the group ``partners``)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, admin, negotiate, offer_asset, wait_final, wait_transfer

pytestmark = pytest.mark.integration
CONTENT = b"station,temp\n" + b"".join(f"s{i},{i % 40}\n".encode() for i in range(2000))
DPV = "https://w3id.org/dpv#"


def attest(space: DataSpace, c: Connector, **attributes: Any) -> None:
    status, view = admin(space, "PATCH", f"/admin/participants/{c.participant_id}/attributes", attributes)
    assert status == 200, view


@pytest.fixture(scope="module")
def prov(space: DataSpace) -> Connector:
    c = space.connector("prov", roles=("provider",), start=False)
    attest(space, c, jurisdiction={"country": "DE"})
    c.start()
    return c


@pytest.fixture(scope="module")
def cons(space: DataSpace) -> Connector:
    c = space.connector("cons", roles=("consumer",), start=False)
    attest(space, c, jurisdiction={"country": "DE"})
    c.start()
    return c


@pytest.fixture(scope="module")
def trusted(space: DataSpace) -> Connector:
    c = space.connector(
        "trusted", roles=("provider", "consumer"), profile="idsc:TRUST_PLUS_SECURITY_PROFILE", start=False
    )
    assert admin(space, "POST", "/admin/groups", {"name": "partners"})[0] == 201
    status, view = admin(
        space, "POST", "/admin/groups/partners/members", {"participant_id": c.participant_id}
    )
    assert status == 200, view
    attest(space, c, jurisdiction={"country": "CN", "subdivision": "CN-SH"}, referringConnector=c.dsp_url)
    c.start()
    return c


# ----------------------------------------------------------------------------- helpers


def offer(prov: Connector, template: str, **params: str) -> str:
    """The template offered for a fresh asset; the catalog offer id."""
    name = f"urn:asset:{template}-{time.monotonic_ns()}"
    return offer_asset(
        prov, asset_id=name, content=CONTENT, contract={"template": template, "params": params}
    )


def catalog_ids(consumer: Connector, prov: Connector) -> set[str]:
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": prov.dsp_url})
    assert status == 200, cat
    return {o["id"] for d in cat["datasets"] for o in d["offers"]}


def agreed(consumer: Connector, prov: Connector, offer_id: str) -> str:
    n = negotiate(consumer, prov, offer_id)
    assert n["state"] == "FINALIZED", n
    return str(n["agreementId"])


def refused(consumer: Connector, prov: Connector, offer_id: str, *words: str) -> None:
    """Not in the consumer's catalog, and a request for it sent anyway (by its id, with terms
    of the consumer's own) is terminated by the provider with the reason."""
    assert offer_id not in catalog_ids(consumer, prov)
    dataset = offer_id[offer_id.index(":urn:asset:") + 1 :]
    status, n = consumer.api(
        "POST",
        "/api/negotiations",
        {
            "peerUrl": prov.dsp_url,
            "offerId": offer_id,
            "datasetId": dataset,
            "terms": {"permission": [{"action": "use"}]},
        },
    )
    assert status == 201, n
    n = wait_final(consumer, n["id"])
    assert n["state"] == "TERMINATED", n
    reason = json.dumps(n.get("terminationReason") or n)
    for w in words:
        assert w in reason, reason


def pull(consumer: Connector, agreement_id: str, **stated: str) -> dict[str, Any]:
    """Pull into the consumer's vault through its connector, stating ``stated``; the job."""
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    assert status == 201, t
    t = wait_transfer(consumer, t["id"], {"STARTED", "TERMINATED"})
    if t["state"] != "STARTED":
        return {"state": "failed", "error": json.dumps(t.get("terminationReason"))}
    status, job = consumer.api("POST", f"/api/transfers/{t['id']}/pull", stated)
    assert status == 202, job
    deadline = time.monotonic() + 60
    while job["state"] == "running" and time.monotonic() < deadline:
        status, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=1")
        assert status == 200, job
    return dict(job)


def pulled(consumer: Connector, agreement_id: str, **stated: str) -> dict[str, Any]:
    job = pull(consumer, agreement_id, **stated)
    assert job["state"] == "done", job
    assert Path(job["path"]).read_bytes() == CONTENT
    return job


def denied(consumer: Connector, agreement_id: str, *words: str, **stated: str) -> str:
    job = pull(consumer, agreement_id, **stated)
    assert job["state"] == "failed", job
    error = str(job["error"])
    assert "403" in error, error
    for w in words:
        assert w in error, error
    return error


def read(consumer: Connector, vault_id: str, **stated: str) -> tuple[int, Any]:
    """One local use of a vault copy through the consumer's management API: (status, the
    bytes or the error body)."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    query = "?" + urlencode(stated) if stated else ""
    req = urllib.request.Request(
        f"{consumer.api_url}/api/vault/{vault_id}/data{query}", headers={"X-Api-Key": consumer.api_key}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def audit(c: Connector, kind: str, agreement_id: str) -> list[dict[str, Any]]:
    status, rows = c.api("GET", f"/api/audit?kind={kind}")
    assert status == 200, rows
    return [r for r in rows if r.get("agreementId") == agreement_id]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------- attested facts


def test_allow_usage_to_everyone(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "allow-usage"))
    pulled(cons, a)


def test_allow_usage_to_a_participant_named_by_its_id(
    prov: Connector, cons: Connector, trusted: Connector
) -> None:
    # a participant id (SKI:keyid:AKI) is not an IRI: the template writes its urn:participant:
    # form, and every point matches the requester in that form
    o = offer(prov, "allow-usage", assignee=cons.participant_id)
    refused(trusted, prov, o, "is not")
    pulled(cons, agreed(cons, prov, o))


def test_role_restricted_at_catalog_negotiation_and_data_plane(
    prov: Connector, cons: Connector, trusted: Connector
) -> None:
    o = offer(prov, "role-restricted", role="dsc:Provider")
    refused(cons, prov, o, "role")
    assert o in catalog_ids(trusted, prov)
    pulled(trusted, agreed(trusted, prov, o))


def test_security_level_is_at_least_the_level_named(
    prov: Connector, cons: Connector, trusted: Connector
) -> None:
    o = offer(prov, "security-level-restricted", securityLevel="idsc:TRUST_SECURITY_PROFILE")
    refused(cons, prov, o, "SECURITY_LEVEL")
    pulled(trusted, agreed(trusted, prov, o))  # TRUST_PLUS is at least TRUST


def test_prohibit_access_leaves_the_catalog_and_a_direct_request_is_terminated(
    prov: Connector, cons: Connector
) -> None:
    o = offer(prov, "prohibit-access")
    refused(cons, prov, o, "prohibit")


def test_connector_restricted_to_the_attested_connector(
    prov: Connector, cons: Connector, trusted: Connector
) -> None:
    o = offer(prov, "connector-restricted", connector=trusted.dsp_url)
    refused(cons, prov, o, "systemDevice")
    pulled(trusted, agreed(trusted, prov, o))


def test_group_restricted(prov: Connector, cons: Connector, trusted: Connector) -> None:
    o = offer(prov, "group-restricted", group="urn:group:partners")
    refused(cons, prov, o, "group")
    pulled(trusted, agreed(trusted, prov, o))


def test_only_within_jurisdictions(prov: Connector, cons: Connector, trusted: Connector) -> None:
    o = offer(prov, "jurisdiction-restricted", jurisdiction="urn:jurisdiction:DE")
    refused(trusted, prov, o, "jurisdiction")
    pulled(cons, agreed(cons, prov, o))
    # a country covers its subdivisions: CN admits the participant attested in CN-SH
    pulled(
        trusted,
        agreed(trusted, prov, offer(prov, "jurisdiction-restricted", jurisdiction="urn:jurisdiction:CN")),
    )


def test_never_to_a_jurisdiction(prov: Connector, cons: Connector, trusted: Connector) -> None:
    o = offer(prov, "jurisdiction-excluded", jurisdiction="urn:jurisdiction:CN")
    refused(trusted, prov, o, "jurisdiction")
    pulled(cons, agreed(cons, prov, o))


def test_export_needs_a_registered_assessment(
    space: DataSpace, prov: Connector, cons: Connector, trusted: Connector
) -> None:
    o = offer(prov, "export-assessment")
    pulled(cons, agreed(cons, prov, o))  # domestic: DE to DE
    refused(trusted, prov, o, "exportStatus")  # CN: an export, not assessed
    # the consumer carries an assessment reference; the provider registers it
    attest(space, trusted, certifications=["urn:assessment:cn-2026-7"])
    status, fact = prov.api(
        "PUT", "/api/facts/dsf:registeredAssessment", {"values": ["urn:assessment:cn-2026-7"]}
    )
    assert status in (200, 201), fact
    try:
        deadline = time.monotonic() + 20  # the change reaches the connectors within their poll
        while o not in catalog_ids(trusted, prov) and time.monotonic() < deadline:
            time.sleep(0.5)
        pulled(trusted, agreed(trusted, prov, o))
    finally:
        prov.api("DELETE", "/api/facts/dsf:registeredAssessment")


# ----------------------------------------------------------------------------- stated facts


def test_purpose_restricted_with_curies_on_both_sides(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "purpose-restricted", purpose="dpv:AcademicResearch"))
    denied(cons, a, "purpose")
    denied(cons, a, "purpose", purpose="dpv:Marketing")
    job = pulled(cons, a, purpose="dpv:AcademicResearch")
    # the same decider at the consumer's local use
    assert read(cons, job["vaultId"], purpose=DPV + "AcademicResearch")[0] == 200
    status, body = read(cons, job["vaultId"], purpose="dpv:Marketing")
    assert status == 403 and "purpose" in json.dumps(body), body


def test_application_restricted(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "application-restricted", application="urn:app:analytics"))
    denied(cons, a, "application")
    denied(cons, a, "application", application="urn:app:other")
    job = pulled(cons, a, application="urn:app:analytics")
    assert read(cons, job["vaultId"], application="urn:app:analytics")[0] == 200
    status, body = read(cons, job["vaultId"])
    assert status == 403 and "application" in json.dumps(body), body


def test_location_restricted(prov: Connector, cons: Connector) -> None:
    eu = "http://publications.europa.eu/resource/authority/country/"
    a = agreed(cons, prov, offer(prov, "location-restricted", location=eu + "DEU"))
    denied(cons, a, "spatial", location=eu + "FRA")
    denied(cons, a, "spatial")
    pulled(cons, a, location=eu + "DEU")


def test_event_restricted(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "event-restricted", event="urn:event:fair-2026"))
    denied(cons, a, "event", event="urn:event:other")
    pulled(cons, a, event="urn:event:fair-2026")


# ----------------------------------------------------------------------------- time and counts


def test_interval_restricted(prov: Connector, cons: Connector) -> None:
    now = datetime.now(UTC)
    a = agreed(
        cons,
        prov,
        offer(
            prov, "interval-restricted", start=iso(now - timedelta(days=1)), end=iso(now + timedelta(days=1))
        ),
    )
    pulled(cons, a)
    past = agreed(
        cons,
        prov,
        offer(
            prov, "interval-restricted", start=iso(now - timedelta(days=9)), end=iso(now - timedelta(days=8))
        ),
    )
    denied(cons, past, "dateTime")


def test_duration_restricted(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "duration-restricted", duration="PT3S"))
    job = pulled(cons, a)
    time.sleep(3.5)
    denied(cons, a, "elapsedTime")
    status, body = read(cons, job["vaultId"])
    assert status == 403 and "elapsedTime" in json.dumps(body), body


def test_n_times_usage_is_one_limit_across_pulls_and_local_uses(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "n-times-usage", max="3"))
    job = pulled(cons, a)  # use 1
    assert read(cons, job["vaultId"])[0] == 200  # use 2
    pulled(cons, a)  # use 3
    denied(cons, a, "use number 4 (3 completed)")
    status, body = read(cons, job["vaultId"])
    assert status == 403 and "use number 4 (3 completed)" in json.dumps(body), body
    counted = [e["data"]["agreementUse"] for e in audit(prov, "use-notice", a)]
    assert counted == [2]


def test_use_and_delete_after(prov: Connector, cons: Connector) -> None:
    at = datetime.now(UTC) + timedelta(seconds=4)
    a = agreed(cons, prov, offer(prov, "use-and-delete-after", deleteAt=iso(at)))
    job = pulled(cons, a)
    assert job["deleteAt"]
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 1.5)
    denied(cons, a, "dateTime")
    deadline = time.monotonic() + 20
    while not audit(prov, "deletion-notice", a) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert audit(prov, "deletion-notice", a), "the provider got no deletion notice"
    assert not Path(job["path"]).exists()


# ----------------------------------------------------------------------------- duties at local use


def test_local_logging(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "local-logging"))
    job = pulled(cons, a)
    assert read(cons, job["vaultId"])[0] == 200
    used = audit(cons, "vault.used", a)
    assert len(used) == 1 and used[0]["data"]["logDuty"] is True


def test_remote_notification(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "remote-notification", informedParty=prov.dsp_url))
    job = pulled(cons, a)
    assert read(cons, job["vaultId"], purpose="dpv:AcademicResearch")[0] == 200
    notices = audit(prov, "use-notice", a)
    assert len(notices) == 1 and notices[0]["participantId"] == cons.participant_id


# ----------------------------------------------------------------------------- provider-held facts


def test_perpetual_sale_needs_the_payment_before_use(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "perpetual-sale", price="10"))
    denied(cons, a, "payment of 10 EUR not yet received")
    status, paid = prov.api("POST", "/api/payments", {"agreement": a, "amount": "6", "currency": "EUR"})
    assert status == 201, paid
    denied(cons, a, "not yet received")  # 6 of 10
    status, paid = prov.api("POST", "/api/payments", {"agreement": a, "amount": "4", "currency": "EUR"})
    assert status == 201, paid
    pulled(cons, a)


def test_rental_stops_at_the_end_of_the_paid_period(prov: Connector, cons: Connector) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    a = agreed(cons, prov, offer(prov, "rental", price="5", paymentInterval="PT4S", start=iso(start)))
    denied(cons, a, "not yet received")
    status, paid = prov.api("POST", "/api/payments", {"agreement": a, "amount": "5", "currency": "EUR"})
    assert status == 201, paid
    pulled(cons, a)
    time.sleep(max(0.0, (start + timedelta(seconds=4) - datetime.now(UTC)).total_seconds()) + 0.5)
    denied(cons, a, "not yet received")  # the second period is not paid


def test_state_restricted_on_the_state_the_provider_holds(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "state-restricted", state="urn:state:contract-active"))
    denied(cons, a, "STATE")
    status, fact = prov.api("PUT", "/api/facts/idsc:STATE", {"values": ["urn:state:contract-active"]})
    assert status in (200, 201), fact
    try:
        pulled(cons, a)
    finally:
        prov.api("DELETE", "/api/facts/idsc:STATE")
    denied(cons, a, "STATE")


def test_an_event_the_provider_holds_active(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "event-restricted", event="urn:event:maintenance-window"))
    denied(cons, a, "event")
    status, fact = prov.api("PUT", "/api/facts/odrl:event", {"values": ["urn:event:maintenance-window"]})
    assert status in (200, 201), fact
    try:
        pulled(cons, a)
    finally:
        prov.api("DELETE", "/api/facts/odrl:event")


def test_a_retired_agreement_serves_no_more(prov: Connector, cons: Connector) -> None:
    a = agreed(cons, prov, offer(prov, "allow-usage"))
    pulled(cons, a)
    status, view = prov.api("POST", f"/api/agreements/{a}/retire", {"reason": "contract ended"})
    assert status == 200 and view["status"] == "retired", view
    job = pull(cons, a)
    assert job["state"] == "failed" and "retired: contract ended" in str(job["error"]), job


def test_a_changed_jurisdiction_loses_access_within_the_poll_interval(
    space: DataSpace, prov: Connector, cons: Connector
) -> None:
    a = agreed(cons, prov, offer(prov, "jurisdiction-restricted", jurisdiction="urn:jurisdiction:DE"))
    pulled(cons, a)
    attest(space, cons, jurisdiction={"country": "FR"})
    try:
        deadline = time.monotonic() + 30  # poll interval 2 s, and the pull's own retries
        job = pull(cons, a)
        while job["state"] == "done" and time.monotonic() < deadline:
            time.sleep(1)
            job = pull(cons, a)
        assert job["state"] == "failed" and "jurisdiction" in str(job["error"]), job
    finally:
        attest(space, cons, jurisdiction={"country": "DE"})


# ----------------------------------------------------------------------------- all at once


def test_every_template_offered_at_once_catalog_and_self_description(
    space: DataSpace, tmp_path: Path
) -> None:
    import ssl
    import urllib.request

    from rdflib import Graph

    from connector.odrl.templates import templates
    from connector.selfdescription import validate_ids

    shop = space.connector("shop", roles=("provider",), mutual_tls=False)
    buyer = space.connector("buyer", roles=("consumer",))
    for t in templates():
        params = {p.name: p.example for p in t.parameters if p.required}
        offer_asset(
            shop,
            asset_id=f"urn:asset:all-{t.name}",
            content=CONTENT,
            contract={"template": t.name, "params": params},
        )
    status, cat = buyer.api("POST", "/api/catalog", {"peerUrl": shop.dsp_url})
    assert status == 200, cat
    shown = {d["id"] for d in cat["datasets"]}
    assert "urn:asset:all-allow-usage" in shown and "urn:asset:all-prohibit-access" not in shown
    ctx = ssl.create_default_context(cafile=str(shop.directory / "ca.crt"))
    conformance = Path(__file__).resolve().parents[3] / "shared" / "conformance"
    for media_type, fmt in (
        ("text/turtle", "turtle"),
        ("application/ld+json", "json-ld"),
        ("application/n-triples", "nt"),
    ):
        req = urllib.request.Request(shop.dsp_url + "/", headers={"Accept": media_type})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            assert r.status == 200
            body = r.read().decode()
        assert "<idsc:" not in body  # no pseudo-IRIs: full IRIs, or a prefix the context defines
        g = Graph().parse(data=body, format=fmt)
        assert len(g) > 100
        assert any(str(o) == "https://w3id.org/idsa/code/SECURITY_LEVEL" for o in g.objects())
        if fmt == "turtle":
            conforms, report = validate_ids(g, conformance / "ids-infomodel")
            assert conforms, report
