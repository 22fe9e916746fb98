"""Lotka–Volterra module: the documented rule, RLlib training beside PPO, checkpoints, fitting."""

import copy

import numpy as np
import pytest
import torch

from bioflux import config, evaluation, training
from bioflux.algorithms.lotka_volterra import DEFAULTS, make_module
from bioflux.policies import load_policy
from tests.conftest import TINY

STAY, UP, DOWN, LEFT, RIGHT = range(5)


def window(side=7, predators=(), prey=(), energy=None):
    obs = np.zeros((1, side, side, 4), dtype=np.float32)
    for r, c in predators:
        obs[0, r, c, 1] += 1
    for r, c in prey:
        obs[0, r, c, 2] += 1
    if energy is not None:
        obs[..., 3] = energy
    return obs


@pytest.mark.parametrize(
    "prey_at, expected", [((1, 3), UP), ((5, 3), DOWN), ((3, 0), LEFT), ((2, 6), RIGHT)]
)
def test_predator_steps_toward_prey(prey_at, expected):
    module = make_module("predator", greedy=True)
    obs = window(predators=[(3, 3)], prey=[prey_at], energy=1.0)
    assert int(module.scores(obs).argmax()) == expected
    drives = module.drives(obs)
    assert drives["pursuit"][0, expected] == pytest.approx(drives["pursuit"].max())
    assert torch.all(drives["flight"] == 0)


@pytest.mark.parametrize("predator_at, away", [((3, 5), LEFT), ((1, 3), DOWN), ((6, 3), UP)])
def test_prey_steps_away_from_a_predator(predator_at, away):
    module = make_module("prey")
    obs = window(predators=[predator_at], prey=[(3, 3)], energy=0.0)
    scores = module.scores(obs)[0]
    assert int(scores.argmax()) == away
    toward = {LEFT: RIGHT, DOWN: UP, UP: DOWN}[away]
    assert int(scores.argmin()) == toward


def test_drives_follow_the_equations():
    c = {"alpha": 0.7, "beta": 1.3, "gamma": 0.4, "delta": 2.2}
    pred = make_module("predator", **c)
    obs = window(predators=[(3, 3)], prey=[(1, 3)], energy=0.25)  # prey 2 up; hunger 0.75
    d = pred.drives(obs)
    x_up = 2 / 4  # <c, u_up> / |c|^2 for c = (-2, 0)
    assert d["pursuit"][0, UP] == pytest.approx(c["delta"] * 1.75 * x_up)
    assert d["pursuit"][0, DOWN] == pytest.approx(-c["delta"] * 1.75 * x_up)
    assert d["search"][0].tolist() == pytest.approx([0] + [c["gamma"] * 0.75] * 4)
    prey = make_module("prey", **c)
    d = prey.drives(window(predators=[(3, 4)], prey=[(3, 3)], energy=0.0))
    assert d["flight"][0, LEFT] == pytest.approx(c["beta"] * 1.0)
    assert d["dispersal"][0, STAY] == 0 and d["dispersal"][0, UP] == pytest.approx(c["alpha"])


def test_temperature_sharpens_the_softmax():
    obs = window(predators=[(3, 3)], prey=[(1, 3)], energy=1.0)
    hot = load_policy("lotka_volterra", "predator")
    hot.module.coefficients["temperature"] = 5.0
    cold = load_policy("lotka_volterra", "predator")
    cold.module.coefficients["temperature"] = 0.05
    assert cold.probabilities(obs)[0, UP] > 0.99 > hot.probabilities(obs)[0, UP] > 0.2


def test_lv_beats_random_as_predator():
    env = config.validate(copy.deepcopy(TINY)).env_config
    lv = evaluation.evaluate("lotka_volterra", "random", env, episodes=30, seed=1)
    rnd = evaluation.evaluate("random", "random", env, episodes=30, seed=1)
    assert lv["metrics"]["predator"]["capture_rate"] > rnd["metrics"]["predator"]["capture_rate"]


def test_runs_inside_ppo_training_and_restores_identically(ray_session, tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["training"]["fixed_modules"] = {"prey": "lotka_volterra"}
    exp = config.validate(cfg)
    summary = training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "models", log=lambda _: None
    )
    assert summary["iterations"] == 2
    restored = load_policy(tmp_path / "runs" / "tiny" / "checkpoints" / "final", "prey")
    assert type(restored.module).__name__ == "LotkaVolterraModule"
    assert restored.module.coefficients == {k: DEFAULTS[k] for k in restored.module.coefficients}
    obs = np.random.default_rng(0).random((32, 5, 5, 4)).astype(np.float32)
    obs[..., 3] = 0.0
    fresh = make_module("prey")
    assert np.allclose(
        restored.probabilities(obs),
        torch.softmax(fresh.scores(obs) / DEFAULTS["temperature"], -1).numpy(),
    )


def test_fitting_exports_the_best_coefficients(ray_session, tmp_path):
    exp = config.load(
        "lotka_volterra",
        [
            "training.num_samples=5",
            "training.episodes=4",
            "env.height=12",
            "env.width=12",
            "stop.iterations=3",  # one iteration = one trial: caps the 5 samples at 3
        ],
    )
    lines: list[str] = []
    summary = training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "models", log=lines.append
    )
    best = summary["best"]["coefficients"]
    policy = load_policy(tmp_path / "models" / "lotka_volterra" / exp.name, "predator")
    assert policy.module.coefficients == pytest.approx(best)
    rows = (tmp_path / "runs" / exp.name / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3
    assert (tmp_path / "runs" / exp.name / "learning_curves.png").exists()
    assert [line.split(" |")[0] for line in lines] == ["trial 1/3", "trial 2/3", "trial 3/3"]
    assert summary["selection_seed"] != exp.evaluation.seed
    prey = load_policy(tmp_path / "models" / "lotka_volterra" / exp.name, "prey")
    assert prey.module.coefficients == pytest.approx({k: DEFAULTS[k] for k in DEFAULTS})


def test_fitting_refuses_to_select_on_the_evaluation_seed(tmp_path):
    exp = config.load("lotka_volterra", ["training.selection_seed=7", "evaluation.seed=7"])
    with pytest.raises(ValueError, match="selection_seed"):
        training.train(exp, output=tmp_path / "runs", models=tmp_path / "models")


def test_serial_fitting_needs_no_ray_and_gives_the_same_outputs(tmp_path):
    exp = config.load(
        "lotka_volterra",
        [
            "training.search=serial",
            "training.episodes=4",
            "env.height=12",
            "env.width=12",
            f"stop.env_steps={3 * 4 * 50}",  # the budget pays for exactly 3 trials
        ],
    )
    lines: list[str] = []
    summary = training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "models", log=lines.append
    )
    assert summary["iterations"] == 3 and len(lines) == 3
    assert summary["env_steps"] == 3 * 4 * 50
    fitted = load_policy(tmp_path / "models" / "lotka_volterra" / exp.name, "predator")
    assert fitted.module.coefficients == pytest.approx(summary["best"]["coefficients"])
