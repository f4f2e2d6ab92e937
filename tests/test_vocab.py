"""The offline document loader: shipped documents only, never the network."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyld import jsonld

from connector import vocab
from connector.odrl.parse import PolicyError, parse_text
from connector.wireformat import DSP_CONTEXT_URL


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_every_catalogued_document_is_shipped_and_parses() -> None:
    for url in vocab.known_urls():
        path = vocab.local_path(url)
        assert path.is_file(), url
        if path.suffix == ".jsonld":
            assert "@context" in vocab.load_json_document(url)
        else:
            assert len(vocab.ontology_graph(url)) > 10


def test_odrl_context_has_the_neq_erratum_fixed() -> None:
    ctx = vocab.load_json_document(vocab.ODRL_CONTEXT_URL)["@context"]
    assert ctx["neq"] == "odrl:neq"


def test_loader_serves_dsp_context_without_network(no_network: list[Any]) -> None:
    doc = {
        "@context": [DSP_CONTEXT_URL],
        "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:1",
        "offer": {
            "@id": "urn:o",
            "@type": "Offer",
            "target": "urn:t",
            "permission": [
                {
                    "action": "use",
                    "constraint": [{"leftOperand": "purpose", "operator": "neq", "rightOperand": "x"}],
                }
            ],
        },
    }
    expanded = vocab.jsonld_call(jsonld.expand, doc)
    assert expanded[0]["@type"] == ["https://w3id.org/dspace/2025/1/ContractRequestMessage"]
    assert no_network == []


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/context.jsonld",
        "https://w3id.org/dspace/2024/1/context.jsonld",
        "file:///etc/passwd",
        "http://127.0.0.1:1/x.jsonld",
    ],
)
def test_unknown_remote_context_is_refused_without_network(no_network: list[Any], url: str) -> None:
    text = f'{{"@context": "{url}", "@type": "Offer", "permission": []}}'
    with pytest.raises(PolicyError) as err:
        parse_text(text, "json-ld", "policy")
    assert "refusing to load remote document" in str(err.value)
    assert url in str(err.value)
    assert no_network == []


def test_loader_refuses_directly() -> None:
    with pytest.raises(vocab.RemoteDocumentRefused):
        vocab.document_loader("https://example.com/other.jsonld")


def test_expansions_do_not_leak_into_each_other() -> None:
    """pyld's context cache is altered by @import processing; jsonld_call isolates calls."""
    standalone = {
        "@context": [
            DSP_CONTEXT_URL,
            "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
            {"idsc": "https://w3id.org/idsa/code/"},
        ],
        "@type": "Offer",
        "@id": "urn:o",
        "target": "urn:t",
        "permission": [{"action": "use"}],
    }
    message = {
        "@context": [DSP_CONTEXT_URL],
        "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:1",
        "offer": {"@id": "urn:o", "@type": "Offer", "target": "urn:t", "permission": [{"action": "use"}]},
    }
    for doc in (standalone, message, standalone, message):
        assert vocab.jsonld_call(jsonld.expand, doc)
