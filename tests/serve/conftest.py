"""Model directories for the serving tests (built without training) and the Serve app on a
free port.

- ``models_dir``: the tiny experiment's PPO modules (RLlib modules built from its spec and
  exported the way training exports them, weights untrained), a corrupt copy and a symlink
  that leaves the directory.
- ``hostile_models``: Lotka–Volterra modules (``lv/...``) plus modules that must each be
  refused on their own: bioflux.json in invalid UTF-8, a JSON list, an invalid env, a pickle
  symlinked to outside the directory, a corrupt checkpoint, and a PPO module whose metadata
  lies about its window (an internal error at predict time).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

#: The admin token of the test servers.
ADMIN_TOKEN = "s3cret-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path, **kw) -> subprocess.Popen:
    """A subprocess in its own session, its output to ``log`` (no pipe to fill up)."""
    with log.open("w") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tiny_ppo_modules() -> tuple[dict, dict]:
    """The tiny experiment's PPO modules (untrained) and the metadata training writes."""
    from bioflux import config
    from bioflux.algorithms import get_algorithm
    from bioflux.envs.rllib_env import PredatorPreyRLlibEnv
    from tests.conftest import TINY

    exp = config.validate(copy.deepcopy(TINY))
    spec = (
        get_algorithm("ppo")
        .build_config(exp)
        .get_multi_rl_module_spec(env=PredatorPreyRLlibEnv(exp.env))
    )
    multi = spec.build()
    meta = {
        "algorithm": "ppo",
        "run": exp.name,
        "env": exp.env_config.to_dict(),
        "observation": "flattened (row, col, channel) window, see predator_prey_v0",
        "iteration": 0,
    }
    return {s: multi[s] for s in multi.keys()}, meta


def export(models: Path, algorithm: str, run: str, kind: str, modules: dict, meta: dict) -> Path:
    from bioflux.artifacts import export_rl_modules

    target = models / algorithm / run / kind
    export_rl_modules(target, modules, {s: {**meta, "kind": kind} for s in modules})
    return target


#: The lineage a curriculum run started from another run writes into its exports' bioflux.json
#: (``bioflux.transfer``, ``bioflux.curriculum``): the tiny exports carry it.
TINY_LINEAGE = {
    "init_from": {
        "predator": {
            "path": "/private/models/ppo/source/final",
            "module": "/private/models/ppo/source/final/predator",
            "run": "source",
            "algorithm": "ppo",
            "tensors_copied": 10,
            "tensors_fresh": [],
        }
    },
    "curriculum": [
        {
            "stage": 1,
            "name": "small",
            "env": {"height": 8},
            "stop": {"iterations": 2},
            "iterations": 2,
            "env_steps": 80,
            "run_dir": "/private/runs/tiny/stages/small",
        },
        {
            "stage": 2,
            "name": "full",
            "env": {},
            "stop": {"iterations": 1},
            "iterations": 1,
            "env_steps": 40,
            "run_dir": "/private/runs/tiny/stages/full",
        },
    ],
}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    modules, meta = tiny_ppo_modules()
    meta = {**meta, **TINY_LINEAGE}
    export(models, "ppo", "tiny", "final", modules, meta)
    export(models, "ppo", "tiny", "best", modules, meta)
    broken = models / "ppo" / "broken" / "final" / "predator"
    shutil.copytree(models / "ppo" / "tiny" / "final" / "predator", broken)
    (broken / "module_state.pkl").write_bytes(b"\x80corrupt")
    outside = root / "outside" / "ppo" / "evil" / "final" / "prey"
    shutil.copytree(models / "ppo" / "tiny" / "final" / "prey", outside)
    (models / "ppo" / "evil").symlink_to(root / "outside" / "ppo" / "evil")
    return models


class TouchOnUnpickle:
    """A pickle that creates ``path`` when loaded: proof that a file was (not) unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="session")
def hostile_models(tmp_path_factory) -> dict[str, Path]:
    """``models``: the directory; ``marker``: created if the outside pickle is ever loaded;
    ``swap``: the module folder the hot-swap test corrupts."""
    from bioflux.algorithms.lotka_volterra import make_module

    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    lv = {s: make_module(s) for s in ("predator", "prey")}
    meta = {"algorithm": "lv", "run": "fit", "env": {"obs_radius": 2}}
    fit = export(models, "lv", "fit", "final", lv, meta)

    def clone(run: str, species: str) -> Path:
        folder = models / "lv" / run / "final" / species
        shutil.copytree(fit / species, folder)
        return folder

    (clone("badutf8", "predator") / "bioflux.json").write_bytes(b'{"env": "\xff\xfe"}')
    (clone("notobject", "prey") / "bioflux.json").write_text("[1, 2, 3]")
    (clone("badenv", "predator") / "bioflux.json").write_text(
        json.dumps({"env": {"obs_radius": "wide"}})
    )
    outside = root / "outside"
    outside.mkdir()
    marker = root / "UNPICKLED"
    (outside / "class_and_ctor_args.pkl").write_bytes(pickle.dumps(TouchOnUnpickle(str(marker))))
    pklout = clone("pklout", "prey")
    (pklout / "class_and_ctor_args.pkl").unlink()
    (pklout / "class_and_ctor_args.pkl").symlink_to(outside / "class_and_ctor_args.pkl")
    corrupt = clone("corrupt", "predator")  # newest lv/predator final: fails to load
    (corrupt / "module_state.pkl").write_bytes(b"\x80corrupt")
    swap = export(models, "lv", "swap", "final", {"prey": lv["prey"]}, meta) / "prey"
    ppo, ppo_meta = tiny_ppo_modules()  # a 5x5 module whose metadata claims 7x7
    export(models, "ppo", "liar", "final", ppo, {**ppo_meta, "env": {"obs_radius": 3}})
    return {"models": models, "marker": marker, "swap": swap}


def start_server(models: Path, name: str, admin_token: str | None = ADMIN_TOKEN) -> str:
    from bioflux.serve.app import start

    port = free_port()
    start(
        models,
        host="127.0.0.1",
        port=port,
        max_batch_size=16,
        batch_wait_timeout_s=0.005,
        name=name,
        admin_token=admin_token,
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(ray_session, models_dir):
    from ray import serve

    yield start_server(models_dir, "bioflux_test")
    serve.shutdown()


@pytest.fixture(scope="module")
def hostile_server(ray_session, hostile_models):
    from ray import serve

    yield start_server(hostile_models["models"], "bioflux_hostile")
    serve.shutdown()
