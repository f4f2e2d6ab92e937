"""Modifying the data as an agreement's duty says: in transit (the provider's data plane) or at
rest (the consumer's connector, before its copy reaches the disk).

The policy form. A duty whose action is a kind of modification (``anonymize``, ``modify``,
IDS-G's ``idsc:REPLACE``, their ``idsc:`` forms) names what to do with these terms (operator
``eq``, IDS ``idsc:DEFINES_AS``; ``isAnyOf`` for several fields), as refinements of its action
(IDS-G's form) or, where the action must be a plain string as in DSP 2025-1 messages (the
templates' form), as the duty's constraints::

    dsc:drop      "$.email"    drop the field / the CSV column           (may repeat)
    dsc:hash      "$.name"     replace the value by its SHA-256 (hex)    (may repeat)
    idsc:JSON_PATH "$.phone" + idsc:REPLACE_WITH "xxx"
                               replace the value by the constant (IDS-G's form)
    dsc:pattern   "[0-9]{4}" + dsc:replacement "####" (default: empty)
                               regular expression (Python ``re``) replaced in every text value:
                               each line of text, each CSV field, each JSON string

A field is named by a simple JSONPath: ``$.a.b``, ``$['a b']``, ``$[*]``, ``$[0]``, e.g.
``$[*].name`` or ``$.items[*].email``; in CSV by its column's header name, or as a path into
an array of records (``$[*].email`` or ``$.email``). Hashing is plain SHA-256 of the value's
UTF-8 text (a JSON value that is not a string: of its compact JSON text), unsalted: equal
values stay linkable, a guessable value can be found by trying.

Which duty applies where: a duty whose assignee is the policy's assigner, or ``dsc:Provider``
(whoever provides under the agreement), is done in transit by the provider's data plane; a duty
with no assignee, or assigned to anyone else (the consumer), at rest by the consumer.

How the data is read, by media type (the asset's content type, or its file name's extension):
- CSV (``text/csv``, ``text/tab-separated-values``): row by row, streamed, with the delimiter
  and line ending of the header line; records may span chunks (quoted fields with newlines).
  Rows are written with minimal quoting. A named column missing from the header is an error.
- JSON (``application/json``, ``*+json``): the document is parsed whole, up to ``json_limit``
  bytes (larger ones are refused: use JSON Lines), and written back compactly (UTF-8, key order
  kept). A path that matches nothing in the document changes nothing.
- JSON Lines (``application/jsonl``, ``application/x-ndjson``): line by line, streamed.
- other ``text/*``: only a pattern without a field; line by line (a pattern never spans lines).
Anything else, and data that is not what its media type says, raises ``ModificationError``
(fail closed: the caller refuses the data rather than passing it on unmodified).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from connector.odrl import terms as T
from connector.odrl.model import Constraint, Policy, Rule

Stage = Literal["transit", "rest"]
JSON_LIMIT = 32 << 20  # bytes of a JSON document parsed whole
REFUSED_AT_REST = "the agreement requires the copy to be modified at rest, and it cannot be"

ANONYMIZE, MODIFY = T.O + "anonymize", T.O + "modify"
# A duty assigned to the role names whoever is the agreement's provider (an offer written
# before its assigner is known, as the templates are).
PROVIDER_ROLE = T.ROLE_TERMS["provider"]


class ModificationError(ValueError):
    """The data cannot be modified as the agreement says; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnperformableModification(ModificationError):
    """The policy asks for a modification this connector cannot perform."""


class UnspecifiedModification(UnperformableModification):
    """A duty to anonymize or modify that does not say how (the IDS Information Model's bare
    ``idsc:ANONYMIZE`` with a PXP endpoint): nothing this connector can do to the data."""


class UnsupportedMediaType(ModificationError):
    """The data's media type is one the modification cannot be applied to."""


class MalformedData(ModificationError):
    """The data is not what its media type says (invalid UTF-8, JSON, ...)."""


# --------------------------------------------------------------------------- selectors

_WILD = object()
_SEGMENT = re.compile(
    r"\.(?P<name>[^.\[\]]+)|\[(?:(?P<star>\*)|(?P<index>[0-9]+)|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\")\]"
)

