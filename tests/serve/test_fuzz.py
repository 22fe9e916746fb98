"""Schema-driven fuzzing of the HTTP API (schemathesis) against a real Serve app on 127.0.0.1:
whatever the generated input, the server never answers 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

#: Examples per operation (hypothesis stops early where a schema allows few distinct inputs,
#: e.g. a GET without parameters); the POST operations carry the bulk of the >= 200 requests.
EXAMPLES_PER_OPERATION = 80


def _fuzzer(operation, sent: list[str], failures: list[str]):
    """A hypothesis test that sends ``operation``'s generated requests and records 5xx."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        response = case.call(timeout=30)
        sent.append(operation.label)
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code} {response.text[:200]}")

    return fuzz


def test_no_input_makes_the_server_fail(server):
    schema = schemathesis.openapi.from_url(server + "/openapi.json")
    sent: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        _fuzzer(result.ok(), sent, failures)()
    assert len(sent) >= 200, len(sent)
    assert not failures, failures[:5]


def test_the_schema_states_the_observation_or_state_rule(server):
    import requests

    spec = requests.get(server + "/openapi.json", timeout=10).json()
    agent = spec["components"]["schemas"]["AgentInput"]
    alternatives = [set(option.get("required", [])) for option in agent.get("oneOf", [])]
    assert {"observation"} in [a - {"policy"} for a in alternatives]
    assert {"state"} in [a - {"policy"} for a in alternatives]
