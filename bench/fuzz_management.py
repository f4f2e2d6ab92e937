"""schemathesis against the management API of real connector processes (issue 9), a large run.

A provider and a consumer connector on loopback (authority, TLS, real keys), seeded with an
offer, a FINALIZED negotiation and a STARTED transfer; then each one's management API is
fuzzed from the OpenAPI document it serves (coverage, fuzzing and stateful phases; checks: no
server error, documented status, content type, body and headers, schema-refused requests
refused). Prints the requests generated, by status, the 5xx (must be 0), the undocumented
statuses (must be 0) and the tracebacks in the connectors' logs (must be none); exits 1
otherwise. The checks and the bounds are those of tests/adversarial/openapi_fuzzlib.py.

Run: python bench/fuzz_management.py [--examples 60] [--seed 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "adversarial")]

from dataspace_testlib import DataSpace  # noqa: E402
from openapi_fuzzlib import EXCLUSIONS, FuzzRun, fuzz, owner_of, seed, tracebacks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60, help="examples per operation and phase")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20, help="steps of a stateful scenario")
    args = ap.parse_args()
    print(
        f"# fuzz_management  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, "
        f"Python {platform.python_version()}; examples={args.examples} steps={args.steps} "
        f"seed={args.seed}"
    )
    total = FuzzRun()
    crashes: list[str] = []
    owned: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        space = DataSpace(Path(tmp), tls=True)
        try:
            provider = space.connector("provider", roles=("provider",))
            consumer = space.connector("consumer", roles=("consumer",))
            seed(provider, consumer)
            for role, c, peer in (("provider", provider, consumer), ("consumer", consumer, provider)):
                run = fuzz(
                    c.api_url,
                    c.api_key,
                    peer_url=peer.dsp_url,
                    sandbox=c.directory / "fuzz-files",
                    max_examples=args.examples,
                    seed=args.seed,
                    max_steps=args.steps,
                    exclusions=EXCLUSIONS,
                )
                print(f"\n## {role}\n{run.report()}")
                total.merge(run)
            for c in (provider, consumer):
                for line in tracebacks(c.log):
                    owner = owner_of(line)
                    if owner is None:
                        crashes.append(f"{c.name}: {line}")
                    else:
                        owned[f"{c.name}: {owner}"] += 1
            space.assert_wire_valid()
        finally:
            space.close()
    print(f"\n## both roles\n{total.report()}")
    print(
        f"tracebacks in the connectors' logs (any plane): {len(crashes)}"
        + "".join(f"\n  {line}" for line in crashes)
    )
    print(
        "tracebacks another fix owns: "
        + (", ".join(f"{why}: {n}" for why, n in sorted(owned.items())) or "none")
    )
    undocumented = sum(total.undocumented.values())
    print(
        f"\nrequests generated: {total.requests} (+{sum(total.method_probes.values())} method "
        f"probes); 5xx: {total.server_errors}; undocumented statuses: {undocumented}; "
        f"findings: {len(total.findings)}"
    )
    clean = total.server_errors == 0 and undocumented == 0 and not total.findings and not crashes
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
