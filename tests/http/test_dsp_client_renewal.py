"""The outbound DSP client repeats a call once with a fresh DAT when the peer answers 401 (the
DAT predates a change of what the authority attests), and only then."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from connector.http.client import DspClient
from connector.http.outbound import OutboundPolicy

POLICY = OutboundPolicy.from_config(("127.0.0.1/32",))


async def test_a_401_is_retried_once_with_a_fresh_dat() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token.startswith("stale"):
            return web.json_response({"code": "401", "reason": ["a fresh token is needed"]}, status=401)
        if token == "refused":
            return web.json_response({"code": "404", "reason": ["not found"]}, status=404)
        return web.json_response({"ok": token})

    app = web.Application()
    app.router.add_post("/x", handler)
    current = ["stale-1"]
    renewed: list[str] = []

    async def token() -> str:
        return current[0]

    async def renew(stale: str) -> str:
        renewed.append(stale)
        current[0] = "fresh" if stale == "stale-1" else "stale-again"
        return current[0]

    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/x"
        client = DspClient(token, ssl_context=None, policy=POLICY, renew=renew)
        try:
            d = await client.post(url, {})
            assert d.ok and d.body == {"ok": "fresh"}
            assert seen == ["stale-1", "fresh"] and renewed == ["stale-1"]
            current[0] = "stale-2"  # renewal gives another stale token: no loop, one retry
            d = await client.post(url, {})
            assert d.status == 401 and d.permanent and "a fresh token is needed" in d.reason
            assert renewed == ["stale-1", "stale-2"]
            current[0] = "refused"  # other refusals are not retried
            d = await client.post(url, {})
            assert d.status == 404 and renewed == ["stale-1", "stale-2"]
        finally:
            await client.close()
        plain = DspClient(token, ssl_context=None, policy=POLICY)  # no renewal: as before
        try:
            current[0] = "stale-3"
            assert (await plain.post(url, {})).status == 401
        finally:
            await plain.close()
