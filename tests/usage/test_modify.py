"""connector.usage.modify: what an agreement says to do to the data, and the exact bytes that
come out of it, whatever the chunking."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.cli import main
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill
from connector.usage.modify import (
    Drop,
    Hash,
    MalformedData,
    Modification,
    RegexReplace,
    Replace,
    Selector,
    UnperformableModification,
    UnsupportedMediaType,
    choose_media_type,
    modification,
    planned,
)

CONTEXT = [
    "https://w3id.org/dspace/2025/1/context.jsonld",
    "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
]
PROVIDER, CONSUMER = "https://provider.example/p", "https://consumer.example/c"
IDS_CLASSES = Path(__file__).resolve().parent.parent / "odrl" / "ids-classes"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def agreement(template: str, **params: str) -> dict[str, object]:
    """A template filled and made an agreement as the provider stores it (its own context
    dropped: the stored agreement is read with the DSP context only)."""
    doc = fill(template, params, policy_id="urn:agreement:1", target="urn:asset:a", assigner=PROVIDER)
    doc.pop("@context")
    return {"@context": CONTEXT, **doc, "@type": "Agreement", "assignee": CONSUMER}


def chunked(m: Modification, data: bytes, media_type: str, cuts: list[int]) -> bytes:
    t = m.start(media_type)
    out, last = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))):
        out.append(t.feed(data[last:cut]))
        last = cut
    out.append(t.feed(data[last:]))
    out.append(t.finish())
    return b"".join(out)


# --------------------------------------------------------------------------- the policy


def test_transit_template_is_done_by_the_provider_only() -> None:
    policy = load_policy(agreement("modify-in-transit", drop="email", hash="name"))
    m = modification(policy, "transit")
    assert m is not None and modification(policy, "rest") is None
    assert m.operations == (Drop(Selector.parse("email")), Hash(Selector.parse("name")))
    assert m.duties == ("urn:agreement:1#anonymize",)


def test_transit_template_without_assigner_still_names_the_provider() -> None:
    doc = fill("modify-in-transit", {"drop": "email"}, policy_id="urn:o")  # as the API fills it
    doc.pop("@context")
    policy = load_policy({"@context": CONTEXT, **doc})
    assert modification(policy, "transit") is not None
    assert modification(policy, "rest") is None


def test_rest_template_is_done_by_the_consumer_only() -> None:
    policy = load_policy(
        agreement(
            "modify-at-rest", replace="$[*].email", replaceWith="hidden", pattern="[0-9]", replacement="#"
        )
    )
    m = modification(policy, "rest")
    assert m is not None and modification(policy, "transit") is None
    assert m.operations[0] == Replace(Selector.parse("$[*].email"), "hidden")
    op = m.operations[1]
    assert isinstance(op, RegexReplace) and op.pattern.pattern == "[0-9]" and op.replacement == "#"


def test_a_duty_that_names_no_modification_is_refused() -> None:
    policy = load_policy(agreement("modify-in-transit"))
    with pytest.raises(UnperformableModification, match="not how"):
        modification(policy, "transit")
    refusing = planned(policy, "transit")
    assert refusing is not None and refusing.refusal
    with pytest.raises(UnperformableModification, match="not how"):
        refusing.start("text/csv")


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"replace": "$.a"}, "go together"),
        ({"replaceWith": "x"}, "go together"),
        ({"replacement": "x"}, "without dsc:pattern"),
        ({"pattern": "(unclosed"}, "not a regular expression"),
        ({"pattern": "a", "replacement": r"\9"}, "replacement"),
        ({"drop": "$.a..b"}, "not a path"),
    ],
)
def test_what_cannot_be_performed_is_refused_with_the_reason(params: dict[str, str], reason: str) -> None:
    policy = load_policy(agreement("modify-at-rest", **params))
    with pytest.raises(UnperformableModification, match=re.escape(reason)):
        modification(policy, "rest")


def test_ids_g_replace_is_read_from_the_action_refinements() -> None:
    # IDS-G's pc13 names no assignee for its duty: the consumer's connector does it on ingress
    policy = load_policy(IDS_CLASSES / "pc13-idsg-modify-in-transit.json", strict=True)
    m = modification(policy, "rest")
    assert m is not None and m.operations == (Replace(Selector.parse("$.name"), "xxxx"),)
    assert m.apply(b'{"name":"Alice","age":3}', "application/json") == b'{"name":"xxxx","age":3}'
    # the ODRL form's duty condition (event lt policyUsage) stays a condition
    odrl = load_policy(IDS_CLASSES / "pc13-odrl-modify-in-transit.json", strict=True)
    m2 = modification(odrl, "rest")
    assert m2 is not None and m2.operations == (Replace(Selector.parse("$.name"), "xxxx"),)


def test_other_duties_are_no_modification() -> None:
    policy = load_policy(agreement("local-logging"))
    assert modification(policy, "transit") is None and modification(policy, "rest") is None


# --------------------------------------------------------------------------- CSV

CSV_OPS = Modification(
    (Drop(Selector.parse("email")), Hash(Selector.parse("$[*].name")), Replace(Selector.parse("city"), "X"))
)


def test_csv_drops_hashes_and_replaces_columns_exactly() -> None:
    data = (
        "id,name,email,city\r\n"
        '1,"Müller, Anna",anna@example.org,Köln\r\n'
        '2,"Bob ""B""\r\nSmith",bob@example.org,Berlin\r\n'
    ).encode()
    expected = (
        "id,name,city\r\n"
        f"1,{sha('Müller, Anna')},X\r\n"
        f"2,{sha(chr(10).join(['Bob ' + chr(34) + 'B' + chr(34) + chr(13), 'Smith']))},X\r\n"
    ).encode()
    assert CSV_OPS.apply(data, "text/csv; charset=utf-8") == expected


def test_csv_keeps_the_header_lines_dialect_and_a_missing_last_newline() -> None:
    data = b"id;name;email;city\n1;Ann;a@x;Rome\n2;Bo;b@y;Oslo"
    assert CSV_OPS.apply(data, "text/csv") == (f"id;name;city\n1;{sha('Ann')};X\n2;{sha('Bo')};X").encode()
    tsv = b"id\tname\temail\tcity\n1\tAnn\ta@x\tRome\n"
    assert (
        CSV_OPS.apply(tsv, "text/tab-separated-values") == (f"id\tname\tcity\n1\t{sha('Ann')}\tX\n").encode()
    )


def test_csv_chunk_boundary_inside_a_quoted_field_and_a_multibyte_character() -> None:
    data = 'id,name,email,city\n1,"Zoë\nLine, two",z@x,"Saint-Étienne"\n'.encode()
    whole = CSV_OPS.apply(data, "text/csv")
    inside_quote = data.index(b"Line")
    inside_char = data.index("ë".encode()) + 1  # between the two bytes of ë
    for cuts in ([inside_quote], [inside_char], [inside_char, inside_quote], list(range(1, len(data)))):
        assert chunked(CSV_OPS, data, "text/csv", cuts) == whole
    assert whole == f"id,name,city\n1,{sha('Zoë' + chr(10) + 'Line, two')},X\n".encode()


def test_csv_without_the_named_column_is_refused() -> None:
    with pytest.raises(MalformedData, match="no column 'email'"):
        CSV_OPS.apply(b"id,name,city\n1,a,b\n", "text/csv")


def test_csv_regex_rewrites_every_field_and_keeps_utf8_bom() -> None:
    m = Modification((RegexReplace(re.compile(r"\d"), "#"),))
    data = "\ufeffa,b\n12,x3\n".encode()
    assert m.apply(data, "text/csv") == "\ufeffa,b\n##,x#\n".encode()


def test_a_column_path_that_is_no_column_is_refused() -> None:
    m = Modification((Drop(Selector.parse("$.a.b")),))
    with pytest.raises(UnsupportedMediaType, match="names no CSV column"):
        m.apply(b"a,b\n1,2\n", "text/csv")


# --------------------------------------------------------------------------- JSON


def test_json_document_paths() -> None:
    m = Modification(
        (
            Drop(Selector.parse("$.items[*].email")),
            Hash(Selector.parse("$.owner.name")),
            Replace(Selector.parse("$['the id']"), "?"),
            RegexReplace(re.compile("v[0-9]+"), "vN"),
        )
    )
    doc = {
        "the id": 7,
        "owner": {"name": "Zoë", "x": 1},
        "items": [{"email": "a@x", "n": "v1"}, {"n": "v22"}],
    }
    out = m.apply(json.dumps(doc).encode() + b"\n", "application/json")
    name = sha("Zoë")
    assert (
        out
        == ('{"the id":"?","owner":{"name":"' + name + '","x":1},"items":[{"n":"vN"},{"n":"vN"}]}\n').encode()
    )


def test_json_hash_of_a_value_that_is_not_a_string_is_of_its_json_text() -> None:
    m = Modification((Hash(Selector.parse("$[*].v")),))
    out = m.apply(b'[{"v":12},{"v":{"a":[1,2]}},{"w":1}]', "application/vnd.x+json")
    assert json.loads(out) == [{"v": sha("12")}, {"v": sha('{"a":[1,2]}')}, {"w": 1}]


def test_json_over_the_limit_and_invalid_json_are_refused() -> None:
    m = Modification((Drop(Selector.parse("$.a")),), json_limit=10)
    with pytest.raises(UnsupportedMediaType, match="JSON Lines"):
        m.apply(b'{"a": "0123456789"}', "application/json")
    with pytest.raises(MalformedData, match="not JSON"):
        Modification((Drop(Selector.parse("$.a")),)).apply(b'{"a":', "application/json")


def test_json_lines_line_by_line() -> None:
    m = Modification((Replace(Selector.parse("$.email"), "x"),))
    data = '{"email":"a","n":"é"}\n\n{"n":2}\r\n{"email":null}'.encode()
    expected = '{"email":"x","n":"é"}\n\n{"n":2}\r\n{"email":"x"}'.encode()
    assert m.apply(data, "application/x-ndjson") == expected
    assert chunked(m, data, "application/jsonl", list(range(1, len(data)))) == expected
    with pytest.raises(MalformedData, match="not JSON"):
        m.apply(b'{"email":"a"}\nnot json\n', "application/jsonl")


# --------------------------------------------------------------------------- text, others


def test_text_regex_line_by_line() -> None:
    m = Modification((RegexReplace(re.compile(r"(\w+)@example\.org"), r"\1@…"),))
    data = b"mail anna@example.org\r\nand bob@example.org"
    assert m.apply(data, "text/plain") == "mail anna@…\r\nand bob@…".encode()


def test_columns_in_plain_text_binary_and_unknown_types_are_refused() -> None:
    m = Modification((Drop(Selector.parse("a")),))
    for media_type, reason in (
        ("text/plain", "cannot be modified in text/plain"),
        ("application/octet-stream", "media type application/octet-stream"),
        (None, "media type is not known"),
    ):
        with pytest.raises(UnsupportedMediaType, match=re.escape(reason)):
            m.start(media_type)


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(MalformedData, match="not UTF-8"):
        CSV_OPS.apply(b"id,name,email,city\n1,\xff,x,y\n", "text/csv")


def test_media_type_from_a_declared_type_else_the_extension() -> None:
    assert choose_media_type("application/octet-stream", None, name="a/b.CSV") == "text/csv"
    assert choose_media_type(None, "application/json", name="x.csv") == "application/json"
    assert choose_media_type(None, name="data.bin") is None


# --------------------------------------------------------------------------- any chunking

_field = st.text(alphabet=st.sampled_from(list('ab,"\n\r é€😀;')), max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(_field, min_size=3, max_size=3), max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
)
def test_csv_output_does_not_depend_on_the_chunking(rows: list[list[str]], cuts: list[int]) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["name", "email", "city"])
    writer.writerows(rows)
    data = buf.getvalue().encode()
    whole = CSV_OPS.apply(data, "text/csv")
    assert chunked(CSV_OPS, data, "text/csv", cuts) == whole
    back = list(csv.reader(io.StringIO(whole.decode(), newline="")))
    assert back[0] == ["name", "city"]
    assert back[1:] == [[sha(r[0]), "X"] for r in rows]


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.text(max_size=12), max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=300), max_size=10),
)
def test_text_and_json_lines_do_not_depend_on_the_chunking(lines: list[str], cuts: list[int]) -> None:
    text_m = Modification((RegexReplace(re.compile("[aeiou]"), "*"),))
    data = "\n".join(lines).encode()
    assert chunked(text_m, data, "text/plain", cuts) == text_m.apply(data, "text/plain")
    json_m = Modification((Hash(Selector.parse("$.v")),))
    jl = "\n".join(json.dumps({"v": s}, ensure_ascii=False) for s in lines).encode()
    out = chunked(json_m, jl, "application/jsonl", cuts)
    assert out == json_m.apply(jl, "application/jsonl")
    assert [json.loads(x)["v"] for x in out.decode().split("\n") if x] == [sha(s) for s in lines]


def test_policy_check_warns_of_a_modification_that_cannot_be_performed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(fill("modify-in-transit", {"replace": "$.a"})))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(fill("modify-in-transit", {"drop": "email"})))
    runner = CliRunner()
    r = runner.invoke(main, ["policy", "check", str(broken)])
    assert r.exit_code == 0 and "idsc:JSON_PATH and idsc:REPLACE_WITH go together" in r.output
    assert "data plane will refuse the data" in r.output, r.output
    r = runner.invoke(main, ["policy", "check", str(good)])
    assert r.exit_code == 0 and r.output.startswith("OK: odrl:Offer"), r.output
