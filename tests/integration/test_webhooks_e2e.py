"""Webhooks (connector.runtime.webhooks, connector.http.webhooks): a connector process tells a
real HTTP receiver of its negotiation's state changes and the agreement signed, each event
signed with the hook's HMAC key, written with the state change (the outbox), retried with the
same delivery id after a 5xx, in order per process; a hook at an address the outbound policy
refuses is never connected to."""

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

from connector.http.outbound import OutboundPolicy
from connector.http.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookClient,
    verify_signature,
)

pytestmark = pytest.mark.integration
SECRET = b"an-hmac-key-of-thirty-two-bytes!"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.failed_once = False
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append(({k: v for k, v in self.headers.items()}, body))
        if not self.server.failed_once:  # the first delivery fails: the outbox retries it
            self.server.failed_once = True
            self.send_response(503)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_negotiation_is_told_to_the_webhook_signed_in_order_and_retried(
    space: DataSpace, tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        provider = space.connector("hookprov", roles=("provider",), start=False)
        secret = tmp_path / "hook.key"
        secret.write_bytes(SECRET)
        with provider.config.open("a") as f:
            f.write(
                f'\n[[webhooks]]\nurl = "{receiver.url}"\nsecret_file = "{secret}"\n'
                f'events = ["negotiation", "agreement"]\nallow = ["127.0.0.1"]\n'
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
    finally:
        receiver.shutdown()


def test_a_webhook_at_a_refused_address_is_never_connected_to() -> None:
    async def send() -> Any:
        client = WebhookClient(
            OutboundPolicy.from_config([]), {"http://127.0.0.1:9/x": SECRET}, clock=time.time
        )
        try:
            return await client.send("http://127.0.0.1:9/x", {"type": "t"}, "urn:uuid:1")
        finally:
            await client.close()

    d = asyncio.run(send())
    assert not d.ok and d.permanent and d.refused and "loopback" in d.reason
