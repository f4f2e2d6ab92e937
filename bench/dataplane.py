"""Benchmarks of the data plane (issue 5), real processes on loopback, plain HTTP for both sides
so the governed path and the baseline pay the same transport.

1. Governed pull of a large file (default 1 GiB) through the provider's data plane (transfer
   token, live policy decision, use counted, streamed, receipt chain) vs a bare aiohttp
   `FileResponse` server of the same file in the same run; peak RSS of the provider process.
2. 1 KiB governed requests per second vs a bare aiohttp handler returning the same bytes,
   with the same client (aiohttp, 32 concurrent connections), and the p99 latency of each.
   With 32 connections the p99 is mostly queueing, so:
3. the latency of 1 KiB requests sent one at a time on one connection (no queueing), governed
   vs bare: p50, p99 and the added latency the data plane costs.

Run: python bench/dataplane.py [--size-mib 1024] [--seconds 10] [--rounds 2] [--metrics | --metrics-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from connector.devspace import (
    Connector,
    DataSpace,
    asset_file,
    free_port,
    negotiate,
    offer_asset,
)

BARE_SERVER = """
import sys
from aiohttp import web
path, port = sys.argv[1], int(sys.argv[2])
small = b"x" * 1024
async def big(request): return web.FileResponse(path)
async def kib(request): return web.Response(body=small, content_type="application/octet-stream")
app = web.Application()
app.router.add_get("/big", big)
app.router.add_get("/kib", kib)
web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("ready", flush=True),
            access_log=None)
