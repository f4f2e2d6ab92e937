"""The connector's web dashboard at ``/ui`` on the management port: a thin edge over the services
(connector.services) and the management API's views, server-rendered, logged in with the
management API key (connector.ui.session).

Pages: own assets and offers (an offer made from a policy template, its terms in words), a
peer's catalog (every page; negotiate with one click), negotiations with their timeline (a
provider's offer accepted, or answered with other terms), agreements (pull, or ask for a push
into the vault, with one click; a provider retires one with its reason), transfers (suspend,
resume, terminate; a pull's progress), the vault and its duties, the audit trail and its
verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connector.assets import DataRoots, path_problem
from connector.audit.log import AuditLog, VerifyReport
from connector.consumer import Downloads, LocalUse, PullJob
from connector.http.management import (
    agreement_view,
    catalog_view,
    negotiation_view,
    transfer_view,
)
from connector.http.outbound import OutboundRefused, parse_url
from connector.odrl.plain import POLICY_CONTEXT
from connector.odrl.templates import TemplateError, fill, get_template, templates
from connector.odrl.words import offer_in_words
from connector.protocol.messages import PULL, PUSH
from connector.runtime import ControlPlane
from connector.services.agreements import Agreements
from connector.services.assets import Assets
from connector.services.audit import Timeline
from connector.services.catalog import PeerCatalog
from connector.services.errors import InvalidInput, NotFound, ServiceError
from connector.services.negotiations import RULES, Negotiations
from connector.services.offers import Offers
from connector.services.policies import Policies
from connector.services.records import Page, iso_time
from connector.services.transfers import COMMANDS, Transfers
from connector.services.vault import Pulls, Vault
from connector.ui.page import (
    SESSION,
    SESSIONS,
    Html,
    Site,
    field,
    form,
    hidden,
    ident,
    join,
    path_id,
    select,
    small_input,
    table,
    tag,
    terms,
    text_area,
    ui_app,
)
from connector.ui.session import Session, Sessions, StoreSessions, secret_checker

BASE = "/ui"
LISTED = 500  # rows a list page shows at most (newest first where the service can order)
AUDIT_SHOWN = 300  # the newest audit entries shown
START_WAIT = 30.0  # seconds a one-click pull waits for the provider to start the transfer
FINAL = ("FINALIZED", "TERMINATED")
OFFERED = "OFFERED"  # a provider's offer, waiting for the consumer's answer
# the commands a transfer page offers, by the transfer's DSP state
TRANSFER_ACTIONS = (
    ("suspend", ("STARTED",)),
    ("resume", ("SUSPENDED",)),
    ("terminate", ("REQUESTED", "STARTED", "SUSPENDED")),
)
ACCESS_TEMPLATE = "allow-usage"  # an offer made here: anyone may see it, the template's terms apply
NAV = (
    ("/", "Assets & offers"),
    ("/catalog", "Peer catalog"),
    ("/negotiations", "Negotiations"),
    ("/agreements", "Agreements"),
    ("/transfers", "Transfers"),
    ("/vault", "Vault"),
    ("/audit", "Audit trail"),
)


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of the audit log's last verification, and when it ran."""

    report: VerifyReport
    at: str


@dataclass(slots=True)
class LastVerification:
    last: Verified | None = None


@dataclass(frozen=True, slots=True)
class Parts:
    """The services the dashboard calls."""

    cp: ControlPlane
    assets: Assets
    policies: Policies
    offers: Offers
    catalog: PeerCatalog
    negotiations: Negotiations
    agreements: Agreements
    transfers: Transfers
    pulls: Pulls
    vault: Vault
    timeline: Timeline
    audit: AuditLog | None
    pulls_run: bool
    verified: LastVerification = dataclasses.field(default_factory=LastVerification)


def policy_words(document: dict[str, Any]) -> list[str]:
    """A stored policy's terms in words (connector.odrl.words)."""
    return offer_in_words(document, document.get("@context", POLICY_CONTEXT))


