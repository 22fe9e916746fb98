"""The real Serve app over HTTP: every endpoint, bad input, path escapes, hot swap, metrics."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from bioflux.serve import ModelInference
from tests.serve.conftest import ADMIN

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 1] = 1.0  # a predator (itself) in the middle
OBS[..., 3] = 1.0  # own energy (constant 1 for predators outside ecology mode)
OBS[0, 3, 2] = 1.0  # a prey two up, one right


def post(server, path, **kw):
    return requests.post(server + path, timeout=30, **kw)


def test_readiness_lists_the_corrupt_checkpoint_but_stays_ready_while_its_alias_serves(server):
    assert requests.get(server + "/healthz", timeout=10).json() == {"status": "ok"}
    r = requests.get(server + "/readyz", timeout=10)
    body = r.json()
    assert "ppo/predator@broken:final" in body["failed"]
    assert "ppo/predator@tiny:final" in body["loaded"]
    # ppo/predator still has a healthy module, so the service is ready
    assert r.status_code == 200 and body["ready"] and body["unserved"] == []


def test_models_listing(server):
    models = {
        m["name"]: m for m in requests.get(server + "/v1/models", timeout=10).json()["models"]
    }
    assert {
        "random/predator",
        "random/prey",
        "ppo/predator@tiny:final",
        "ppo/prey@tiny:best",
    } <= set(models)
    assert models["ppo/predator@broken:final"]["error"]
    assert not any("evil" in name for name in models), "symlink outside the models dir"
    assert models["ppo/prey@tiny:final"]["observation_window"] == 5


def test_models_listing_shows_each_models_lineage_without_paths(server):
    r = requests.get(server + "/v1/models", timeout=10)
    models = {m["name"]: m for m in r.json()["models"]}
    predator = models["ppo/predator@tiny:final"]["lineage"]
    assert predator["init_from"] == {"run": "source", "algorithm": "ppo", "tensors_copied": 10}
    assert [(s["stage"], s["name"], s["env"], s["iterations"]) for s in predator["curriculum"]] == [
        (1, "small", {"height": 8}, 2),
        (2, "full", {}, 1),
    ]
    assert predator["text"] == (
        "from run source (ppo, 10 tensors), then a 2-stage curriculum: small (height=8; 2 it) "
        "-> full (1 it)"
    )
    prey = models["ppo/prey@tiny:best"]["lineage"]
    assert prey["init_from"] is None and prey["text"].startswith("from scratch, then a 2-stage")
    assert models["random/predator"]["lineage"] is None  # built-ins have none
    assert "/private" not in r.text  # the server's own paths stay private


def test_predict_matches_local_model_inference(server, models_dir):
    r = post(
        server, "/v1/predict", json={"policy": "ppo/predator@tiny", "observation": OBS.tolist()}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    local = ModelInference(models_dir).predict("ppo", "predator", OBS, run="tiny")
    assert body["action"] == local["action"] and body["action_name"] == local["action_name"]
    assert body["probabilities"] == pytest.approx(local["probabilities"], abs=1e-6)
    assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
    assert "prey in view, nearest 2 up 1 right" in body["reasoning"]
    assert body["degraded"] is False


def test_raw_state_equals_encoded_observation(server):
    state = {"height": 10, "width": 10, "predators": [[5, 5]], "prey": [[3, 6]], "agent": 0}
    by_state = post(
        server, "/v1/predict", json={"policy": "ppo/predator@tiny", "state": state}
    ).json()
    by_obs = post(
        server, "/v1/predict", json={"policy": "ppo/predator@tiny", "observation": OBS.tolist()}
    ).json()
    assert by_state["probabilities"] == pytest.approx(by_obs["probabilities"])


def test_batch_endpoint(server):
    agents = [
        {"id": f"a{i}", "policy": p, "observation": OBS.reshape(-1).tolist()}
        for i, p in enumerate(["ppo/predator", "ppo/prey", "random/prey"])
    ]
    r = post(server, "/v1/predict/batch", json={"agents": agents})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["id"] for o in out] == ["a0", "a1", "a2"]
    assert out[2]["probabilities"] == pytest.approx(dict.fromkeys(out[2]["probabilities"], 0.2))


@pytest.mark.parametrize(
    "payload, status, needle",
    [
        (
            {"policy": "ppo/predator", "observation": np.zeros((4, 4, 4)).tolist()},
            422,
            "does not match",
        ),
        ({"policy": "ppo/predator", "observation": [1, 2, 3]}, 422, "flat observation"),
        ({"policy": "ppo/predator", "observation": (-OBS - 1).tolist()}, 422, ">= 0"),
        ({"policy": "ppo/predator", "observation": [["a"]]}, 422, "not a numeric"),
        ({"policy": "ppo/wolf", "observation": OBS.tolist()}, 404, "invalid policy name"),
        ({"policy": "sac/prey", "observation": OBS.tolist()}, 404, "unknown policy"),
        ({"policy": "../../etc/passwd", "observation": OBS.tolist()}, 404, "invalid policy"),
        ({"policy": "ppo/prey"}, 422, "exactly one"),
        ({"policy": "ppo/prey", "observation": OBS.tolist(), "extra": 1}, 422, "extra"),
        ({"policy": "ppo/prey", "state": {"height": 5}}, 422, "missing"),
        ({"policy": "ppo/predator@broken", "observation": OBS.tolist()}, 503, "failed to load"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message(server, payload, status, needle):
    r = post(server, "/v1/predict", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_malformed_json_and_oversized_batch(server):
    r = post(server, "/v1/predict", data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    agents = [{"policy": "random/prey", "observation": OBS.tolist()}] * 1025
    r = post(server, "/v1/predict/batch", json={"agents": agents})
    assert r.status_code == 413 and "at most 1024" in r.text


def test_fallback_answers_degraded(server):
    r = post(
        server,
        "/v1/predict",
        json={"policy": "ppo/predator@broken", "observation": OBS.tolist(), "fallback": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["degraded"] is True and r.json()["policy"] == "random/predator"


def test_path_escape_in_model_routes(server):
    for name in ("..%2F..%2Fetc%2Fpasswd", "ppo/..%2F..%2F..%2Fetc", "/etc/passwd"):
        r = post(server, f"/v1/models/{name}/load", headers=ADMIN)
        assert r.status_code == 404, (name, r.text)
        r = requests.delete(server + f"/v1/models/{name}", headers=ADMIN, timeout=10)
        assert r.status_code == 404, (name, r.text)


def test_unload_then_load_on_demand(server):
    name = "ppo/prey@tiny:best"
    r = requests.delete(server + f"/v1/models/{name}", headers=ADMIN, timeout=10)
    assert r.status_code == 200 and r.json()["unloaded"] == name
    listing = {
        m["name"]: m for m in requests.get(server + "/v1/models", timeout=10).json()["models"]
    }
    assert listing[name]["loaded"] is False
    r = post(server, "/v1/predict", json={"policy": name, "observation": OBS.tolist()})
    assert r.status_code == 200
    assert post(server, f"/v1/models/{name}/load", headers=ADMIN).json()["loaded"] == name


def test_hot_swap_under_load_drops_nothing(server):
    def call(i):
        r = post(
            server, "/v1/predict", json={"policy": "ppo/predator", "observation": OBS.tolist()}
        )
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(300)]
        swaps = [
            post(server, "/v1/models/ppo/predator/load", headers=ADMIN).status_code
            for _ in range(5)
        ]
        codes = [f.result() for f in futures]
    assert swaps == [200] * 5
    assert codes == [200] * 300


def test_metrics_show_requests_errors_and_batching(server):
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda _: post(
                    server,
                    "/v1/predict",
                    json={"policy": "random/prey", "observation": OBS.tolist()},
                ),
                range(64),
            )
        )
    text = requests.get(server + "/metrics", timeout=10).text
    assert 'bioflux_requests_total{endpoint="predict",policy="random/prey",status="ok"}' in text
    assert "bioflux_errors_total" in text
    count = float(text.split("bioflux_batch_size_count ")[1].split()[0])
    total = float(text.split("bioflux_batch_size_sum ")[1].split()[0])
    assert total / count > 1.0, "concurrent requests should share batches"
    assert "bioflux_request_latency_seconds_bucket" in text


def test_lotka_volterra_builtin_explains_its_drives(server):
    r = post(
        server,
        "/v1/predict",
        json={"policy": "lotka_volterra/predator", "observation": OBS.tolist()},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action_name"] == "up"  # the prey is two up, one right
    assert "drives for up: pursuit +" in body["reasoning"]