Step = str | int | object  # a key, an index, or _WILD


@dataclass(frozen=True)
class Selector:
    """A field: the path as written and its steps."""

    written: str
    steps: tuple[Step, ...]

    @staticmethod
    def parse(text: str) -> Selector:
        t = text.strip()
        if not t.startswith("$"):
            # a bare name: a CSV column, or a top-level field
            if not t:
                raise UnperformableModification("an empty field name")
            return Selector(text, (t,))
        steps: list[Step] = []
        pos = 1
        while pos < len(t):
            m = _SEGMENT.match(t, pos)
            if m is None:
                raise UnperformableModification(
                    f"{text!r} is not a path this connector reads ($.a.b, $['a'], $[*], $[0])"
                )
            if m.group("star") or m.group("name") == "*":
                steps.append(_WILD)
            elif m.group("index") is not None:
                steps.append(int(m.group("index")))
            else:
                steps.append(
                    next(g for g in (m.group("name"), m.group("sq"), m.group("dq")) if g is not None)
                )
            pos = m.end()
        if not steps:
            raise UnperformableModification(f"{text!r} names the whole document, not a field")
        return Selector(text, tuple(steps))

    def column(self) -> str | None:
        """The CSV column this names: ``name``, ``$.name`` or ``$[*].name``; else None."""
        steps = self.steps[1:] if self.steps[:1] == (_WILD,) else self.steps
        if len(steps) == 1 and isinstance(steps[0], str):
            return steps[0]
        return None


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Drop:
    selector: Selector


@dataclass(frozen=True)
class Hash:
    selector: Selector


@dataclass(frozen=True)
class Replace:
    selector: Selector
    value: str


@dataclass(frozen=True)
class RegexReplace:
    pattern: re.Pattern[str]
    replacement: str


Operation = Drop | Hash | Replace | RegexReplace


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Transformer(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True)
class Modification:
    """The modifications an agreement requires at one stage, in the order the policy gives.

    ``refusal`` set: the policy asks for something this connector cannot do; every ``start``
    raises it (so a caller that holds a Modification always fails closed)."""

    operations: tuple[Operation, ...]
    duties: tuple[str, ...] = ()  # the duties (ids) this performs
    refusal: str | None = None
    json_limit: int = JSON_LIMIT

    def start(self, media_type: str | None) -> Transformer:
        """A transformer for one body of ``media_type`` (a Content-Type value)."""
        if self.refusal is not None:
            raise UnperformableModification(self.refusal)
        kind = media_kind(media_type)
        columns = [op for op in self.operations if not isinstance(op, RegexReplace)]
        if kind == "csv":
            return _CsvTransformer(self.operations, tab=_essence(media_type).endswith("tab-separated-values"))
        if kind == "json":
            return _JsonTransformer(self.operations, self.json_limit)
        if kind == "jsonl":
            return _LineTransformer(lambda line: _json_line(line, self.operations))
        shown = _essence(media_type) or "unknown"
        if kind == "text" and not columns:
            patterns = [op for op in self.operations if isinstance(op, RegexReplace)]
            return _LineTransformer(lambda line: _sub_all(patterns, line))
        if kind == "text":
            raise UnsupportedMediaType(
                f"fields and columns cannot be modified in {shown} data (only CSV and JSON)"
            )
        if not _essence(media_type):
            raise UnsupportedMediaType(
                "the data's media type is not known (declare the "
                "asset's contentType), so it cannot be modified"
            )
        raise UnsupportedMediaType(f"data of media type {shown} cannot be modified")

    def apply(self, data: bytes, media_type: str | None) -> bytes:
        """The whole body at once (tests, small bodies)."""
        t = self.start(media_type)
        return t.feed(data) + t.finish()


# --------------------------------------------------------------------------- media types

MediaKind = Literal["csv", "json", "jsonl", "text", "other"]
_KINDS: dict[str, MediaKind] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/json": "json",
    "text/json": "json",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
}
_EXTENSIONS = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/x-ndjson",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
}
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def _essence(media_type: str | None) -> str:
    return (media_type or "").split(";", 1)[0].strip().lower()


