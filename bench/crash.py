"""Kill -9 chaos (issue 9): provider, consumer and authority killed at random moments of
concurrent negotiations, pushes and pulls on a loopback data space; then nothing may be lost or
duplicated and every use limit must hold exactly. The runs and the invariants are
`connector.chaos` (its docstring lists every check, and the receipt cross-check findings a kill
legitimately causes); `tests/adversarial/test_crash_*.py` runs a few of the same runs in CI.

Run: python bench/crash.py [--runs 10] [--seed S] [--victims provider,consumer,authority]
                           [--lanes 6] [--store sqlite|postgresql]

Each run prints its seed: `--victims V --runs 1 --seed <that seed>` draws the same kill point
(a step of the batch, then a delay) and pause again. `--store postgresql` needs
CONNECTOR_TEST_PG (each run gets fresh schemas, dropped afterwards). Exit status 1 if any run
failed an invariant.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from connector.chaos import VICTIMS, ChaosConfig, ChaosSpace, Summary, run_once
from connector.devspace import DataSpace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per victim (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="first run's seed (default: random)")
    ap.add_argument("--victims", default=",".join(VICTIMS))
    ap.add_argument("--lanes", type=int, default=ChaosConfig.lanes)
    ap.add_argument("--limit", type=int, default=ChaosConfig.limit)
    ap.add_argument(
        "--max-delay",
        type=float,
        default=ChaosConfig.max_delay,
        help="seconds the kill may come after its step (default %(default)s)",
    )
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--no-push", action="store_true", help="pulls only")
    ap.add_argument("--verbose", action="store_true", help="print every run's notes")
    args = ap.parse_args()
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    if unknown := [v for v in victims if v not in VICTIMS]:
        ap.error(f"unknown victim(s) {', '.join(unknown)}: choose from {', '.join(VICTIMS)}")
    pg_url = None
    if args.store == "postgresql":
        pg_url = os.environ.get("CONNECTOR_TEST_PG")
        if not pg_url:
            ap.error("--store postgresql needs CONNECTOR_TEST_PG")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    cfg = ChaosConfig(
        lanes=args.lanes, limit=args.limit, max_delay=args.max_delay, push=not args.no_push, pg_url=pg_url
    )
    print(
        f"crash bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, store {args.store}, seed {seed}, "
        f"{args.runs} run(s) per victim, {cfg.lanes} lanes, limit {cfg.limit}",
        flush=True,
    )
    began = time.monotonic()
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        space = DataSpace(Path(tmp), tls=True)
        try:
            chaos = ChaosSpace.create(space)
            for victim in victims:
                for i in range(args.runs):
                    report = run_once(chaos, victim, seed + i, cfg)
                    summary.reports.append(report)
                    print(report.line(), flush=True)
                    for problem in report.problems():
                        print(f"    FAIL {problem}", flush=True)
                    if args.verbose:
                        print("    timings " + " ".join(f"{k}={v:.1f}" for k, v in report.timings.items()))
                        for x in report.expected + report.notes + report.terminated:
                            print(f"    {x}", flush=True)
        finally:
            space.close()
    print()
    print("\n".join(summary.table()))
    failed = [r for r in summary.reports if not r.ok]
    print(f"\n{len(summary.reports)} runs, {len(failed)} failed, {time.monotonic() - began:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
