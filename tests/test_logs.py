"""The process log (connector.logs): one event per line, text or JSON, with the process ids a
call names, and never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from connector import logs

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {JWT}",
        f"token {JWT} refused",
        "X-Api-Key: 0123456789abcdef0123",
        "{'x-api-key': 'secret-key-value-123'}",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB\n-----END PRIVATE KEY-----",
        "Bearer opaque-token.value",
    ],
)
def test_secrets_are_redacted(text: str) -> None:
    out = logs.redact(text)
    assert logs.REDACTED in out
    for secret in (JWT, "0123456789abcdef0123", "secret-key-value-123", "MC4CAQAw", "opaque-token"):
        assert secret not in out


def _capture(fmt: logs.LogFormat) -> tuple[io.StringIO, logging.Handler]:
    logs.configure("DEBUG", fmt)
    handler = logging.getLogger().handlers[0]
    buf = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    return buf, handler


def test_json_lines_carry_the_process_ids_and_no_secret() -> None:
    buf, _ = _capture("json")
    log = logging.getLogger("connector.test")
    log.info("pull of %s with %s", "t1", f"Bearer {JWT}", extra={"transfer_id": "t1"})
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        log.exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # one event per line, the traceback inside its event
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == f"pull of t1 with Bearer {logs.REDACTED}"
    assert first["transfer_id"] == "t1" and first["level"] == "INFO" and "pid" in first
    assert "ValueError" in second["exc"] and JWT not in second["exc"]
    logs.configure("INFO", "text")


def test_text_lines_are_one_event_each() -> None:
    buf, _ = _capture("text")
    logging.getLogger("connector.test").warning("a\nb", extra={"negotiation_id": "n1"})
    (line,) = buf.getvalue().splitlines()
    assert line.endswith("a | b [negotiation_id=n1]")
    logs.configure("INFO", "text")
