"""``POST /v1/predict/batch`` with ``partial: true`` over real HTTP: every agent of one request
succeeds or fails on its own (issue #18, isolation); without it, the first failure fails the
whole request as before."""

from __future__ import annotations

import numpy as np
import requests

from tests.serve.test_hostile_input import EXTREME, OBS

#: The liar module takes 5x5 windows while its metadata claims 7x7: an internal error (500).
LIAR_OBS = np.zeros((7, 7, 4), dtype=np.float32).tolist()


def batch(url: str, agents: list[dict], **options) -> requests.Response:
    return requests.post(url + "/v1/predict/batch", json={"agents": agents, **options}, timeout=60)


def mixed_agents() -> list[dict]:
    return [
        {"id": "good-prey", "policy": "random/prey", "observation": OBS.tolist()},
        {"id": "unknown", "policy": "nope/prey", "observation": OBS.tolist()},
        {"id": "numeric", "policy": "lv/predator", "observation": EXTREME.tolist()},
        {"id": "good-lv", "policy": "lotka_volterra/predator", "observation": OBS.tolist()},
        {"id": "bad-obs", "policy": "lv/prey", "observation": [1, 2, 3]},
        {"id": "down", "policy": "lv/predator@corrupt", "observation": OBS.tolist()},
        {"id": "internal", "policy": "ppo/predator@liar", "observation": LIAR_OBS},
        {"id": "good-state", "policy": "lv/predator", "state": {
            "height": 10, "width": 10, "predators": [[5, 5]], "prey": [[3, 5]], "agent": 0
        }},
    ]  # fmt: skip


def test_partial_batch_answers_every_agent_on_its_own(hostile_server):
    r = batch(hostile_server, mixed_agents(), partial=True)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["id"] for o in out] == [a["id"] for a in mixed_agents()]
    by_id = {o["id"]: o for o in out}
    for good, policy in [
        ("good-prey", "random/prey"),
        ("good-lv", "lotka_volterra/predator"),
        ("good-state", "lv/predator@fit:final"),
    ]:
        assert "error" not in by_id[good], by_id[good]
        assert by_id[good]["policy"] == policy and by_id[good]["degraded"] is False
        assert abs(sum(by_id[good]["probabilities"].values()) - 1) < 1e-5
    assert by_id["good-state"]["action_name"] == "up"  # the prey is straight up
    expected = {
        "unknown": (404, "unknown policy"),
        "numeric": (422, "failed numerically"),
        "bad-obs": (422, "flat observation"),
        "down": (503, "failed to load"),
        "internal": (500, "internal error (RuntimeError)"),
    }
    for agent_id, (status, needle) in expected.items():
        entry = by_id[agent_id]
        assert set(entry) == {"id", "policy", "error"}, entry
        assert entry["error"]["status"] == status, entry
        assert needle in entry["error"]["detail"], entry
    assert by_id["numeric"]["policy"] == "lv/predator"  # as the request named it


def test_partial_batch_with_fallback_degrades_the_failing_models_only(hostile_server):
    r = batch(hostile_server, mixed_agents(), partial=True, fallback=True)
    assert r.status_code == 200, r.text
    by_id = {o["id"]: o for o in r.json()}
    for agent_id in ("numeric", "down"):  # numerical failure and a model that is down
        entry = by_id[agent_id]
        assert "error" not in entry, entry
        assert entry["degraded"] is True and entry["policy"] == "random/predator"
    assert by_id["good-lv"]["degraded"] is False and by_id["good-prey"]["degraded"] is False
    # fallback covers a model that fails, not a request that is wrong
    assert by_id["unknown"]["error"]["status"] == 404
    assert by_id["bad-obs"]["error"]["status"] == 422


def test_without_partial_the_first_failure_fails_the_whole_request(hostile_server):
    good = mixed_agents()[0]
    r = batch(hostile_server, [good, mixed_agents()[2], good])
    assert r.status_code == 422 and "failed numerically" in r.json()["detail"], r.text
    r = batch(hostile_server, [good, mixed_agents()[1]], partial=False)
    assert r.status_code == 404, r.text
    r = batch(hostile_server, [good, mixed_agents()[3]])  # all good: a plain list as before
    assert r.status_code == 200 and [o["id"] for o in r.json()] == ["good-prey", "good-lv"]


def test_a_failing_agent_leaves_the_other_agents_answers_unchanged(hostile_server):
    good = [a for a in mixed_agents() if a["id"].startswith("good")]
    alone = batch(hostile_server, good).json()
    mixed = batch(hostile_server, mixed_agents(), partial=True).json()
    kept = [o for o in mixed if o["id"].startswith("good")]
    assert [o["probabilities"] for o in kept] == [o["probabilities"] for o in alone]


def test_schema_documents_partial_and_the_error_entries(hostile_server):
    spec = requests.get(hostile_server + "/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    partial = schemas["BatchRequest"]["properties"]["partial"]
    assert partial["type"] == "boolean" and partial["default"] is False
    assert "one entry per agent" in partial["description"]
    ok = spec["paths"]["/v1/predict/batch"]["post"]["responses"]["200"]
    items = ok["content"]["application/json"]["schema"]["items"]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in items["anyOf"]}
    assert refs == {"Prediction", "BatchItemError"}
    assert set(schemas["BatchItemError"]["required"]) == {"policy", "error"}
    assert set(schemas["ItemError"]["required"]) == {"status", "detail"}
