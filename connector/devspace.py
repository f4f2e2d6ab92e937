"""A real data space on loopback: an authority process and connector processes
(`python -m connector ...`) with real keys, certificates, TLS and HTTP. `connector demo`, the
integration tests and the benchmarks run on it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def process_env(wire_schemas: Path | None = None) -> dict[str, str]:
    """The environment of the processes: this checkout importable; with ``wire_schemas``, every
    DSP message sent or returned is validated against those schemas (protocol.wirecheck)."""
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
    env.pop("CONNECTOR_DSP_SCHEMAS", None)
    if wire_schemas is not None:
        env["CONNECTOR_DSP_SCHEMAS"] = str(wire_schemas)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could bind ``port`` on 127.0.0.1 now (as the servers bind: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cli(*args: object) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "connector", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"connector {' '.join(map(str, args))}: {result.stderr}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        return result.stdout


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def data_root(participant_dir: Path) -> Path:
    """A connector's data root: file assets lie here, beside its participant directory
    (replicas sharing a participant directory share it too)."""
    return participant_dir.parent / f"{participant_dir.name}-data"


@dataclass
class Authority:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connector",
                "authority",
                "serve",
                str(self.directory),
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=process_env(),
        )
        _wait_http(f"{self.url}/health", self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill9(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs. `start` brings it back on its port."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@dataclass
class Connector:
    name: str
    directory: Path
    config: Path
    api_key: str
    dsp_port: int
    mgmt_port: int
    participant_id: str
    tls: bool
    env: dict[str, str] = field(default_factory=process_env)
    data_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)
    dsp_tls: bool | None = None  # the DSP port speaks TLS; default: as ``tls``

    @property
    def dsp_address(self) -> str:
        """Where its DSP port listens (plain HTTP behind a proxy, where dsp_url is the proxy's)."""
        tls = self.tls if self.dsp_tls is None else self.dsp_tls
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.dsp_port}"

    @property
    def data_dir(self) -> Path:
        """Its data root (``[assets] roots``)."""
        return data_root(self.directory)

    @property
    def dsp_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.dsp_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "serve", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr

        def drain() -> None:
            for line in err:
                self.log.append(line.decode(errors="replace").rstrip())

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()
        if "ready" not in line:
            self.proc.wait(5)
            raise RuntimeError(f"{self.name} did not start: {line}\n" + "\n".join(self.log[-30:]))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} started too slowly")

    def schema_violations(self) -> list[str]:
        return [line for line in self.log if "DSP SCHEMA VIOLATION" in line]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"X-Api-Key": self.api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")


def _allow(allow: bool | tuple[str, ...]) -> list[str]:
    if isinstance(allow, bool):
        return ["127.0.0.0/8"] if allow else []
    return list(allow)


