"""Environment variables in config files (connector.tomlenv): expansion, defaults, errors, and
the config models coercing a one-variable value to the number or boolean it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConfigError, load_config
from connector.tomlenv import TomlEnvError, expand, read_toml

ENV = {"HOST": "10.0.0.5", "PORT": "9001", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("plain", "plain"),
        ("${HOST}", "10.0.0.5"),
        ("https://${HOST}:${PORT}/dsp", "https://10.0.0.5:9001/dsp"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${HOST:-fallback}", "10.0.0.5"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a:b/c}", "a:b/c"),
        ("price $$5", "price $5"),
        ("$${HOST}", "${HOST}"),
    ],
)
def test_expand(text: str, want: str) -> None:
    assert expand(text, ENV, "k") == want


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${MISSING}", "MISSING is not set"),
        ("${EMPTY}", "EMPTY is not set"),
        ("$HOST", "must start"),
        ("${HOST", "must start"),
        ("${1BAD}", "must start"),
        ("cost $", "must start"),
        ("${MISSING:-${HOST}}", "may not contain"),
        ("${MISSING:-a$$b}", "may not contain"),
    ],
)
def test_expand_refuses(text: str, fragment: str) -> None:
    with pytest.raises(TomlEnvError, match=fragment):
        expand(text, ENV, "dsp.host")


def test_read_toml_walks_tables_and_lists_not_keys(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[a]\nurl = "http://${HOST}"\nallow = ["${HOST}", "127.0.0.1"]\nn = 3\n'
        '[[hooks]]\nurl = "${MISSING:-http://x}"\n["${HOST}"]\nk = 1\n'
    )
    data = read_toml(f, ENV)
    assert data["a"] == {"url": "http://10.0.0.5", "allow": ["10.0.0.5", "127.0.0.1"], "n": 3}
    assert data["hooks"] == [{"url": "http://x"}]
    assert data["${HOST}"] == {"k": 1}  # keys are never expanded


def test_the_error_names_the_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[dsp]\nallow = ["ok", "${NOPE}"]\n')
    with pytest.raises(TomlEnvError) as err:
        read_toml(f, {})
    assert str(f) in str(err.value) and "dsp.allow[1]" in str(err.value) and "NOPE" in str(err.value)


def test_config_ports_from_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text("k" * 32)
    f = tmp_path / "connector.toml"
    f.write_text(
        '[connector]\nparticipant_dir = "p"\nauthority_url = "http://127.0.0.1:8700"\npublic_url = "http://127.0.0.1:${T_DSP_PORT}"\n'
        '[dsp]\ntls_mode = "${T_MODE:-none}"\nport = "${T_DSP_PORT}"\n'
        '[management]\nport = "${T_MGMT_PORT:-8802}"\napi_key_file = "key"\n'
        '[dataplane]\nenabled = "${T_DP:-false}"\n'
    )
    monkeypatch.setenv("T_DSP_PORT", "9101")
    config = load_config(f)
    assert config.dsp.port == 9101 and config.management.port == 8802
    assert config.dataplane.enabled is False and config.dsp.tls_mode == "none"
    assert config.connector.public_url == "http://127.0.0.1:9101"
    monkeypatch.setenv("T_DSP_PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"dsp\.port"):
        load_config(f)
    monkeypatch.delenv("T_DSP_PORT")
    with pytest.raises(ConfigError, match="T_DSP_PORT is not set"):
        load_config(f)


def test_init_writes_a_dollar_that_reads_back_as_written(tmp_path: Path) -> None:
    """`connector init --name 'Price$Co'`: the config it writes loads, with the name intact."""
    from connector.initconfig import _toml

    f = tmp_path / "c.toml"
    f.write_text(f"title = {_toml('Price$Co ${NOT_A_VARIABLE} $$')}\n")
    assert read_toml(f, {}) == {"title": "Price$Co ${NOT_A_VARIABLE} $$"}