def media_kind(media_type: str | None) -> MediaKind:
    essence = _essence(media_type)
    if essence in _KINDS:
        return _KINDS[essence]
    if essence.endswith("+json"):
        return "json"
    if essence.startswith("text/"):
        return "text"
    return "other"


def media_type_of(name: str) -> str | None:
    """The media type a file name's extension says (for data with no declared type)."""
    lower = name.lower().rsplit("/", 1)[-1]
    for ext, mt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return mt
    return None


def choose_media_type(*candidates: str | None, name: str | None = None) -> str | None:
    """The first declared type that says something (not octet-stream), else the name's."""
    for c in candidates:
        if c is not None and _essence(c) not in GENERIC_TYPES:
            return c
    return media_type_of(name) if name else None


# --------------------------------------------------------------------------- the policy


def modification(policy: Policy, stage: Stage, *, json_limit: int = JSON_LIMIT) -> Modification | None:
    """What ``policy`` requires to be done to the data at ``stage``; None if nothing.

    Raises UnperformableModification when a duty of that stage asks for a modification this
    connector cannot perform (fail closed: the caller must not hand out the data unmodified).
    """
    ops: list[Operation] = []
    duties: list[str] = []
    policy_assigners = {p.iri for r in policy.rules for p in r.assigners}
    for rule, duty in _duties(policy):
        actions = [a for a in duty.actions if _is_modification(a.iri)]
        if not actions:
            continue
        providers = ({p.iri for p in rule.assigners} or policy_assigners) | {PROVIDER_ROLE}
        assignees = {p.iri for p in duty.assignees}
        duty_stage: Stage = "transit" if assignees and assignees <= providers else "rest"
        if duty_stage != stage:
            continue
        # IDS-G writes them as refinements of the action; DSP 2025-1 allows an action only as
        # a string, so there the same terms are the duty's constraints (the modification's
        # parameters, never conditions: other constraints of the duty are left as they are)
        given = [c for a in actions for c in a.refinements]
        given += [c for c in duty.constraints if isinstance(c, Constraint) and c.left_operand in _PARAMETERS]
        ops.extend(_operations(given, duty.label))
        duties.append(duty.id)
    if not duties:
        return None
    return Modification(tuple(ops), tuple(duties), json_limit=json_limit)


def planned(policy: Policy, stage: Stage, *, json_limit: int = JSON_LIMIT) -> Modification | None:
    """``modification``, with an unperformable one as a Modification that refuses every
    start (for a caller that compiles once and refuses per request, with the reason)."""
    try:
        return modification(policy, stage, json_limit=json_limit)
    except UnperformableModification as exc:
        return Modification((), refusal=exc.reason)


def _duties(policy: Policy) -> Iterable[tuple[Rule, Rule]]:
    for rule in policy.permissions:
        for duty in rule.duties:
            yield rule, duty
    for obligation in policy.obligations:
        yield obligation, obligation


def _is_modification(action: str) -> bool:
    vocab = T.vocabulary()
    return vocab.action_covers(MODIFY, action) or vocab.action_covers(ANONYMIZE, action)


def _texts(c: Constraint, where: str) -> list[str]:
    name = T.short(c.left_operand)
    if c.operator not in (T.EQ, T.IS_ANY_OF):
        raise UnperformableModification(
            f"{where}: {name} {T.short(c.operator)} is not a modification (use eq)"
        )
    if c.right_reference or not c.right:
        raise UnperformableModification(f"{where}: {name} has no value")
    return [v.lexical for v in c.right]


_PARAMETERS = frozenset({T.JSON_PATH, T.REPLACE_WITH, *T.MODIFY_OPERANDS})


