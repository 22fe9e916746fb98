"""Admin endpoints over real HTTP: a bearer token guards load and unload, read-only endpoints
stay open, DELETE on an alias names the module it unloaded, a failed hot swap keeps serving."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from tests.serve.conftest import ADMIN, ADMIN_TOKEN

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 2] = 1.0
OBS[0, 2, 1] = 1.0  # a predator two up


def eventually(call, status: int, timeout: float = 30.0) -> requests.Response:
    """``call()`` until it answers ``status`` (a redeploy replaces the replica gradually)."""
    deadline = time.time() + timeout
    while True:
        r = call()
        if r.status_code == status or time.time() > deadline:
            return r
        time.sleep(0.2)


def predict(url, policy):
    return requests.post(
        url + "/v1/predict", json={"policy": policy, "observation": OBS.tolist()}, timeout=30
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": "Bearer \u00e9t\u00e9"},
    ],
)
def test_admin_endpoints_need_the_token(hostile_server, headers):
    r = requests.post(hostile_server + "/v1/models/lv/prey/load", headers=headers, timeout=30)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == "Bearer"
    r = requests.delete(hostile_server + "/v1/models/lv/prey", headers=headers, timeout=30)
    assert r.status_code == 401, r.text


def test_read_only_endpoints_stay_open(hostile_server):
    for path in ("/healthz", "/v1/models", "/metrics"):
        assert requests.get(hostile_server + path, timeout=30).status_code == 200, path
    assert requests.get(hostile_server + "/readyz", timeout=30).status_code in (200, 503)
    assert predict(hostile_server, "lv/prey").status_code == 200


def test_load_and_unload_with_the_token(hostile_server):
    r = requests.post(hostile_server + "/v1/models/lv/prey@fit/load", headers=ADMIN, timeout=60)
    assert r.status_code == 200 and r.json()["loaded"] == "lv/prey@fit:final", r.text
    lower = {"Authorization": f"bearer {ADMIN_TOKEN}"}  # the scheme is case-insensitive
    r = requests.delete(hostile_server + "/v1/models/lv/prey@fit:final", headers=lower, timeout=30)
    assert r.status_code == 200 and r.json() == {
        "unloaded": "lv/prey@fit:final",
        "was_loaded": True,
    }


def test_delete_on_an_alias_reports_the_module_it_unloaded(hostile_server):
    # lv/predator's newest module (corrupt) failed to load: the alias serves lv/predator@fit
    assert predict(hostile_server, "lv/predator").json()["policy"] == "lv/predator@fit:final"
    r = requests.delete(hostile_server + "/v1/models/lv/predator", headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"unloaded": "lv/predator@fit:final", "was_loaded": True}
    assert predict(hostile_server, "lv/predator").json()["policy"] == "lv/predator@fit:final"


def test_a_failed_hot_swap_keeps_serving_the_old_version(hostile_server, hostile_models):
    state = hostile_models["swap"] / "module_state.pkl"
    good = state.read_bytes()
    assert predict(hostile_server, "lv/prey").json()["policy"] == "lv/prey@swap:final"
    state.write_bytes(b"\x80corrupt")
    try:
        r = requests.post(hostile_server + "/v1/models/lv/prey/load", headers=ADMIN, timeout=60)
        assert r.status_code == 503 and "keeps serving" in r.text, r.text
        r = predict(hostile_server, "lv/prey")
        assert r.status_code == 200 and r.json()["policy"] == "lv/prey@swap:final", r.text
        models = {
            m["name"]: m
            for m in requests.get(hostile_server + "/v1/models", timeout=30).json()["models"]
        }
        assert models["lv/prey@swap:final"]["reload_error"]
        assert models["lv/prey@swap:final"]["loaded"] and not models["lv/prey@swap:final"]["error"]
    finally:
        state.write_bytes(good)
    r = requests.post(hostile_server + "/v1/models/lv/prey/load", headers=ADMIN, timeout=60)
    assert r.status_code == 200 and r.json()["loaded"] == "lv/prey@swap:final", r.text


def test_without_a_token_admin_endpoints_are_off_and_say_how_to_turn_them_on(
    hostile_server, hostile_models, monkeypatch
):
    from ray import serve

    from bioflux.serve.app import build_app

    monkeypatch.delenv("BIOFLUX_ADMIN_TOKEN", raising=False)
    args = {"models_dir": str(hostile_models["models"]), "preload": False}
    serve.run(build_app(args), name="bioflux_hostile", route_prefix="/", blocking=False)
    r = eventually(
        lambda: requests.post(
            hostile_server + "/v1/models/lv/prey/load", headers=ADMIN, timeout=60
        ),
        403,
    )
    assert r.status_code == 403 and "BIOFLUX_ADMIN_TOKEN" in r.text, r.text
    r = requests.delete(hostile_server + "/v1/models/lv/prey", timeout=30)
    assert r.status_code == 403, r.text
    assert predict(hostile_server, "lv/prey").status_code == 200

    monkeypatch.setenv("BIOFLUX_ADMIN_TOKEN", "from-the-env")  # read where the app is built
    serve.run(build_app(args), name="bioflux_hostile", route_prefix="/", blocking=False)
    env_token = {"Authorization": "Bearer from-the-env"}
    r = eventually(
        lambda: requests.delete(
            hostile_server + "/v1/models/lv/prey", headers=env_token, timeout=30
        ),
        200,
    )
    assert r.status_code == 200, r.text
    r = requests.delete(hostile_server + "/v1/models/lv/prey", headers=ADMIN, timeout=30)
    assert r.status_code == 401, r.text