def _text(posted: Any, name: str) -> str:
    value = posted.get(name)
    return value.strip() if isinstance(value, str) else ""


def dashboard_app(
    cp: ControlPlane,
    api_key: str,
    *,
    audit: AuditLog | None = None,
    downloads: Downloads | None = None,
    local: LocalUse | None = None,
    data_roots: DataRoots | None = None,
    title: str = "Connector",
    sessions: Sessions | None = None,
) -> web.Application:
    """The dashboard, to mount at ``/ui`` of the management app (`management_app(ui=...)`);
    `title`: the connector's (its self-description's). Its sessions are in the connector's
    store (shared by the replicas) unless `sessions` says otherwise."""
    catalog = PeerCatalog(cp.client)
    parts = Parts(
        cp=cp,
        assets=Assets(cp.store, cp.clock, data_roots or DataRoots(), cp.catalog_changed),
        policies=Policies(cp.store, cp.clock),
        offers=Offers(cp.store, cp.clock, cp.catalog_changed),
        catalog=catalog,
        negotiations=Negotiations(cp, catalog),
        agreements=Agreements(cp),
        transfers=Transfers(cp),
        pulls=Pulls(downloads),
        vault=Vault(cp, local, None),
        timeline=Timeline(audit),
        audit=audit,
        pulls_run=downloads is not None,
    )
    site = Site(title, BASE, NAV)
    return ui_app(
        site,
        sessions or Sessions(secret_checker(api_key), StoreSessions(cp.store), pepper=api_key.encode()),
        _routes(site, parts),
        secret_name="management API key",
    )