def _operations(refinements: Iterable[Any], where: str) -> list[Operation]:
    given: dict[str, list[str]] = {}
    for c in refinements:
        if not isinstance(c, Constraint):
            raise UnperformableModification(f"{where}: or/xone/and in a modification")
        if c.left_operand not in _PARAMETERS:
            raise UnperformableModification(
                f"{where}: {T.short(c.left_operand)} is not a modification this connector "
                "performs (dsc:drop, dsc:hash, idsc:JSON_PATH with idsc:REPLACE_WITH, "
                "dsc:pattern with dsc:replacement)"
            )
        given.setdefault(c.left_operand, []).extend(_texts(c, where))
    ops: list[Operation] = []
    ops += [Drop(Selector.parse(v)) for v in given.get(T.DROP, [])]
    ops += [Hash(Selector.parse(v)) for v in given.get(T.HASH, [])]
    paths, withs = given.get(T.JSON_PATH, []), given.get(T.REPLACE_WITH, [])
    if paths or withs:
        if len(paths) != 1 or len(withs) != 1:
            raise UnperformableModification(
                f"{where}: idsc:JSON_PATH and idsc:REPLACE_WITH go together, one value each"
            )
        ops.append(Replace(Selector.parse(paths[0]), withs[0]))
    patterns, replacements = given.get(T.PATTERN, []), given.get(T.REPLACEMENT, [])
    if replacements and not patterns:
        raise UnperformableModification(f"{where}: dsc:replacement without dsc:pattern")
    if len(patterns) > 1 or len(replacements) > 1:
        raise UnperformableModification(f"{where}: one dsc:pattern (and dsc:replacement) per action")
    if patterns:
        try:
            compiled = re.compile(patterns[0])
        except re.error as exc:
            raise UnperformableModification(
                f"{where}: dsc:pattern {patterns[0]!r} is not a regular expression: {exc}"
            ) from None
        replacement = replacements[0] if replacements else ""
        try:
            compiled.sub(replacement, "")  # a bad group reference fails here, not mid-stream
        except (re.error, IndexError) as exc:
            raise UnperformableModification(f"{where}: dsc:replacement {replacement!r}: {exc}") from None
        ops.append(RegexReplace(compiled, replacement))
    if not ops:
        raise UnspecifiedModification(
            f"{where} says to modify the data but not how (give dsc:drop, dsc:hash, "
            "idsc:JSON_PATH with idsc:REPLACE_WITH, or dsc:pattern)"
        )
    return ops


# --------------------------------------------------------------------------- text streams


