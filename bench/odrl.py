"""Benchmarks of the ODRL engine (issue 2).

1. Decisions per second of a compiled agreement with three constraints (count, a dateTime
   window, purpose) on one core; then the same with 100,000 compiled agreements loaded, each
   decision picking its agreement by id. Baseline in the same run: a hand-written Python
   function making the same three checks with no engine at all.
   With DAT facts: the same agreement shape plus two constraints on what the authority attests
   (security level at least TRUST, the consumer role), decided with the facts the data plane
   feeds it: the consumer's attested attributes (as the transfer token carries them) and the
   purpose header, assembled per request by ``connector.usage.pipeline`` exactly as the data
   plane does. Baseline in the same run: the three-constraint decision with a prepared purpose.
2. Evaluation time (explaining evaluator, report included, parsing excluded) of every case of
   the shared conformance suite, the large "weekdays 9-17" case separately; parse time shown
   alongside as the reference.

Run: python bench/odrl.py [--agreements 100000] [--seconds 2]
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from connector.odrl import terms as T
from connector.odrl.casefiles import request_from_graph, world_from_graph
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.parse import load_policy, parse_file, policy_from_graph
from connector.odrl.report import report_turtle

CASES = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "odrl" / "cases"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)
PURPOSE = "https://w3id.org/dpv#ResearchAndDevelopment"


def agreement(i: int) -> dict:
    return {
        "@context": ["http://www.w3.org/ns/odrl.jsonld", {"dpv": "https://w3id.org/dpv#"}],
        "@type": "Agreement",
        "uid": f"urn:agreement:{i}",
        "target": f"urn:asset:{i % 1000}",
        "assigner": "urn:participant:provider",
        "assignee": f"urn:participant:c{i % 50}",
        "permission": [
            {
                "action": "use",
                "constraint": [
                    {"leftOperand": "count", "operator": "lteq", "rightOperand": 1_000_000},
                    {
                        "and": [
                            {
                                "leftOperand": "dateTime",
                                "operator": "gteq",
                                "rightOperand": {"@value": START.isoformat(), "@type": "xsd:dateTime"},
                            },
                            {
                                "leftOperand": "dateTime",
                                "operator": "lt",
                                "rightOperand": {"@value": END.isoformat(), "@type": "xsd:dateTime"},
                            },
                        ]
                    },
                    {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": PURPOSE}},
                ],
            }
        ],
    }


def agreement_with_dat_facts(i: int) -> dict:
    """The agreement of ``agreement(i)`` with two constraints on attested facts."""
    doc = agreement(i)
    doc["@context"] = [
        *doc["@context"],
        {"idsc": "https://w3id.org/idsa/code/", "dsc": "https://w3id.org/dataspace-connector/ns#"},
    ]
    doc["permission"][0]["constraint"] += [
        {
            "leftOperand": "idsc:SECURITY_LEVEL",
            "operator": "eq",
            "rightOperand": {"@id": "idsc:TRUST_SECURITY_PROFILE"},
        },
        {"leftOperand": "dsc:role", "operator": "isAllOf", "rightOperand": {"@id": "dsc:Consumer"}},
    ]
    return doc


def bench_dat_facts(seconds: float) -> dict[str, float]:
    """Decisions/s with the DAT's attested facts in the request, as the data plane feeds them."""
    from connector.usage.pipeline import AttestedFacts, request_facts, stated_from_headers

    now = datetime(2026, 6, 1, tzinfo=UTC)
    read = T.O + "read"
    attested = {
        "securityProfile": "idsc:TRUST_PLUS_SECURITY_PROFILE",
        "roles": ["consumer"],
        "membership": True,
        "referringConnector": "https://consumer.example/",
    }
    headers = {"X-Purpose": PURPOSE}
    plain = compile_policy(load_policy(agreement(0)))
    with_dat = compile_policy(load_policy(agreement_with_dat_facts(0)))
    prepared = request_facts(attested, stated=stated_from_headers(headers))
    kw = {"action": read, "now": now, "assignee": "urn:participant:c0", "target": "urn:asset:0", "count": 17}
    assert with_dat(DecisionRequest(**kw, context=prepared)).permit  # type: ignore[arg-type]
    base = rate(
        lambda: plain(
            DecisionRequest(  # type: ignore[arg-type]
                **kw, context={T.PURPOSE: (PURPOSE,)}
            )
        ),
        seconds,
    )
    facts_ready = rate(
        lambda: with_dat(DecisionRequest(**kw, context=prepared)),  # type: ignore[arg-type]
        seconds,
    )
    # as the data plane: the token's attested facts mapped once per token, the stated facts from
    # the request's headers each time; no derived cross-border facts (the policy tests none)
    per_token = AttestedFacts()
    full = rate(
        lambda: with_dat(
            DecisionRequest(  # type: ignore[arg-type]
                **kw,
                context=request_facts(
                    attested,
                    stated=stated_from_headers(headers),
                    derive=False,
                    attested_facts=per_token("jti-1", 1, attested),
                ),
            )
        ),
        seconds,
    )
    return {"purpose_only": base, "dat_prepared": facts_ready, "dat_assembled": full}


