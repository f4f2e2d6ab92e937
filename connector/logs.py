"""The log of every process (connector, authority, broker): one event per line on stderr, as text
or as JSON (``--log-format``), at the level asked for (``--log-level``), never a secret.

* JSON lines: ``{"ts", "level", "logger", "msg", "pid", ...}`` with the process ids a log call
  names in ``extra`` (``negotiation_id``, ``transfer_id``, ``agreement_id``, ``participant_id``)
  and the exception's traceback as ``exc``.
* Secrets never reach the log, whatever a message holds: bearer tokens, JWTs (DATs, transfer
  tokens, receipts, notices), ``X-Api-Key`` values and PEM private keys are replaced by
  ``[redacted]`` before the line is formatted (a filter on the handler, so every logger of the
  process, aiohttp's and SQLAlchemy's included, goes through it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROCESS_IDS = ("negotiation_id", "transfer_id", "agreement_id", "participant_id", "process_id")
REDACTED = "[redacted]"

_SECRETS = re.compile(
    r"(?i:bearer\s+)[A-Za-z0-9._~+/=-]+"  # Authorization: Bearer <token>
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWS/JWT
    r"|(?i:x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"  # an API key given as a header/field
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    re.S,
)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced (the part naming it kept: ``Bearer``)."""

    def one(m: re.Match[str]) -> str:
        s = m.group(0)
        low = s.lower()
        if low.startswith("bearer"):
            return s.split(None, 1)[0] + " " + REDACTED
        if low.startswith("x-api-key"):
            return re.split(r"[:=]", s, maxsplit=1)[0] + ": " + REDACTED
        return REDACTED

    return _SECRETS.sub(one, text)


class Redact(logging.Filter):
    """Replaces secrets in a record's message (its arguments merged in) and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what there is rather than nothing
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        for key in PROCESS_IDS:
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value
        if record.exc_text:
            event["exc"] = record.exc_text
        return json.dumps(event, ensure_ascii=False, default=str)


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{k}={getattr(record, k)}" for k in PROCESS_IDS if getattr(record, k, None) is not None
        )
        # one event per line: a traceback's lines joined
        return (f"{line} [{ids}]" if ids else line).replace("\n", " | ")


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """The process's one log handler (stderr), replacing any other."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redact())
    handler.setFormatter(JsonLines() if fmt == "json" else Text())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats every request: the metrics count them (connector.metrics)
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))


def log_options(fn: Any) -> Any:
    """``--log-level`` and ``--log-format`` of every command that runs a server."""
    import click  # the command line's own dependency; the log itself needs none

    fn = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="One event per line, as text or JSON.",
    )(fn)
    return click.option(
        "--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="INFO", show_default=True
    )(fn)


__all__ = [
    "LEVELS",
    "REDACTED",
    "JsonLines",
    "LogFormat",
    "Redact",
    "Text",
    "configure",
    "log_options",
    "redact",
]