"""


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def download(url: str, headers: dict[str, str]) -> tuple[int, float]:
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        n = 0
        async with http.get(url, headers=headers) as r:
            assert r.status == 200, await r.text()
            async for chunk in r.content.iter_chunked(1 << 20):
                n += len(chunk)
        return n, time.perf_counter() - t0


async def hammer(
    url: str, headers: dict[str, str], seconds: float, conns: int, server_pid: int
) -> tuple[list[float], float, float]:
    """`conns` workers, each sending its next request when the previous one completed (with
    `conns=1`: sequential requests on one kept-alive connection). Returns the latencies, the
    wall time and the server process's CPU time."""
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with http.get(url, headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        cpu0 = cpu_seconds(server_pid)
        await asyncio.gather(*(worker() for _ in range(conns)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(server_pid) - cpu0
    return lat, wall, cpu


Target = tuple[str, dict[str, str], int]  # url, headers, server pid


def compare(
    bare: Target, governed: Target, seconds: float, conns: int, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Both servers under the same client, in `rounds` alternating rounds (bare first, then
    governed first, ...) of `seconds / rounds` each, so a change in the machine's load during
    the run hits both alike. Returns each side's totals over all rounds."""
    runs: dict[str, list[tuple[list[float], float, float]]] = {"bare": [], "governed": []}
    for i in range(rounds):
        order = [("bare", bare), ("governed", governed)]
        for name, (url, headers, pid) in order if i % 2 == 0 else order[::-1]:
            runs[name].append(asyncio.run(hammer(url, headers, seconds / rounds, conns, pid)))

    def totals(rs: list[tuple[list[float], float, float]]) -> dict[str, float]:
        lat = sorted(x for r in rs for x in r[0])
        wall, cpu = sum(r[1] for r in rs), sum(r[2] for r in rs)
        return {
            "rps": len(lat) / wall,
            "cpu_us": cpu / len(lat) * 1e6,
            "p50": statistics.median(lat) * 1000,
            "p99": lat[int(0.99 * (len(lat) - 1))] * 1000,
            "p999": lat[int(0.999 * (len(lat) - 1))] * 1000,
            "n": len(lat),
        }

    return totals(runs["bare"]), totals(runs["governed"])


def metrics_on_off(
    ds: DataSpace, provider: Connector, consumer: Connector, kib: Path, on: Target, args: argparse.Namespace
) -> None:
    """The same 1 KiB governed requests against this provider (metrics on) and a second one
    started with CONNECTOR_METRICS=off, alternating; then the first one's /metrics."""
    off = ds.connector("provider-nometrics", roles=("provider",), start=False)
    off.env["CONNECTOR_METRICS"] = "off"
    off.start()
    offer = offer_asset(
        off,
        asset_id="urn:asset:kib",
        content=kib.read_bytes(),
        contract={"template": "n-times-usage", "params": {"max": "100000000"}},
    )
    n = negotiate(consumer, off, offer)
    _, t = consumer.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
    deadline = time.monotonic() + 20
    while t["state"] != "STARTED" and time.monotonic() < deadline:
        time.sleep(0.05)
        _, t = consumer.api("GET", f"/api/transfers/{t['id']}")
    assert off.proc is not None
    off_target: Target = (
        t["endpoint"],
        {"Authorization": f"Bearer {t['endpointProperties']['authorization']}"},
        off.proc.pid,
    )
    print(
        f"\n## Metrics on vs off: 1 KiB governed requests, 32 connections ({args.rounds} alternating rounds)"
    )
    m_off, m_on = compare(off_target, on, args.seconds, 32, args.rounds)
    for name, r in (("metrics off:", m_off), ("metrics on:", m_on)):
        print(
            f"{name:15} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
            f"  server CPU {r['cpu_us']:5.0f} us/request"
        )
    print(
        f"on/off: {m_on['rps'] / m_off['rps']:.1%} of the requests/s, "
        f"{m_on['cpu_us'] / m_off['cpu_us']:.1%} of the CPU per request"
    )
    import urllib.request

    req = urllib.request.Request(provider.api_url + "/metrics", headers={"X-Api-Key": provider.api_key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    shown = [
        line
        for line in text.splitlines()
        if line.startswith(
            (
                'connector_http_requests_total{app="dataplane"',
                "connector_decisions_total",
                "connector_uses_total",
                "connector_bytes_served_total",
            )
        )
    ]
    print("/metrics of the provider (metrics on) after the run:")
    for line in shown:
        print("  " + line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument(
        "--seconds", type=float, default=10.0, help="per side and measurement, split over the rounds"
    )
    ap.add_argument("--rounds", type=int, default=2, help="alternating bare/governed rounds per measurement")
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="also: 1 KiB governed requests with metrics on against a provider with "
        "CONNECTOR_METRICS=off (same run), and what /metrics shows after",
    )
    ap.add_argument(
        "--metrics-only",
        action="store_true",
        help="only the metrics on vs off comparison (implies --metrics; the other measurements skipped)",
    )
    args = ap.parse_args()
    args.metrics = args.metrics or args.metrics_only
    print(
        f"# bench/dataplane.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  python "
        f"{platform.python_version()}  cores={os.cpu_count()}  file={args.size_mib} MiB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = root / "big.bin"
        with big.open("wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                f.write(block)
        kib = root / "kib.bin"
        kib.write_bytes(b"x" * 1024)

        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(big), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        ds: DataSpace | None = None
        try:  # the bare server goes whatever fails from here on
            assert bare.stdout is not None and b"ready" in bare.stdout.readline()
            ds = DataSpace(root / "space", tls=False)
            provider = ds.connector("provider", roles=("provider",))
            consumer = ds.connector("consumer", roles=("consumer",))
            edrs: dict[str, Any] = {}
            for asset, path in (("urn:asset:big", big), ("urn:asset:kib", kib)):
                offer = offer_asset(
                    provider,
                    asset_id=asset,
                    content=path.read_bytes() if path == kib else b"",
                    contract={"template": "n-times-usage", "params": {"max": "100000000"}},
                )
                # the big asset: the big file itself, linked into the provider's data root (a
                # symlink out of the root would be refused)
                if path == big:
                    target = asset_file(provider, asset)
                    target.unlink()
                    os.link(big, target)
                n = negotiate(consumer, provider, offer)
                status, t = consumer.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
                assert status == 201, t
                deadline = time.monotonic() + 20
                while t["state"] != "STARTED" and time.monotonic() < deadline:
                    time.sleep(0.05)
                    _, t = consumer.api("GET", f"/api/transfers/{t['id']}")
                edrs[asset] = t
            auth = {
                a: {"Authorization": f"Bearer {t['endpointProperties']['authorization']}"}
                for a, t in edrs.items()
            }
            assert provider.proc is not None
            pid = provider.proc.pid

            bare_kib: Target = (f"http://127.0.0.1:{port}/kib", {}, bare.pid)
            gov_kib: Target = (edrs["urn:asset:kib"]["endpoint"], auth["urn:asset:kib"], pid)
            if args.metrics_only:
                metrics_on_off(ds, provider, consumer, kib, gov_kib, args)
                return
            print(f"\n## Large pull ({args.rounds} alternating rounds per side)")
            rss_before = rss_mib(pid)
            pulls: dict[str, list[tuple[int, float]]] = {"bare": [], "governed": []}
            sides = {
                "bare": (f"http://127.0.0.1:{port}/big", {}),
                "governed": (edrs["urn:asset:big"]["endpoint"], auth["urn:asset:big"]),
            }
            for i in range(args.rounds):
                for name in ("bare", "governed") if i % 2 == 0 else ("governed", "bare"):
                    pulls[name].append(asyncio.run(download(*sides[name])))
            assert all(n == args.size_mib << 20 for side in pulls.values() for n, _ in side)
            for name, side in pulls.items():
                print(f"  {name:8} rounds: " + ", ".join(f"{n / s / 1e6:.0f}" for n, s in side) + " MB/s")
            base_rate = sum(n for n, _ in pulls["bare"]) / sum(s for _, s in pulls["bare"]) / 1e6
            gov_rate = sum(n for n, _ in pulls["governed"]) / sum(s for _, s in pulls["governed"]) / 1e6
            print(f"bare aiohttp FileResponse: {base_rate:8.1f} MB/s")
            print(f"governed pull:             {gov_rate:8.1f} MB/s  ({gov_rate / base_rate:.0%} of bare)")
            print(
                f"provider RSS before the pull {rss_before:.0f} MiB, peak (VmHWM, whole life) "
                f"{peak_rss_mib(pid):.0f} MiB"
            )

            print(f"\n## 1 KiB requests, 32 connections ({args.rounds} alternating rounds)")
            b, g = compare(bare_kib, gov_kib, args.seconds, 32, args.rounds)
            print(
                f"bare handler:   {b['rps']:8.0f} req/s  p50 {b['p50']:6.2f} ms  p99 {b['p99']:6.2f} ms"
                f"  server CPU {b['cpu_us']:5.0f} us/request"
            )
            print(
                f"governed:       {g['rps']:8.0f} req/s  p50 {g['p50']:6.2f} ms  p99 {g['p99']:6.2f} ms"
                f"  server CPU {g['cpu_us']:5.0f} us/request"
            )
            print(
                f"governed/bare:  {g['rps'] / b['rps']:.0%} of the requests/s; added p99 "
                f"{g['p99'] - b['p99']:.2f} ms"
            )

            print(
                f"\n## 1 KiB requests, 1 connection, sequential: latency without queueing "
                f"({args.rounds} alternating rounds)"
            )
            b, g = compare(bare_kib, gov_kib, args.seconds, 1, args.rounds)
            for name, r in (("bare handler:", b), ("governed:", g)):
                print(
                    f"{name:15} {r['rps']:8.0f} req/s  p50 {r['p50']:6.3f} ms  p99 {r['p99']:6.3f} ms"
                    f"  p99.9 {r['p999']:6.3f} ms  server CPU {r['cpu_us']:4.0f} us/request"
                    f"  ({r['n']:.0f} requests)"
                )
            print(
                f"added by the data plane: p50 {g['p50'] - b['p50']:+.3f} ms  "
                f"p99 {g['p99'] - b['p99']:+.3f} ms  p99.9 {g['p999'] - b['p999']:+.3f} ms"
            )
            if args.metrics:
                metrics_on_off(ds, provider, consumer, kib, gov_kib, args)
        finally:
            if ds is not None:
                ds.close()
            bare.terminate()
            bare.wait(5)


if __name__ == "__main__":
    main()
