"""Every DSP POST endpoint of a real provider connector fuzzed with messages generated from the
official JSON schemas (as generated, and aimed at the examiner's real processes) and with
malformed variants of them, sent with a registered participant's DAT. Every answer: never a 5xx;
a refusal is a 4xx with a body valid against the DSP error schema of its area and changes
nothing; an acceptance only where DSP allows the message (see dsp_fuzzlib for the oracle).
``bench/fuzz_dsp.py`` runs the same generator with larger counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dsp_fuzzlib import (
    ENDPOINTS,
    MALFORMATIONS,
    DspSpace,
    Endpoint,
    Fuzzer,
    Message,
    dsp_space,
    malformed_messages,
    official_message,
    valid_messages,
)

__all__ = ["dsp_space"]  # the session's data space (a fixture shared with test_dsp_rules)
pytestmark = pytest.mark.integration
# no shrinking: a failure names the message it sent, and a live server makes shrinking slow
FAST = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
VALID_EXAMPLES = 5  # per endpoint, the CI budget (bench/fuzz_dsp.py runs many more)
# endpoints where a consumer's schema-valid message, aimed at the examiner's processes, is taken
# (the official example of each, aimed, is the explicit first case)
REACHES_ACCEPTANCE = {
    "catalog-request",
    "negotiation-request-new",
    "negotiation-offer-new",
    "transfer-request-new",
    "negotiation-termination",
    "transfer-termination",
}


@pytest.fixture
def fuzz(dsp_space: DspSpace) -> Fuzzer:
    dsp_space.fuzzer.forget()  # other tests may have used the provider since
    return dsp_space.fuzzer


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_generated_messages_are_answered_as_dsp_allows(fuzz: Fuzzer, endpoint: Endpoint) -> None:
    accepted: list[bool] = []

    @settings(FAST, max_examples=VALID_EXAMPLES)
    @given(valid_messages(endpoint))
    @example(official_message(endpoint))
    def run(message: Message) -> None:
        before = fuzz.stats.accepted
        problems = fuzz.check(message)
        assert not problems, "\n".join(problems)
        accepted.append(fuzz.stats.accepted > before)

    run()
    if endpoint.name in REACHES_ACCEPTANCE:  # the fuzz reached the accepting path too
        assert any(accepted), sorted(fuzz.stats.reasons.items())


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_every_malformation_is_refused_and_changes_nothing(fuzz: Fuzzer, endpoint: Endpoint) -> None:
    @settings(FAST, max_examples=1)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        base = data.draw(malformed_messages(endpoint))
        problems = [
            p
            for how in MALFORMATIONS
            for p in fuzz.check(Message.malformed(endpoint, base.body, how, base.pick))
        ]
        assert not problems, "\n".join(problems)

    run()


def test_json_nested_ten_thousand_deep_is_refused(fuzz: Fuzzer) -> None:
    for endpoint in (ENDPOINTS[0], ENDPOINTS[1], ENDPOINTS[9]):
        status, body = fuzz.examiner.send("POST", endpoint.path, b"[" * 10_000 + b"]" * 10_000)
        assert status == 400, (endpoint.name, status, body)
