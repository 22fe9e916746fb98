"""Ensembles defined at run time over HTTP: admin-only, validated, usable by name at once."""

from __future__ import annotations

import numpy as np
import requests

from tests.serve.conftest import ADMIN

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 2] = 1.0


def test_define_list_and_use_an_ensemble(server):
    body = {"name": "mix", "combine": "vote", "members": {"random": 1.0, "lotka_volterra": 2.0}}
    assert requests.post(server + "/v1/ensembles", json=body, timeout=30).status_code in (
        401,
        403,
    )
    r = requests.post(server + "/v1/ensembles", json=body, headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    names = {
        e["name"] for e in requests.get(server + "/v1/ensembles", timeout=30).json()["ensembles"]
    }
    assert {"mix/predator", "mix/prey"} <= names
    p = requests.post(
        server + "/v1/predict", json={"policy": "mix/prey", "observation": OBS.tolist()}, timeout=30
    )
    assert p.status_code == 200, p.text
    assert "vote" in p.json()["reasoning"] or "random" in p.json()["reasoning"]


def test_a_bad_ensemble_is_refused_and_changes_nothing(server):
    before = requests.get(server + "/v1/ensembles", timeout=30).json()["ensembles"]
    for body in (
        {"name": "bad", "members": {"nope": 1.0, "random": 1.0}},  # unknown member
        {"name": "bad", "members": {"random": -1.0, "lotka_volterra": 1.0}},  # weight <= 0
        {"name": "bad", "members": {"random": 1.0}},  # one member
    ):
        r = requests.post(server + "/v1/ensembles", json=body, headers=ADMIN, timeout=30)
        assert r.status_code == 422, (body, r.text)
    after = requests.get(server + "/v1/ensembles", timeout=30).json()["ensembles"]
    assert after == before
