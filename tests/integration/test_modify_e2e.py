"""The templates modify-in-transit and modify-at-rest between real processes: the provider's data
plane modifies a CSV asset on its way out (a column dropped, another hashed), the consumer's
connector modifies a JSON asset before its copy reaches the vault (a field replaced); the bytes
received and stored are compared with the expected bytes exactly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset
from test_push_e2e import request_push, vault_item
from test_transfer_e2e import pull, start, wait_transfer

from connector.devspace import process_env

pytestmark = pytest.mark.integration


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


NAMES = [f'Zoë {i}, "the" {i % 13}' for i in range(6000)]  # quoted, a comma, non-ASCII
CSV = (
    "id,name,email,city\r\n"
    + "".join(
        f'{i},"{n.replace(chr(34), chr(34) * 2)}",p{i}@example.org,Köln\r\n' for i, n in enumerate(NAMES)
    )
).encode()
CSV_SENT = ("id,name,city\r\n" + "".join(f"{i},{sha(n)},Köln\r\n" for i, n in enumerate(NAMES))).encode()
PEOPLE = [{"id": i, "email": f"p{i}@example.org", "tags": ["é", i]} for i in range(3000)]
JSON = json.dumps(PEOPLE, indent=1, ensure_ascii=False).encode()
JSON_STORED = json.dumps(
    [{**p, "email": "hidden"} for p in PEOPLE], ensure_ascii=False, separators=(",", ":")
).encode()


@pytest.fixture(scope="module")
def pair(space: DataSpace) -> tuple[Connector, Connector]:
    return (space.connector("mprov", roles=("provider",)), space.connector("mcons", roles=("consumer",)))


def connector_pull(
    consumer: Connector, provider: Connector, agreement_id: str, *extra: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "pull",
            provider.dsp_url,
            agreement_id,
            "--config",
            str(consumer.config),
            *map(str, extra),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )


def agreed(
    consumer: Connector,
    provider: Connector,
    asset_id: str,
    content: bytes,
    contract: dict[str, Any],
    **asset: Any,
) -> str:
    offer = offer_asset(provider, asset_id=asset_id, content=content, contract=contract, **asset)
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    return str(n["agreementId"])


def test_csv_modified_in_transit(pair: tuple[Connector, Connector], tmp_path: Path) -> None:
    provider, consumer = pair
    agreement = agreed(
        consumer,
        provider,
        "urn:asset:people-csv",
        CSV,
        {"template": "modify-in-transit", "params": {"drop": "email", "hash": "$[*].name"}},
        content_type="text/csv",
    )
    # the data plane itself: the modified body, chunked, a Range answered with all of it
    t = start(consumer, agreement)
    for headers in ({}, {"Range": "bytes=0-99"}):
        status, body, got = pull(consumer, t, headers)
        assert status == 200 and body == CSV_SENT, (status, body[:300])
        assert "Content-Length" not in got and got["Content-Type"] == "text/csv"
    # the consumer's connector: what it received is what it keeps (no at-rest duty here)
    out = tmp_path / "people.csv"
    r = connector_pull(consumer, provider, agreement, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes() == CSV_SENT
    assert "receipts verified" in r.stdout, r.stdout


def test_json_modified_at_rest_pulled_and_pushed(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    agreement = agreed(
        consumer,
        provider,
        "urn:asset:people-json",
        JSON,
        {"template": "modify-at-rest", "params": {"replace": "$[*].email", "replaceWith": "hidden"}},
        content_type="application/json",
        suffix=".json",
    )
    # the provider sends the data as it is: the duty falls on the consumer
    t = start(consumer, agreement)
    status, body, _ = pull(consumer, t)
    assert status == 200 and body == JSON
    # pulled into the vault: modified before it is stored; the vault holds its SHA-256
    r = connector_pull(consumer, provider, agreement)
    assert r.returncode == 0, r.stdout + r.stderr
    item = vault_item(consumer, agreement)
    assert item is not None
    assert Path(item["path"]).read_bytes() == JSON_STORED
    assert item["sha256"] == hashlib.sha256(JSON_STORED).hexdigest()
    # the consumer's audit log: the bytes received (what the receipts cover) and those stored
    status, done = consumer.api("GET", "/api/audit?kind=pull.done")
    assert status == 200, done
    pulled = next(e["data"] for e in done if e.get("agreementId") == agreement)
    assert pulled["sha256"] == hashlib.sha256(JSON).hexdigest()
    assert pulled["storedSha256"] == hashlib.sha256(JSON_STORED).hexdigest()
    Path(item["path"]).unlink()
    # pushed into the vault: the same
    pushed = request_push(consumer, agreement)
    done = wait_transfer(consumer, pushed["id"], {"COMPLETED", "TERMINATED"}, timeout=30)
    assert done["state"] == "COMPLETED", done
    item = next(
        i
        for i in consumer.api("GET", "/api/vault")[1]
        if i["agreementId"] == agreement and i["transferId"] == pushed["id"]
    )
    assert Path(item["path"]).read_bytes() == JSON_STORED
    assert item["sha256"] == hashlib.sha256(JSON_STORED).hexdigest()


def test_data_that_cannot_be_modified_is_refused(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    agreement = agreed(
        consumer,
        provider,
        "urn:asset:opaque",
        b"\x00\x01id,email\n",
        {"template": "modify-in-transit", "params": {"drop": "email"}},
    )
    t = start(consumer, agreement)
    status, body, _ = pull(consumer, t)
    assert status == 403, body
    assert b"cannot be modified" in body and b"email" not in body


def test_a_copy_that_cannot_be_modified_at_rest_is_not_kept(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    agreement = agreed(
        consumer,
        provider,
        "urn:asset:opaque-rest",
        b"\x00\x01id,email\n",
        {"template": "modify-at-rest", "params": {"drop": "email"}},
    )
    r = connector_pull(consumer, provider, agreement)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "modified at rest, and it cannot be" in r.stderr and "not kept" in r.stderr, r.stderr
    assert vault_item(consumer, agreement) is None
