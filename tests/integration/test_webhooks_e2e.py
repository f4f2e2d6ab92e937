"""Webhooks (connector.runtime.webhooks, connector.http.webhooks): a connector process tells a
real HTTP receiver of its negotiation's state changes and the agreement signed, each event
signed with the hook's HMAC key, written with the state change (the outbox), retried with the
same delivery id after a 5xx, in order per process; a hook at an address the outbound policy
refuses is never connected to. Each hook's ``allow`` list is its own: a second hook at the same
loopback receiver without it is refused (dead-lettered with the reason), by address and by name,
and a redirect is never followed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dataspace_testlib import DataSpace, negotiate, offer_asset

from connector.config import load_config
from connector.http.outbound import OutboundPolicy
from connector.http.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookClient,
    WebhookTarget,
    verify_signature,
)
from connector.runtime.webhooks import WEBHOOK_KIND
from connector.store import OutboxMessage, Store

pytestmark = pytest.mark.integration
SECRET = b"an-hmac-key-of-thirty-two-bytes!"


class Receiver(ThreadingHTTPServer):
    def __init__(self, *, fail_first: bool = True) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[str] = []  # every request's path, in order
        self.failed_once = not fail_first
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        if self.path.startswith("/moved"):  # a redirect to where the hook was not configured
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/hook":  # not a configured hook's URL: only counted in paths
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.got.append(({k: v for k, v in self.headers.items()}, body))
        if not self.server.failed_once:  # the first delivery fails: the outbox retries it
            self.server.failed_once = True
            self.send_response(503)
        else:
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def _webhook_rows(config: Path) -> list[OutboxMessage]:
    """The provider's webhook events in its outbox (read while it runs)."""
    store = await Store.open(load_config(config).store_url)
    try:
        async with store.transaction(readonly=True) as tx:
            return await tx.outbox.list(process_kind=WEBHOOK_KIND, limit=None)
    finally:
        await store.close()


def test_a_negotiation_is_told_to_the_webhook_signed_in_order_and_retried(
    space: DataSpace, tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        provider = space.connector("hookprov", roles=("provider",), start=False)
        secret = tmp_path / "hook.key"
        secret.write_bytes(SECRET)
        # the second hook, at the same loopback receiver, has no allow list of its own: the
        # first one's ["127.0.0.1"] does not apply to it
        other = f"http://127.0.0.1:{receiver.port}/other"
        with provider.config.open("a") as f:
            f.write(
                f'\n[[webhooks]]\nurl = "{receiver.url}"\nsecret_file = "{secret}"\n'
                f'events = ["negotiation", "agreement"]\nallow = ["127.0.0.1"]\n'
                f'\n[[webhooks]]\nurl = "{other}"\nsecret_file = "{secret}"\n'
                f'events = ["negotiation", "agreement"]\n'
            )
        provider.start()
        consumer = space.connector("hookcons", roles=("consumer",))
        offer = offer_asset(
            provider,
            asset_id="urn:asset:hooked",
            contract={"template": "n-times-usage", "params": {"max": "1"}},
        )
        n = negotiate(consumer, provider, offer)
        assert n["state"] == "FINALIZED"

        def events() -> list[dict[str, Any]]:
            return [json.loads(body) for _, body in receiver.got]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e["type"] == "agreement.signed" for e in events()):
            time.sleep(0.1)
        got = events()
        for headers, body in receiver.got:  # every delivery signed with the hook's key
            assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, now=time.time())
            assert headers[EVENT_HEADER] == json.loads(body)["type"]
            assert headers[DELIVERY_HEADER] == json.loads(body)["id"]
        # the 503 was retried: the first event arrived twice, with one delivery id
        assert got[0]["id"] == got[1]["id"]
        unique = {e["id"]: e for e in got}
        states = [e["process"]["internalState"] for e in unique.values() if e["type"] == "negotiation.state"]
        assert states[-1] == "FINALIZED" and len(states) == len(set(states))  # in order, once
        signed = [e for e in unique.values() if e["type"] == "agreement.signed"]
        assert [e["agreement"]["id"] for e in signed] == [n["agreementId"]]
        assert not [e for e in unique.values() if e["type"] == "transfer.state"]  # not asked for

        # the second hook's events were written as the first one's, and every one of them was
        # refused at once (dead, with the reason), never sent
        def refused() -> list[OutboxMessage]:
            return [m for m in asyncio.run(_webhook_rows(provider.config)) if m.destination == other]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            len(refused()) == len(unique) and all(m.status == "dead" for m in refused())
        ):
            time.sleep(0.1)
        rows = refused()
        assert len(rows) == len(unique) and {m.status for m in rows} == {"dead"}, rows
        for m in rows:
            assert m.last_error is not None and "destination refused" in m.last_error, m.last_error
            assert "127.0.0.1 is a loopback address (not on the allow-list)" in m.last_error
        assert not [p for p in receiver.paths if p != "/hook"]
    finally:
        receiver.shutdown()


