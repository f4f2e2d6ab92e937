"""`connector init --role` and `connector config check` (connector.initconfig): the config it
writes holds every key the connector reads, with its default, and a connector set up by the
commands it prints serves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from connector.config import Config, WebhookSection, load_config
from connector.devspace import cli, free_port, process_env
from connector.initconfig import SECTIONS, Setup, check, render


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(),
    )


def test_the_rendered_config_has_every_key_with_its_default() -> None:
    text = render(
        {
            "connector": {"participant_dir": "p", "authority_url": "http://a", "public_url": "https://c"},
            "management": {"api_key_file": "k"},
        }
    )
    data = tomllib.loads(text)
    assert set(data) == set(SECTIONS)
    # the webhooks' example, uncommented, is a valid [[webhooks]] table with every key
    example = "\n".join(
        line[2:]
        for line in text.split("# [[webhooks]]", 1)[1].splitlines()
        if line.startswith("# ") and " = " in line
    )
    hook = tomllib.loads(example)
    assert set(hook) == set(WebhookSection.model_fields)
    WebhookSection.model_validate(hook)
    config = Config.model_validate(data)
    for section in SECTIONS:
        model = type(getattr(config, section))
        for name, f in model.model_fields.items():
            # written as a key, or commented out when it has no default (None)
            assert f"\n{name} = " in text or f"\n# {name} =" in text, (section, name)
            assert f.description, f"{section}.{name} has no description to write"
        if section not in ("connector", "management"):  # the sections with required keys
            assert getattr(config, section) == model(), section


def test_a_provider_set_up_as_printed_checks_clean_and_serves(tmp_path: Path) -> None:
    written = cli("init", tmp_path / "prov", "--name", "Prov Inc", "--role", "provider")
    config_path = Path(written["config"])
    assert (tmp_path / "prov" / "management.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "prov" / "data").is_dir()
    # before the authority certified it: the check names what is missing, exit 1
    before = _run("config", "check", config_path)
    assert before.returncode == 1 and "tls.crt" in before.stdout, before.stdout

    auth_port = free_port()
    cli("authority", "init", tmp_path / "auth", "--issuer", f"http://127.0.0.1:{auth_port}")
    registered = cli("authority", "register", tmp_path / "auth", written["csr"])
    cli(
        "authority",
        "issue-tls",
        tmp_path / "auth",
        written["tls_csr"],
        "--participant",
        registered["participant_id"],
    )
    after = _run("config", "check", config_path, "--json")
    findings = json.loads(after.stdout)
    assert after.returncode == 0, findings
    assert {f["key"] for f in findings} == {
        "dsp.peer_allow",
        "dataplane.push_allow",
        "dataplane.pull_allow",
    }  # loopback: warned
    assert all(f["level"] == "warning" for f in findings)

    # the authority URL init wrote is the default; this test's authority runs elsewhere
    text = config_path.read_text().replace(
        'authority_url = "http://127.0.0.1:8700"', f'authority_url = "http://127.0.0.1:{auth_port}"'
    )
    config_path.write_text(text)
    config = load_config(config_path)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "connector",
                    "authority",
                    "serve",
                    str(tmp_path / "auth"),
                    "--port",
                    str(auth_port),
                ],
                env=process_env(),
                stderr=subprocess.PIPE,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "connector",
                    "serve",
                    str(config_path),
                    "--log-format",
                    "json",
                    "--log-level",
                    "DEBUG",
                ],
                env=process_env(),
                stderr=subprocess.PIPE,
            )
        )
        key = config.management_api_key()
        assets = _get_when_up(f"http://127.0.0.1:{config.management.port}/api/assets", key, procs)
        assert assets == []
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    # the connector's log: one JSON event per line, at DEBUG, without its key or any token
    assert procs[1].stderr is not None
    lines = procs[1].stderr.read().decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(e["level"] in ("DEBUG", "INFO", "WARNING") and "msg" in e for e in events)
    assert not any(key in line or "eyJ" in line for line in lines)


def _get_when_up(url: str, key: str, procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(p.stderr.read().decode() if p.stderr else "exited")
        try:
            req = urllib.request.Request(url, headers={"X-Api-Key": key})
            with urllib.request.urlopen(req, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_check_reports_a_broken_file_and_weak_settings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[connector\n")
    (f,) = check(bad)
    assert f.level == "error" and "invalid TOML" in f.text
    setup = Setup(tmp_path / "c", "Cons", "consumer", plain_http=True, dsp_port=9001, management_port=9001)
    values, _ = setup.values()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "connector.toml").write_text(render(values))
    findings = check(tmp_path / "c" / "connector.toml")
    keys = {(f.level, f.key) for f in findings}
    assert ("warning", "dsp.tls_mode") in keys  # init writes tls_mode = "none" for --plain-http
    assert ("error", "management.port") in keys  # the same port as DSP
    assert ("error", "connector.participant_dir") in keys  # nothing created yet


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    cli("init", tmp_path / "c", "--name", "Cons", "--role", "consumer")
    again = _run("init", tmp_path / "c", "--name", "Cons", "--role", "consumer")
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize("role", ["provider", "consumer"])
def test_roles_differ_where_they_should(tmp_path: Path, role: str) -> None:
    values, notes = Setup(
        tmp_path,
        "X",
        role,
        host="10.1.2.3",
        dsp_port=1,  # type: ignore[arg-type]
        management_port=2,
        dataplane_port=3,
    ).values()
    assert values["dataplane"]["enabled"] is (role == "provider")
    assert values["assets"]["roots"] == (["data"] if role == "provider" else [])
    assert "peer_allow" not in values["dsp"] and not notes  # not loopback: no allow-lists
    assert values["connector"]["public_url"] == "https://10.1.2.3:1"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["asset", "--help"],
        ["transfer", "list", "--help"],
        ["catalog", "--help"],
        ["vault", "list", "--help"],
    ],
)
def test_management_commands_start_without_the_heavy_libraries(args: list[str]) -> None:
    """A command that only talks to the management API imports none of rdflib, pyld,
    SQLAlchemy, aiohttp or pydantic (what made `connector --help` take 0.6 s)."""
    code = (
        "import sys\nfrom connector.cli import main\n"
        f"try:\n    main({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('rdflib', 'pyld', 'sqlalchemy', 'aiohttp', 'pydantic',"
        " 'cryptography') if m in sys.modules)\nprint('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=process_env(),
    ).stdout
    assert "HEAVY []" in out, out
