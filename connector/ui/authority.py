"""The authority's read-only page at ``/ui``: its participants (attributes, revocation), its
signing keys and the revocations, logged in with the admin token (checked as the admin API
checks it, `Authority.check_admin`), with the dashboards' session, CSRF and rate limit."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from connector.identity.authority import Authority
from connector.identity.errors import Unauthorized
from connector.ui.page import Site, ident, join, table, tag, ui_app
from connector.ui.session import Sessions

TITLE = "Data space authority"


def _when(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None


def _value(v: object) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v) or "none"
    return str(v)


def authority_ui(authority: Authority, sessions: Sessions | None = None) -> web.Application:
    """The page, to mount at ``/ui`` of the authority's app."""

    def admin(token: str) -> bool:
        try:
            authority.check_admin(f"Bearer {token}")
        except Unauthorized:
            return False
        return True

    site = Site(TITLE, "/ui", (("/", "Participants, keys, revocations"),))

    async def home(request: web.Request) -> web.Response:
        participants = authority.participants()
        state = authority.store.state()
        revoked = authority.revocations()
        body = join(
            [
                tag("p", f"Issuer {authority.issuer}", class_="muted"),
                tag("h2", f"Participants ({len(participants)})"),
                table(
                    ["Id", "Name", "Attributes", "Registered", "Revoked"],
                    [
                        [
                            ident(p["participant_id"]),
                            p["name"],
                            join(tag("div", f"{k}: {_value(v)}") for k, v in sorted(p["attributes"].items())),
                            _when(p["registered_at"]),
                            join([_when(p["revoked_at"]) or "", " ", p["revocation_reason"] or ""]),
                        ]
                        for p in participants
                    ],
                ),
                tag("h2", "Signing keys"),
                table(
                    ["Key id", "Algorithm", "Status", "Created", "Retires"],
                    [
                        [ident(k.kid), k.alg, k.status, _when(k.created_at), _when(k.retire_at)]
                        for k in state.keys
                    ],
                ),
                tag("h2", f"Revocations (list number {revoked['seq']})"),
                table(
                    ["Participant", "Name", "Revoked at", "Reason"],
                    [
                        [ident(r["participant_id"]), r["name"], _when(r["revoked_at"]), r["reason"]]
                        for r in revoked["revoked"]
                    ],
                    empty="No participant is revoked.",
                ),
            ]
        )
        return await site.render(request, TITLE, body)

    async def top(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(site.url("/"))

    return ui_app(
        site, sessions or Sessions(admin), [web.get("", top), web.get("/", home)], secret_name="admin token"
    )
