"""examples/compose.yaml and the Dockerfile, checked without pulling an image: every config a
service mounts is valid against the config models (connector.config, connector.broker.config),
every port it serves is exposed or published, every path it names lies on a mounted volume,
and every command the compose file and examples/setup.sh run is a real `connector` command
with real options. The configs are read as the containers read them: their ``${VARIABLES}``
unset, so every default applies (tests/integration/test_examples_space.py runs the same files
on loopback with the variables set)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from connector.broker.config import BrokerConfig
from connector.cli import main
from connector.config import Config
from connector.tomlenv import read_toml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
COMPOSE = yaml.safe_load((EXAMPLES / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    """The `connector` (sub)command ``args`` name, and the arguments left for it."""
    cmd: click.Command = main
    ctx = click.Context(main)
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {' '.join(args)}"
        cmd, rest = sub, rest[1:]
    assert not isinstance(cmd, click.Group), f"{' '.join(args)} names a group, not a command"
    return cmd, rest


def check_command(args: list[str]) -> None:
    cmd, rest = resolve(args)
    options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    used = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    unknown = [o for o in used if o not in options]
    assert not unknown, f"{' '.join(args)}: unknown options {unknown}"
    ctx = cmd.make_context("connector", list(rest), resilient_parsing=True)
    assert ctx is not None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a file of examples/ or a volume name)."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def on_a_mount(path: str, service: dict[str, Any]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in mounts(service))


def command_of(service: dict[str, Any]) -> list[str]:
    entry = service.get("entrypoint")
    assert entry is None or entry[0] == "sh", entry  # the image's entrypoint is `connector`
    return list(service.get("command") or [])


def published(service: dict[str, Any]) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports


def config_of(service: dict[str, Any], name: str) -> tuple[str, Path, dict[str, Any]]:
    """(where the service reads its config, that folder, the config as the container reads
    it): setup.sh copies ``examples/SERVICE/NAME`` into the service's volume."""
    container = next(a for a in command_of(service) if a.endswith(name))
    role = container.strip("/").split("/")[0]
    return container, Path(container).parent, read_toml(EXAMPLES / role / name, env={})


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("command")])
def test_every_command_exists_with_its_options(name: str) -> None:
    check_command(command_of(SERVICES[name]))


def test_the_setup_script_runs_real_commands() -> None:
    script = (EXAMPLES / "setup.sh").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith("connector ")]
    assert len(lines) >= 7
    for line in lines:
        check_command(shlex.split(line)[1:])
    # what it creates is where the services look
    for service in ("provider", "consumer", "broker"):
        assert f'"$root/{service}/participant"' in script
        assert on_a_mount(f"/{service}", SERVICES["setup"])
    # the configs it copies into the volumes are the ones the services read
    configs = (("provider", "connector.toml"), ("consumer", "connector.toml"), ("broker", "broker.toml"))
    for service, name in configs:
        assert f'cp "$here/{service}/{name}" "$root/{service}/{name}"' in script
        assert config_of(SERVICES[service], name)[0] == f"/{service}/{name}"
    assert mounts(SERVICES["setup"])["/examples"] == "./"
    # and the management keys the configs name
    for key in ("provider/management.key", "consumer/management.key", "broker/metrics.key"):
        assert key in script


@pytest.mark.parametrize("name", ["provider", "consumer"])
def test_connector_configs_are_valid_and_served_as_configured(name: str) -> None:
    service = SERVICES[name]
    container, base, data = config_of(service, "connector.toml")
    assert command_of(service)[:2] == ["serve", container]
    config = Config.model_validate({**data, "base_dir": base})
    assert on_a_mount(str(config.participant_dir), service)
    for root in config.assets.roots:
        assert on_a_mount(str(config.path(root)), service), root
    ports = {config.dsp.port, config.management.port}
    if config.dataplane.enabled:
        ports.add(config.dataplane.port)
    assert ports <= published(service), (ports, published(service))
    # the management API only on the host's loopback
    assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))
    assert config.management.api_key_file is not None
    key = config.path(config.management.api_key_file)
    assert key == Path(f"/{name}/management.key") and on_a_mount(str(key), service)
    # the authority and store it names are services of the file
    assert re.match(r"https?://authority:8700$", config.connector.authority_url)
    if config.store.url:
        host = re.search(r"@([^:/]+)", config.store.url)
        assert host and host.group(1) in SERVICES
        assert host.group(1) in service["depends_on"]
    assert config.connector.public_url.startswith(f"https://{name}:")
    assert service["environment"]["CONNECTOR_CONFIG"] == container  # the image's HEALTHCHECK


def test_one_connector_is_on_postgresql() -> None:
    stores = [
        config_of(SERVICES[n], "connector.toml")[2].get("store", {}).get("url", "sqlite")
        for n in ("provider", "consumer")
    ]
    assert any(str(s).startswith("postgresql://") for s in stores)


def test_the_broker_config_is_valid_and_served() -> None:
    service = SERVICES["broker"]
    container, base, data = config_of(service, "broker.toml")
    assert command_of(service)[:3] == ["broker", "serve", container]
    config = BrokerConfig.model_validate({**data, "base_dir": base})
    assert on_a_mount(str(config.path(config.broker.participant_dir)), service)
    assert config.broker.port in published(service)
    assert config.broker.tls_mode == "mutual"
    assert config.broker.metrics_key_file is not None
    assert on_a_mount(str(config.path(config.broker.metrics_key_file)), service)


def test_the_authority_serves_what_the_connectors_name() -> None:
    cmd = command_of(SERVICES["authority"])
    assert cmd[:3] == ["authority", "serve", "/space"]
    assert cmd[cmd.index("--port") + 1] == "8700" and "8700" in SERVICES["authority"]["expose"]
    assert on_a_mount("/space", SERVICES["authority"])


def test_the_dockerfile_runs_as_a_user_with_a_volume_ports_and_a_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert re.search(r"^VOLUME ", text, re.M)
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}  # type: ignore[union-attr]
    assert {8700, 8801, 8802, 8803, 8804} <= exposed
    health = re.search(r"^HEALTHCHECK .*\n\s+CMD (.+)$", text, re.M)
    assert health is not None
    check_command(shlex.split(health.group(1).split("||")[0].replace('"$CONNECTOR_CONFIG"', "x"))[1:])
