"""The example data space of ``examples/`` on loopback: ``examples/run.sh`` (its set-up script
and its configs, the very files compose.yaml runs in containers) starts an authority, a
provider, a consumer and a broker; the operator's commands then offer, find, negotiate, pull
and are denied past the agreed uses; health, readiness and metrics answer; the script stops
everything it started. With CONNECTOR_TEST_PG the consumer runs on PostgreSQL, as in compose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from connector.devspace import free_port, port_is_free, process_env
from tests.db_testlib import PG_ENV, asyncpg_dsn

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PORTS = (
    "AUTHORITY_PORT",
    "PROVIDER_DSP_PORT",
    "PROVIDER_MGMT_PORT",
    "PROVIDER_DATA_PORT",
    "CONSUMER_DSP_PORT",
    "CONSUMER_MGMT_PORT",
    "BROKER_PORT",
)
CONFIGS = (("provider", "connector.toml"), ("consumer", "connector.toml"), ("broker", "broker.toml"))


@dataclass
class Example:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    pg_schema: str | None
    lines: queue.Queue[str] | None = None  # run.sh's output, read by a thread

    def port(self, name: str) -> int:
        return int(self.env[name])

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`connector ARGS` in the example's folder, with the environment run.sh exported."""
        done = subprocess.run(
            ["connector", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"connector {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def key(self, role: str) -> str:
        return (self.root / role / "management.key").read_text().strip()

    def get(self, port_name: str, path: str, key: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port(port_name)}{path}")
        if key:
            request.add_header("X-Api-Key", key)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _pg_schema(server: str, create: bool, schema: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server))
        try:
            verb = f'CREATE SCHEMA "{schema}"' if create else f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'
            await conn.execute(verb)
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    root = tmp_path_factory.mktemp("example") / "space"
    bin_dir = Path(sys.executable).parent
    env = {
        **process_env(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        **{name: str(free_port()) for name in PORTS},
        "BROKER_CRAWL_INTERVAL": "1",
    }
    server = os.environ.get(PG_ENV)
    schema = None
    if server:
        schema = f"example_{uuid.uuid4().hex[:12]}"
        _pg_schema(server, True, schema)
        env["CONSUMER_STORE_URL"] = (
            sa.make_url(server).update_query_dict({"schema": schema}).render_as_string(hide_password=False)
        )
    proc = subprocess.Popen(
        ["sh", str(EXAMPLES / "run.sh"), str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # what run.sh exports to the processes it starts (so the CLI reads the configs as they do)
    env |= {
        "EXAMPLE_ROOT": str(root),
        "AUTHORITY_URL": f"http://127.0.0.1:{env['AUTHORITY_PORT']}",
        "LISTEN_HOST": "127.0.0.1",
        "PROVIDER_HOST": "127.0.0.1",
        "CONSUMER_HOST": "127.0.0.1",
        "BROKER_HOST": "127.0.0.1",
    }
    env.setdefault("CONSUMER_STORE_URL", f"sqlite:///{root}/consumer/connector.db")
    example = Example(root, env, proc, schema)
    try:
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        output: list[str] = []
        deadline = time.monotonic() + 300  # bounded even if run.sh goes silent
        while not (output and output[-1].startswith("ready:")) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
            if proc.poll() is not None and lines.empty():
                break
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in root.glob("*.log"))
        assert output and output[-1].startswith("ready:"), "".join(output) + logs
        example.lines = lines
        yield example
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if server and schema:
            _pg_schema(server, False, schema)


def test_the_processes_run_the_examples_files(example: Example) -> None:
    for role, name in CONFIGS:
        assert (example.root / role / name).read_bytes() == (EXAMPLES / role / name).read_bytes()
    for role in ("provider", "consumer"):
        assert len(example.key(role)) == 48
        assert (example.root / role / "management.key").stat().st_mode & 0o077 == 0
        assert (example.root / role / "participant" / "tls.crt").is_file()


def test_health_and_readiness_of_every_process(example: Example) -> None:
    for port in ("AUTHORITY_PORT", "PROVIDER_MGMT_PORT", "CONSUMER_MGMT_PORT"):
        status, body = example.get(port, "/health")
        assert status == 200 and json.loads(body)["status"] == "live", port
    for role in ("provider", "consumer"):
        done = example.run("status", f"{role}/connector.toml")
        assert "ready" in done.stdout.lower()


def test_offer_find_negotiate_pull_and_be_denied(example: Example) -> None:
    data = example.root / "provider" / "data" / "stations.csv"
    data.write_text("station,lat\nbonn,50.7\n")
    example.run(
        "asset",
        "add",
        "--config",
        "provider/connector.toml",
        "--id",
        "urn:asset:stations",
        "--file",
        str(data),
        "--title",
        "Weather stations",
    )
    example.run(
        "offer",
        "add",
        "--config",
        "provider/connector.toml",
        "--id",
        "urn:offer:stations",
        "--asset",
        "urn:asset:stations",
        "--contract-template",
        "n-times-usage",
        "--contract-set",
        "max=2",
    )
    provider = f"https://127.0.0.1:{example.port('PROVIDER_DSP_PORT')}"
    broker = f"https://127.0.0.1:{example.port('BROKER_PORT')}"
    # the broker (the provider registered on start; crawled every second here) lists it
    deadline = time.monotonic() + 60
    while True:
        found = example.run("catalog", broker, "--config", "consumer/connector.toml", "--json")
        if "Weather stations" in found.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "Weather stations" in found.stdout, found.stdout
    words = example.run("catalog", provider, "--config", "consumer/connector.toml").stdout
    assert "at most 2 times" in words, words
    consumer = ("--config", "consumer/connector.toml")
    negotiation = example.run("negotiate", provider, "urn:offer:stations", *consumer)
    assert "FINALIZED" in negotiation.stdout
    agreement = next(
        line.split(" ", 1)[1] for line in negotiation.stdout.splitlines() if line.startswith("agreement ")
    )
    for n in (1, 2):
        out = example.root / f"pulled{n}.csv"
        example.run("pull", provider, agreement, "--config", "consumer/connector.toml", "--out", str(out))
        assert out.read_text() == "station,lat\nbonn,50.7\n"
    denied = example.run(
        "pull",
        provider,
        agreement,
        "--config",
        "consumer/connector.toml",
        "--out",
        str(example.root / "denied.csv"),
        check=False,
    )
    assert denied.returncode != 0
    assert "403" in denied.stderr and "use number 3 (2 completed)" in denied.stderr, denied.stderr

    # the provider's metrics saw the pulls and the denial
    status, body = example.get("PROVIDER_MGMT_PORT", "/metrics", example.key("provider"))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    decisions = {
        (s.labels["result"], s.labels["reason"]): s.value
        for s in families["connector_decisions"].samples
        if s.name.endswith("_total")
    }
    assert decisions.get(("permit", "none")) == 2 and decisions.get(("deny", "count")) == 1, decisions
    assert any(s.labels.get("app") == "dataplane" for s in families["connector_http_requests"].samples), (
        "no data-plane requests counted"
    )
    served = sum(s.value for s in families["connector_bytes_served"].samples if s.name.endswith("_total"))
    assert served == 2 * len("station,lat\nbonn,50.7\n"), served  # the two permitted pulls
    assert example.get("PROVIDER_MGMT_PORT", "/metrics")[0] == 401  # behind the key


def test_the_broker_serves_its_metrics_with_its_key_over_mutual_tls(example: Example) -> None:
    participant = example.root / "consumer" / "participant"
    tls = ssl.create_default_context(cafile=str(participant / "ca.crt"))
    tls.load_cert_chain(participant / "tls.crt", participant / "tls.key")
    url = f"https://127.0.0.1:{example.port('BROKER_PORT')}/metrics"
    key = (example.root / "broker" / "metrics.key").read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10, context=tls) as response:
        names = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert "connector_http_requests" in names, names
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10, context=tls)
    assert refused.value.code == 401
    # without a data-space certificate the broker does not even complete the handshake
    anonymous = ssl.create_default_context(cafile=str(participant / "ca.crt"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(request, timeout=10, context=anonymous).read()


def test_the_consumer_store_is_the_configured_one(example: Example) -> None:
    """SQLite beside the consumer, or (CONNECTOR_TEST_PG) PostgreSQL as in compose.yaml."""
    url = example.env["CONSUMER_STORE_URL"]
    if example.pg_schema is None:
        assert url.startswith("sqlite:///") and (example.root / "consumer" / "connector.db").is_file()
        return

    async def tables() -> list[str]:
        conn = await asyncpg.connect(asyncpg_dsn(os.environ[PG_ENV]))
        try:
            rows = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", example.pg_schema
            )
            return [r["table_name"] for r in rows]
        finally:
            await conn.close()

    assert "negotiations" in asyncio.run(tables())
    assert not (example.root / "consumer" / "connector.db").exists()


def test_run_sh_stops_what_it_started_even_when_one_stopped_before(example: Example) -> None:
    """Last in the module: with the broker gone already (a crash), SIGTERM to the script alone
    stops the other three, and the script exits 0."""
    ports = [example.port(p) for p in PORTS]
    broker = subprocess.run(
        ["pgrep", "-P", str(example.proc.pid), "-f", "broker serve"],
        capture_output=True,
        text=True,
        check=False,
    )
    pids = broker.stdout.split()
    assert len(pids) == 1, broker
    os.kill(int(pids[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while port_is_free(example.port("BROKER_PORT")) is False and time.monotonic() < deadline:
        time.sleep(0.2)
    example.proc.send_signal(signal.SIGTERM)
    assert example.proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    busy = ports
    while busy and time.monotonic() < deadline:
        busy = [p for p in ports if not port_is_free(p)]
        time.sleep(0.2)
    assert not busy, f"still listening after run.sh stopped: {busy}"


def test_a_set_up_that_failed_half_way_is_done_again(tmp_path: Path) -> None:
    """setup.sh's marker is written last: an authority folder left by a failed first start is
    not taken for a finished set-up; a finished one is kept."""
    root = tmp_path / "space"
    (root / "space").mkdir(parents=True)
    (root / "space" / "authority.json").write_text("{}")  # what a failed first start leaves
    env = {
        **process_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "EXAMPLE_ROOT": str(root),
        "AUTHORITY_URL": "http://127.0.0.1:8700",
    }

    def setup() -> str:
        done = subprocess.run(
            ["sh", str(EXAMPLES / "setup.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "the data space is set up" in setup()
    for role in ("provider", "consumer", "broker"):
        assert (root / role / "participant" / "participant.crt").is_file(), role
    crt = (root / "broker" / "participant" / "participant.crt").read_bytes()
    assert "exists already" in setup()
    assert (root / "broker" / "participant" / "participant.crt").read_bytes() == crt
    assert (root / "broker" / "metrics.key").stat().st_mode & 0o077 == 0
