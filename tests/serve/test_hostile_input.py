"""Issue #18 over real HTTP: per-item isolation in batches, bounded metrics labels, bounded
inputs (every rejection a 4xx naming the field, nothing heavy first), safe loading, a registry
that survives broken metadata, and one log line per 500."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from bioflux.serve import settings
from tests.serve.conftest import ADMIN

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 1] = 1.0
OBS[..., 3] = 1.0
OBS[0, 3, 2] = 1.0
#: Counts no env produces: the Lotka–Volterra drives overflow to inf - inf = NaN logits.
EXTREME = np.full((5, 5, 4), 3e38, dtype=np.float32)
EXTREME[..., 0] = 0.0
EXTREME[..., 3] = 1.0


def post(url, path, **kw):
    return requests.post(url + path, timeout=60, **kw)


def predict(url, body, **kw):
    return post(url, "/v1/predict", json=body, **kw)


# ---------------------------------------------------------------------------- 1. isolation
def test_numerical_failure_is_that_items_422_or_a_degraded_answer(hostile_server):
    for policy in ("lotka_volterra/predator", "lv/predator"):
        r = predict(hostile_server, {"policy": policy, "observation": EXTREME.tolist()})
        assert r.status_code == 422, r.text
        assert "failed numerically" in r.json()["detail"]
    r = predict(
        hostile_server,
        {"policy": "lv/predator", "observation": EXTREME.tolist(), "fallback": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["degraded"] is True and r.json()["policy"] == "random/predator"


def test_extreme_inputs_do_not_fail_the_innocent_requests_they_share_a_batch_with(
    hostile_server,
):
    stop = threading.Event()
    hostile_codes: list[int] = []

    def innocent(policy: str, n: int) -> list[int]:
        return [
            predict(hostile_server, {"policy": policy, "observation": OBS.tolist()}).status_code
            for _ in range(n)
        ]

    def hostile() -> None:
        while not stop.is_set():
            for policy in ("lotka_volterra/predator", "lv/predator"):
                r = predict(hostile_server, {"policy": policy, "observation": EXTREME.tolist()})
                hostile_codes.append(r.status_code)

    attacker = threading.Thread(target=hostile)
    attacker.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            jobs = [pool.submit(innocent, "random/prey", 40) for _ in range(6)]
            jobs += [pool.submit(innocent, p, 40) for p in ("lotka_volterra/predator", "lv/prey")]
            codes = [c for j in jobs for c in j.result()]
    finally:
        stop.set()
        attacker.join()
    assert codes == [200] * len(codes)
    assert hostile_codes and set(hostile_codes) == {422}
    text = requests.get(hostile_server + "/metrics", timeout=10).text
    count = float(text.split("bioflux_batch_size_count ")[1].split()[0])
    total = float(text.split("bioflux_batch_size_sum ")[1].split()[0])
    assert total / count > 1.0, "the requests should have met in shared batches"


# ---------------------------------------------------------------------------- 2. metrics
def test_unknown_policy_names_never_become_metric_labels(hostile_server):
    def size() -> int:
        return len(requests.get(hostile_server + "/metrics", timeout=10).text)

    names = [f"nope{i}/prey" for i in range(150)]
    names += [f"x\x00{i}\n\"'{{}}" for i in range(50)] + ["ppo/predator\n", "a" * 250]
    predict(hostile_server, {"policy": names[0], "observation": OBS.tolist()})  # first label
    before = size()
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda n: (
                    predict(hostile_server, {"policy": n, "observation": OBS.tolist()}).status_code
                ),
                names,
            )
        )
    assert set(codes) == {404}
    text = requests.get(hostile_server + "/metrics", timeout=10).text
    assert len(text) - before < 200, "counters grew, but no new series"
    assert "nope1" not in text and "\\x00" not in text and "\x00" not in text
    assert 'policy="unknown"' in text


# ---------------------------------------------------------------------------- 3. limits
GIANT = {"height": 14000, "width": 14000, "predators": [[0, 0]], "prey": [], "agent": 0}


def state(**kw):
    return {"height": 10, "width": 10, "predators": [[5, 5]], "prey": [[3, 6]], **kw}


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"policy": "lv/predator", "state": GIANT}, 422, "height*state.width"),
        ({"policy": "lv/predator", "state": state(walls=[[-1, -1]])}, 422, "state.walls[0]"),
        ({"policy": "lv/predator", "state": state(prey=[[3, 10]])}, 422, "state.prey[0][1]"),
        ({"policy": "lv/predator", "state": state(predators=[[5.5, 5]])}, 422, "predators[0]"),
        ({"policy": "lv/predator", "state": state(agent=3)}, 422, "state.agent"),
        ({"policy": "lv/predator", "state": state(agent=True)}, 422, "state.agent"),
        ({"policy": "lv/predator", "state": state(height="10")}, 422, "state.height"),
        ({"policy": "lv/predator", "state": state(width=-3)}, 422, "state.width"),
        ({"policy": "lv/predator", "state": state(energy=[1, 2])}, 422, "state.energy"),
        ({"policy": "lv/predator", "state": state(colour="red")}, 422, "colour"),
        ({"policy": "lv/predator", "observation": [0.0] * 50_000}, 422, "observation has"),
        ({"policy": "random/prey", "observation": [[[0] * 4] * 3] * 200}, 422, "observation"),
        ({"policy": "random/prey", "observation": OBS.tolist(), "sample": "yes"}, 422, "sample"),
        ({"policy": "random/prey", "observation": OBS.tolist(), "fallback": 1}, 422, "fallback"),
        ({"policy": "random/prey\n", "observation": OBS.tolist()}, 404, "invalid policy"),
        ({"policy": "p" * 300, "observation": OBS.tolist()}, 422, "policy"),
        ({"policy": "random/prey", "observation": OBS.tolist(), "id": "i" * 300}, 422, "id"),
    ],
)
def test_out_of_bounds_input_gets_a_4xx_naming_the_field(hostile_server, body, status, needle):
    t0 = time.perf_counter()
    r = predict(hostile_server, body)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "raw, needle",
    [
        ('"state": {"height": 1e400, "width": 5, "predators": [[0, 0]]}', "state.height"),
        ('"state": {"height": Infinity, "width": 5, "predators": [[0, 0]]}', "state.height"),
        ('"state": {"height": 5, "width": NaN, "predators": [[0, 0]]}', "state.width"),
        (
            '"state": {"height": 5, "width": 5, "predators": [[0, 0]], "energy": [1e400]}',
            "state.energy[0]",
        ),
        ('"state": {"height": 5, "width": 5, "predators": [[1e400, 0]]}', "predators[0][0]"),
        ('"observation": [Infinity' + ", 0" * 99 + "]", "infinite"),
        ('"observation": [' + ",".join(["1e39"] * 100) + "]", "infinite"),
        ('"observation": [0], "extra": Infinity', "extra"),
        ('"observation": [0], "sample": NaN', "sample"),
    ],
)
def test_overflowing_numbers_get_a_422_not_a_500(hostile_server, raw, needle):
    body = '{"policy": "lv/predator", ' + raw + "}"
    r = post(
        hostile_server,
        "/v1/predict",
        data=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_body_size_and_batch_length_limits(hostile_server):
    big = b'{"policy": "random/prey", "observation": [' + b"0," * settings.MAX_BODY_BYTES + b"0]}"
    t0 = time.perf_counter()
    r = post(hostile_server, "/v1/predict", data=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "request body" in r.text, r.text[:300]
    assert time.perf_counter() - t0 < 10

    def chunks():  # no Content-Length: the limit counts the bytes as they arrive
        yield b'{"policy": "random/prey", "observation": ['
        for _ in range(settings.MAX_BODY_BYTES // 65536 + 2):
            yield b"0," * 32768
        yield b"0]}"

    r = post(
        hostile_server, "/v1/predict", data=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "request body" in r.text, r.text[:300]
    agents = [{"policy": "random/prey", "observation": [0]}] * (settings.MAX_REQUEST_AGENTS + 1)
    r = post(hostile_server, "/v1/predict/batch", json={"agents": agents})
    assert r.status_code == 413 and "agents" in r.text and "at most 1024" in r.text


def test_giant_grids_are_refused_fast_and_healthz_stays_fast(hostile_server):
    stop = threading.Event()
    codes: list[int] = []

    def flood() -> None:
        while not stop.is_set():
            codes.append(
                predict(hostile_server, {"policy": "lv/predator", "state": GIANT}).status_code
            )

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        worst = 0.0
        for _ in range(20):
            t0 = time.perf_counter()
            assert requests.get(hostile_server + "/healthz", timeout=10).status_code == 200
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes and set(codes) == {422}
    assert worst < 1.0, f"/healthz took {worst:.2f} s while giant grids arrived"


def test_the_largest_allowed_state_is_encoded_and_answers(hostile_server):
    side = int(settings.MAX_STATE_CELLS**0.5)
    body = {
        "policy": "lv/predator",
        "state": {
            "height": side,
            "width": side,
            "predators": [[side // 2, side // 2]],
            "prey": [[side // 2 - 1, side // 2]],
            "walls": [[0, c] for c in range(side)],
        },
    }
    r = predict(hostile_server, body)
    assert r.status_code == 200, r.text
    assert r.json()["action_name"] == "up"


# ---------------------------------------------------------------------------- 4 + 6. registry
def test_broken_metadata_and_escaping_files_mark_only_their_module(hostile_server, hostile_models):
    r = requests.get(hostile_server + "/v1/models", timeout=10)
    assert r.status_code == 200, r.text
    models = {m["name"]: m for m in r.json()["models"]}
    assert "not readable JSON" in models["lv/predator@badutf8:final"]["error"]
    assert "JSON object" in models["lv/prey@notobject:final"]["error"]
    assert "obs_radius" in models["lv/predator@badenv:final"]["error"]
    assert "outside the models directory" in models["lv/prey@pklout:final"]["error"]
    assert models["lv/predator@fit:final"]["error"] is None
    assert models["lv/predator@fit:final"]["loaded"] is True

    r = requests.get(hostile_server + "/readyz", timeout=10)
    assert r.status_code == (503 if r.json()["unserved"] else 200)
    assert {
        "lv/predator@badutf8:final",
        "lv/prey@notobject:final",
        "lv/predator@badenv:final",
        "lv/prey@pklout:final",
    } <= set(r.json()["failed"])

    for name in ("lv/predator@badutf8", "lv/prey@notobject", "lv/predator@badenv"):
        r = predict(hostile_server, {"policy": name, "observation": OBS.tolist()})
        assert r.status_code == 503, r.text
        r = post(hostile_server, f"/v1/models/{name}/load", headers=ADMIN)
        assert r.status_code == 503, r.text
    for name, full in [
        ("lv/predator", "lv/predator@fit:final"),  # its newer modules are all broken
        ("lv/predator@fit", "lv/predator@fit:final"),
        ("lv/prey", "lv/prey@swap:final"),
    ]:
        r = predict(hostile_server, {"policy": name, "observation": OBS.tolist()})
        assert r.status_code == 200, r.text
        assert r.json()["policy"] == full


def test_a_pickle_symlinked_outside_is_never_loaded(hostile_server, hostile_models):
    r = post(hostile_server, "/v1/models/lv/prey@pklout:final/load", headers=ADMIN)
    assert r.status_code == 503 and "outside the models directory" in r.text, r.text
    r = predict(hostile_server, {"policy": "lv/prey@pklout", "observation": OBS.tolist()})
    assert r.status_code == 503, r.text
    assert not Path(hostile_models["marker"]).exists(), "the outside pickle was unpickled"


# ---------------------------------------------------------------------------- 7. one log line
def _replica_logs() -> list[Path]:
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    return sorted(logs.glob("replica_bioflux_hostile_*.log"))


def test_an_internal_error_answers_500_and_logs_one_line(hostile_server):
    # the module takes 5x5 windows, its metadata claims 7x7: the forward pass raises
    obs = np.zeros((7, 7, 4), dtype=np.float32).tolist()
    seen = {p: p.stat().st_size for p in _replica_logs()}
    for _ in range(5):
        r = predict(hostile_server, {"policy": "ppo/predator@liar", "observation": obs})
        assert r.status_code == 500, r.text
        assert r.json()["detail"].startswith("internal error (RuntimeError)")
    time.sleep(1.0)
    text = ""
    for path in _replica_logs():  # what this test added to the replica logs
        with path.open("rb") as f:
            f.seek(seen.get(path, 0))
            text += f.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if "500 on POST /v1/predict" in line]
    assert len(lines) >= 5, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert json.dumps(requests.get(hostile_server + "/healthz", timeout=10).json())
