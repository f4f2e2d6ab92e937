"""`connector policy ...`: evaluate, check, explain, templates, new."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from connector.odrl import terms as T
from connector.odrl.casefiles import request_from_graph, world_from_graph
from connector.odrl.evaluate import Report, evaluate
from connector.odrl.model import Request, World
from connector.odrl.parse import (
    MAX_DOCUMENT_BYTES,
    PolicyError,
    Problem,
    parse_file,
    policy_from_graph,
    read_policy,
)
from connector.odrl.plain import request_from_json, world_from_json
from connector.odrl.report import explain_text, report_jsonld, report_turtle
from connector.vocab import ODRL

_EXISTING = click.Path(exists=True, dir_okay=False, readable=True)


def _fail(exc: Exception) -> None:
    if isinstance(exc, PolicyError):
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _load_request(path: str, sotw: str | None, now: datetime | None) -> tuple[Request, World]:
    """A request in the test-suite layout (Turtle / JSON-LD) or in plain JSON."""
    p = Path(path)
    if p.suffix.lower() == ".json" and p.stat().st_size <= MAX_DOCUMENT_BYTES:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"request: malformed JSON at line {exc.lineno}, column "
                              f"{exc.colno}: {exc.msg}") from exc
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
    if p.suffix.lower() == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "@context" not in data:
            return world_from_json(data, now)
    return world_from_graph(parse_file(p, "state of the world"), now)


def _policy(path: str):  # type: ignore[no-untyped-def]
    return policy_from_graph(parse_file(path, "policy"), exclude_types=(str(ODRL.Request),))


@click.group(name="policy")
def policy() -> None:
    """ODRL policies: evaluate, check, explain, and fill usage-policy templates."""


@policy.command(name="evaluate")
@click.option("--policy", "policy_path", type=_EXISTING, required=True,
              help="The ODRL policy (Turtle or JSON-LD).")
@click.option("--request", "request_path", type=_EXISTING, required=True,
              help="The request (odrl:Request in Turtle/JSON-LD, or plain JSON).")
@click.option("--sotw", type=_EXISTING, help="The state of the world (Turtle/JSON-LD/JSON).")
@click.option("--format", "fmt", type=click.Choice(["turtle", "json"]), default="turtle",
              show_default=True, help="Serialisation of the compliance report on stdout.")
def evaluate_cmd(policy_path: str, request_path: str, sotw: str | None, fmt: str) -> None:
    """Print the compliance report on stdout and the decision (PERMIT/DENY) on stderr."""
    try:
        pol = _policy(policy_path)
        request, world = _load_request(request_path, sotw, None)
        report = evaluate(pol, request, world)
    except Exception as exc:  # every failure is reported as a clear error, never a traceback
        _fail(exc)
        return
    click.echo(report_jsonld(report) if fmt == "json" else report_turtle(report), nl=False)
    click.echo(report.explanation, err=True)


@policy.command(name="check")
@click.argument("file", type=_EXISTING)
def check_cmd(file: str) -> None:
    """Validate a policy and list every problem with its location (exit 1 if any)."""
    try:
        graph = parse_file(file, "policy")
        problems, pol = read_policy(graph, exclude_types=(str(ODRL.Request),))
    except PolicyError as exc:
        problems, pol = exc.problems, None
    problems = problems + (_warnings(pol) if pol else [])
    errors = [p for p in problems if not p.message.startswith("warning:")]
    for p in problems:
        click.echo(str(p))
    if errors or pol is None:
        click.echo(f"{len(errors)} problem(s) in {file}", err=True)
        sys.exit(1)
    click.echo(
        f"OK: {T.short(pol.type)} {pol.id}: {len(pol.permissions)} permission(s), "
        f"{len(pol.prohibitions)} prohibition(s), {len(pol.obligations)} obligation(s), "
        f"conflict strategy {T.short(pol.conflict_strategy)}"
        + ("" if pol.conflict else " (default)")
    )


def _warnings(pol) -> list[Problem]:  # type: ignore[no-untyped-def]
    out = []
    for rule in (*pol.permissions, *pol.prohibitions, *pol.obligations):
        for c in _walk(rule.constraints):
            for v in c.right:
                if c.left_operand == T.ELAPSED_TIME and ("Y" in v.lexical.split("T")[0] or
                                                         "M" in v.lexical.split("T")[0]):
                    out.append(Problem(f"{rule.kind} {rule.id} / constraint {c.id}",
                                       "warning: a duration in months or years counts 30/365 "
                                       "days; use days for an exact limit"))
    return out


def _walk(constraints):  # type: ignore[no-untyped-def]
    from connector.odrl.model import LogicalConstraint

    for c in constraints:
        if isinstance(c, LogicalConstraint):
            yield from _walk(c.operands)
        else:
            yield c


@policy.command(name="explain")
@click.argument("file", type=_EXISTING)
@click.option("--request", "request_path", type=_EXISTING, required=True,
              help="The request (plain JSON, or odrl:Request in Turtle/JSON-LD).")
@click.option("--sotw", type=_EXISTING, help="The state of the world, if not in the request.")
@click.option("--now", help="Evaluate at this time (ISO 8601) instead of the clock.")
def explain_cmd(file: str, request_path: str, sotw: str | None, now: str | None) -> None:
    """Print the decision tree: each rule, each premise, what held and what did not."""
    try:
        from connector.odrl.parse import parse_datetime

        at = parse_datetime(now) if now else None
        pol = _policy(file)
        request, world = _load_request(request_path, sotw, at)
        report: Report = evaluate(pol, request, world)
    except Exception as exc:
        _fail(exc)
        return
    click.echo(explain_text(report))


@policy.command(name="templates")
def templates_cmd() -> None:
    """List the usage-policy templates and their parameters."""
    from connector.odrl.templates import templates

    for t in templates():
        params = ", ".join(
            f"{p.name}{'' if p.required else '?'}:{p.type}" for p in t.parameters)
        click.echo(f"{t.name:32} {t.title}  [{params}]")
        click.echo(f"{'':32} {t.description}")


@policy.command(name="new")
@click.argument("template")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A template parameter (repeatable).")
@click.option("--id", "policy_id", help="The policy's @id (default: a fresh urn:uuid).")
@click.option("--target", help="The asset the policy is about.")
@click.option("--assigner", help="The provider's participant id.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def new_cmd(template: str, settings: tuple[str, ...], policy_id: str | None,
            target: str | None, assigner: str | None, out: str | None) -> None:
    """Write a filled policy from TEMPLATE (see `connector policy templates`)."""
    from connector.odrl.templates import TemplateError, fill

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
        return
    text = json.dumps(doc, indent=2) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
