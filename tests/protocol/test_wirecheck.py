"""The optional on-the-wire schema check that integration tests switch on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.protocol import wirecheck

DSP = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "dsp"


def test_off_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(wirecheck.ENV, raising=False)
    assert wirecheck.check({"@type": "ContractRequestMessage"}, "sent") == []


def test_flags_an_invalid_message_and_passes_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wirecheck.ENV, str(DSP / "schemas"))
    bad = {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:1",
    }
    assert wirecheck.check(bad, "sent")
    for f in sorted((DSP / "examples").rglob("*.json")):
        if f.parent.name == "common":
            continue  # DID service entries carry no @type of a message
        body = json.loads(f.read_text())
        assert wirecheck.check(body, "sent") == [], f.name