def _routes(site: Site, parts: Parts) -> list[web.RouteDef]:
    url = site.url

    # ------------------------------------------------------------ assets and offers
    async def home(request: web.Request) -> web.Response:
        s = request[SESSION]
        assets = await parts.assets.list(Page(limit=LISTED))
        offers = await parts.offers.list(Page(limit=LISTED))
        asset_rows = [
            [
                ident(a.id),
                a.title,
                ", ".join(a.keywords),
                a.content_type,
                a.data_address.get("path") or a.data_address.get("url"),
                form(url(f"/assets/{path_id(a.id)}/delete"), s, "", "Delete", inline=True, back=url("/")),
            ]
            for a in assets
        ]
        offer_rows = []
        for o in offers:
            contract = await parts.policies.get(o.contract_policy_id)
            sel = o.asset_selector if isinstance(o.asset_selector, dict) else {}
            offer_rows.append(
                [
                    ident(o.id),
                    "all assets" if sel.get("all") else ", ".join(sel.get("assetIds", [])),
                    terms(policy_words(contract.document())),
                    form(url(f"/offers/{path_id(o.id)}/delete"), s, "", "Delete", inline=True, back=url("/")),
                ]
            )
        choose = tag(
            "form",
            join(
                [
                    select(
                        "Policy template",
                        "template",
                        [(t.name, f"{t.name}: {t.title}") for t in templates()],
                        "n-times-usage",
                    ),
                    tag("button", "Next: its parameters", type="submit"),
                ]
            ),
            method="get",
            action=url("/offers/new"),
        )
        add_asset = form(
            url("/assets"),
            s,
            join(
                [
                    field("Id", "id", placeholder="optional, e.g. weather"),
                    field("Title", "title"),
                    field("Description", "description"),
                    field("Keywords", "keywords", hint="comma-separated"),
                    field("Content type", "contentType", placeholder="text/csv"),
                    field(
                        "File path",
                        "path",
                        required=True,
                        hint="an absolute path inside one of the connector's data roots",
                    ),
                ]
            ),
            "Add the asset",
            back=url("/"),
            legend="Add an asset from a file",
        )
        body = join(
            [
                tag("p", f"Participant {parts.cp.participant_id}", class_="muted"),
                tag("h2", f"Assets ({len(assets)})"),
                table(["Id", "Title", "Keywords", "Content type", "Data", ""], asset_rows),
                add_asset,
                tag("h2", f"Offers ({len(offers)})"),
                table(["Id", "Assets", "Terms", ""], offer_rows),
                tag("fieldset", join([tag("legend", "Offer assets under a policy template"), choose])),
            ]
        )
        return await site.render(request, "Assets & offers", body)

    async def add_asset(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        path = _text(posted, "path")
        problem = path_problem(path) if path else "give the file's path"
        if problem is not None:
            raise InvalidInput(f"invalid file path: {problem}")
        row = await parts.assets.add(
            asset_id=_text(posted, "id") or None,
            title=_text(posted, "title") or None,
            description=_text(posted, "description") or None,
            keywords=[k.strip() for k in _text(posted, "keywords").split(",") if k.strip()],
            content_type=_text(posted, "contentType") or None,
            data_address={"type": "file", "path": path},
        )
        await flash(request, f"Asset {row.id} added.")
        raise web.HTTPSeeOther(url("/"))

    async def new_offer(request: web.Request) -> web.Response:
        s = request[SESSION]
        try:
            t = get_template(request.query.get("template", ""))
        except TemplateError as exc:
            raise NotFound(str(exc)) from exc
        assets = await parts.assets.list(Page(limit=LISTED))
        example = {p.name: p.example for p in t.parameters if p.example}
        try:
            words = policy_words(fill(t.name, example, policy_id="urn:uuid:example"))
        except TemplateError:
            words = []
        params = [
            field(
                p.name,
                f"param.{p.name}",
                value=p.default,
                placeholder=p.example,
                required=p.required and p.default is None,
                hint=f"{p.type}{', required' if p.required else ''}: {p.description}",
            )
            for p in t.parameters
        ]
        content = join(
            [
                hidden("template", t.name),
                select(
                    "Asset",
                    "asset",
                    [("*", "all assets"), *((a.id, f"{a.title or a.id} ({a.id})") for a in assets)],
                    assets[0].id if assets else "*",
                ),
                field("Offer id", "id", placeholder="optional, e.g. weather-offer"),
                *params,
            ]
        )
        body = join(
            [
                tag("p", t.description),
                tag("p", f"IDS class: {t.ids_class or 'none'}", class_="muted"),
                tag("p", "With the example values the terms read:"),
                terms(words),
                form(
                    url("/offers"),
                    s,
                    content,
                    "Create the offer",
                    back=f"{url('/offers/new')}?template={path_id(t.name)}",
                    legend=f"Offer under “{t.title}”",
                ),
            ]
        )
        return await site.render(request, f"New offer: {t.title}", body)

    async def add_offer(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        params = {
            k.removeprefix("param."): v.strip()
            for k, v in posted.items()
            if k.startswith("param.") and isinstance(v, str) and v.strip()
        }
        asset = _text(posted, "asset")
        contract = await parts.policies.add(policy_id=None, template=_text(posted, "template"), params=params)
        made: list[str] = [contract.id]
        try:
            access = await parts.policies.add(policy_id=None, template=ACCESS_TEMPLATE)
            made.append(access.id)
            offer = await parts.offers.add(
                offer_id=_text(posted, "id") or None,
                asset_ids=[asset] if asset != "*" else (),
                all_assets=asset == "*",
                access_policy_id=access.id,
                contract_policy_id=contract.id,
            )
        except ServiceError:
            for pid in made:  # the offer was not made: its policies go too
                await parts.policies.delete(pid)
            raise
        words = "; ".join(policy_words(contract.document()))
        await flash(request, f"Offer {offer.id} created: {words}")
        raise web.HTTPSeeOther(url("/"))

    async def delete_asset(request: web.Request) -> web.StreamResponse:
        await parts.assets.delete(request.match_info["id"])
        await flash(request, f"Asset {request.match_info['id']} deleted.")
        raise web.HTTPSeeOther(url("/"))

    async def delete_offer(request: web.Request) -> web.StreamResponse:
        offer = await parts.offers.get(request.match_info["id"])
        await parts.offers.delete(offer.id)
        for pid in {offer.contract_policy_id, offer.access_policy_id}:
            with contextlib.suppress(ServiceError):  # unless another offer still uses it
                await parts.policies.delete(pid)
        await flash(request, f"Offer {offer.id} withdrawn.")
        raise web.HTTPSeeOther(url("/"))

    # ------------------------------------------------------------ a peer's catalog
    async def peer_catalog(request: web.Request) -> web.Response:
        s = request[SESSION]
        peer = request.query.get("peer", "").strip()
        ask = tag(
            "form",
            join(
                [
                    field(
                        "Peer's DSP URL",
                        "peer",
                        value=peer or None,
                        kind="url",
                        required=True,
                        placeholder="https://provider.example/dsp",
                    ),
                    tag("button", "Show its catalog", type="submit"),
                ]
            ),
            method="get",
            action=url("/catalog"),
        )
        if not peer:
            return await site.render(request, "Peer catalog", ask)
        try:
            parse_url(peer, base=True)
        except OutboundRefused as exc:
            raise InvalidInput(f"peer URL: {exc.reason}") from exc
        whole = await parts.catalog.fetch_all(peer)
        view = catalog_view(whole.catalog, whole.pages)
        back = f"{url('/catalog')}?peer={path_id(peer)}"
        rows = []
        for d in view["datasets"]:
            offers = join(
                tag(
                    "div",
                    join(
                        [
                            terms(o["terms"]),
                            form(
                                url("/negotiations"),
                                s,
                                join(
                                    [
                                        hidden("peer", peer),
                                        hidden("offer", o["id"]),
                                        hidden("dataset", d["id"]),
                                    ]
                                ),
                                "Negotiate",
                                back=back,
                                inline=True,
                            ),
                        ]
                    ),
                )
                for o in d["offers"]
            )
            rows.append(
                [
                    join([tag("strong", d["title"] or d["id"]), Html("<br>"), ident(d["id"])]),
                    d["description"],
                    ", ".join(d["keywords"]),
                    ", ".join(str(f) for f in d["formats"] if f),
                    offers,
                ]
            )
        body = join(
            [
                ask,
                tag(
                    "p",
                    f"{view['participantId']}: {len(view['datasets'])} datasets "
                    f"({view['pages']} page(s) read)",
                    class_="muted",
                ),
                table(
                    ["Dataset", "Description", "Keywords", "Formats", "Offers (terms in words)"],
                    rows,
                    empty="The peer offers this connector no dataset.",
                ),
            ]
        )
        return await site.render(request, "Peer catalog", body)

    async def negotiate(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        peer = _text(posted, "peer")
        try:
            parse_url(peer, base=True)
        except OutboundRefused as exc:
            raise InvalidInput(f"peer URL: {exc.reason}") from exc
        row = await parts.negotiations.start(
            peer_url=peer, offer_id=_text(posted, "offer"), dataset_id=_text(posted, "dataset") or None
        )
        await flash(request, f"Negotiation {row.id} started.")
        raise web.HTTPSeeOther(url(f"/negotiations/{path_id(row.id)}"))

    # ------------------------------------------------------------ negotiations
    async def negotiations(request: web.Request) -> web.Response:
        rows = [
            negotiation_view(n)
            for n in await parts.negotiations.list_in(None, Page(limit=LISTED, newest_first=True))
        ]
        body = table(
            ["Id", "Role", "State", "Counter-party", "Dataset", "Agreement", "Termination reason"],
            [
                [
                    tag("a", n["id"], href=url(f"/negotiations/{path_id(n['id'])}")),
                    n["role"],
                    n["state"],
                    ident(n["counterPartyId"]),
                    ident((n["offer"] or {}).get("target")),
                    ident(n["agreementId"]),
                    "; ".join(n["terminationReason"] or []),
                ]
                for n in rows
            ],
        )
        busy = any(n["state"] not in FINAL for n in rows)
        return await site.render(request, "Negotiations", body, refresh=2 if busy else None)

    async def negotiation(request: web.Request) -> web.Response:
        s = request[SESSION]
        n = negotiation_view(await parts.negotiations.get(request.match_info["id"]))
        ids = {n["id"], n["providerPid"], n["consumerPid"], n["agreementId"]} - {None}
        steps = [
            [e.time, e.kind, _summary(e.data)] for e in await _entries(parts) if ids & set(e.ids.values())
        ]
        facts = table(
            (),
            [
                ["State", tag("strong", n["state"])],
                ["Role", n["role"]],
                ["Counter-party", join([ident(n["counterPartyId"]), " at ", n["counterPartyAddress"]])],
                ["Dataset", ident((n["offer"] or {}).get("target"))],
                ["Terms", terms(offer_in_words(n["offer"] or {}))],
                ["Agreement", ident(n["agreementId"])],
                ["Termination reason", "; ".join(n["terminationReason"] or [])],
                ["Delivery problem", n["errorDetail"]],
                ["Created", n["createdAt"]],
                ["Updated", n["updatedAt"]],
            ],
        )
        answer = (
            _answer_forms(url(f"/negotiations/{path_id(n['id'])}"), s)
            if n["role"] == "consumer" and n["internalState"] == OFFERED
            else ""
        )
        end = (
            ""
            if n["state"] in FINAL
            else form(
                url(f"/negotiations/{path_id(n['id'])}/terminate"),
                s,
                field("Reason", "reason", required=True),
                "Terminate",
                back=url(f"/negotiations/{path_id(n['id'])}"),
                legend="Terminate the negotiation",
            )
        )
        timeline = (
            table(["Time", "Event", "Details"], steps, empty="No audit entries for this negotiation yet.")
            if parts.audit is not None
            else tag(
                "p", "This connector keeps no audit log: only the current state is known.", class_="muted"
            )
        )
        body = join([facts, answer, tag("h2", "Timeline (audit log)"), timeline, end])
        # reloaded while the peer is at work, not while the page waits for this operator's answer
        waiting = n["state"] not in FINAL and not answer
        return await site.render(request, f"Negotiation {n['id']}", body, refresh=2 if waiting else None)

    async def accept_offer(request: web.Request) -> web.StreamResponse:
        nid = request.match_info["id"]
        await parts.negotiations.accept(nid)
        await flash(request, f"Negotiation {nid}: the provider's offer accepted.")
        raise web.HTTPSeeOther(url(f"/negotiations/{path_id(nid)}"))

    async def counter_offer(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        nid = request.match_info["id"]
        await parts.negotiations.counter_offer(nid, _plain_rules(_text(posted, "terms")))
        await flash(request, f"Negotiation {nid}: other terms sent to the provider.")
        raise web.HTTPSeeOther(url(f"/negotiations/{path_id(nid)}"))

    async def terminate_negotiation(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        nid = request.match_info["id"]
        await parts.negotiations.terminate(nid, _text(posted, "reason") or "by operator")
        raise web.HTTPSeeOther(url(f"/negotiations/{path_id(nid)}"))

    # ------------------------------------------------------------ agreements
    async def agreements(request: web.Request) -> web.Response:
        s = request[SESSION]
        rows = []
        for a in await parts.agreements.list(Page(limit=LISTED)):
            v = agreement_view(a)
            mine = v["consumerId"] == parts.cp.participant_id
            back = url("/agreements")
            actions: list[object] = []
            if mine and parts.pulls_run and v["status"] == "active":
                # the consumer's side runs: it pulls, and takes pushes into its vault
                actions += [
                    form(url("/pull"), s, hidden("agreement", v["id"]), "Pull", back=back, inline=True),
                    form(url("/push"), s, hidden("agreement", v["id"]), "Push", back=back, inline=True),
                ]
            if not mine and v["status"] == "active":
                actions.append(
                    form(
                        url(f"/agreements/{path_id(v['id'])}/retire"),
                        s,
                        small_input("reason", "reason to retire", required=True),
                        "Retire",
                        back=back,
                        inline=True,
                    )
                )
            rows.append(
                [
                    ident(v["id"]),
                    "consumer" if mine else "provider",
                    ident(v["providerId"] if mine else v["consumerId"]),
                    ident(v["target"]),
                    terms(offer_in_words(v["policy"] or {})),
                    join([v["status"], Html("<br>"), v["retiredReason"]]),
                    v["signedAt"],
                    join(actions, " "),
                ]
            )
        body = table(
            ["Id", "This connector is", "Counter-party", "Dataset", "Terms", "Status", "Signed", ""], rows
        )
        return await site.render(request, "Agreements", body)

    async def retire(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        aid = request.match_info["id"]
        reason = _text(posted, "reason")
        if not reason:
            raise InvalidInput("give the reason to retire the agreement")
        await parts.agreements.retire(aid, reason)
        await flash(request, f"Agreement {aid} retired: {reason}")
        raise web.HTTPSeeOther(url("/agreements"))

    async def push(request: web.Request) -> web.StreamResponse:
        """Consumer: ask the provider to push into this connector's push endpoint (the copy
        lands in the vault under the agreement's duties)."""
        posted = await request.post()
        t = transfer_view(
            await parts.transfers.start(_text(posted, "agreement"), PUSH, purpose=None, stated={})
        )
        await flash(
            request, f"Transfer {t['id']}: a push asked of the provider, into this connector's vault."
        )
        raise web.HTTPSeeOther(url("/transfers"))

    async def pull(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        t = await parts.transfers.start(_text(posted, "agreement"), PULL, purpose=None, stated={})
        state = transfer_view(t)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_WAIT
        while state["state"] not in ("STARTED", "TERMINATED") and loop.time() < deadline:
            await asyncio.sleep(0.2)
            state = transfer_view(await parts.transfers.get(t.id))
        if state["state"] == "TERMINATED":
            reasons = "; ".join(state["terminationReason"] or []) or "no reason given"
            await flash(request, f"Transfer {t.id} was terminated: {reasons}")
        elif state["state"] != "STARTED":
            await flash(
                request,
                f"Transfer {t.id} is still {state['state']}: "
                f"{state['errorDetail'] or 'the provider has not started it'}",
            )
        else:
            await parts.pulls.start(t.id, out=None, purpose=None, complete=True, stated={})
            await flash(request, f"Pulling transfer {t.id}.")
        raise web.HTTPSeeOther(url("/transfers"))

    # ------------------------------------------------------------ transfers
    async def transfers(request: web.Request) -> web.Response:
        s = request[SESSION]
        rows = []
        busy = False
        for row in await parts.transfers.list_in(None, Page(limit=LISTED, newest_first=True)):
            t = transfer_view(row)
            job = await _job(parts, t["id"]) if t["role"] == "consumer" else None
            busy = (
                busy
                or (job is not None and job.state == "running")
                or (
                    t["role"] == "consumer" and t["format"] == PUSH and t["state"] in ("REQUESTED", "STARTED")
                )
            )
            back = url("/transfers")
            actions: list[object] = [
                form(
                    url(f"/transfers/{path_id(t['id'])}/{action}"),
                    s,
                    "",
                    action.capitalize(),
                    back=back,
                    inline=True,
                )
                for action, states in TRANSFER_ACTIONS
                if t["state"] in states
            ]
            if (
                t["role"] == "consumer"
                and t["state"] == "STARTED"
                and parts.pulls_run
                and t["format"] == PULL
                and (job is None or job.state == "failed")
            ):
                actions.append(
                    form(url(f"/transfers/{path_id(t['id'])}/pull"), s, "", "Pull", back=back, inline=True)
                )
            rows.append(
                [
                    ident(t["id"]),
                    t["role"],
                    t["state"],
                    ident(t["agreementId"]),
                    t["format"],
                    "; ".join(
                        [
                            *(t["terminationReason"] or []),
                            *(f"suspended by {x}" for x in t["suspendedBy"] or []),
                        ]
                    ),
                    _progress(job),
                    join(actions, " "),
                ]
            )
        body = table(["Id", "Role", "State", "Agreement", "Format", "Reason", "Pull", ""], rows)
        return await site.render(request, "Transfers", body, refresh=2 if busy else None)

    async def transfer_command(request: web.Request) -> web.StreamResponse:
        tid, action = request.match_info["id"], request.match_info["action"]
        if action not in COMMANDS:
            raise NotFound(f"no transfer command {action}")
        await parts.transfers.command(tid, action, "by operator (dashboard)")
        await flash(request, f"Transfer {tid}: {action} asked.")
        raise web.HTTPSeeOther(url("/transfers"))

    async def pull_started(request: web.Request) -> web.StreamResponse:
        tid = request.match_info["id"]
        await parts.pulls.start(tid, out=None, purpose=None, complete=True, stated={})
        await flash(request, f"Pulling transfer {tid}.")
        raise web.HTTPSeeOther(url("/transfers"))

    # ------------------------------------------------------------ vault and audit
    async def vault(request: web.Request) -> web.Response:
        items = await parts.vault.items()
        body = table(
            [
                "Id",
                "Agreement",
                "Provider",
                "Path",
                "SHA-256",
                "Registered",
                "Delete at",
                "Deleted",
                "Notice sent",
                "Local uses",
            ],
            [
                [
                    ident(i["id"]),
                    ident(i["agreementId"]),
                    ident(i["providerId"]),
                    ident(i["path"]),
                    ident(i["sha256"]),
                    i["registeredAt"],
                    i["deleteAt"] or "no delete duty",
                    i["deletedAt"],
                    "yes" if i["noticeSent"] else "no",
                    i["uses"],
                ]
                for i in items
            ],
            empty="The vault holds no copy.",
        )
        return await site.render(request, "Vault", body)

    async def audit_trail(request: web.Request) -> web.Response:
        parts.timeline.check()
        entries = (await _entries(parts))[-AUDIT_SHOWN:]
        last = parts.verified.last
        status = (
            tag("p", "Not verified since the connector started.", class_="muted")
            if last is None
            else tag(
                "p",
                f"{last.report.summary()} (verified at {last.at})",
                class_="ok" if last.report.ok else "bad",
            )
        )
        body = join(
            [
                tag("h2", "Verification"),
                status,
                form(url("/audit/verify"), request[SESSION], "", "Verify the chain now", back=url("/audit")),
                tag("h2", f"Entries (the newest {len(entries)}, oldest first)"),
                table(
                    ["Seq", "Time", "Event", "Ids", "Details"],
                    [
                        [
                            e.seq,
                            e.time,
                            e.kind,
                            tag(
                                "div",
                                join(
                                    tag("div", join([k.removesuffix("_id"), " ", ident(v)]))
                                    for k, v in sorted(e.ids.items())
                                ),
                                class_="ids",
                            ),
                            _summary(e.data),
                        ]
                        for e in entries
                    ],
                ),
            ]
        )
        return await site.render(request, "Audit trail", body)

    async def verify_audit(request: web.Request) -> web.StreamResponse:
        """The whole chain checked (off the event loop; appends wait for it, so on demand)."""
        parts.timeline.check()
        assert parts.audit is not None
        report = await asyncio.get_running_loop().run_in_executor(None, parts.audit.verify)
        parts.verified.last = Verified(report, iso_time(datetime.now(UTC)) or "")
        raise web.HTTPSeeOther(url("/audit"))

    async def top(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(url("/"))

    return [
        web.get("", top),
        web.get("/", home),
        web.post("/assets", add_asset),
        web.post("/assets/{id}/delete", delete_asset),
        web.get("/offers/new", new_offer),
        web.post("/offers", add_offer),
        web.post("/offers/{id}/delete", delete_offer),
        web.get("/catalog", peer_catalog),
        web.post("/negotiations", negotiate),
        web.get("/negotiations", negotiations),
        web.get("/negotiations/{id}", negotiation),
        web.post("/negotiations/{id}/terminate", terminate_negotiation),
        web.post("/negotiations/{id}/accept", accept_offer),
        web.post("/negotiations/{id}/counter-offer", counter_offer),
        web.get("/agreements", agreements),
        web.post("/agreements/{id}/retire", retire),
        web.post("/pull", pull),
        web.post("/push", push),
        web.get("/transfers", transfers),
        web.post("/transfers/{id}/pull", pull_started),
        web.post("/transfers/{id}/{action}", transfer_command),
        web.get("/vault", vault),
        web.get("/audit", audit_trail),
        web.post("/audit/verify", verify_audit),
    ]


async def flash(request: web.Request, message: str) -> None:
    """A message for the session's next page."""
    await request.config_dict[SESSIONS].flash(request[SESSION], message)


async def _entries(parts: Parts) -> Sequence[Any]:
    """Every audit entry (none without a log), read off the event loop."""
    if parts.audit is None:
        return []
    timeline = parts.timeline
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: timeline.entries((), None, Page(limit=10**9))
    )


async def _job(parts: Parts, transfer_id: str) -> PullJob | None:
    if not parts.pulls_run:
        return None
    try:
        return await parts.pulls.status(transfer_id, 0)
    except NotFound:
        return None


def _progress(job: PullJob | None) -> Html:
    if job is None:
        return Html("")
    shown: list[object] = [tag("strong", job.state), " "]
    if job.total:
        shown += [tag("progress", value=job.bytes, max=job.total), " "]
    shown.append(f"{job.bytes} of {job.total} bytes" if job.total else f"{job.bytes} bytes")
    if job.error:
        shown += [
            Html("<br>"),
            tag("span", f"denied: {job.error}" if job.state == "failed" else job.error, class_="bad"),
        ]
    if job.vault_id:
        shown += [Html("<br>"), f"vault item {job.vault_id}"]
        if job.delete_at:
            shown.append(f", deleted at {job.delete_at}")
    return join(shown)


COUNTER_EXAMPLE = json.dumps(
    {
        "permission": [
            {"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 5}]}
        ]
    }
)


def _answer_forms(page: str, s: Session) -> Html:
    """A consumer's answers to the provider's offer: accept it, or ask for other terms."""
    return join(
        [
            tag("h2", "The provider offers these terms: your answer"),
            form(f"{page}/accept", s, "", "Accept the offer", back=page),
            form(
                f"{page}/counter-offer",
                s,
                text_area(
                    "Terms (plain ODRL rules, JSON)",
                    "terms",
                    placeholder=COUNTER_EXAMPLE,
                    hint="permission, prohibition and obligation rules, as the management API takes them",
                ),
                "Send these terms",
                back=page,
                legend="Answer with other terms",
            ),
        ]
    )


def _plain_rules(text: str) -> dict[str, Any]:
    """Terms typed in the counter-offer form: a JSON object of plain ODRL rules."""
    try:
        rules = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"the terms are not JSON: {exc}") from exc
    if not isinstance(rules, dict) or not any(k in rules for k in RULES):
        raise InvalidInput("the terms need a permission, prohibition or obligation (a JSON object)")
    return rules


def _summary(data: Any) -> Html:
    text = json.dumps(data, sort_keys=True, default=str)
    return tag("span", text if len(text) <= 300 else text[:300] + "…", class_="data")
