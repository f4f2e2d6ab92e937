"""DSP fuzzing at scale (issue 9): the generator and the oracle of
tests/adversarial/test_dsp_fuzz.py (tests/adversarial/dsp_fuzzlib.py) with larger counts, against
a real provider connector process on loopback (authority, provider, a registered examiner
participant with its own DAT, a fake peer for the examiner's callbacks).

Per DSP POST endpoint: ``--examples`` messages generated from the official JSON schemas (a
quarter sent as generated, the rest aimed at the examiner's real processes, offers and
agreement), and ``--malformed`` schema-valid bodies each sent in every malformed variant.

Prints the figures for bench/RESULTS.md: requests sent, by status class and endpoint, 5xx,
refusals whose body is not valid against the DSP error schema, state changes after a refusal,
acceptances DSP does not allow, the most frequent refusal reasons, and the time taken. Exits 1
if any of those problem counts is not 0.

Run: python bench/fuzz_dsp.py [--examples 60] [--malformed 4] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "adversarial")]

from dsp_fuzzlib import (  # noqa: E402
    ENDPOINTS,
    MALFORMATIONS,
    Message,
    malformed_messages,
    start_space,
    valid_messages,
)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=60, help="schema-generated messages per endpoint")
    ap.add_argument(
        "--malformed",
        type=int,
        default=4,
        help=f"bodies per endpoint sent in each of the {len(MALFORMATIONS)} malformations",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    run = settings(
        deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-dsp-") as tmp:
        space = start_space(Path(tmp))
        fz = space.fuzzer
        setup = time.monotonic() - started
        try:
            for endpoint in ENDPOINTS:
                t0 = time.monotonic()

                @seed(args.seed)
                @settings(run, max_examples=args.examples)
                @given(valid_messages(endpoint))
                def generated(message: Message) -> None:
                    fz.check(message)

                @seed(args.seed)
                @settings(run, max_examples=args.malformed)
                @given(malformed_messages(endpoint))
                def malformed(base: Message) -> None:
                    for how in MALFORMATIONS:
                        fz.check(Message.malformed(base.endpoint, base.body, how, base.pick))

                generated()
                malformed()
                print(
                    f"{endpoint.name:26} {time.monotonic() - t0:6.1f} s  sent so far {fz.stats.sent}",
                    file=sys.stderr,
                )
            violations = space.provider.schema_violations()
        finally:
            space.close()
    s = fz.stats
    figures = {
        "requests": s.sent,
        "by_class": dict(sorted(s.by_class.items())),
        "accepted": s.accepted,
        "server_errors_5xx": len(s.server_errors),
        "schema_invalid_error_bodies": len(s.invalid_error_bodies),
        "state_changes_after_refusal": len(s.state_changes_after_refusal),
        "acceptances_dsp_does_not_allow": len(s.illegitimate_acceptances),
        "dsp_schema_violations_sent_or_returned": len(violations),
        "by_endpoint": dict(sorted(s.by_endpoint.items())),
        "setup_seconds": round(setup, 1),
        "seconds": round(time.monotonic() - started, 1),
        "examples_per_endpoint": args.examples,
        "malformed_bodies_per_endpoint": args.malformed,
        "malformations": len(MALFORMATIONS),
        "seed": args.seed,
    }
    print(f"requests sent            {s.sent}")
    print(f"by status class          {', '.join(f'{k} {v}' for k, v in sorted(s.by_class.items()))}")
    print(f"accepted (2xx)           {s.accepted}")
    print(f"5xx                      {len(s.server_errors)}")
    print(f"schema-invalid errors    {len(s.invalid_error_bodies)}")
    print(f"state changes (refused)  {len(s.state_changes_after_refusal)}")
    print(f"illegitimate 2xx         {len(s.illegitimate_acceptances)}")
    print(f"wire schema violations   {len(violations)}")
    print(f"time                     {figures['seconds']} s (setup {figures['setup_seconds']} s)")
    print("by endpoint and status:")
    for key, n in sorted(s.by_endpoint.items()):
        print(f"  {key:34} {n}")
    print("most frequent refusal reasons:")
    for reason, n in s.reasons.most_common(15):
        print(f"  {n:5}  {reason}")
    for line in [*s.problems, *violations][:20]:
        print("PROBLEM", line[:400])
    if args.json:
        print(json.dumps(figures, indent=2))
    return 1 if s.problems or violations else 0


if __name__ == "__main__":
    sys.exit(main())
