"""A hot swap reaches every replica: each one reloads the loaded modules whose files changed."""

import os
import time
from pathlib import Path

import numpy as np
import requests
import torch

from bioflux.serve.inference import ModelInference
from tests.serve.conftest import export, free_port, tiny_ppo_modules

NAME = "ppo/prey@tiny"
FULL = "ppo/prey@tiny:final"


def _obs() -> np.ndarray:
    obs = np.zeros((5, 5, 4), dtype=np.float32)
    obs[2, 2, 2] = 1.0
    obs[1, 3, 1] = 1.0
    return obs


def _rewrite(models: Path, seed: int) -> None:
    """New weights in the same module folders (a new checkpoint exported over the old one)."""
    torch.manual_seed(seed)
    modules, meta = tiny_ppo_modules()
    folder = export(models, "ppo", "tiny", "final", modules, meta)
    later = time.time() + 5
    for path in Path(folder).rglob("*"):
        os.utime(path, (later, later))


def test_reload_changed_swaps_rewritten_modules_and_keeps_a_broken_rewrite_off(tmp_path):
    models = tmp_path / "models"
    _rewrite(models, seed=0)
    inference = ModelInference(models)
    before = inference.predict("ppo", "prey", _obs(), run="tiny")["probabilities"]
    assert inference.reload_changed() == []  # nothing changed
    _rewrite(models, seed=1)
    assert inference.reload_changed() == [FULL]
    after = inference.predict("ppo", "prey", _obs(), run="tiny")["probabilities"]
    assert not np.allclose(list(before.values()), list(after.values()))
    # a broken rewrite: the loaded version keeps serving, the error is reported
    state = next((models / "ppo" / "tiny" / "final" / "prey").rglob("module_state.pkl"))
    state.write_bytes(b"\x80corrupt")
    later = time.time() + 10
    os.utime(state, (later, later))
    assert inference.reload_changed() == []
    assert inference.predict("ppo", "prey", _obs(), run="tiny")["probabilities"] == after
    assert FULL in inference.reload_errors


def test_every_replica_serves_a_rewritten_module_without_an_admin_call(ray_session, tmp_path):
    from ray import serve

    from bioflux.serve.app import build_app

    models = tmp_path / "models"
    _rewrite(models, seed=0)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app({"models_dir": str(models), "num_replicas": 2, "reload_interval_s": 0.5}),
        name="bioflux_reload",
        route_prefix="/",
    )
    url = f"http://127.0.0.1:{port}/v1/predict"
    body = {"policy": NAME, "observation": _obs().tolist()}

    def answers(n: int) -> set[tuple]:
        out = set()
        for _ in range(n):
            r = requests.post(url, json=body, timeout=10)
            assert r.status_code == 200, r.text
            out.add(tuple(round(p, 6) for p in r.json()["probabilities"].values()))
        return out

    try:
        old = answers(20)
        assert len(old) == 1  # both replicas serve the same weights
        _rewrite(models, seed=1)
        deadline = time.time() + 30
        new = old
        while time.time() < deadline:
            new = answers(20)  # 20 requests reach both replicas
            if len(new) == 1 and new != old:
                break
            time.sleep(0.5)
        assert len(new) == 1 and new != old, (old, new)
    finally:
        serve.shutdown()