class DataSpace:
    """An authority and any number of connectors under one folder."""

    def __init__(self, root: Path, *, tls: bool = True, wire_schemas: Path | None = None) -> None:
        self.root = root
        self.tls = tls
        self.env = process_env(wire_schemas)
        cli("authority", "init", root / "authority", "--name", "Test data space")
        self.authority = Authority(root / "authority", free_port())
        self.authority.start()
        self.connectors: list[Connector] = []

    def connector(
        self,
        name: str,
        *,
        roles: tuple[str, ...] = ("provider", "consumer"),
        profile: str = "idsc:BASE_SECURITY_PROFILE",
        store: str | None = None,
        start: bool = True,
        participant_dir: Path | None = None,
        mutual_tls: bool = True,
        counter_offers: str = "stricter",
        token_lifetime: int = 300,
        push_allow: bool | tuple[str, ...] = True,
        upstream_allow: tuple[str, ...] = (),
        dataplane_public_url: str | None = None,
        pull_allow: bool | tuple[str, ...] = True,
        peer_allow: tuple[str, ...] = ("127.0.0.1",),
        tls_mode: str | None = None,
        trusted_proxies: tuple[str, ...] = (),
    ) -> Connector:
        """A connector of this data space. The allow-lists of its outbound addresses: True is
        the whole loopback range, False nothing, or the entries given. ``tls_mode`` (with
        ``trusted_proxies`` for "proxy") is written instead of the older plain_http and
        mutual_tls keys."""
        d = participant_dir or self.root / name
        if participant_dir is None:
            cli("init", d, "--name", name, "--tls-host", "127.0.0.1")
            reg = cli(
                "authority",
                "register",
                self.authority.directory,
                d / "participant.csr",
                *[x for r in roles for x in ("--role", r)],
                "--security-profile",
                profile,
            )
            pid = reg["participant_id"]
            if self.tls:
                cli("authority", "issue-tls", self.authority.directory, d / "tls.csr", "--participant", pid)
        else:
            pid = json.loads((d / "participant.id").read_text())["id"]
        (d / "participant.id").write_text(json.dumps({"id": pid}))
        data_dir = data_root(d)
        data_dir.mkdir(exist_ok=True)
        key = secrets.token_urlsafe(24)
        dsp, mgmt, data = free_port(), free_port(), free_port()
        scheme = "https" if self.tls else "http"
        config = self.root / f"{name}-{dsp}.toml"
        if tls_mode is None:
            dsp_mode = (
                f"plain_http = {'false' if self.tls else 'true'}\n"
                f"mutual_tls = {'true' if mutual_tls else 'false'}"
            )
        else:
            dsp_mode = f'tls_mode = "{tls_mode}"\ntrusted_proxies = {json.dumps(list(trusted_proxies))}'
        store_line = f'url = "{store}"' if store else ""
        config.write_text(f"""
[connector]
participant_dir = "{d}"
authority_url = "{self.authority.url}"
public_url = "{scheme}://127.0.0.1:{dsp}"
title = "{name} connector"
revocation_poll_interval = 2
audit_log = "{d}/audit-{name}.log"

[dsp]
host = "127.0.0.1"
port = {dsp}
{dsp_mode}
# every participant of this loopback data space is on 127.0.0.1: DSP calls may go there
peer_allow = {json.dumps(list(peer_allow))}

[management]
host = "127.0.0.1"
port = {mgmt}
api_key = "{key}"

[store]
{store_line}

[negotiation]
counter_offers = "{counter_offers}"

[assets]
roots = ["{data_dir}"]

[dataplane]
host = "127.0.0.1"
port = {data}
token_lifetime = {token_lifetime}
# every participant of this loopback data space is on 127.0.0.1: allow pushes there
push_allow = {json.dumps(_allow(push_allow))}
pull_allow = {json.dumps(_allow(pull_allow))}
upstream_allow = {json.dumps(list(upstream_allow))}
{f'public_url = "{dataplane_public_url}"' if dataplane_public_url else ""}
""")
        c = Connector(
            name,
            d,
            config,
            key,
            dsp,
            mgmt,
            pid,
            self.tls,
            self.env,
            data,
            dsp_tls=self.tls and tls_mode != "proxy",
        )
        self.connectors.append(c)
        if start:
            c.start()
        return c

    def close(self) -> None:
        for c in self.connectors:
            c.stop()
        self.authority.stop()

    def assert_wire_valid(self) -> None:
        """No connector sent or returned a DSP message that violates the official schemas."""
        violations = [f"{c.name}: {v}" for c in self.connectors for v in c.schema_violations()]
        assert not violations, "\n".join(violations)


def offer_asset(
    provider: Connector,
    *,
    asset_id: str,
    contract: dict[str, Any],
    access: dict[str, Any] | None = None,
    content: bytes = b"hello data space\n",
    offer_id: str | None = None,
    content_type: str | None = None,
    suffix: str = ".bin",
) -> str:
    """Create an asset (a file in the provider's data root, named ``...<suffix>``, of
    ``content_type`` when given), an access and a contract policy, and an offer; return the
    catalog offer id the consumer negotiates (``<offer id>:<asset id>``)."""
    path = asset_file(provider, asset_id, suffix)
    path.write_bytes(content)
    asset: dict[str, Any] = {
        "id": asset_id,
        "title": asset_id,
        "dataAddress": {"type": "file", "path": str(path)},
    }
    if content_type is not None:
        asset["contentType"] = content_type
    status, _ = provider.api("POST", "/api/assets", asset)
    assert status == 201, _
    status, acc = provider.api("POST", "/api/policies", access or {"template": "allow-usage", "params": {}})
    assert status == 201, acc
    status, con = provider.api("POST", "/api/policies", contract)
    assert status == 201, con
    body = {"assetIds": [asset_id], "accessPolicyId": acc["id"], "contractPolicyId": con["id"]}
    if offer_id:
        body["id"] = offer_id
    status, off = provider.api("POST", "/api/offers", body)
    assert status == 201, off
    return f"{off['id']}:{asset_id}"


def asset_file(provider: Connector, asset_id: str, suffix: str = ".bin") -> Path:
    """Where ``offer_asset`` keeps an asset's file: in the provider's data root."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", asset_id)[:80]
    return provider.data_dir / f"{name}-{hashlib.sha256(asset_id.encode()).hexdigest()[:8]}{suffix}"


def negotiate(consumer: Connector, provider: Connector, offer_id: str, timeout: float = 30) -> dict[str, Any]:
    status, n = consumer.api("POST", "/api/negotiations", {"peerUrl": provider.dsp_url, "offerId": offer_id})
    assert status == 201, n
    return wait_final(consumer, n["id"], timeout)


def wait_final(c: Connector, negotiation_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        status, n = c.api(
            "GET",
            f"/api/negotiations/{negotiation_id}?waitFor=FINALIZED,TERMINATED&timeout={min(left, 10):.1f}",
        )
        assert status == 200, n
        if n["state"] in ("FINALIZED", "TERMINATED") or time.monotonic() >= deadline:
            return n
