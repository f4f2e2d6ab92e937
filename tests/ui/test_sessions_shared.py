"""The dashboard's sessions in the connector's store, shared by its replicas, on SQLite and on
PostgreSQL: two app instances over one database (two stores, two connection pools, as two
replicas behind a load balancer) take each other's sessions; a logout on one ends the session
on both; the table holds the HMAC of the session id under the key, never the id; a new key
ends every session; expired rows go."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from db_testlib import OpenStore
from raw_http import raw_status

from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.runtime import ControlPlane
from connector.store import Store, StoreUnreachable
from connector.store.schema import ui_sessions
from connector.store.ui_sessions import UiSessionRow
from connector.ui.dashboard import dashboard_app
from connector.ui.session import COOKIE, LIFETIME, MAX_FLASH, Sessions, StoreSessions, secret_checker

KEY = "the-management-key-" + "s" * 12

Clock = list[float]


def keyed(sid: str) -> str:
    """A session's row key: HMAC-SHA256 of its id under the management key."""
    return hmac.new(KEY.encode(), sid.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Node:
    """One replica: its app, and its own store on the shared database."""

    client: TestClient
    store: Store


Replica = Callable[[], Awaitable[Node]]


@pytest.fixture
def clock() -> Clock:
    return [1_800_000_000.0]


@pytest.fixture
async def replica(open_store: OpenStore, clock: Clock, tmp_path: Path) -> AsyncIterator[Replica]:
    """Starts a connector's management app with its dashboard over its own `Store` on the
    test's database (a replica); the first one migrates it."""
    clients: list[TestClient] = []
    clients_dsp: list[DspClient] = []

    async def no_peers() -> str:
        raise RuntimeError("no peers in this test")

    async def start() -> Node:
        store = await open_store()
        if not clients:
            await store.migrate()
        dsp = DspClient(no_peers, ssl_context=None, policy=OutboundPolicy())
        clients_dsp.append(dsp)
        cp = ControlPlane(store, dsp, participant_id="urn:test:replicas", dsp_url="http://127.0.0.1:9")
        sessions = Sessions(
            secret_checker(KEY), StoreSessions(store), pepper=KEY.encode(), clock=lambda: clock[0]
        )
        app = management_app(cp, KEY, ui=dashboard_app(cp, KEY, sessions=sessions))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Node(client, store)

    yield start
    for client in clients:
        await client.close()
    for dsp in clients_dsp:
        await dsp.close()


async def login(node: Node) -> str:
    """The session id of a new login (the cookie's value)."""
    async with node.client.post("/ui/login", data={"secret": KEY}, allow_redirects=False) as r:
        assert r.status == 303
        assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
        return r.cookies[COOKIE].value


def cookie(sid: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={sid}"}


async def home(node: Node, sid: str) -> tuple[int, str]:
    """The status of the home page with this session (200, or 303 to the login) and its text."""
    node.client.session.cookie_jar.clear()  # only the session given here
    async with node.client.get("/ui/", headers=cookie(sid), allow_redirects=False) as r:
        return r.status, await r.text()


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


async def rows(node: Node) -> list[dict[str, object]]:
    async with node.store.transaction(readonly=True) as tx:
        return [dict(r._mapping) for r in await tx.execute(sa.select(ui_sessions))]


async def test_a_login_on_one_replica_is_known_on_the_next_and_logout_ends_it_on_both(
    replica: Replica,
) -> None:
    a, b = await replica(), await replica()
    sid = await login(a)
    for client in (a, b):
        status, text = await home(client, sid)
        assert status == 200 and "Assets &amp; offers" in text
    # a form posted to one replica, its message shown on the page from the other
    status, text = await home(a, sid)
    token = csrf_of(text)
    async with a.client.post(
        "/ui/assets", headers=cookie(sid), data={"csrf": token, "path": "relative"}, allow_redirects=False
    ) as r:
        assert r.status == 303
    status, text = await home(b, sid)
    assert "invalid file path" in text
    status, text = await home(a, sid)
    assert "invalid file path" not in text  # shown once
    # the same CSRF token on both: a form from one page posts to the other replica
    assert csrf_of((await home(b, sid))[1]) == token
    # a replica started later (a restart) knows it too
    c = await replica()
    assert (await home(c, sid))[0] == 200
    # logout on one ends it on every replica
    async with b.client.post(
        "/ui/logout", headers=cookie(sid), data={"csrf": token}, allow_redirects=False
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
    for client in (a, b, c):
        status, _ = await home(client, sid)
        assert status == 303
    assert await rows(a) == []


async def test_the_table_holds_the_hash_of_the_id_never_the_id(replica: Replica) -> None:
    a = await replica()
    sids = [await login(a), await login(a)]
    kept = await rows(a)
    assert sorted(r["id_hash"] for r in kept) == sorted(keyed(s) for s in sids)
    dump = repr(kept)
    for sid in sids:
        assert sid not in dump
    assert KEY not in dump
    # the hash is no session id: as a cookie it opens nothing
    hashed = str(kept[0]["id_hash"])
    assert (await home(a, hashed))[0] == 303


async def test_a_form_with_another_sessions_csrf_token_is_refused_on_either_replica(
    replica: Replica,
) -> None:
    a, b = await replica(), await replica()
    mine, theirs = await login(a), await login(b)
    their_token = csrf_of((await home(b, theirs))[1])
    my_token = csrf_of((await home(a, mine))[1])
    assert my_token != their_token
    for client in (a, b):
        for token in (their_token, "", "x" * 43):
            async with client.client.post(
                "/ui/logout", headers=cookie(mine), data={"csrf": token}, allow_redirects=False
            ) as r:
                assert r.status == 403 and "CSRF" in await r.text()
    assert (await home(b, mine))[0] == 200  # not logged out


async def test_sessions_expire_and_ended_rows_are_pruned(replica: Replica, clock: Clock) -> None:
    a, b = await replica(), await replica()
    old = await login(a)
    clock[0] += LIFETIME - 1
    assert (await home(b, old))[0] == 200
    fresh = await login(b)
    clock[0] += 1
    # the first has ended: refused on either replica, and its row removed when found
    assert (await home(a, old))[0] == 303
    assert (await home(b, old))[0] == 303
    assert [r["id_hash"] for r in await rows(a)] == [keyed(fresh)]
    assert (await home(a, fresh))[0] == 200
    # an ended session nobody asks for again goes at the next login
    clock[0] += LIFETIME
    newest = await login(a)
    assert [r["id_hash"] for r in await rows(b)] == [keyed(newest)]


async def test_store_sessions_keep_a_bounded_number_of_messages(store: Store) -> None:
    now = [1_800_000_000.0]
    sessions = Sessions(secret_checker("right"), StoreSessions(store), clock=lambda: now[0])
    s = await sessions.login("right", "a")
    assert s is not None and await sessions.get(s.sid) == s
    for i in range(MAX_FLASH + 5):
        await sessions.flash(s, f"message {i}")
    taken = await sessions.take_flash(s)
    assert taken == [f"message {i}" for i in range(5, MAX_FLASH + 5)]
    assert await sessions.take_flash(s) == []
    await sessions.logout(s)
    assert await sessions.get(s.sid) is None
    await sessions.flash(s, "to nobody")  # a session that has ended keeps no message
    assert await sessions.take_flash(s) == []


async def test_prune_keeps_the_sessions_that_end_last(store: Store) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with store.transaction() as tx:
        for i in range(5):
            await tx.ui_sessions.add(UiSessionRow(f"k{i}", "c", start + timedelta(hours=i + 1), start))
    async with store.transaction() as tx:
        assert await tx.ui_sessions.prune(start + timedelta(hours=1), keep=2) == 3  # k0 ended, k1, k2 beyond
    async with store.transaction(readonly=True) as tx:
        assert [await tx.ui_sessions.get(f"k{i}") is not None for i in range(5)] == [False] * 3 + [True] * 2


async def test_a_store_outage_is_a_page_that_says_so(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions unreadable (the database down): a 503 page with the reason, never a 500; a
    login says so too."""
    a = await replica()
    sid = await login(a)

    @contextlib.asynccontextmanager
    async def down(*, readonly: bool = False) -> AsyncIterator[None]:
        raise StoreUnreachable("the database server is down")
        yield  # pragma: no cover

    monkeypatch.setattr(a.store, "transaction", down)
    status, text = await home(a, sid)
    assert status == 503 and "<h1>Not possible</h1>" in text and "the database server is down" in text
    async with a.client.post("/ui/login", data={"secret": KEY}, allow_redirects=False) as r:
        assert r.status == 503 and "<h1>Log in</h1>" in (text := await r.text())
        assert "the database server is down" in text


async def test_a_new_management_key_ends_every_session(store: Store) -> None:
    """Rows are keyed under the key logged in with: after the key changes (a leaked key
    replaced, every replica restarted with the new one), no older session is found."""
    await store.migrate()
    old = Sessions(secret_checker(KEY), StoreSessions(store), pepper=KEY.encode())
    session = await old.login(KEY, "10.0.0.1")
    assert session is not None and await old.get(session.sid) is not None
    new_key = "another-management-key-" + "n" * 12
    new = Sessions(secret_checker(new_key), StoreSessions(store), pepper=new_key.encode())
    assert await new.get(session.sid) is None
    assert await new.login(KEY, "10.0.0.1") is None  # nor does the old key log in


async def test_a_cookie_of_any_bytes_is_no_session_never_an_error(store: Store) -> None:
    await store.migrate()
    sessions = Sessions(secret_checker(KEY), StoreSessions(store), pepper=KEY.encode())
    for sid in ("\udcff\udcfe", "é" * 40, "x" * 5000, "; path=/"):
        assert await sessions.get(sid) is None
    assert await sessions.login("\udcffkey", "10.0.0.2") is None


async def test_headers_of_any_bytes_are_refused_never_an_error(replica: Replica) -> None:
    """A cookie or an API key that is not UTF-8: the login page and a 401, never a 500."""
    node = await replica()
    client = node.client

    assert await raw_status(client, b"GET /api/assets HTTP/1.1\r\nX-Api-Key: \xff\xfe\x80\r\n") == 401
    assert await raw_status(
        client, b"GET /ui/ HTTP/1.1\r\nCookie: " + COOKIE.encode() + b"=\xff\xfe\x80\r\n"
    ) in (
        200,
        303,
    )
