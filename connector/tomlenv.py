"""TOML configuration files with environment variables: every config file this project reads
(a connector's, a broker's, the authority's limits) goes through `read_toml`.

In any string value (also inside lists and tables, never in keys):

* ``${NAME}``: the variable's value; unset (or empty) is an error naming the key and the
  variable, so a forgotten variable never becomes an empty address or path;
* ``${NAME:-default}``: the value, or ``default`` when the variable is unset or empty (a
  default is taken as written: a ``$`` in it is an error);
* ``$$``: a literal ``$``. A ``$`` followed by anything else is an error (a typo such as
  ``$NAME`` or ``${NAME`` would otherwise pass through silently).

A whole value that is one variable may stand for a number or a boolean: ``port =
"${DSP_PORT:-8801}"`` validates as the integer the variable holds (the config models coerce
numeric and boolean strings). This is how ``examples/`` runs the same files in containers and on
one machine. Standard library only: the management CLI reads ``[management]`` through it
without importing the config models.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|)")


class TomlEnvError(ValueError):
    """The file cannot be read, is not TOML, or names a variable it cannot expand."""


def expand(text: str, env: Mapping[str, str], where: str) -> str:
    """``text`` with its ``${...}`` references replaced from ``env`` (``where`` names the key
    in errors)."""
    if "$" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$$":
            return "$"
        if token == "$":
            raise TomlEnvError(
                f"{where}: a '$' must start ${{NAME}} or ${{NAME:-default}} (write $$ for a literal '$')"
            )
        name, default = m.group(1), m.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            if "$" in default:  # no nested variables, no escapes: a default is taken as written
                raise TomlEnvError(f"{where}: the default of ${{{name}:-...}} may not contain '$'")
            return default
        raise TomlEnvError(f"{where}: the environment variable {name} is not set (and has no :-default)")

    return _TOKEN.sub(one, text)


def _walk(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return expand(value, env, where)
    if isinstance(value, list):
        return [_walk(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, env, f"{where}.{k}" if where else k) for k, v in value.items()}
    return value


def expand_all(data: dict[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every string value of ``data`` expanded (``env``: the process environment by default)."""
    result: dict[str, Any] = _walk(data, os.environ if env is None else env, "")
    return result


def read_toml(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The TOML file at ``path``, its variables expanded; TomlEnvError with the reason."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TomlEnvError(f"{path}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TomlEnvError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return expand_all(data, env)
    except TomlEnvError as exc:
        raise TomlEnvError(f"{path}: {exc}") from exc
