"""`connector policy ...`: evaluate, check, explain, templates, new.

Exit codes, for scripts: ``evaluate`` and ``explain`` exit 0 on PERMIT, 1 on DENY and 2 on an
error (a policy, request or state of the world that cannot be read); ``check`` exits 0 for a
usable policy (warnings allowed) and 2 when it lists a problem; ``new`` and ``templates`` exit 0,
or 2 on an error. Every error is one line on stderr (a problem list one line per problem), never
a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rdflib import Graph

from connector.mgmtcli import resource_commands
from connector.odrl import terms as T
from connector.odrl.casefiles import request_from_graph, world_from_graph
from connector.odrl.evaluate import Report, evaluate
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Request, World
from connector.odrl.parse import (
    MAX_DOCUMENT_BYTES,
    PolicyError,
    Problem,
    jsonld_to_graph,
    parse_datetime,
    parse_file,
    policy_from_graph,
    read_policy,
)
from connector.odrl.plain import is_plain_policy, policy_document, request_from_json, world_from_json
from connector.odrl.report import explain_text, report_jsonld, report_turtle
from connector.odrl.templates import TemplateError, fill, template_json, templates
from connector.odrl.words import offer_in_words
from connector.usage.modify import (
    Stage,
    UnperformableModification,
    UnspecifiedModification,
    modification,
)
from connector.vocab import ODRL

_EXISTING = click.Path(exists=True, dir_okay=False, readable=True)
EXIT_PERMIT, EXIT_DENY, EXIT_ERROR = 0, 1, 2
EXIT_CODES_HELP = "Exit status: 0 PERMIT, 1 DENY, 2 error (the input cannot be used)."


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, PolicyError):
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
    else:
        click.echo(f"error: {_one_line(exc)}", err=True)
    sys.exit(EXIT_ERROR)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _read_json(p: Path, what: str) -> object | None:
    """The JSON in a ``.json`` file small enough to read, else None (Turtle, JSON-LD by size)."""
    if p.suffix.lower() != ".json" or p.stat().st_size > MAX_DOCUMENT_BYTES:
        return None
    try:
        loaded: object = json.loads(p.read_text(encoding="utf-8"))
        return loaded
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{what}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _load_request(path: str, sotw: str | None, now: datetime | None) -> tuple[Request, World]:
    """A request in the test-suite layout (Turtle / JSON-LD) or in plain JSON."""
    p = Path(path)
    data = _read_json(p, "request")
    if isinstance(data, dict) and "@context" not in data and "@type" not in data:
        request, world = request_from_json(data, now)
        if sotw:
            world = _load_world(sotw, now)
        return request, world
    request = request_from_graph(parse_file(p, "request"))
    world = _load_world(sotw, now) if sotw else World(now=now or datetime.now(UTC))
    return request, world


def _load_world(path: str, now: datetime | None) -> World:
    p = Path(path)
    data = _read_json(p, "state of the world")
    if isinstance(data, dict) and "@context" not in data:
        return world_from_json(data, now)
    return world_from_graph(parse_file(p, "state of the world"), now)


def _policy_graph(path: str) -> Graph:
    """A policy file as RDF: Turtle, JSON-LD, or what the management API accepts (plain-JSON
    rules, or a ``POST /api/policies`` body: ``{"policy": ...}`` or ``{"template": ...,
    "params": {...}}``)."""
    data = _read_json(Path(path), "policy")
    if isinstance(data, dict) and "@context" not in data:
        pid = data.get("id") if isinstance(data.get("id"), str) else None
        if isinstance(data.get("template"), str):
            params = data.get("params") or {}
            if not isinstance(params, dict):
                raise PolicyError("policy: params must map parameter names to values")
            return jsonld_to_graph(fill(data["template"], params, policy_id=pid), "policy")
        if isinstance(data.get("policy"), dict):
            return jsonld_to_graph(policy_document(data["policy"], pid), "policy")
        if is_plain_policy(data):
            return jsonld_to_graph(policy_document(data), "policy")
    return parse_file(path, "policy")


def _policy(path: str) -> Policy:
    return policy_from_graph(_policy_graph(path), exclude_types=(str(ODRL.Request),))


def _decide(report: Report) -> NoReturn:
    sys.exit(EXIT_PERMIT if report.permit else EXIT_DENY)


@click.group(name="policy")
def policy() -> None:
    """ODRL policies: evaluate, check, explain, and fill usage-policy templates."""


@policy.command(name="evaluate", epilog=EXIT_CODES_HELP)
@click.option(
    "--policy",
    "policy_path",
    type=_EXISTING,
    required=True,
    help="The ODRL policy (Turtle, JSON-LD, or plain-JSON rules).",
)
@click.option(
    "--request",
    "request_path",
    type=_EXISTING,
    required=True,
    help="The request (odrl:Request in Turtle/JSON-LD, or plain JSON).",
)
@click.option("--sotw", type=_EXISTING, help="The state of the world (Turtle/JSON-LD/JSON).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["turtle", "json"]),
    default="turtle",
    show_default=True,
    help="Serialisation of the compliance report on stdout.",
)
def evaluate_cmd(policy_path: str, request_path: str, sotw: str | None, fmt: str) -> None:
    """Print the compliance report on stdout and the decision (PERMIT/DENY) on stderr."""
    try:
        pol = _policy(policy_path)
        request, world = _load_request(request_path, sotw, None)
        report = evaluate(pol, request, world)
        text = report_jsonld(report) if fmt == "json" else report_turtle(report)
    except Exception as exc:  # every failure is reported as a clear error, never a traceback
        _fail(exc)
    click.echo(text, nl=False)
    click.echo(report.explanation, err=True)
    _decide(report)


@policy.command(name="check")
@click.argument("file", type=_EXISTING)
def check_cmd(file: str) -> None:
    """Validate a policy and list every problem with its location, one line each.

    FILE is Turtle, JSON-LD (ODRL, DSP or IDS form), or what the management API accepts: plain
    rules ({"permission": [...]}) or a POST /api/policies body ({"policy": ...} or
    {"template": NAME, "params": {...}}). Exit status: 0 usable (warnings allowed), 2 not usable.
    """
    pol: Policy | None
    try:
        problems, pol = read_policy(_policy_graph(file), exclude_types=(str(ODRL.Request),))
    except PolicyError as exc:
        problems, pol = exc.problems, None
    except Exception as exc:  # never a traceback
        problems, pol = [Problem(file, _one_line(exc))], None
    problems = problems + (_warnings(pol) if pol else [])
    errors = [p for p in problems if p.kind != "warning"]
    for p in problems:
        click.echo(str(p))
    if errors or pol is None:
        click.echo(f"{len(errors)} problem(s) in {file}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(
        f"OK: {T.short(pol.type)} {pol.id}: {len(pol.permissions)} permission(s), "
        f"{len(pol.prohibitions)} prohibition(s), {len(pol.obligations)} obligation(s), "
        f"conflict strategy {T.short(pol.conflict_strategy)}" + ("" if pol.conflict else " (default)")
    )


def _warnings(pol: Policy) -> list[Problem]:
    out = []
    for rule in (*pol.permissions, *pol.prohibitions, *pol.obligations):
        for c in _walk(rule.constraints):
            for v in c.right:
                if c.left_operand == T.ELAPSED_TIME and (
                    "Y" in v.lexical.split("T")[0] or "M" in v.lexical.split("T")[0]
                ):
                    out.append(
                        Problem(
                            rule.label,
                            "a duration in months or years counts 30/365 days; use days for an exact limit",
                            "warning",
                        )
                    )
    stages: tuple[tuple[Stage, str], ...] = (
        ("transit", "the provider's data plane"),
        ("rest", "the consumer"),
    )
    for stage, where in stages:
        try:
            modification(pol, stage)
        except UnspecifiedModification:
            pass  # a bare duty to anonymize, as IDS writes it: valid, refused at enforcement
        except UnperformableModification as exc:
            out.append(
                Problem(
                    pol.label,
                    f"{exc.reason}: {where} will refuse the data rather than hand it on unmodified",
                    "warning",
                )
            )
    return out


def _walk(constraints: Iterable[AnyConstraint]) -> Iterator[Constraint]:
    for c in constraints:
        if isinstance(c, LogicalConstraint):
            yield from _walk(c.operands)
        else:
            yield c


@policy.command(name="explain", epilog=EXIT_CODES_HELP)
@click.argument("file", type=_EXISTING)
@click.option(
    "--request",
    "request_path",
    type=_EXISTING,
    required=True,
    help="The request (plain JSON, or odrl:Request in Turtle/JSON-LD).",
)
@click.option("--sotw", type=_EXISTING, help="The state of the world, if not in the request.")
@click.option("--now", help="Evaluate at this time (ISO 8601) instead of the clock.")
def explain_cmd(file: str, request_path: str, sotw: str | None, now: str | None) -> None:
    """Print the decision tree: each rule, each premise, what held and what did not."""
    try:
        at = parse_datetime(now) if now else None
        pol = _policy(file)
        request, world = _load_request(request_path, sotw, at)
        report: Report = evaluate(pol, request, world)
        text = explain_text(report)
    except Exception as exc:
        _fail(exc)
    click.echo(text)
    _decide(report)


@policy.command(name="templates")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each template's IDS class, parameters (name, type, default, "
    "description) and where it is enforced, as JSON.",
)
def templates_cmd(as_json: bool) -> None:
    """List the usage-policy templates and their parameters."""
    try:
        every = templates()
    except TemplateError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([template_json(t) for t in every], indent=2))
        return
    for t in every:
        params = ", ".join(f"{p.name}{'' if p.required else '?'}:{p.type}" for p in t.parameters)
        click.echo(f"{t.name:32} {t.title}  [{params}]")
        click.echo(f"{'':32} {t.description}")


@policy.command(name="new")
@click.argument("template")
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="A template parameter (repeatable)."
)
@click.option("--id", "policy_id", help="The policy's @id (default: a fresh urn:uuid).")
@click.option("--target", help="The asset the policy is about.")
@click.option("--assigner", help="The provider's participant id.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def new_cmd(
    template: str,
    settings: tuple[str, ...],
    policy_id: str | None,
    target: str | None,
    assigner: str | None,
    out: str | None,
) -> None:
    """Write a filled policy from TEMPLATE (see `connector policy templates`)."""
    values: dict[str, str] = {}
    for s in settings:
        key, sep, value = s.partition("=")
        if not sep or not key:
            _fail(ValueError(f"--set {s!r}: expected KEY=VALUE"))
        values[key.strip()] = value
    try:
        doc = fill(template, values, policy_id=policy_id, target=target, assigner=assigner)
    except TemplateError as exc:
        _fail(exc)
    text = json.dumps(doc, indent=2) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


def _stored_terms(row: dict[str, Any]) -> str:
    """A stored policy's rules in words (the engine's reading), for the listing."""
    return "; ".join(offer_in_words(row.get("policy") or {}))


# the policies a running connector stores (its management API): list, show, delete
resource_commands(
    policy,
    path="/api/policies",
    noun="stored policy",
    delete="Delete a stored policy (409 while an offer uses it).",
    columns=[("ID", lambda r: r["id"]), ("TERMS", _stored_terms), ("CREATED", lambda r: r.get("createdAt"))],
)
