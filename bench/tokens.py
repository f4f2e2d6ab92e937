"""Token benchmarks: DAT verification vs bare pyjwt, and authority issuance under load.

    python bench/tokens.py                 # both parts, default sizes
    python bench/tokens.py --part verify   # only the in-process verification figures
    python bench/tokens.py --part issue --clients 50 --seconds 5

Verification (in-process, one core): the same DAT is verified
  * bare:     jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...) with the key
              object already loaded (the baseline the target refers to);
  * full:     DatVerifier.verify with a warm JWKS cache and the verified-token cache OFF, so
              every call does the whole fail-closed check (header rules, signature, claims,
              revocation, DAT attribute parsing);
  * cached:   DatVerifier.verify with its default verified-token cache (sha256 lookup).
Rounds are interleaved and the median round is reported, so drift hits all three alike.

Issuance: a real `authority serve` subprocess on loopback; N concurrent keep-alive HTTP/1.1
connections, each for a registered participant, POST /token with a fresh RFC 7523 client
assertion per request. Assertions are signed and requests framed before the timed window, so the
load generator (which shares the 2 cores) mostly waits on sockets; every response is checked
(status 200 and an access_token; one DAT is verified against the published JWKS). The server
process's CPU use in the window shows whether the service, not the generator, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connector.identity.authority import JWT_BEARER, Authority, TokenRequest  # noqa: E402
from connector.identity.ca import create_csr  # noqa: E402
from connector.identity.client import ParticipantIdentity  # noqa: E402
from connector.identity.keys import Algorithm, generate_private_key  # noqa: E402
from connector.identity.registry import register_participant  # noqa: E402
from connector.identity.store import AuthorityStore  # noqa: E402
from connector.identity.tokens import DAT_AUDIENCE  # noqa: E402
from connector.identity.verify import DatVerifier, DatVerifierSettings  # noqa: E402


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("PyJWT", "cryptography", "aiohttp"))
    return (
        f"{model}; {os.cpu_count()} cores; Python {platform.python_version()}; {versions}; "
        f"{platform.system()} {platform.release()}"
    )


def new_participant(store: AuthorityStore, name: str, alg: Algorithm) -> ParticipantIdentity:
    key = generate_private_key(alg)
    record = register_participant(store, create_csr(key, name).public_bytes(Encoding.PEM), now=time.time())
    return ParticipantIdentity.from_parts(key, x509.load_pem_x509_certificate(record.certificate.encode()))


# --- verification ------------------------------------------------------------------------


def rate_sync(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


async def rate_async(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return n / (time.perf_counter() - start)


async def bench_verify(alg: Algorithm, iterations: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = AuthorityStore.initialize(
            Path(tmp) / "auth", name="Bench", alg=alg, now=time.time() - 5, admin_token="x"
        )
        issuer = "http://authority.bench"
        authority = Authority(store, issuer=issuer)
        who = new_participant(store, "Bench Participant", alg)
        assertion = who.client_assertion(issuer, now=time.time(), jti="bench-1")
        request = TokenRequest(
            grant_type="client_credentials",
            client_assertion_type=JWT_BEARER,
            client_assertion=assertion,
        )
        token = authority.issue_token(request).access_token

        async def jwks() -> Any:
            return authority.jwks()

        async def revocations() -> Any:
            return authority.revocation_list()

        def verifier(cache: bool) -> DatVerifier:
            settings = DatVerifierSettings(issuer=issuer, cache_claims=cache, revocation_poll_interval=3600)
            return DatVerifier.create(settings, fetch_jwks=jwks, fetch_revocations=revocations)

        full, cached = verifier(False), verifier(True)
        await full.verify(token)  # warm: JWKS and revocation list fetched once
        await cached.verify(token)
        kid = jwt.get_unverified_header(token)["kid"]
        public_key = full.jwks.keys[kid].key

        def bare() -> Any:
            return jwt.decode(token, public_key, algorithms=[alg], audience=DAT_AUDIENCE, issuer=issuer)

        results: dict[str, list[float]] = {"bare": [], "full": [], "cached": []}
        for _ in range(rounds):
            results["bare"].append(rate_sync(bare, iterations))
            results["full"].append(await rate_async(lambda: full.verify(token), iterations))
            results["cached"].append(await rate_async(lambda: cached.verify(token), iterations * 10))
        assert full.jwks.fetch_count == 1 and cached.jwks.fetch_count == 1
        return {k: statistics.median(v) for k, v in results.items()}


# --- issuance ----------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), to show whether the service is saturated."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def token_request(port: int, assertion: str) -> bytes:
    body = urlencode(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
    ).encode()
    head = (
        f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_issue(alg: Algorithm, clients: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "auth"
        store = AuthorityStore.initialize(root, name="Bench", alg=alg, now=time.time(), admin_token="x")
        people = [new_participant(store, f"Client {i}", alg) for i in range(clients)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connector.identity",
                "authority",
                "serve",
                str(root),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
                for _ in range(200):
                    try:
                        async with http.get(f"{url}/health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(proc.stderr.read().decode())  # type: ignore[union-attr]
                async with http.get(f"{url}/.well-known/jwks.json") as resp:
                    jwks = await resp.json()
                # one-time assertions, signed and framed ahead so the load generator (which
                # shares the 2 cores) spends its time on the socket, not on signing or aiohttp
                budget = int(seconds * 5000 / clients) + 100
                jti = itertools.count()
                now = time.time()
                pools = [
                    [
                        token_request(port, p.client_assertion(url, now=now, jti=f"b{next(jti)}"))
                        for _ in range(budget)
                    ]
                    for p in people
                ]
                ok = failed = 0
                latencies: list[float] = []
                sample: list[bytes] = []
                stop_at = 0.0

                async def worker(pool: list[bytes]) -> None:
                    nonlocal ok, failed
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    try:
                        while pool and time.perf_counter() < stop_at:
                            t0 = time.perf_counter()
                            writer.write(pool.pop())
                            head = await reader.readuntil(b"\r\n\r\n")
                            length = int(head.lower().split(b"content-length:")[1].split(b"\r")[0])
                            body = await reader.readexactly(length)
                            if head.startswith(b"HTTP/1.1 200") and b'"access_token"' in body:
                                ok += 1
                                latencies.append(time.perf_counter() - t0)
                                if not sample:
                                    sample.append(body)
                            else:
                                failed += 1
                    finally:
                        writer.close()
                        await writer.wait_closed()

                stop_at = time.perf_counter() + 1.0  # warm-up
                await asyncio.gather(*(worker(p) for p in pools))
                ok = failed = 0
                latencies.clear()
                cpu_before = process_cpu_seconds(proc.pid)
                start = time.perf_counter()
                stop_at = start + seconds
                await asyncio.gather(*(worker(p) for p in pools))
                elapsed = time.perf_counter() - start
                server_cpu = (process_cpu_seconds(proc.pid) - cpu_before) / elapsed
                exhausted = sum(1 for p in pools if not p)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        latencies.sort()
        # the responses are real DATs: check one against the authority's published key
        dat = json.loads(sample[0])["access_token"]
        key = jwt.PyJWK(jwks["keys"][0])
        jwt.decode(dat, key, algorithms=[alg], audience=DAT_AUDIENCE, issuer=url)
        return {
            "tokens_per_s": ok / elapsed,
            "ok": ok,
            "failed": failed,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
            "exhausted_pools": exhausted,
            "server_cpu": server_cpu,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "verify", "issue"], default="all")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    print(f"date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: python bench/tokens.py {' '.join(sys.argv[1:])}".rstrip())
    if args.part in ("all", "verify"):
        print(
            "\n| alg | bare pyjwt.decode /s | DatVerifier full /s | full vs bare "
            "| DatVerifier cached /s | cached vs bare |"
        )
        print("|---|---|---|---|---|---|")
        for alg in ("EdDSA", "ES256"):
            r = await bench_verify(alg, args.iterations, args.rounds)  # type: ignore[arg-type]
            print(
                f"| {alg} | {r['bare']:,.0f} ({1e6 / r['bare']:.0f} us) "
                f"| {r['full']:,.0f} ({1e6 / r['full']:.0f} us) | {r['full'] / r['bare']:.0%} "
                f"| {r['cached']:,.0f} ({1e6 / r['cached']:.1f} us) "
                f"| {r['cached'] / r['bare']:.0%} |"
            )
    if args.part in ("all", "issue"):
        print("\n| alg | clients | DATs issued /s | p50 ms | p99 ms | ok | failed | server CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for alg in ("EdDSA", "ES256"):
            r = await bench_issue(alg, args.clients, args.seconds)  # type: ignore[arg-type]
            print(
                f"| {alg} | {args.clients} | {r['tokens_per_s']:,.0f} | {r['p50_ms']:.1f} "
                f"| {r['p99_ms']:.1f} | {r['ok']} | {r['failed']} | {r['server_cpu']:.0%} |"
                + (" (assertion pool ran out)" if r["exhausted_pools"] else "")
            )


if __name__ == "__main__":
    asyncio.run(main())
