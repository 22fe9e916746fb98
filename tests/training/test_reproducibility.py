"""A config and its seed determine the run: the same seed gives the same training in another
process, whatever Python's per-process string-hash seed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioflux.envs.config import SPECIES
from tests.algorithms.test_epsilon_greedy import eg_config

TIMING = ("per_s", "time", "wall")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["RAY_ADDRESS"] = ""  # a local Ray, whatever the shell had
    return {**env, **extra}


def test_species_modules_are_built_in_species_order_whatever_the_hash_seed():
    """The MultiRLModule builds its modules in ``policies`` order from one global RNG: given
    as a set, that order (so which species got which initial weights) followed the hash seed."""
    code = """
import copy, json
from bioflux import config
from bioflux.algorithms import get_algorithm
from tests.conftest import TINY
out = {}
for algo, runner in (("ppo", "batched"), ("epsilon_greedy", "multi_agent"), ("maddpg", "batched")):
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"], cfg["training"] = algo, {}
    cfg["resources"]["env_runner"] = runner
    out[algo] = list(get_algorithm(algo).build_config(config.validate(cfg)).policies)
print(json.dumps(out))
"""
    orders = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env=_env(PYTHONHASHSEED=seed),
            ).stdout.splitlines()[-1]
        )
        for seed in ("0", "1")
    ]
    assert orders[0] == orders[1]
    assert orders[0]["ppo"] == orders[0]["epsilon_greedy"] == list(SPECIES)
    assert set(SPECIES) < set(orders[0]["maddpg"])  # with the critics, in a fixed order


@pytest.mark.parametrize("env_runner", ["multi_agent", "columnar"])
def test_the_bioflux_command_trains_the_same_run_twice(tmp_path: Path, env_runner: str):
    """Epsilon-greedy (RLlib's DQN with a remote EnvRunner: on RLlib's runner with episode
    replay and per-agent connectors, or on the columnar path) run twice by the CLI with no
    PYTHONHASHSEED set: the same metrics, the same weights. Before, the replay drew from an
    unseeded generator and RLlib's agent order followed each process's hash seed."""
    cfg = eg_config(env_runner)
    cfg["resources"]["num_env_runners"] = 1
    cfg["stop"] = {"iterations": 3}
    path = tmp_path / "eg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = []
    for run in ("a", "b"):
        out = subprocess.run(
            [sys.executable, "-m", "bioflux", "train", "--config", str(path)]
            + ["--output", str(tmp_path / run / "runs"), "--models", str(tmp_path / run / "m")],
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        rows = [json.loads(line) for line in (tmp_path / run / "runs/tiny/metrics.jsonl").open()]
        runs.append([{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows])
    assert len(runs[0]) == 3 and runs[0] == runs[1]
    for species in SPECIES:
        a, b = (_weights(tmp_path / run / "m/epsilon_greedy/tiny/final" / species) for run in "ab")
        assert a.keys() == b.keys() and len(a) > 2
        assert all(np.array_equal(a[k], b[k]) for k in a), species


def _weights(folder: Path) -> dict[str, np.ndarray]:
    """A saved module's weights, by parameter name."""
    with (folder / "module_state.pkl").open("rb") as f:
        state = pickle.load(f)
    return {k: np.asarray(v) for k, v in state.items()}
