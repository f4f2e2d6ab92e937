"""The dashboard in process, mounted on the management app over a real store: login, the session
cookie, CSRF, the rate limit on failed logins, escaping, and that it leaves the API's key check
as it was."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from yarl import URL

from connector.assets import DataRoots
from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.identity.authority import Authority, create_app
from connector.identity.store import AuthorityStore
from connector.runtime import ControlPlane
from connector.store import Store
from connector.ui.authority import authority_ui
from connector.ui.dashboard import dashboard_app
from connector.ui.page import esc, path_id, tag
from connector.ui.session import (
    COOKIE,
    MAX_FAILURES,
    WINDOW,
    Sessions,
    TooManyAttempts,
    secret_checker,
    set_cookie,
)

KEY = "the-management-key-" + "k" * 12
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
async def ui(tmp_path: Path, sqlite_store: Store) -> AsyncIterator[TestClient]:
    async def no_peers() -> str:
        raise RuntimeError("no peers in this test")

    dsp = DspClient(no_peers, ssl_context=None, policy=OutboundPolicy())
    cp = ControlPlane(sqlite_store, dsp, participant_id="urn:test:ui", dsp_url="http://127.0.0.1:9")
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("a,b\n")
    roots = DataRoots.build([data])
    client = TestClient(
        TestServer(management_app(cp, KEY, data_roots=roots, ui=dashboard_app(cp, KEY, data_roots=roots)))
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await dsp.close()


async def login(ui: TestClient, secret: str = KEY) -> int:
    async with ui.post("/ui/login", data={"secret": secret}, allow_redirects=False) as r:
        return r.status


async def page(ui: TestClient, path: str) -> str:
    async with ui.get(path, allow_redirects=False) as r:
        assert r.status == 200, (path, r.status)
        assert r.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in r.headers["Content-Security-Policy"]  # no script at all
        text = await r.text()
    assert KEY not in text
    return text


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


async def test_every_page_needs_a_session_and_the_login_sets_a_strict_cookie(ui: TestClient) -> None:
    for path in ("/ui", "/ui/", "/ui/catalog", "/ui/transfers", "/ui/audit", "/ui/vault"):
        async with ui.get(path, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] in ("/ui/login", "/ui/"), path
    async with ui.post("/ui/assets", data={"path": "/x"}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
    login_page = await page(ui, "/ui/login")
    assert 'type="password"' in login_page
    assert await login(ui, "wrong") == 401
    async with ui.post("/ui/login", data={"secret": KEY}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/"
        cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert KEY not in cookie
    for path in ("/ui/", "/ui/catalog", "/ui/negotiations", "/ui/agreements", "/ui/transfers"):
        await page(ui, path)
    # the session opens no door of the API: it still wants X-Api-Key
    async with ui.get("/api/assets") as r:
        assert r.status == 401
    async with ui.get("/api/assets", headers={"X-Api-Key": KEY}) as r:
        assert r.status == 200
    for sneaky in ("/ui/../api/assets", "/ui/%2e%2e/api/assets", "/ui/..%2fapi/assets"):
        async with ui.get(URL(sneaky, encoded=True), allow_redirects=False) as r:
            assert r.status in (401, 404), sneaky  # the API's guard, or no UI page
    # logging out ends the session on the server
    home = await page(ui, "/ui/")
    async with ui.post("/ui/logout", data={"csrf": csrf_of(home)}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
    async with ui.get("/ui/", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"


async def test_a_form_without_its_csrf_token_is_refused(ui: TestClient, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert await login(ui) == 303
    form = {"id": "weather", "title": "Weather", "path": str(data_dir / "data.csv")}
    for token in (None, "", "forged" * 8):
        body = form if token is None else {**form, "csrf": token}
        async with ui.post("/ui/assets", data=body, allow_redirects=False) as r:
            assert r.status == 403
            assert "CSRF" in await r.text()
    assert "urn:asset:weather" not in await page(ui, "/ui/")
    token = csrf_of(await page(ui, "/ui/"))
    async with ui.post("/ui/assets", data={**form, "csrf": token}, allow_redirects=False) as r:
        assert r.status == 303
    home = await page(ui, "/ui/")
    assert "urn:asset:weather" in home and "Asset urn:asset:weather added." in home
    # a refusal of the service comes back as a message, not an error page
    async with ui.post("/ui/assets", data={**form, "csrf": token}) as r:
        assert r.status == 200
        assert "asset urn:asset:weather exists" in await r.text()


async def test_a_hostile_title_renders_escaped(ui: TestClient, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with ui.post(
        "/api/assets",
        headers={"X-Api-Key": KEY},
        json={
            "id": "evil",
            "title": HOSTILE,
            "keywords": ['"><img src=x onerror=alert(1)>'],
            "dataAddress": {"type": "file", "path": str(data_dir / "data.csv")},
        },
    ) as r:
        assert r.status == 201
    assert await login(ui) == 303
    home = await page(ui, "/ui/")
    assert HOSTILE not in home and "<img" not in home
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in home
    # the offer form lists the asset by its title too
    offer_form = await page(ui, "/ui/offers/new?template=n-times-usage")
    assert HOSTILE not in offer_form and "&lt;script&gt;" in offer_form


async def test_an_offer_from_a_template_with_its_terms_in_words(ui: TestClient, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert await login(ui) == 303
    token = csrf_of(await page(ui, "/ui/"))
    async with ui.post(
        "/ui/assets", data={"csrf": token, "id": "weather", "path": str(data_dir / "data.csv")}
    ) as r:
        assert r.status == 200
    new = await page(ui, "/ui/offers/new?template=n-times-usage")
    assert 'name="param.max"' in new
    async with ui.post(
        "/ui/offers",
        data={
            "csrf": token,
            "template": "n-times-usage",
            "asset": "urn:asset:weather",
            "id": "weather-offer",
            "param.max": "3",
        },
    ) as r:
        assert r.status == 200
        home = await r.text()
    assert "Offer urn:offer:weather-offer created" in home
    assert "at most 3 times" in home
    async with ui.get("/api/offers", headers={"X-Api-Key": KEY}) as r:
        assert [o["id"] for o in await r.json()] == ["urn:offer:weather-offer"]
    # a bad parameter: the form says why, and no policy is left behind
    async with ui.get("/api/policies", headers={"X-Api-Key": KEY}) as r:
        before = len(await r.json())
    async with ui.post(
        "/ui/offers",
        data={"csrf": token, "template": "n-times-usage", "asset": "urn:asset:nothing", "param.max": "3"},
    ) as r:
        assert "no asset urn:asset:nothing" in await r.text()
    async with ui.get("/api/policies", headers={"X-Api-Key": KEY}) as r:
        assert len(await r.json()) == before
    # withdrawn with its policies
    async with ui.post("/ui/offers/urn%3Aoffer%3Aweather-offer/delete", data={"csrf": token}) as r:
        assert "withdrawn" in await r.text()
    async with ui.get("/api/policies", headers={"X-Api-Key": KEY}) as r:
        assert await r.json() == []


async def test_the_ui_stays_out_of_the_openapi_document(ui: TestClient) -> None:
    async with ui.get("/api/openapi.json") as r:
        doc = await r.json()
    assert not [p for p in doc["paths"] if p.startswith("/ui")]


async def test_failed_logins_are_rate_limited(ui: TestClient) -> None:
    for _ in range(MAX_FAILURES):
        assert await login(ui, "wrong") == 401
    assert await login(ui) == 429  # even the right key, until the window has passed
    async with ui.get("/ui/", allow_redirects=False) as r:
        assert r.status == 303


async def test_sessions_expire_and_the_limit_lifts_after_its_window() -> None:
    now = [1000.0]
    sessions = Sessions(secret_checker("right"), clock=lambda: now[0], lifetime=60)
    s = await sessions.login("right", "a")
    assert s is not None and await sessions.get(s.sid) == s
    assert s.csrf != s.sid and "right" not in (s.sid + s.csrf)
    now[0] += 61
    assert await sessions.get(s.sid) is None
    for _ in range(MAX_FAILURES):
        assert await sessions.login("wrong", "b") is None
    with pytest.raises(TooManyAttempts):
        await sessions.login("right", "b")
    assert await sessions.login("right", "c") is not None  # another address is not held back
    now[0] += WINDOW
    assert await sessions.login("right", "b") is not None
    assert await sessions.login("", "d") is None


def test_markup_escapes_every_value() -> None:
    assert esc(HOSTILE) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert esc(None) == ""
    assert str(tag("a", HOSTILE, href='"><x')) == (
        '<a href="&quot;&gt;&lt;x">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</a>'
    )


async def test_the_authority_page_wants_the_admin_token(tmp_path: Path) -> None:
    token = "admin-" + "t" * 30
    store = AuthorityStore.initialize(
        tmp_path / "authority", name="UI space", alg="EdDSA", now=time.time(), admin_token=token
    )
    authority = Authority(store, issuer="http://127.0.0.1:9")
    app = create_app(authority)
    app.add_subapp("/ui", authority_ui(authority))
    async with TestClient(TestServer(app)) as client:
        async with client.get("/ui/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login"
        for wrong in ("", KEY, token + "x"):
            async with client.post("/ui/login", data={"secret": wrong}) as r:
                assert r.status == 401 and "Wrong admin token" in await r.text()
        async with client.post("/ui/login", data={"secret": token}) as r:
            assert r.status == 200
            text = await r.text()
        assert "Signing keys" in text and "current" in text and token not in text
        # the admin API is as it was: the session is no bearer token
        async with client.get("/admin/participants") as r:
            assert r.status == 401


@pytest.mark.parametrize("tls", [False, True])
async def test_the_cookie_is_secure_over_tls(tls: bool) -> None:
    session = await Sessions(secret_checker("right")).login("right", "a")
    assert session is not None
    request = make_mocked_request(
        "POST", "/ui/login", sslcontext=ssl.create_default_context() if tls else None
    )
    response = web.Response()
    set_cookie(response, request, session, "/ui")
    morsel = response.cookies[COOKIE]
    assert morsel.value == session.sid and morsel["httponly"] and morsel["samesite"] == "Strict"
    assert bool(morsel["secure"]) is tls


async def test_push_retire_and_answers_refused_with_their_reason_escaped(ui: TestClient) -> None:
    """The dashboard's actions on what does not exist: each a message with the service's
    reason (the value escaped), never an error page."""
    assert await login(ui) == 303
    token = csrf_of(await page(ui, "/ui/agreements"))
    hostile = path_id(HOSTILE)
    cases = [
        ("/ui/push", {"agreement": HOSTILE}, "/ui/agreements", "no agreement"),
        (f"/ui/agreements/{hostile}/retire", {"reason": "ended"}, "/ui/agreements", "no agreement"),
        (f"/ui/agreements/{hostile}/retire", {"reason": " "}, "/ui/agreements", "give the reason"),
        (f"/ui/negotiations/{hostile}/accept", {}, "/ui/negotiations", "no negotiation"),
        (
            f"/ui/negotiations/{hostile}/counter-offer",
            {"terms": "{not json"},
            "/ui/negotiations",
            "the terms are not JSON",
        ),
        (
            f"/ui/negotiations/{hostile}/counter-offer",
            {"terms": '["permission"]'},
            "/ui/negotiations",
            "need a permission, prohibition or obligation",
        ),
        (
            f"/ui/negotiations/{hostile}/counter-offer",
            {"terms": '{"permission": [{"action": "use"}]}'},
            "/ui/negotiations",
            "no such negotiation",
        ),
    ]
    for path, data, back, reason in cases:
        async with ui.post(
            URL(path, encoded=True), data={**data, "csrf": token, "back": back}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == back, (path, r.status)
        shown = await page(ui, back)
        assert reason in shown, (path, shown[shown.find("<main>") : shown.find("<h1>")])
        assert HOSTILE not in shown and "<script>" not in shown
    # without the CSRF token nothing is asked
    async with ui.post("/ui/push", data={"agreement": "urn:a"}, allow_redirects=False) as r:
        assert r.status == 403
