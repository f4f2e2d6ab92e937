"""The authority's files on a full disk (a real, small tmpfs), served over loopback HTTP: a
registration that cannot be written is 503 ``temporarily_unavailable`` with a Retry-After,
changes nothing, and succeeds once space is freed; reads and tokens go on meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.serialization import Encoding
from storage_testlib import fill, free, tmpfs

from connector.identity.authority import Authority, create_app
from connector.identity.ca import create_csr
from connector.identity.keys import generate_private_key
from connector.identity.store import AuthorityStore

ADMIN = "an admin token of the storage test"


async def test_a_registration_on_a_full_disk_is_503_then_goes_through(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        store = AuthorityStore.initialize(
            disk / "authority", name="Storage space", alg="EdDSA", now=time.time(), admin_token=ADMIN
        )
        authority = Authority(store, issuer="http://authority.test")
        csr = create_csr(generate_private_key("EdDSA"), "Late").public_bytes(Encoding.PEM).decode()
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with TestClient(TestServer(create_app(authority))) as client:
            fill(disk)
            try:
                r = await client.post("/admin/participants", json={"csr": csr}, headers=headers)
                body = await r.json()
                assert r.status == 503, body
                assert int(r.headers["Retry-After"]) > 0
                assert body["error"] == "temporarily_unavailable"
                assert "no space left" in body["error_description"]
                r = await client.get("/admin/participants", headers=headers)
                assert r.status == 200 and (await r.json())["participants"] == []
            finally:
                free(disk)
            r = await client.post("/admin/participants", json={"csr": csr}, headers=headers)
            assert r.status == 201, await r.text()
