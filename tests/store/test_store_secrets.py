"""Masking of data-address secrets (pure; the database round trip is in test_store_repositories)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connector.store.secrets import MASK, is_secret_key, mask_secrets, restore_masked

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["a", "headers", "token", "tokenUrl", "Authorization", "name", "value", "x-Key", "secret"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def test_credential_keys_and_header_values_are_masked() -> None:
    address = {
        "type": "HttpData",
        "baseUrl": "https://up/x",
        "additionalHeaders": {"X-Anything": "s1"},
        "header": {"X-Single": "s2"},
        "password": "s3",
        "api_key": "s4",
        "nested": [{"privateKey": {"d": "s5", "kty": "OKP"}}, {"ok": "visible"}],
        "accessKeyId": "s6",
        "secretName": "vault-entry",
        "tokenType": "Bearer",
        "authorization": None,
    }
    masked = mask_secrets(address)
    assert masked == {
        "type": "HttpData",
        "baseUrl": "https://up/x",
        "additionalHeaders": {"X-Anything": MASK},
        "header": {"X-Single": MASK},
        "password": MASK,
        "api_key": MASK,
        "nested": [{"privateKey": {"d": MASK, "kty": MASK}}, {"ok": "visible"}],
        "accessKeyId": MASK,
        "secretName": "vault-entry",
        "tokenType": "Bearer",
        "authorization": None,
    }
    assert address["password"] == "s3"  # the input is not changed
    assert is_secret_key("X-API-KEY") and is_secret_key("client_secret") and not is_secret_key("title")


@given(JSON)
def test_masking_then_restoring_gives_back_the_original(value: Any) -> None:
    original = copy.deepcopy(value)
    masked = mask_secrets(value)
    assert value == original
    assert restore_masked(masked, value) == value
    json.dumps(masked)  # still plain JSON


@given(st.dictionaries(st.sampled_from(["token", "Authorization", "password", "headers"]), JSON, min_size=1))
def test_nothing_under_a_secret_key_survives(value: dict[str, Any]) -> None:
    def leaves(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [leaf for item in node.values() for leaf in leaves(item)]
        if isinstance(node, list):
            return [leaf for item in node for leaf in leaves(item)]
        return [node]

    masked = mask_secrets(value)
    for key, item in masked.items():
        if key == "headers" and isinstance(item, list):
            # {"name": ..., "value": ...} records keep their names readable.
            item = [
                {
                    k: v
                    for k, v in record.items()
                    if k.lower() not in ("name", "key") or not isinstance(v, str)
                }
                if isinstance(record, dict)
                else record
                for record in item
            ]
        assert all(leaf in (MASK, None) for leaf in leaves(item))


def test_restore_takes_new_values_and_new_shapes() -> None:
    previous = {"headers": {"Authorization": "Bearer old"}, "list": [1, 2]}
    assert restore_masked({"headers": {"Authorization": "Bearer new"}}, previous) == {
        "headers": {"Authorization": "Bearer new"}
    }
    assert restore_masked({"headers": {"Authorization": MASK, "X-New": MASK}}, previous) == {
        "headers": {"Authorization": "Bearer old", "X-New": MASK}
    }
    assert restore_masked({"list": [MASK]}, previous) == {"list": [MASK]}
