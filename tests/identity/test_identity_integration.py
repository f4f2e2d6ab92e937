"""A real authority process on loopback; two participants get and verify each other's DATs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from connector.identity.client import DatClient, ParticipantIdentity
from connector.identity.errors import InvalidToken, TokenUnavailable
from connector.identity.verify import DatVerifier

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def connector_command() -> list[str]:
    """`python -m connector` once the whole CLI imports; the identity CLI alone until then."""
    try:
        whole_cli = importlib.util.find_spec("connector.odrl.cli") is not None
    except ModuleNotFoundError:
        whole_cli = False
    return [sys.executable, "-m", "connector" if whole_cli else "connector.identity"]


def cli(*args: object) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*connector_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AuthorityProcess:
    def __init__(self, directory: Path, port: int):
        self.directory, self.port = directory, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                *connector_command(),
                "authority",
                "serve",
                str(self.directory),
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"authority exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    if b"200" in s.recv(64):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("authority did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[AuthorityProcess]:
    cli("authority", "init", tmp_path / "auth", "--name", "Loopback", "--dat-lifetime", "600")
    process = AuthorityProcess(tmp_path / "auth", free_port())
    try:
        yield process
    finally:
        process.stop()


async def test_two_participants_over_a_real_authority(authority: AuthorityProcess, tmp_path: Path) -> None:
    auth = authority.directory
    # Alice joins before the authority runs (CLI), Bob while it runs (admin API).
    cli("init", tmp_path / "alice", "--name", "Alice")
    alice_reg = json.loads(
        cli(
            "authority",
            "register",
            auth,
            tmp_path / "alice" / "participant.csr",
            "--role",
            "provider",
            "--connector-url",
            "http://127.0.0.1:9/alice",
        )
    )
    cli("init", tmp_path / "bob", "--name", "Bob", "--alg", "ES256")
    authority.start()
    admin = {"Authorization": f"Bearer {(auth / 'admin.token').read_text().strip()}"}

    async with aiohttp.ClientSession() as http:
        csr = (tmp_path / "bob" / "participant.csr").read_text()
        async with http.post(
            f"{authority.url}/admin/participants",
            json={"csr": csr, "attributes": {"roles": ["consumer"]}},
            headers=admin,
        ) as resp:
            assert resp.status == 201, await resp.text()
            bob_reg = await resp.json()
        (tmp_path / "bob" / "participant.crt").write_text(bob_reg["certificate"])

        alice = ParticipantIdentity.load(tmp_path / "alice")
        bob = ParticipantIdentity.load(tmp_path / "bob")
        assert alice.participant_id == alice_reg["participant_id"]
        assert bob.participant_id == bob_reg["participant_id"]

        settings = {"revocation_poll_interval": 0.5, "jwks_min_refresh_interval": 0.0}
        at_alice = await DatVerifier.from_authority(http, authority.url, **settings)
        at_bob = await DatVerifier.from_authority(http, authority.url, **settings)
        alice_client = await DatClient.discover(http, authority.url, alice)
        bob_client = await DatClient.discover(http, authority.url, bob)

        alice_dat, bob_dat = await asyncio.gather(alice_client.token(), bob_client.token())
        from_bob = await at_alice.verify(bob_dat)
        from_alice = await at_bob.verify(alice_dat)
        assert from_bob.subject == bob.participant_id and from_bob.roles == ("consumer",)
        assert from_alice.subject == alice.participant_id
        assert from_alice.attributes["referringConnector"] == "http://127.0.0.1:9/alice"
        assert from_alice.issuer == authority.url
        # many concurrent callers, one token request
        assert len(set(await asyncio.gather(*(bob_client.token() for _ in range(50))))) == 1
        assert bob_client.requests == 1

        # key rotation: both keys during the overlap, then only the new one
        async with http.post(
            f"{authority.url}/admin/keys/rotate", json={"overlap_seconds": 300}, headers=admin
        ) as resp:
            rotated = await resp.json()
        new_alice_client = await DatClient.discover(http, authority.url, alice)
        new_alice_dat = await new_alice_client.token()
        assert (await at_bob.verify(new_alice_dat)).key_id == rotated["current"]
        assert (await at_bob.verify(alice_dat)).key_id == rotated["previous"]
        async with http.post(f"{authority.url}/admin/keys/retire", headers=admin) as resp:
            assert resp.status == 200
        await at_bob.jwks.refresh()
        with pytest.raises(InvalidToken, match="unknown kid"):
            await at_bob.verify(alice_dat)

        # revocation by the operator's CLI while the service runs; Bob's fresh DAT is in
        # Alice's verified-token cache, which must not outlive the revocation
        bob_dat = await (await DatClient.discover(http, authority.url, bob)).token()
        assert (await at_alice.verify(bob_dat)).subject == bob.participant_id
        cli("authority", "revoke", auth, bob.participant_id, "--reason", "offboarded")
        with pytest.raises(TokenUnavailable, match="revoked"):
            await (await DatClient.discover(http, authority.url, bob)).token()
        await asyncio.sleep(0.6)  # one revocation poll interval
        with pytest.raises(InvalidToken, match="revoked"):
            await at_alice.verify(bob_dat)
        assert (await at_alice.verify(new_alice_dat)).subject == alice.participant_id

        async with http.post(f"{authority.url}/token", data={"grant_type": "client_credentials"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "invalid_client"

        # a restart keeps participants, revocations and keys
        async with http.get(f"{authority.url}/.well-known/jwks.json") as resp:
            jwks_before = await resp.json()
        authority.stop()
        authority.start()
        async with http.get(f"{authority.url}/.well-known/jwks.json") as resp:
            assert await resp.json() == jwks_before
        async with http.get(f"{authority.url}/admin/revocations", headers=admin) as resp:
            revoked = await resp.json()
        assert [r["participant_id"] for r in revoked["revoked"]] == [bob.participant_id]
        restarted = await DatClient.discover(http, authority.url, alice)
        assert (await at_bob.verify(await restarted.token())).subject == alice.participant_id


def test_the_authority_answers_ready_with_its_registry(authority: AuthorityProcess) -> None:
    import json
    import urllib.request

    authority.start()
    with urllib.request.urlopen(authority.url + "/ready", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ready", "checks": {"registry": "ok"}}
