"""evaluate, render and simulate play a trained model in the world it was trained in (its
export's ``bioflux.json``) unless ``--config`` is given, and say so in one stderr line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {"height": 12, "width": 12, "n_predators": 2, "n_prey": 4, "max_steps": 10, "obs_radius": 2}


def bioflux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bioflux", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ""},
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An export (``<run>/final/<species>/`` + bioflux.json) of Lotka–Volterra modules: real
    RLModule checkpoints that need no training."""
    from bioflux.algorithms.lotka_volterra import make_module

    root = tmp_path_factory.mktemp("models") / "lv" / "run"
    for species in ("predator", "prey"):
        folder = root / "final" / species
        make_module(species).save_to_path(str(folder))
        meta = {"algorithm": "lv", "run": "run", "kind": "final", "species": species, "env": ENV}
        (folder / "bioflux.json").write_text(json.dumps(meta))
    return str(root)


def _notes(out: subprocess.CompletedProcess) -> list[str]:
    """The world notes (``evaluate`` also says where its report goes: not one of them)."""
    return [
        line
        for line in out.stderr.splitlines()
        if line.startswith("bioflux: ") and "the report" not in line
    ]


def test_evaluate_defaults_to_the_models_world(model, tmp_path):
    out = bioflux(
        "evaluate", "--predator", model, "--prey", "random", "--episodes", "2",
        "--out", str(tmp_path / "ev"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert _notes(out) == [
        f"bioflux: playing in the world {model} was trained in (12x12, 2 predators, 4 prey, "
        "obs_radius 2); --config chooses another"
    ]
    assert "RLModuleConfig" not in out.stderr and "Traceback" not in out.stderr
    env = json.loads((tmp_path / "ev" / "evaluation.json").read_text())[0]["env"]
    assert {k: env[k] for k in ENV} == ENV


def test_set_applies_on_top_of_the_models_world(model, tmp_path):
    out = bioflux(
        "render", "--predator", "random", "--prey", model, "--set", "env.n_prey=3",
        "--out", str(tmp_path / "ep.gif"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "(12x12, 2 predators, 3 prey, obs_radius 2)" in _notes(out)[0]
    assert (tmp_path / "ep.gif").stat().st_size > 0


def test_simulate_plays_the_models_world_in_ecology_mode(model, tmp_path):
    out = bioflux(
        "simulate", "--predator", model, "--prey", "lotka_volterra", "--steps", "5",
        "--out", str(tmp_path / "sim"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "obs_radius 2, ecology mode)" in _notes(out)[0]
    env = json.loads((tmp_path / "sim" / "summary.json").read_text())["env"]
    assert env["ecology"] is True and env["height"] == 12 and env["obs_radius"] == 2


def test_a_given_config_wins_when_its_window_fits(model, tmp_path):
    out = bioflux(
        "evaluate", "--predator", model, "--prey", model, "--episodes", "2",
        "--config", "demo", "--set", "env.obs_radius=2", "--out", str(tmp_path / "ev"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert _notes(out) == []
    env = json.loads((tmp_path / "ev" / "evaluation.json").read_text())[0]["env"]
    assert env["height"] == 24  # the demo world, with the model's window