class _Text:
    """Incremental UTF-8 decoding with a byte-order mark kept aside (written back as it came)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bom = ""
        self._first = True

    def decode(self, chunk: bytes, final: bool = False) -> str:
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            raise MalformedData(f"the data is not UTF-8 text ({exc.reason})") from None
        if self._first and text:
            self._first = False
            if text.startswith("\ufeff"):
                self.bom, text = "\ufeff", text[1:]
        return text


def _sub_all(patterns: list[RegexReplace], text: str) -> str:
    for p in patterns:
        text = p.pattern.sub(p.replacement, text)
    return text


class _LineTransformer:
    """Line by line: each complete line (without its ending) through ``line``."""

    def __init__(self, line: Callable[[str], str]) -> None:
        self._line = line
        self._text = _Text()
        self._rest = ""
        self._bom_sent = False

    def _emit(self, text: str) -> bytes:
        if not self._bom_sent and self._text.bom:
            self._bom_sent = True
            text = self._text.bom + text
        return text.encode("utf-8")

    def _lines(self, text: str) -> str:
        # split at "\n" only: other line separators (U+2028, ...) may sit inside a JSON string
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                break
            cr = "\r" if line.endswith("\r") else ""
            out.append(self._line(line[: len(line) - len(cr)]) + cr + ("" if last else "\n"))
        return "".join(out)

    def feed(self, chunk: bytes) -> bytes:
        text = self._rest + self._text.decode(chunk)
        cut = text.rfind("\n") + 1
        self._rest = text[cut:]
        return self._emit(self._lines(text[:cut])) if cut else b""

    def finish(self) -> bytes:
        text = self._rest + self._text.decode(b"", final=True)
        self._rest = ""
        return self._emit(self._lines(text)) if text else self._emit("")


# --------------------------------------------------------------------------- CSV

_DELIMITERS = ",;\t|"


def _header_dialect(line: str, tab: bool) -> tuple[str, str]:
    """(delimiter, line ending) of a header line: the candidate seen most outside quotes."""
    ending = "\r\n" if line.endswith("\r\n") else "\n"
    if tab:
        return "\t", ending
    outside = "".join(part for i, part in enumerate(line.split('"')) if i % 2 == 0)
    best = max(_DELIMITERS, key=outside.count)
    return (best if outside.count(best) else ","), ending


@dataclass
class _CsvPlan:
    keep: list[int]
    change: dict[int, Callable[[str], str]] = field(default_factory=dict)


class _CsvTransformer:
    def __init__(self, operations: tuple[Operation, ...], *, tab: bool) -> None:
        self._ops = operations
        self._tab = tab
        self._text = _Text()
        self._buf = ""
        self._scanned = 0  # characters of _buf already scanned for record ends
        self._quotes = 0  # quote characters in _buf[:_scanned]
        self._plan: _CsvPlan | None = None
        self._patterns = [op for op in operations if isinstance(op, RegexReplace)]
        self._delimiter, self._ending = ",", "\n"
        self._started = False

    def _complete(self) -> int:
        """The end of the last complete record in the buffer (a newline outside quotes)."""
        last = 0
        pos = self._scanned
        while True:
            nl = self._buf.find("\n", pos)
            if nl < 0:
                break
            self._quotes += self._buf.count('"', pos, nl + 1)
            pos = nl + 1
            if self._quotes % 2 == 0:
                last = pos
        self._quotes += self._buf.count('"', pos)
        self._scanned = len(self._buf)
        return last

    def _setup(self, header_line: str) -> None:
        self._delimiter, self._ending = _header_dialect(header_line, self._tab)
        header = next(csv.reader(io.StringIO(header_line, newline=""), delimiter=self._delimiter))
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            index.setdefault(name, i)
        dropped: set[int] = set()
        change: dict[int, Callable[[str], str]] = {}

        def col(op: Drop | Hash | Replace) -> int:
            name = op.selector.column()
            if name is None:
                raise UnsupportedMediaType(
                    f"{op.selector.written!r} names no CSV column (give a header name)"
                )
            if name not in index:
                raise MalformedData(f"the CSV has no column {name!r}")
            return index[name]

        for op in self._ops:
            if isinstance(op, Drop):
                dropped.add(col(op))
            elif isinstance(op, Hash):
                change[col(op)] = _then(change.get(col(op)), sha256_hex)
            elif isinstance(op, Replace):
                change[col(op)] = _then(change.get(col(op)), _constant(op.value))
        self._plan = _CsvPlan([i for i in range(len(header)) if i not in dropped], change)
        self._header_width = len(header)

    def _rows(self, text: str, final: bool) -> str:
        if not text:
            return ""
        if self._plan is None:
            first = _first_record(text)
            self._setup(first)
            out = io.StringIO()
            writer = csv.writer(out, delimiter=self._delimiter, lineterminator=self._ending)
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=self._delimiter)
            assert self._plan is not None
            try:
                header = next(reader)
                writer.writerow([header[i] for i in self._plan.keep if i < len(header)])
                self._write_rows(reader, writer)
            except csv.Error as exc:
                raise MalformedData(f"the CSV cannot be read: {exc}") from None
            return self._trim(out.getvalue(), text, final)
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self._delimiter, lineterminator=self._ending)
        try:
            self._write_rows(csv.reader(io.StringIO(text, newline=""), delimiter=self._delimiter), writer)
        except csv.Error as exc:
            raise MalformedData(f"the CSV cannot be read: {exc}") from None
        return self._trim(out.getvalue(), text, final)

    def _write_rows(self, reader: Any, writer: Any) -> None:
        plan = self._plan
        assert plan is not None
        for row in reader:
            if not row:
                writer.writerow([])
                continue
            out = []
            for i in plan.keep:
                if i >= len(row):
                    continue
                v = row[i]
                f = plan.change.get(i)
                if f is not None:
                    v = f(v)
                if self._patterns:
                    v = _sub_all(self._patterns, v)
                out.append(v)
            out.extend(_sub_all(self._patterns, v) for v in row[self._header_width :])
            writer.writerow(out)

    def _trim(self, written: str, text: str, final: bool) -> str:
        # the last record of the data without a line ending stays without one
        if final and not text.endswith("\n") and written.endswith(self._ending):
            return written[: -len(self._ending)]
        return written

    def _emit(self, text: str) -> bytes:
        if not self._started:
            self._started = True
            text = self._text.bom + text
        return text.encode("utf-8")

    def feed(self, chunk: bytes) -> bytes:
        self._buf += self._text.decode(chunk)
        cut = self._complete()
        if not cut:
            return b""
        text, self._buf = self._buf[:cut], self._buf[cut:]
        self._scanned -= cut
        self._quotes = self._buf.count('"', 0, self._scanned)
        return self._emit(self._rows(text, final=False))

    def finish(self) -> bytes:
        self._buf += self._text.decode(b"", final=True)
        text, self._buf = self._buf, ""
        if self._plan is None and not text:
            return self._emit("")
        return self._emit(self._rows(text, final=True))


def _then(first: Callable[[str], str] | None, second: Callable[[str], str]) -> Callable[[str], str]:
    if first is None:
        return second
    return lambda v: second(first(v))


def _constant(value: str) -> Callable[[str], str]:
    return lambda _old: value


def _first_record(text: str) -> str:
    """The header record with its line ending (it may hold quoted newlines)."""
    quotes = 0
    pos = 0
    while True:
        nl = text.find("\n", pos)
        if nl < 0:
            return text
        quotes += text.count('"', pos, nl + 1)
        pos = nl + 1
        if quotes % 2 == 0:
            return text[:pos]


# --------------------------------------------------------------------------- JSON


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _matches(node: Any, steps: tuple[Step, ...]) -> Iterable[tuple[Any, Any]]:
    """(container, key) of every value the steps reach."""
    if not steps:
        return
    step, rest = steps[0], steps[1:]
    if step is _WILD:
        keys: Iterable[Any] = (
            range(len(node)) if isinstance(node, list) else list(node) if isinstance(node, dict) else ()
        )
    elif isinstance(step, int):
        keys = (step,) if isinstance(node, list) and step < len(node) else ()
    else:
        keys = (step,) if isinstance(node, dict) and step in node else ()
    for k in keys:
        if rest:
            yield from _matches(node[k], rest)
        else:
            yield node, k


def _json_steps(selector: Selector) -> tuple[Step, ...]:
    # a bare name is a top-level field
    return selector.steps


def modify_json(doc: Any, operations: Iterable[Operation]) -> Any:
    """The document with every operation applied, in order (in place; returned)."""
    for op in operations:
        if isinstance(op, RegexReplace):
            doc = _sub_strings(doc, op)
            continue
        found = list(_matches(doc, _json_steps(op.selector)))
        if isinstance(op, Drop):
            # from the last: indexes of a list stay valid while earlier ones go
            for container, key in reversed(found):
                del container[key]
        elif isinstance(op, Hash):
            for container, key in found:
                container[key] = sha256_hex(_json_text(container[key]))
        else:
            for container, key in found:
                container[key] = op.value
    return doc


def _sub_strings(node: Any, op: RegexReplace) -> Any:
    if isinstance(node, str):
        return op.pattern.sub(op.replacement, node)
    if isinstance(node, list):
        return [_sub_strings(v, op) for v in node]
    if isinstance(node, dict):
        return {k: _sub_strings(v, op) for k, v in node.items()}
    return node


def _dump(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _json_line(line: str, operations: tuple[Operation, ...]) -> str:
    if not line.strip():
        return line
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise MalformedData(f"a line is not JSON: {exc}") from None
    return _dump(modify_json(doc, operations))


class _JsonTransformer:
    """A whole JSON document, parsed once it is complete (up to ``limit`` bytes)."""

    def __init__(self, operations: tuple[Operation, ...], limit: int) -> None:
        self._ops = operations
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self._size > self._limit:
            raise UnsupportedMediaType(
                f"JSON documents over {self._limit} bytes are not modified (send JSON Lines)"
            )
        self._parts.append(chunk)
        return b""

    def finish(self) -> bytes:
        raw = b"".join(self._parts)
        self._parts = []
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MalformedData(f"the data is not UTF-8 text ({exc.reason})") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise MalformedData(f"the data is not JSON: {exc}") from None
        out = _dump(modify_json(doc, self._ops))
        if text.endswith("\n"):
            out += "\n"
        return out.encode("utf-8")
