"""POST /v1/act: one world state in, every agent's action out, encoded by the core's own code."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from bioflux.serve.inference import ModelInference, ObservationError

STATE = {
    "height": 30,
    "width": 40,
    "predators": [[3, 4], [10, 10], [29, 39]],
    "prey": [[3, 6], [11, 9], [0, 0], [20, 20]],
    "walls": [[5, 5]],
}
POLICIES = {"predator": "lotka_volterra/predator", "prey": "lotka_volterra/prey"}


def test_whole_world_actions_equal_per_agent_predictions(tmp_path):
    inference = ModelInference(tmp_path)
    out = inference.act_world(STATE, POLICIES)
    for species, key in (("predator", "predators"), ("prey", "prey")):
        per_agent = [
            inference.predict("lotka_volterra", species, state={**STATE, "agent": i})["action"]
            for i in range(len(STATE[key]))
        ]
        assert out[species]["actions"] == per_agent
    detailed = inference.act_world(STATE, POLICIES, details=True)
    for row in detailed["prey"]["details"]:
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert row["reasoning"]


def test_bad_world_requests_are_refused_by_name(tmp_path):
    inference = ModelInference(tmp_path)
    with pytest.raises(ObservationError, match="prey policy"):
        inference.act_world(STATE, {"predator": "random/prey", "prey": "random/prey"})
    with pytest.raises(ObservationError, match="no policy for the listed prey"):
        inference.act_world(STATE, {"predator": "random/predator"})
    with pytest.raises(ObservationError, match="row"):
        inference.act_world({**STATE, "prey": [[30, 0]]}, POLICIES)
    many = {**STATE, "prey": [[r, c] for r in range(30) for c in range(40)]}
    with pytest.raises(ObservationError, match="agents"):
        inference.act_world(many, POLICIES)


def test_act_over_http(server):
    r = requests.post(
        server + "/v1/act",
        json={
            "state": STATE,
            "policies": {"predator": "random/predator", "prey": "random/prey"},
            "sample": True,
            "seed": 3,
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["predator"]["actions"]) == 3 and len(body["prey"]["actions"]) == 4
    assert all(0 <= a < 5 for a in body["predator"]["actions"] + body["prey"]["actions"])
    bad = requests.post(
        server + "/v1/act",
        data='{"state": {"height": 1e400, "width": 4}, "policies": {"prey": "random/prey"}}',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert bad.status_code == 422
    unknown = requests.post(
        server + "/v1/act", json={"state": STATE, "policies": {"prey": "nope/prey"}}, timeout=30
    )
    assert unknown.status_code == 404
    assert np.isfinite(r.elapsed.total_seconds())
