"""The request limits without sockets: the safe JSON loader, numeric query parameters and the
``[limits]`` configuration section (connector.http.limits, connector.config)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, MultiDict

from connector.config import ConfigError, LimitsSection, load_limits
from connector.http.limits import (
    DEFAULT_LIMITS,
    InvalidQueryNumber,
    InvalidText,
    JsonTooDeep,
    LimitError,
    Limits,
    NonFiniteNumber,
    NotJson,
    StringTooLong,
    TooManyItems,
    load_json,
    one_header,
    query_int,
    query_number,
)
from connector.http.management import PolicyIn, policy_document
from connector.runtime import policy_problems

SMALL = Limits(json_depth=8, json_string_chars=16, json_items=4)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"[NaN]",
        b'{"a": Infinity}',
        b"[-Infinity]",
        b"1e999",
        b"[-1e999]",
        b'{"x": {"y": [1.7976931348623159e308]}}',
        b"[" + b"9" * 400 + b"]",
        b"-" + b"9" * 309,
    ],
)
def test_non_finite_numbers_are_refused_at_parse_time(raw: bytes) -> None:
    with pytest.raises(NonFiniteNumber) as err:
        load_json(raw, DEFAULT_LIMITS)
    assert err.value.status == 400 and "finite" in err.value.reason


def test_finite_extremes_are_kept() -> None:
    doc = load_json(b"[1.7976931348623157e308, -5e-324, 0, -0.0, " + b"9" * 300 + b"]", DEFAULT_LIMITS)
    assert doc[0] == 1.7976931348623157e308 and doc[4] == int("9" * 300)


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_json_deeper_than_the_parser_can_recurse_is_a_typed_refusal(depth: int) -> None:
    with pytest.raises(JsonTooDeep) as err:
        load_json(nested(depth), DEFAULT_LIMITS)
    assert "limits.json_depth" in err.value.reason and err.value.status == 400
    with pytest.raises(JsonTooDeep):
        load_json(b'{"a":' * depth + b"1" + b"}" * depth, DEFAULT_LIMITS)


def test_depth_limit_is_exact() -> None:
    assert load_json(nested(SMALL.json_depth), SMALL) is not None
    with pytest.raises(JsonTooDeep):
        load_json(nested(SMALL.json_depth + 1), SMALL)
    # objects count as levels as arrays do, scalars do not
    doc = json.dumps({"a": [{"b": [{"c": [{"d": [1]}]}]}]}).encode()  # 8 levels
    assert load_json(doc, SMALL)["a"][0]["b"][0]["c"][0]["d"] == [1]
    with pytest.raises(JsonTooDeep):
        load_json(json.dumps([{"a": [{"b": [{"c": [{"d": [1]}]}]}]}]).encode(), SMALL)


def nested_and(levels: int) -> dict:
    constraint: dict = {"leftOperand": "count", "operator": "lteq", "rightOperand": 5}
    for _ in range(levels):
        constraint = {"and": [constraint]}
    return {"permission": [{"action": "use", "constraint": [constraint]}]}


def test_a_policy_nested_within_the_parsers_reach_is_still_refused_before_odrl_sees_it() -> None:
    """400 nested `and`s parse as JSON (C json recurses ~800 levels); the depth check refuses
    them, so the recursive policy code never runs on them. The deepest policy the default
    limit lets through is checked as any other."""
    with pytest.raises(JsonTooDeep):
        load_json(json.dumps({"policy": nested_and(400)}).encode(), DEFAULT_LIMITS)
    with pytest.raises(JsonTooDeep):
        load_json(json.dumps({"policy": nested_and(30)}).encode(), DEFAULT_LIMITS)
    body = load_json(json.dumps({"policy": nested_and(29)}).encode(), DEFAULT_LIMITS)
    doc = policy_document(PolicyIn.model_validate(body), "urn:policy:deep")
    assert policy_problems(doc) == []


def test_strings_and_items_are_bounded() -> None:
    assert load_json(json.dumps(["a" * 16, {"k" * 16: 1}]).encode(), SMALL)
    with pytest.raises(StringTooLong):
        load_json(json.dumps(["a" * 17]).encode(), SMALL)
    with pytest.raises(StringTooLong):
        load_json(json.dumps({"k" * 17: 1}).encode(), SMALL)
    with pytest.raises(StringTooLong):
        load_json(json.dumps("a" * 17).encode(), SMALL)
    assert load_json(b"[1,2,3,4]", SMALL) == [1, 2, 3, 4]
    with pytest.raises(TooManyItems):
        load_json(b"[1,2,3,4,5]", SMALL)
    with pytest.raises(TooManyItems):
        load_json(b'{"a":1,"b":2,"c":3,"d":4,"e":5}', SMALL)


@pytest.mark.parametrize(
    "raw", [b'["\\u0000"]', b'{"a\\u0000": 1}', b'["\\ud800"]', b'["\\uDFFF x"]', '["\ud800"]']
)
def test_strings_that_cannot_be_stored_as_text_are_refused(raw: bytes | str) -> None:
    with pytest.raises(InvalidText):
        load_json(raw, DEFAULT_LIMITS)


def test_escapes_that_are_text_are_kept() -> None:
    assert load_json(b'["\\\\u0000", "\\ud83d\\ude00", "\xc3\xa9"]', DEFAULT_LIMITS) == [
        "\\u0000",
        "\U0001f600",
        "\u00e9",
    ]


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"\xff\xfe\x00", b"[1,]", b"01"])
def test_malformed_json_is_refused(raw: bytes) -> None:
    with pytest.raises(NotJson):
        load_json(raw, DEFAULT_LIMITS)


def test_every_refusal_is_a_limit_error_with_a_4xx() -> None:
    for cls in LimitError.__subclasses__():
        assert 400 <= cls.status < 500, cls


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e3",
        "1_0",
        "0x10",
        "\u0663",
        "",
        " 1",
        "1e999",
        "-1",
        "61",
        "99999999999999999999",
    ],
)
def test_query_numbers_refuse_what_is_not_a_finite_number_in_range(value: str) -> None:
    with pytest.raises(InvalidQueryNumber) as err:
        query_number(MultiDict(timeout=value), "timeout", 10.0, minimum=0, maximum=60)
    assert "timeout" in err.value.reason


def test_query_numbers() -> None:
    assert query_number(MultiDict(), "timeout", 10.0, minimum=0, maximum=60) == 10.0
    assert query_number(MultiDict(timeout="2.5"), "timeout", 10.0, minimum=0, maximum=60) == 2.5
    assert query_number(MultiDict(timeout="60"), "timeout", 10.0, minimum=0, maximum=60) == 60
    assert query_int(MultiDict(limit="500"), "limit", 50, minimum=1, maximum=500) == 500
    for bad in ("0", "501", "1.5", "nan", "5a"):
        with pytest.raises(InvalidQueryNumber):
            query_int(MultiDict(limit=bad), "limit", 50, minimum=1, maximum=500)
    with pytest.raises(InvalidQueryNumber):
        query_int(MultiDict([("limit", "1"), ("limit", "2")]), "limit", 50, minimum=1, maximum=500)


def test_limits_section_defaults_are_the_limits_defaults() -> None:
    assert LimitsSection().limits() == DEFAULT_LIMITS
    assert set(LimitsSection.model_fields) == {f.name for f in dataclasses.fields(Limits)}


def test_limits_file(tmp_path: Path) -> None:
    assert load_limits(None) == DEFAULT_LIMITS
    f = tmp_path / "limits.toml"
    f.write_text("[limits]\nheader_timeout = 1.5\njson_depth = 32\n")
    assert load_limits(f) == dataclasses.replace(DEFAULT_LIMITS, header_timeout=1.5, json_depth=32)
    for bad in (
        "header_timeout = 0",
        "json_depth = 100000",
        "body_timeout = nan",
        "no_such_limit = 1",
        'json_items = "many"',
    ):
        f.write_text(f"[limits]\n{bad}\n")
        with pytest.raises(ConfigError) as err:
            load_limits(f)
        assert "limits." in str(err.value)


def test_a_credential_header_counts_only_when_it_comes_once() -> None:
    # issue 9: with two Authorization headers only the first was read (the data plane, the push
    # endpoint and the authority's admin API read credentials through this one rule)
    def req(*values: str) -> web.Request:
        return make_mocked_request("GET", "/", headers=CIMultiDict([("Authorization", v) for v in values]))

    assert one_header(req("Bearer a"), "Authorization") == "Bearer a"
    assert one_header(req(), "Authorization") == ""
    assert one_header(req("Bearer a", "Bearer b"), "Authorization") == ""