async def _client_send(client: WebhookClient, hook: str, url: str) -> Any:
    try:
        return await client.send(hook, url, {"type": "t"}, "urn:uuid:1")
    finally:
        await client.close()


def test_a_webhook_at_a_refused_address_is_never_connected_to() -> None:
    client = WebhookClient(
        {"h0": WebhookTarget("http://127.0.0.1:9/x", SECRET, OutboundPolicy.from_config([]))}, clock=time.time
    )
    d = asyncio.run(_client_send(client, "h0", "http://127.0.0.1:9/x"))
    assert not d.ok and d.permanent and d.refused and "loopback" in d.reason


def test_each_hook_reaches_only_what_its_own_allow_list_names() -> None:
    """Two hooks at one loopback receiver under one host name (resolved by the test's DNS):
    the one allowing the name is delivered to (at the address checked and pinned), the other is
    refused before any connection, though the first one's connection to that host is open."""
    receiver = Receiver(fail_first=False)
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"] if host == "hooks.internal" else []

    allowed = f"http://hooks.internal:{receiver.port}/hook"
    denied = f"http://hooks.internal:{receiver.port}/denied"
    by_address = f"http://127.0.0.1:{receiver.port}/by-address"

    async def go() -> list[Any]:
        client = WebhookClient(
            {
                "a": WebhookTarget(allowed, SECRET, OutboundPolicy.from_config(["hooks.internal"])),
                "b": WebhookTarget(denied, SECRET, OutboundPolicy.from_config([])),
                "c": WebhookTarget(by_address, SECRET, OutboundPolicy.from_config(["10.0.0.0/8"])),
            },
            clock=time.time,
            resolve=resolve,
        )
        try:
            return [
                await client.send("a", allowed, {"type": "t"}, "urn:uuid:1"),
                await client.send("b", denied, {"type": "t"}, "urn:uuid:2"),
                await client.send("c", by_address, {"type": "t"}, "urn:uuid:3"),
                # a row naming hook b but a's URL: sent as a, the one hook of that URL
                await client.send("b", allowed, {"type": "t"}, "urn:uuid:4"),
                # a URL no hook has: nothing to sign with, nothing sent
                await client.send("a", f"http://127.0.0.1:{receiver.port}/gone", {"type": "t"}, "u:5"),
            ]
        finally:
            await client.close()

    try:
        a, b, c, moved_row, gone = asyncio.run(go())
    finally:
        receiver.shutdown()
    assert a.ok and a.status == 204
    assert not b.ok and b.permanent and b.refused
    assert b.reason == (
        "destination refused: hooks.internal resolves to 127.0.0.1, "
        "a loopback address (not on the allow-list)"
    )
    assert not c.ok and c.refused and "127.0.0.1 is a loopback address" in c.reason
    assert moved_row.ok
    assert not gone.ok and gone.permanent and "no webhook of this URL" in gone.reason
    assert receiver.paths == ["/hook", "/hook"]
    for headers, body in receiver.got:
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, now=time.time())


def test_a_redirect_is_not_followed_and_not_retried() -> None:
    receiver = Receiver(fail_first=False)
    url = f"http://127.0.0.1:{receiver.port}/moved"
    client = WebhookClient(
        {"h0": WebhookTarget(url, SECRET, OutboundPolicy.from_config(["127.0.0.1"]))}, clock=time.time
    )
    try:
        d = asyncio.run(_client_send(client, "h0", url))
    finally:
        receiver.shutdown()
    assert not d.ok and d.permanent and d.status == 307 and "not followed" in d.reason
    assert receiver.paths == ["/moved"]  # /elsewhere never asked