def rate(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Calls per second of fn(), measured over about ``seconds``."""
    n, batch = 0, 1000
    gc.collect()
    t0 = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def bench_decisions(n_agreements: int, seconds: float) -> dict[str, float]:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    ctx = {T.PURPOSE: (PURPOSE,)}
    use = T.O + "use"

    # Baseline: the same three checks hand-written, no engine.
    def bare(count: int = 17) -> bool:
        purposes = ctx.get(T.PURPOSE)
        return (
            count + 1 <= 1_000_000
            and START <= now < END
            and bool(purposes)
            and all(p == PURPOSE for p in purposes)
        )

    decider = compile_policy(load_policy(agreement(0)))
    req = DecisionRequest(
        action=use, now=now, assignee="urn:participant:c0", target="urn:asset:0", count=17, context=ctx
    )
    assert decider(req).permit, decider(req).reason
    one = rate(lambda: decider(req), seconds)
    # With a fresh request object per decision, as the data plane builds one per call.
    one_fresh = rate(
        lambda: decider(
            DecisionRequest(
                action=use,
                now=now,
                assignee="urn:participant:c0",
                target="urn:asset:0",
                count=17,
                context=ctx,
            )
        ),
        seconds,
    )
    base = rate(bare, seconds)

    def load(n: int) -> tuple[dict, float]:
        t0 = time.perf_counter()
        template = load_policy(agreement(0))
        deciders = {}
        for i in range(n):
            # Each agreement compiled on its own, as it would be when loaded from the store.
            pol = replace(template, id=f"urn:agreement:{i}")
            deciders[pol.id] = compile_policy(pol)
        return deciders, time.perf_counter() - t0

    def picker(deciders: dict, n: int):  # type: ignore[no-untyped-def]
        # 4,096 prepared requests, each for a random agreement (the same harness for 1 and N).
        ids = [f"urn:agreement:{random.randrange(n)}" for _ in range(4096)]
        reqs = [
            DecisionRequest(
                action=use,
                now=now,
                assignee="urn:participant:c0",
                target="urn:asset:0",
                count=17,
                context=ctx,
            )
            for _ in ids
        ]
        k = 0

        def pick() -> bool:
            nonlocal k
            k = (k + 1) & 4095
            return deciders[ids[k]](reqs[k]).permit

        assert pick()
        return pick

    one_table, _ = load(1)
    one_pick = rate(picker(one_table, 1), seconds)
    deciders, load_s = load(n_agreements)
    many = rate(picker(deciders, n_agreements), seconds)

    # Baseline at scale: the hand-written checks over 100,000 parameter tuples in a dict, picked
    # at random the same way: what memory alone costs when the working set outgrows the caches.
    table = {f"urn:agreement:{i}": (1_000_000 + i % 7, START, END, PURPOSE) for i in range(n_agreements)}
    ids = [f"urn:agreement:{random.randrange(n_agreements)}" for _ in range(4096)]
    k = 0

    def bare_pick() -> bool:
        nonlocal k
        k = (k + 1) & 4095
        limit, start, end, purpose = table[ids[k]]
        purposes = ctx.get(T.PURPOSE)
        return (
            limit >= 17 + 1 and start <= now < end and bool(purposes) and all(p == purpose for p in purposes)
        )

    bare_many = rate(bare_pick, seconds)
    return {
        "bare": base,
        "bare_many": bare_many,
        "one": one,
        "one_fresh_request": one_fresh,
        "one_pick": one_pick,
        "many": many,
        "load_s": load_s,
    }


def bench_cases() -> tuple[list[tuple[str, float, float, float]], float]:
    with open(CASES / "manifest.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for row in rows:
        t0 = time.perf_counter()
        pg = parse_file(CASES / row["policy"])
        policy = policy_from_graph(pg, exclude_types=(T.O + "Request",))
        request = request_from_graph(parse_file(CASES / row["request"]))
        world = world_from_graph(parse_file(CASES / row["sotw"]))
        parse_ms = (time.perf_counter() - t0) * 1000
        evaluate(policy, request, world)  # warm
        runs = []
        for _ in range(20):
            t0 = time.perf_counter()
            evaluate(policy, request, world)
            runs.append(time.perf_counter() - t0)
        eval_ms = statistics.median(runs) * 1000
        t0 = time.perf_counter()
        report_turtle(evaluate(policy, request, world))
        with_rdf_ms = (time.perf_counter() - t0) * 1000
        out.append((Path(row["test_case"]).stem, eval_ms, with_rdf_ms, parse_ms))
    mean = statistics.mean(r[1] for r in out)
    return out, mean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agreements", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    print(
        f"# bench/odrl.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  python "
        f"{platform.python_version()}  {platform.machine()}  cores={os.cpu_count()}"
    )
    d = bench_decisions(args.agreements, args.seconds)
    print("\n## Compiled decisions (one core)")
    print(f"baseline, hand-written checks:                 {d['bare']:>12,.0f} /s")
    print(
        f"compiled agreement, prepared request:          {d['one']:>12,.0f} /s  "
        f"({d['one'] / d['bare']:.0%} of baseline)"
    )
    print(f"compiled agreement, new request each call:     {d['one_fresh_request']:>12,.0f} /s")
    print(f"1 agreement loaded, looked up by id:            {d['one_pick']:>12,.0f} /s")
    print(
        f"{args.agreements:,} agreements loaded, random pick:  {d['many']:>12,.0f} /s  "
        f"({d['many'] / d['one_pick']:.0%} of 1 loaded); compiled in {d['load_s']:.1f} s"
    )
    print(
        f"baseline at {args.agreements:,}, hand-written checks: {d['bare_many']:>12,.0f} /s  "
        f"({d['bare_many'] / d['bare']:.0%} of the baseline with one); engine at scale = "
        f"{d['many'] / d['bare_many']:.0%} of this baseline"
    )
    f = bench_dat_facts(args.seconds)
    print("\n## With DAT facts in the request (one core)")
    print(f"baseline, purpose only (3 constraints):        {f['purpose_only']:>12,.0f} /s")
    print(
        f"+ security level and role, facts prepared:     {f['dat_prepared']:>12,.0f} /s  "
        f"({f['dat_prepared'] / f['purpose_only']:.0%} of baseline)"
    )
    print(
        f"+ facts assembled per request (data plane):    {f['dat_assembled']:>12,.0f} /s  "
        f"({f['dat_assembled'] / f['purpose_only']:.0%} of baseline)"
    )
    rows, mean = bench_cases()
    print("\n## Shared conformance cases: evaluation (report object), parsing excluded")
    print(f"{'case':40} {'eval ms':>8} {'+Turtle':>8} {'parse ms':>9}")
    for name, e, r, p in rows:
        print(f"{name:40} {e:8.3f} {r:8.2f} {p:9.2f}")
    big = next(r for r in rows if "063" in r[0])
    print(f"\nmean evaluation: {mean:.3f} ms over {len(rows)} cases (target < 2 ms)")
    print(
        f"large case 063 (787 constraint reports): {big[1]:.2f} ms (target < 20 ms); "
        f"with the Turtle report {big[2]:.1f} ms; parsing it {big[3]:.0f} ms"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
